//! Where a request's time goes, as Prometheus itself computes it: a real
//! Prometheus server (Debian's `prometheus`, which scripts/bench.sh
//! installs) scrapes the runner's `/metrics` every second while closed-loop
//! load runs, then `histogram_quantile` over each phase histogram's
//! increase during the run gives its p95 and p99, printed beside the load
//! generator's own timer for the whole request.

use crate::load::{self, Target};
use crate::{API_KEY, chat_body, gateway_config, start_runner};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use edgegate_sim::{Backend, BackendConfig};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// (metric, what it measures), in the order a request meets them.
const PHASES: [(&str, &str); 5] = [
    ("edgegate_gateway_duration_seconds", "gateway's own work"),
    ("edgegate_queue_duration_seconds", "queue (sandbox, gate)"),
    (
        "edgegate_time_to_first_token_seconds",
        "upstream first token",
    ),
    ("edgegate_time_per_output_token_seconds", "per output token"),
    ("edgegate_request_duration_seconds", "whole request"),
];

/// A Prometheus server scraping one target every second, on a free port.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(binary: &Path, target: &str) -> Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: edgegate\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("starting {} (apt-get install prometheus)", binary.display())
            })?;
        let prometheus = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        // Until it has scraped the runner once.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(Some(up)) = prometheus.query("up", now()).await
                && up == 1.0
            {
                return Ok(prometheus);
            }
        }
        bail!("Prometheus did not scrape the runner within 20 s")
    }

    /// The instant query's single value at `at` (s since 1970), if any.
    async fn query(&self, query: &str, at: f64) -> Result<Option<f64>> {
        let url = format!("{}/api/v1/query", self.base);
        let at = format!("{at:.3}");
        let answer: serde_json::Value = reqwest::Client::new()
            .get(url)
            .query(&[("query", query), ("time", at.as_str())])
            .send()
            .await?
            .json()
            .await?;
        Ok(answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .filter(|v: &f64| v.is_finite()))
    }
}

/// `prometheus, version 2.42.0+ds …` → `Prometheus 2.42.0+ds`.
fn version(binary: &Path) -> String {
    let out = Command::new(binary).arg("--version").output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let version = text.ok().and_then(|t| {
        t.lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(2))
            .map(str::to_owned)
    });
    format!(
        "Prometheus {}",
        version.as_deref().unwrap_or("(version unknown)")
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ms(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "–".to_owned(), |s| format!("{:.2}", s * 1e3))
}

/// Runs the two scenarios and prints one Markdown table.
pub async fn run(runner: &Path, prometheus: &Path, seconds: Duration) -> Result<()> {
    let backend = Backend::start(BackendConfig::new("local"), "127.0.0.1:0".parse()?).await?;
    let gateway = start_runner(runner, gateway_config(&backend.base_url()))?;
    let prometheus_binary = prometheus;
    let prometheus = Prometheus::start(prometheus_binary, &gateway.addr.to_string()).await?;
    let target = Target {
        addr: gateway.addr,
        path: "/v1/chat/completions".into(),
        headers: vec![("authorization".into(), format!("Bearer {API_KEY}"))],
    };
    println!(
        "Phases, p95 / p99 in ms: {} scraping /metrics every 1 s, \
         `histogram_quantile` over each histogram's `increase` during the run (linear within \
         a bucket: …, 50, 75, 100, 150, 200 ms, …); the load generator's own timer for the \
         whole request beside it. {} s a scenario.\n",
        version(prometheus_binary),
        seconds.as_secs()
    );
    println!(
        "| scenario | phase | Prometheus p95 | Prometheus p99 | load generator p95 | load generator p99 |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let scenarios: [(&str, usize, bool, (u64, u64)); 2] = [
        ("32 connections, JSON, instant backend", 32, false, (0, 0)),
        (
            "64 connections, streamed, first token 20 ms, then 5 ms a token",
            64,
            true,
            (20, 5),
        ),
    ];
    for (name, concurrency, stream, (first_ms, token_ms)) in scenarios {
        backend.controls().set_latency(first_ms, token_ms);
        let body: Arc<dyn Fn(u64) -> Bytes + Send + Sync> = Arc::new(move |n| chat_body(n, stream));
        load::run(&target, concurrency, Duration::from_secs(1), body.clone())
            .await
            .context("warm-up")?;
        // Let a scrape fall between the warm-up and the run.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let start = now();
        let result = load::run(&target, concurrency, seconds, body).await?;
        // The scrape after the run's end.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let at = now();
        let window = (at - start).ceil() as u64;
        for (i, (metric, what)) in PHASES.iter().enumerate() {
            let mut quantiles = Vec::new();
            for q in [0.95, 0.99] {
                let query = format!(
                    "histogram_quantile({q}, sum by (le) (increase({metric}_bucket[{window}s])))"
                );
                quantiles.push(prometheus.query(&query, at).await?);
            }
            let timer = if i + 1 == PHASES.len() {
                format!(
                    "{:.2} | {:.2}",
                    result.percentile(0.95).as_secs_f64() * 1e3,
                    result.percentile(0.99).as_secs_f64() * 1e3
                )
            } else {
                " | ".to_owned()
            };
            println!(
                "| {} | {what} (`{metric}`) | {} | {} | {timer} |",
                if i == 0 { name } else { "" },
                ms(quantiles[0]),
                ms(quantiles[1]),
            );
        }
    }
    Ok(())
}
