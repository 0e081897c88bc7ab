//! Two builds of the runner in one sitting: both run at once beside one
//! simulated backend, and short closed-loop runs alternate between them
//! (A B, then B A, …), so a drift of the machine (CPU steal, another
//! process, the cache) falls on both alike. Each round gives both builds'
//! CPU per request; the verdict is the median of the rounds' ratios.

use crate::load::{self, Target};
use crate::matrix::{Subject, measure};
use crate::{API_KEY, chat_body, gateway_config, start_runner};
use anyhow::{Context, Result};
use bytes::Bytes;
use edgegate_sim::{Backend, BackendConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
    })
}

/// One closed-loop run's CPU and answers.
#[derive(Default)]
struct Run {
    cpu_us: f64,
    ok: u64,
    failed: u64,
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
    old: &Path,
    new: &Path,
    rounds: usize,
    concurrency: usize,
    seconds: Duration,
) -> Result<()> {
    let backend = Backend::start(BackendConfig::new("local"), "127.0.0.1:0".parse()?).await?;
    let config = gateway_config(&backend.base_url());
    let builds = [
        start_runner(old, config.clone()).context("the old build")?,
        start_runner(new, config).context("the new build")?,
    ];
    let targets: Vec<Target> = builds
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
    println!(
        "A/B, {concurrency} connections, {} s a run, instant JSON backend: CPU per request (µs)\n",
        seconds.as_secs_f64()
    );
    println!("| round | old | new | new / old |");
    println!("| --- | --- | --- | --- |");
    let (mut olds, mut news, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut totals = [Run::default(), Run::default()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut cpu = [0.0; 2];
        for build in order {
            let pid = builds[build].child.id();
            let run =
                cpu_per_request(&targets[build], pid, concurrency, seconds, body.clone()).await?;
            cpu[build] = run.per_request();
            totals[build].add(&run);
        }
        println!(
            "| {} | {:.1} | {:.1} | {:.3} |",
            round + 1,
            cpu[0],
            cpu[1],
            cpu[1] / cpu[0]
        );
        olds.push(cpu[0]);
        news.push(cpu[1]);
        ratios.push(cpu[1] / cpu[0]);
    }
    let [old_total, new_total] = &totals;
    let slower = ratios.iter().filter(|r| **r > 1.0).count();
    println!(
        "| median | {:.1} | {:.1} | {:.3} |",
        median(olds),
        median(news),
        median(ratios)
    );
    println!(
        "| all rounds | {:.1} | {:.1} | {:.3} |\n\nnew above old in {slower} of {rounds} rounds; \
         answered {} and {}, failed {} and {}",
        old_total.per_request(),
        new_total.per_request(),
        new_total.per_request() / old_total.per_request(),
        old_total.ok,
        new_total.ok,
        old_total.failed,
        new_total.failed
    );
    Ok(())
}
