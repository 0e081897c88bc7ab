//! A memory soak with OTLP on and a slow collector: the runner serves
//! closed-loop load for the whole time while its spans pile up against a
//! collector that answers each export late; its RSS, throughput and span
//! counts are printed every 30 s. Memory should stay flat: the export
//! queue is bounded and what does not fit is dropped and counted.

use crate::ab::otlp_off_and_on;
use crate::load::{self, Target};
use crate::proc_stats::rss_kib;
use crate::{API_KEY, chat_body, start_runner};
use anyhow::{Context, Result};
use bytes::Bytes;
use edgegate_sim::collector::Collector;
use edgegate_sim::{Backend, BackendConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const STEP: Duration = Duration::from_secs(30);

/// `edgegate_otlp_spans_total{outcome=…}` from the runner's `/metrics`.
async fn span_count(base: &str, outcome: &str) -> Result<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    let prefix = format!("edgegate_otlp_spans_total{{outcome=\"{outcome}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

pub async fn run(runner: &Path, minutes: u64, concurrency: usize, delay: Duration) -> Result<()> {
    let backend = Backend::start(BackendConfig::new("local"), "127.0.0.1:0".parse()?).await?;
    let collector = Collector::start("127.0.0.1:0".parse()?).await?;
    collector.set_delay(delay);
    collector.set_counting_only(true);
    let [_, on] = otlp_off_and_on(runner, &collector, 1.0);
    let gateway = start_runner(&on.binary, (on.config)(&backend.base_url()))
        .context("the runner, OTLP on")?;
    let pid = gateway.child.id();
    let base = format!("http://{}", gateway.addr);
    let target = Target {
        addr: gateway.addr,
        path: "/v1/chat/completions".into(),
        headers: vec![("authorization".into(), format!("Bearer {API_KEY}"))],
    };
    let body: Arc<dyn Fn(u64) -> Bytes + Send + Sync> = Arc::new(|n| chat_body(n, false));
    println!(
        "Soak: {minutes} min, {concurrency} connections, instant JSON backend, OTLP on to a \
         collector answering after {} ms\n",
        delay.as_millis()
    );
    println!(
        "| minute | req/s | RSS MiB | spans exported | dropped (queue full) | dropped (export failed) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let steps = (minutes * 60).div_ceil(STEP.as_secs()).max(1);
    for step in 1..=steps {
        let result = load::run(&target, concurrency, STEP, body.clone()).await?;
        let rss = rss_kib(pid)? as f64 / 1024.0;
        println!(
            "| {:.1} | {:.0} | {rss:.1} | {:.0} | {:.0} | {:.0} |",
            (step * STEP.as_secs()) as f64 / 60.0,
            result.rps(),
            span_count(&base, "exported").await?,
            span_count(&base, "dropped_queue_full").await?,
            span_count(&base, "dropped_export_failed").await?,
        );
    }
    println!(
        "\nthe collector received {} spans in {} exports",
        collector.received(),
        collector.exports()
    );
    Ok(())
}
