//! Overload: two simulated replicas that each generate 8 sequences at once
//! (the rest queue inside the replica, as vLLM's do), configured in the
//! gateway with `capacity: 8`; three tenants, premium (`high`), standard
//! (`normal`) and free (`low`), together offering three times what the
//! replicas can serve, streamed, open loop, for a fixed time. The route
//! degrades to a small model on a third, unlimited server. Reported per
//! tenant: served, degraded, 429 (with `Retry-After`), other failures, and
//! the served answers' time to first token beside premium's unloaded
//! figure; and the most requests either replica ever held.

use crate::load::{Target, connect};
use anyhow::Result;
use bytes::Bytes;
use edgegate_sim::{Backend, BackendConfig, Controls};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Sequences each replica generates at once, and the gateway's capacity.
const CAPACITY: usize = 8;
const BASE_MS: u64 = 200;
const TOKEN_MS: u64 = 25;
const TOKENS: u64 = 16;

/// (tenant, tier, priority, share of the replicas' capacity offered).
const TENANTS: [(&str, &str, &str, f64); 3] = [
    ("premium", "premium", "high", 0.5),
    ("standard", "standard", "normal", 1.0),
    ("free", "free", "low", 1.5),
];

fn key(tenant: &str) -> String {
    format!("sk-overload-{tenant}")
}

/// The backends: two replicas and the degradation model's server.
pub struct Fleet {
    pub replicas: [Backend; 2],
    pub small: Backend,
}

impl Fleet {
    pub async fn start() -> Result<Fleet> {
        let replica = |name: &str| {
            let mut config = BackendConfig::new(name);
            config.base_latency_ms = BASE_MS;
            config.token_interval_ms = TOKEN_MS;
            config.max_running = Some(CAPACITY);
            Backend::start(config, "127.0.0.1:0".parse().expect("loopback"))
        };
        let mut small = BackendConfig::new("small");
        small.base_latency_ms = 20;
        small.token_interval_ms = 2;
        Ok(Fleet {
            replicas: [replica("gpu/a").await?, replica("gpu/b").await?],
            small: Backend::start(small, "127.0.0.1:0".parse()?).await?,
        })
    }

    pub fn gateway_config(&self) -> Value {
        let tiers: serde_json::Map<String, Value> = TENANTS
            .iter()
            .map(|(_, tier, priority, _)| {
                let t = json!({"requests_per_minute": 100_000_000u64,
                    "tokens_per_minute": 100_000_000_000u64, "priority": priority});
                ((*tier).to_owned(), t)
            })
            .collect();
        let tenants: Vec<Value> = TENANTS
            .iter()
            .map(|(tenant, tier, _, _)| {
                let hash = hex::encode(Sha256::digest(key(tenant).as_bytes()));
                json!({"id": tenant, "tier": tier, "api_key_sha256": [hash]})
            })
            .collect();
        let replicas: Vec<Value> = ["a", "b"]
            .iter()
            .zip(&self.replicas)
            .map(|(name, b)| json!({"name": name, "base_url": b.base_url(), "capacity": CAPACITY}))
            .collect();
        let model = |name: &str| {
            json!({"name": name, "context_window": 8192,
                   "input_usd_per_million": 0.1, "output_usd_per_million": 0.2})
        };
        json!({
            "tiers": tiers,
            "tenants": tenants,
            "models": [model("big"), model("small")],
            "routes": [{"model": "big", "cache": {"enabled": false}, "max_attempts": 2,
                        "degrade": {"model": "small", "max_tokens": 8},
                        "timeouts": {"stream_idle_ms": 60000, "total_ms": 60000}}],
            "regions": [
                {"name": "gpu", "replicas": replicas, "latitude": 50.0, "longitude": 8.0,
                 "models": ["big"]},
                {"name": "small", "base_url": self.small.base_url(), "latitude": 50.0,
                 "longitude": 8.0, "models": ["small"]},
            ],
        })
    }
}

#[derive(Default)]
struct TenantResult {
    offered: u64,
    served: u64,
    degraded: u64,
    refused: u64,
    refused_with_retry_after: u64,
    failed: u64,
    /// Answers by the degradation model without `x-edgegate-degraded`.
    unmarked: u64,
    /// First content of served, undegraded answers (sorted).
    ttft: Vec<Duration>,
}

impl TenantResult {
    /// Its line of the table.
    fn row(&self, label: &str) -> String {
        format!(
            "| {label} | {} | {} | {} ({}) | {} ({}) | {} | {} / {} |",
            self.offered,
            self.served,
            self.degraded,
            self.unmarked,
            self.refused,
            self.refused_with_retry_after,
            self.failed,
            ms(percentile(&self.ttft, 0.5)),
            ms(percentile(&self.ttft, 0.99)),
        )
    }
}

enum Outcome {
    Served(Duration),
    Degraded,
    Unmarked,
    Refused { retry_after: bool },
    Failed,
}

/// A streamed chat request whose answer is 4 to 28 tokens long (16 on
/// average): answers of one length would end in lockstep, which no real
/// traffic does.
fn body(n: u64) -> Bytes {
    let tokens = TOKENS - 12 + n.wrapping_mul(7_919) % 25;
    Bytes::from(
        json!({"model": "big", "stream": true, "max_tokens": tokens,
               "messages": [{"role": "user", "content": format!("overload request {n}")}]})
        .to_string(),
    )
}

async fn one(target: Target, n: u64, scheduled: Instant) -> Outcome {
    let attempt = async {
        let mut sender = connect(target.addr).await?;
        let resp = sender.send_request(target.request(body(n))?).await?;
        let status = resp.status().as_u16();
        let degraded = resp.headers().contains_key("x-edgegate-degraded");
        let retry_after = resp.headers().contains_key("retry-after");
        let mut stream = resp.into_body();
        let mut first = None;
        let mut seen = Vec::new();
        while let Some(frame) = stream.frame().await {
            if let Some(data) = frame?.data_ref()
                && first.is_none()
            {
                seen.extend_from_slice(data);
                if crate::load::carries_content(&seen) {
                    first = Some(scheduled.elapsed());
                }
            }
        }
        let small = seen.windows(15).any(|w| w == br#""model":"small""#);
        anyhow::Ok(match (status, degraded, first) {
            (200, true, _) => Outcome::Degraded,
            (200, false, _) if small => Outcome::Unmarked,
            (200, false, Some(t)) => Outcome::Served(t),
            (429, _, _) => Outcome::Refused { retry_after },
            _ => Outcome::Failed,
        })
    };
    match tokio::time::timeout(Duration::from_secs(30), attempt).await {
        Ok(Ok(outcome)) => outcome,
        _ => Outcome::Failed,
    }
}

/// One tenant's open-loop load at `rate` for `duration`.
async fn offer(target: Target, rate: f64, duration: Duration, seed: u64) -> Result<TenantResult> {
    let count = (rate * duration.as_secs_f64()).max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count as usize);
    for i in 0..count {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        tasks.push(tokio::spawn(one(target.clone(), seed + i, scheduled)));
    }
    let mut r = TenantResult {
        offered: count,
        ..TenantResult::default()
    };
    for t in tasks {
        match t.await? {
            Outcome::Served(ttft) => {
                r.served += 1;
                r.ttft.push(ttft);
            }
            Outcome::Degraded => r.degraded += 1,
            Outcome::Unmarked => r.unmarked += 1,
            Outcome::Refused { retry_after } => {
                r.refused += 1;
                r.refused_with_retry_after += u64::from(retry_after);
            }
            Outcome::Failed => r.failed += 1,
        }
    }
    r.ttft.sort_unstable();
    Ok(r)
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((last as f64) * p).round() as usize])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "—".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3))
}

/// Samples the replicas' running and waiting counts until stopped; the
/// most either ever held.
fn watch(replicas: [Controls; 2], stop: Arc<AtomicBool>) -> Arc<AtomicUsize> {
    let peak = Arc::new(AtomicUsize::new(0));
    let p = peak.clone();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for r in &replicas {
                let (running, waiting) = r.batch();
                p.fetch_max(running + waiting, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    peak
}

/// The scenario against the gateway at `gateway` (fronting `fleet`), as
/// Markdown lines headed `who`.
pub async fn run(who: &str, fleet: &Fleet, gateway: Target, seconds: u64) -> Result<Vec<String>> {
    let target = |tenant: &str| Target {
        headers: vec![("authorization".into(), format!("Bearer {}", key(tenant)))],
        ..gateway.clone()
    };
    // The replicas' rate: CAPACITY at a time, each request taking its time
    // to the first token and the rest of its tokens.
    let service = Duration::from_millis(BASE_MS + TOKEN_MS * TOKENS);
    let capacity_rps = (2 * CAPACITY) as f64 / service.as_secs_f64();
    // Unloaded: premium alone at a tenth of the capacity.
    let calm = offer(
        target("premium"),
        capacity_rps / 10.0,
        Duration::from_secs(6),
        0,
    )
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let peak = watch(
        [fleet.replicas[0].controls(), fleet.replicas[1].controls()],
        stop.clone(),
    );
    let duration = Duration::from_secs(seconds);
    let runs: Vec<_> = TENANTS
        .iter()
        .enumerate()
        .map(|(i, (tenant, _, _, share))| {
            let seed = 1_000_000 * (i as u64 + 1);
            tokio::spawn(offer(target(tenant), capacity_rps * share, duration, seed))
        })
        .collect();
    let mut results = Vec::new();
    for run in runs {
        results.push(run.await?);
    }
    stop.store(true, Ordering::Relaxed);
    let mut lines = vec![
        format!(
            "#### {who}: 2 replicas of capacity {CAPACITY} ({:.0} requests/s together), three tenants offering 3× that for {seconds} s, streamed\n",
            capacity_rps
        ),
        "| tenant (priority) | offered | served | degraded (unmarked) | 429 (with Retry-After) | other failures | TTFT p50 / p99 ms (served) |".into(),
        "| --- | --- | --- | --- | --- | --- | --- |".into(),
    ];
    let mut premium_p99 = None;
    for ((tenant, _, priority, share), r) in TENANTS.iter().zip(results) {
        let r = r?;
        if *tenant == "premium" {
            premium_p99 = percentile(&r.ttft, 0.99);
        }
        let label = format!(
            "{tenant} ({priority}, {:.0} requests/s)",
            capacity_rps * share
        );
        lines.push(r.row(&label));
    }
    let label = format!(
        "premium alone ({:.0} requests/s): the unloaded figure",
        capacity_rps / 10.0
    );
    lines.push(calm.row(&label));
    let calm_p99 = percentile(&calm.ttft, 0.99);
    if let (Some(loaded), Some(calm)) = (premium_p99, calm_p99) {
        lines.push(format!(
            "\nPremium's p99 time to first token under overload: {} ms, ×{:.2} its unloaded p99 (target ≤ ×2).",
            ms(Some(loaded)),
            loaded.as_secs_f64() / calm.as_secs_f64()
        ));
    }
    lines.push(format!(
        "The most requests either replica held at once (running + queued inside it): {} (capacity {CAPACITY}).\n",
        peak.load(Ordering::Relaxed)
    ));
    Ok(lines)
}
