//! Priority admission at a replica with a capacity (`gated`, capacity 1):
//! while it serves one request, the others wait in priority order and it
//! never serves two at once; what cannot wait long enough is degraded when
//! its route says so, else refused with a 429 and `Retry-After`.

use crate::client::{CHAT, Reply};
use crate::gateway::{GATED, LOW_WAIT_MS, keys};
use crate::suite::Outcome;
use crate::target::{Runner, Target};
use crate::{ensure, ensure_eq};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The gated replica's answer time.
const HOLD_MS: u64 = 700;

async fn ask(t: &Target, key: &str, model: &str, text: &str) -> Result<(Reply, Duration), String> {
    let started = Instant::now();
    let body = json!({"model": model, "messages": [{"role": "user", "content": text}],
                      "max_tokens": 20});
    let reply = t.post(CHAT).key(key).json(&body).send().await?;
    Ok((reply, started.elapsed()))
}

/// Samples how many requests the gated replica runs at once, until dropped.
struct Peak {
    peak: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Peak {
    fn watch(t: &Target) -> Peak {
        let (peak, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let controls = t.backend(GATED);
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let (running, waiting) = controls.batch();
                p.fetch_max(running + waiting, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Peak { peak, stop }
    }

    fn get(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Peak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits until the gated replica has a request.
async fn busy(t: &Target) -> Outcome {
    let controls = t.backend(GATED);
    let deadline = Instant::now() + Duration::from_secs(5);
    while controls.batch() == (0, 0) {
        ensure!(Instant::now() < deadline, "{GATED} got no request in 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

pub async fn waiting_requests_are_served_in_priority_order(t: &Target) -> Outcome {
    let gated = t.backend(GATED);
    gated.set_latency(HOLD_MS, 0);
    let peak = Peak::watch(t);
    let first = ask(t, keys::GATED_NORMAL, "gated-strict", "first");
    let later = async {
        busy(t).await?;
        // Normal first, then high: high is served before normal all the same.
        let normal = ask(t, keys::GATED_NORMAL, "gated-strict", "normal");
        let high = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            ask(t, keys::GATED_HIGH, "gated-strict", "high").await
        };
        let (normal, high) = tokio::join!(normal, high);
        Ok::<_, String>((normal?, high?))
    };
    let (first, later) = tokio::join!(first, later);
    let (first, ((normal, normal_took), (high, high_took))) = (first?, later?);
    first.0.expect(200)?;
    normal.expect(200)?;
    high.expect(200)?;
    ensure_eq!(
        peak.get(),
        1,
        "requests the replica of capacity 1 held at once"
    );
    // high arrived 150 ms after normal and left before it: it went first.
    let high_done = high_took + Duration::from_millis(150);
    ensure!(
        high_done < normal_took,
        "high done at {high_done:?}, normal (queued before it) at {normal_took:?}"
    );
    ensure!(
        normal_took >= Duration::from_millis(2 * HOLD_MS),
        "normal waited for first and high: {normal_took:?}"
    );
    gated.set_latency(0, 0);
    if t.runner == Runner::LocalRunner {
        // The gate, drained, in the runner's metrics; no permit left held.
        let metrics = t.metrics().await?;
        let line = format!("edgegate_gate_waiting{{region=\"{GATED}\"}} 0");
        ensure!(metrics.contains(&line), "no `{line}` in /metrics");
        let held = format!("edgegate_gate_permits{{target=\"{GATED}\"}}");
        ensure!(!metrics.contains(&held), "a permit still held: {metrics}");
    }
    Ok(())
}

pub async fn what_cannot_wait_is_degraded_or_refused_with_retry_after(t: &Target) -> Outcome {
    let gated = t.backend(GATED);
    gated.set_latency(3 * LOW_WAIT_MS, 0);
    let peak = Peak::watch(t);
    let holder = ask(t, keys::GATED_HIGH, "gated-strict", "holder");
    let low = async {
        busy(t).await?;
        let degraded = ask(t, keys::GATED_LOW, "gated", "degrade me").await?;
        let refused = ask(t, keys::GATED_LOW, "gated-strict", "refuse me").await?;
        Ok::<_, String>((degraded, refused))
    };
    let (holder, low) = tokio::join!(holder, low);
    holder?.0.expect(200)?;
    let ((degraded, degraded_took), (refused, refused_took)) = low?;
    ensure_eq!(
        peak.get(),
        1,
        "requests the replica of capacity 1 held at once"
    );

    super::routing::is_degraded(t, &degraded, "saturated").await?;
    ensure!(
        degraded_took >= Duration::from_millis(LOW_WAIT_MS),
        "degraded after {degraded_took:?}, before the low priority's wait ({LOW_WAIT_MS} ms)"
    );

    refused.expect_error(429, "rate_limit_error", "capacity_exceeded")?;
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .ok_or("a 429 without a numeric Retry-After")?;
    ensure!(
        (1..=60).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    ensure!(
        refused_took < Duration::from_millis(3 * LOW_WAIT_MS),
        "refused after {refused_took:?}: it waited longer than the low priority may"
    );
    let record = t.the_record(&refused.request_id()).await?;
    ensure_eq!(record["status"], 429, "the usage record's status");
    ensure_eq!(record["error"], "saturated", "the usage record's error");

    // Free again: a low request is served by the replica itself.
    gated.set_latency(0, 0);
    let (served, _) = ask(t, keys::GATED_LOW, "gated", "served").await?;
    served.expect(200)?;
    ensure_eq!(
        served.header("x-edgegate-degraded"),
        None,
        "once the replica is free"
    );
    Ok(())
}
