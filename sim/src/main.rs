//! `edgegate-sim`: runs one or several simulated regional backends until
//! SIGINT or SIGTERM, printing `READY <region> <base url>` for each.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use edgegate_sim::{Backend, BackendConfig};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Simulated regional GPU backends speaking the OpenAI API"
)]
struct Args {
    /// Region name of a single backend.
    #[arg(long, required_unless_present = "spec", conflicts_with = "spec")]
    region: Option<String>,
    /// Address of the single backend (loopback only; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0", conflicts_with = "spec")]
    listen: SocketAddr,
    /// Several backends: "REGION=ADDR,REGION=ADDR", e.g.
    /// "us-east=127.0.0.1:9101,eu-west=127.0.0.1:0".
    #[arg(long)]
    spec: Option<String>,
    /// Delay before a non-streamed answer or a stream's first chunk.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Delay between streamed tokens.
    #[arg(long, default_value_t = 20)]
    token_interval_ms: u64,
    /// A model name the backends accept (repeatable); none accepts any.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Sequences each backend generates at once; the rest wait in a queue.
    #[arg(long)]
    max_running: Option<usize>,
    /// Refuse `/v1/` requests without `Authorization: Bearer KEY`, as
    /// `vllm serve --api-key` does.
    #[arg(long)]
    api_key: Option<String>,
}

/// READY lines are split on spaces, so a region must be one non-empty word.
fn check_region(region: &str) -> Result<(), String> {
    if region.is_empty() || region.chars().any(char::is_whitespace) {
        return Err(format!("region {region:?} must be one word"));
    }
    Ok(())
}

/// `REGION=ADDR,...` as (region, address) pairs.
fn parse_spec(spec: &str) -> Result<Vec<(String, SocketAddr)>, String> {
    let mut backends: Vec<(String, SocketAddr)> = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (region, addr) = entry
            .split_once('=')
            .ok_or_else(|| format!("spec entry {entry:?} is not REGION=ADDR"))?;
        let region = region.trim();
        check_region(region)?;
        if backends.iter().any(|(r, _)| r == region) {
            return Err(format!("region {region:?} appears twice in the spec"));
        }
        let addr = addr
            .trim()
            .parse()
            .map_err(|e| format!("spec entry {entry:?}: bad address: {e}"))?;
        backends.push((region.to_owned(), addr));
    }
    if backends.is_empty() {
        return Err("the spec names no backend".to_owned());
    }
    Ok(backends)
}

async fn wait_for_signal() -> io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let targets = match (&args.spec, &args.region) {
        (Some(spec), _) => parse_spec(spec),
        (None, Some(region)) => check_region(region).map(|()| vec![(region.clone(), args.listen)]),
        (None, None) => Err("give --region or --spec".to_owned()),
    };
    let targets = match targets {
        Ok(targets) => targets,
        Err(e) => {
            eprintln!("edgegate-sim: {e}");
            return ExitCode::from(2);
        }
    };

    let mut backends = Vec::new();
    for (region, addr) in targets {
        let cfg = BackendConfig {
            region: region.clone(),
            base_latency_ms: args.latency_ms,
            token_interval_ms: args.token_interval_ms,
            models: args.models.clone(),
            max_running: args.max_running,
            api_key: args.api_key.clone(),
        };
        match Backend::start(cfg, addr).await {
            Ok(backend) => backends.push(backend),
            Err(e) => {
                eprintln!("edgegate-sim: cannot start {region} on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    // Printed only once every backend listens, so a reader may connect at once.
    let mut out = io::stdout().lock();
    for backend in &backends {
        let region = backend.controls().region().to_owned();
        let _ = writeln!(out, "READY {region} {}", backend.base_url());
    }
    let _ = out.flush();
    drop(out);

    let result = wait_for_signal().await;
    for backend in backends {
        backend.shutdown().await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgegate-sim: cannot wait for signals: {e}");
            ExitCode::FAILURE
        }
    }
}
