//! Two runners in one sitting — two builds, or one build with two
//! settings (OTLP off and on) — both run at once beside one simulated
//! backend, and short closed-loop runs alternate between them (A B, then
//! B A, …), so a drift of the machine (CPU steal, another process, the
//! cache) falls on both alike. Each round gives both sides' CPU per request
//! and p50/p99 latency; the verdict is the median of the rounds' ratios.

use crate::load::{self, Target};
use crate::matrix::{Subject, measure};
use crate::{API_KEY, chat_body, gateway_config, start_runner};
use anyhow::{Context, Result};
use bytes::Bytes;
use edgegate_sim::collector::Collector;
use edgegate_sim::{Backend, BackendConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One side of the A/B: a runner binary and its gateway config.
pub struct Side {
    pub label: &'static str,
    pub binary: PathBuf,
    /// Makes the config from the backend's base URL.
    pub config: Box<dyn Fn(&str) -> serde_json::Value>,
}

/// Two builds with the same config.
pub fn builds(old: &Path, new: &Path) -> [Side; 2] {
    [
        Side {
            label: "old",
            binary: old.to_owned(),
            config: Box::new(gateway_config),
        },
        Side {
            label: "new",
            binary: new.to_owned(),
            config: Box::new(gateway_config),
        },
    ]
}

/// One build, OTLP off and on: spans exported to `collector` (a collector
/// started in this process, made slow by the caller), `sample_ratio` of
/// the traces.
pub fn otlp_off_and_on(runner: &Path, collector: &Collector, sample_ratio: f64) -> [Side; 2] {
    let endpoint = collector.base_url();
    [
        Side {
            label: "OTLP off",
            binary: runner.to_owned(),
            config: Box::new(gateway_config),
        },
        Side {
            label: "OTLP on",
            binary: runner.to_owned(),
            config: Box::new(move |backend| {
                let mut config = gateway_config(backend);
                config["observability"] =
                    json!({"otlp_endpoint": endpoint, "otlp_sample_ratio": sample_ratio});
                config
            }),
        },
    ]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// One closed-loop run on `pid`'s runner, measured as the matrix measures.
async fn cpu_per_request(
    target: &Target,
    pid: u32,
    concurrency: usize,
    seconds: Duration,
    body: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
) -> Result<Run> {
    let subject = Subject {
        name: "runner",
        target: target.clone(),
        pid: Some(pid),
    };
    let (result, cpu) = measure(&subject, load::run(target, concurrency, seconds, body)).await?;
    Ok(Run {
        cpu_us: cpu.unwrap_or(0.0) * result.ok as f64,
        ok: result.ok,
        failed: result.errors,
        p50_ms: result.percentile(0.50).as_secs_f64() * 1e3,
        p99_ms: result.percentile(0.99).as_secs_f64() * 1e3,
    })
}

/// One closed-loop run's CPU, answers and latency.
#[derive(Default)]
struct Run {
    cpu_us: f64,
    ok: u64,
    failed: u64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Run {
    fn per_request(&self) -> f64 {
        self.cpu_us / self.ok.max(1) as f64
    }

    fn add(&mut self, other: &Run) {
        self.cpu_us += other.cpu_us;
        self.ok += other.ok;
        self.failed += other.failed;
    }
}

/// Prints each round, the medians and the whole sitting's totals as Markdown.
pub async fn run(
    sides: [Side; 2],
    rounds: usize,
    concurrency: usize,
    seconds: Duration,
) -> Result<()> {
    let backend = Backend::start(BackendConfig::new("local"), "127.0.0.1:0".parse()?).await?;
    let mut runners = Vec::new();
    for side in &sides {
        let config = (side.config)(&backend.base_url());
        runners.push(start_runner(&side.binary, config).context(side.label)?);
    }
    let targets: Vec<Target> = runners
        .iter()
        .map(|r| Target {
            addr: r.addr,
            path: "/v1/chat/completions".into(),
            headers: vec![("authorization".into(), format!("Bearer {API_KEY}"))],
        })
        .collect();
    let body: Arc<dyn Fn(u64) -> Bytes + Send + Sync> = Arc::new(|n| chat_body(n, false));
    for target in &targets {
        load::run(target, concurrency, Duration::from_secs(2), body.clone())
            .await
            .context("warm-up")?;
    }
    let [a, b] = [sides[0].label, sides[1].label];
    println!(
        "A/B, {concurrency} connections, {} s a run, instant JSON backend: CPU per request (µs), latency p50 / p99 (ms)\n",
        seconds.as_secs_f64()
    );
    println!("| round | {a} µs | {b} µs | {b} / {a} | {a} p50 / p99 | {b} p50 / p99 |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let (mut cpus, mut ratios) = ([Vec::new(), Vec::new()], Vec::new());
    let (mut p50s, mut p99s) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    let mut totals = [Run::default(), Run::default()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut runs = [Run::default(), Run::default()];
        for side in order {
            let pid = runners[side].child.id();
            runs[side] =
                cpu_per_request(&targets[side], pid, concurrency, seconds, body.clone()).await?;
            totals[side].add(&runs[side]);
        }
        let cpu = [runs[0].per_request(), runs[1].per_request()];
        println!(
            "| {} | {:.1} | {:.1} | {:.3} | {:.2} / {:.2} | {:.2} / {:.2} |",
            round + 1,
            cpu[0],
            cpu[1],
            cpu[1] / cpu[0],
            runs[0].p50_ms,
            runs[0].p99_ms,
            runs[1].p50_ms,
            runs[1].p99_ms
        );
        for side in 0..2 {
            cpus[side].push(cpu[side]);
            p50s[side].push(runs[side].p50_ms);
            p99s[side].push(runs[side].p99_ms);
        }
        ratios.push(cpu[1] / cpu[0]);
    }
    let [a_total, b_total] = &totals;
    let above = ratios.iter().filter(|r| **r > 1.0).count();
    let [a_cpu, b_cpu] = cpus;
    let [a_p50, b_p50] = p50s;
    let [a_p99, b_p99] = p99s;
    println!(
        "| median | {:.1} | {:.1} | {:.3} | {:.2} / {:.2} | {:.2} / {:.2} |",
        median(a_cpu),
        median(b_cpu),
        median(ratios),
        median(a_p50),
        median(a_p99),
        median(b_p50),
        median(b_p99)
    );
    println!(
        "| all rounds | {:.1} | {:.1} | {:.3} | | |\n\n{b} above {a} in {above} of {rounds} rounds; \
         answered {} and {}, failed {} and {}",
        a_total.per_request(),
        b_total.per_request(),
        b_total.per_request() / a_total.per_request(),
        a_total.ok,
        b_total.ok,
        a_total.failed,
        b_total.failed
    );
    Ok(())
}
