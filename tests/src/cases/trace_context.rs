//! W3C trace context: a client's `traceparent` reaches the backend with
//! the gateway's span as its parent (and its `tracestate` unchanged); a
//! request without one starts a trace, which its usage record names. The
//! spans reach the suite's OTLP collector.

use crate::client::{CHAT, chat_body};
use crate::gateway::keys;
use crate::suite::Outcome;
use crate::target::{Runner, Target};
use crate::{ensure, ensure_eq};
use serde_json::json;
use std::time::{Duration, Instant};

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// What us-east was last sent as `name`.
fn sent(t: &Target, name: &str) -> Result<Option<String>, String> {
    t.last_header("us-east", name)
}

pub async fn a_trace_reaches_the_backend_and_the_record(t: &Target) -> Outcome {
    let reply = t
        .post(CHAT)
        .key(keys::ROUTING)
        .header("traceparent", CLIENT_PARENT)
        .header("tracestate", "congo=t61rcWkgMzE")
        .json(&chat_body("traced"))
        .send()
        .await?;
    reply.expect(200)?;
    let parent = sent(t, "traceparent")?.ok_or("no traceparent upstream")?;
    ensure!(
        parent.starts_with(&format!("00-{CLIENT_TRACE}-")) && parent.ends_with("-01"),
        "the client's trace, continued: {parent}"
    );
    ensure!(
        parent != CLIENT_PARENT,
        "the gateway's span is the backend's parent: {parent}"
    );
    ensure_eq!(
        sent(t, "tracestate")?,
        Some("congo=t61rcWkgMzE".to_owned()),
        "tracestate"
    );
    let record = t.the_record(&reply.request_id()).await?;
    ensure_eq!(
        record["trace_id"],
        CLIENT_TRACE,
        "the usage record's trace id"
    );

    let fresh = t.chat(keys::ROUTING, &chat_body("untraced")).await?;
    fresh.expect(200)?;
    let parent = sent(t, "traceparent")?.ok_or("no traceparent upstream")?;
    let record = t.the_record(&fresh.request_id()).await?;
    let trace_id = record["trace_id"]
        .as_str()
        .ok_or("no trace id in the record")?;
    ensure_eq!(trace_id.len(), 32, "a 128-bit trace id");
    ensure_eq!(
        &parent[3..35],
        trace_id,
        "the trace the backend and the record name"
    );
    ensure_eq!(sent(t, "tracestate")?, None, "no tracestate of its own");
    Ok(())
}

/// The trace the failover case continues (its own: spans of the case
/// before may still be on their way to the collector).
const FAILOVER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const FAILOVER_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The collector's spans of `trace_id` once `n` have come (the runner
/// exports in batches, within a second).
async fn spans_of(
    t: &Target,
    trace_id: &str,
    n: usize,
) -> Result<Vec<edgegate_sim::collector::CollectedSpan>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans = t.collector.trace(trace_id);
        if spans.len() >= n || Instant::now() > deadline {
            return Ok(spans);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The request's spans reach an OTLP collector: a server span under the
/// client's, and a client span per attempt under it, the answering one
/// being the parent its backend was sent; with the GenAI attributes.
pub async fn spans_of_a_failed_over_request_reach_the_collector(t: &Target) -> Outcome {
    // `solo`'s only region refuses once: `chat@v1` answers (a fallback).
    t.backend("solo-east").fail_next(1, 503);
    let solo = json!({"model": "solo", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "traced over two attempts"}]});
    let reply = t
        .post(CHAT)
        .key(keys::ROUTING)
        .header("traceparent", FAILOVER_PARENT)
        .json(&solo)
        .send()
        .await?;
    reply.expect(200)?;
    let record = t.the_record(&reply.request_id()).await?;
    let spans = spans_of(t, FAILOVER_TRACE, 3).await?;
    ensure_eq!(spans.len(), 3, "spans of the trace: {spans:#?}");
    let server = spans
        .iter()
        .find(|s| s.kind == 2)
        .ok_or_else(|| format!("no server span: {spans:#?}"))?;
    ensure_eq!(
        server.parent_span_id.as_deref(),
        Some("00f067aa0ba902b7"),
        "the server span's parent is the client's"
    );
    ensure_eq!(server.service.as_deref(), Some("edgegate"), "service.name");
    let attr = |s: &edgegate_sim::collector::CollectedSpan, k: &str| s.attribute(k).cloned();
    ensure_eq!(
        attr(server, "gen_ai.operation.name"),
        Some(json!("chat")),
        "operation"
    );
    ensure_eq!(
        attr(server, "gen_ai.request.model"),
        Some(json!("solo")),
        "request model"
    );
    ensure_eq!(
        attr(server, "gen_ai.response.model"),
        Some(json!("chat")),
        "response model"
    );
    ensure_eq!(
        attr(server, "gen_ai.usage.output_tokens"),
        Some(record["output_tokens"].clone()),
        "the record's output tokens"
    );
    ensure_eq!(
        attr(server, "edgegate.fallback"),
        Some(json!("model")),
        "fallback"
    );
    let mut tries: Vec<_> = spans.iter().filter(|s| s.kind == 3).collect();
    tries.sort_by_key(|s| s.start_unix_ns);
    ensure_eq!(tries.len(), 2, "one client span per attempt");
    for attempt in &tries {
        ensure_eq!(
            attempt.parent_span_id.as_deref(),
            Some(server.span_id.as_str()),
            "an attempt's parent is the server span"
        );
    }
    let (failed, answered) = (tries[0], tries[1]);
    ensure_eq!(
        failed.status_code,
        2,
        "the failed attempt's status is ERROR"
    );
    ensure_eq!(
        attr(failed, "http.response.status_code"),
        Some(json!(503)),
        "503"
    );
    ensure_eq!(
        attr(failed, "edgegate.target"),
        Some(json!("solo-east")),
        "target"
    );
    ensure_eq!(
        attr(answered, "gen_ai.usage.input_tokens"),
        Some(record["input_tokens"].clone()),
        "the answering attempt's input tokens"
    );
    // The backend that answered was sent the answering attempt's span.
    let region = record["region"].as_str().ok_or("no region in the record")?;
    let backend = region.rsplit('/').next().unwrap_or(region);
    let parent = t
        .last_header(backend, "traceparent")?
        .ok_or("no traceparent upstream")?;
    ensure_eq!(
        parent,
        format!("00-{FAILOVER_TRACE}-{}-01", answered.span_id),
        "the backend's parent is the answering attempt's span"
    );
    let auth = t
        .collector
        .last_headers()
        .into_iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v);
    ensure_eq!(
        auth.as_deref(),
        Some("Bearer conformance-collector-token"),
        "the export's header from the secret"
    );

    // The collector refuses: requests are served as usual, and the spans
    // it would have had are counted as dropped.
    t.collector.set_refusing(true);
    let dropped_before = dropped(t).await?;
    for i in 0..5 {
        t.chat(keys::ROUTING, &chat_body(&format!("collector down {i}")))
            .await?
            .expect(200)?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = dropped(t).await?;
        if now >= dropped_before + 10.0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "dropped spans counted: {dropped_before} then {now}, want 10 more"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Spans dropped because the collector failed: local-runner's
/// `edgegate_otlp_spans_total{outcome="dropped_export_failed"}`, the
/// Worker's `{"otlp_spans_dropped": n, "reason": "export_failed"}` lines.
async fn dropped(t: &Target) -> Result<f64, String> {
    if t.runner == Runner::Workerd {
        return Ok(t
            .logged_json()
            .iter()
            .filter(|l| l["reason"] == "export_failed")
            .filter_map(|l| l["otlp_spans_dropped"].as_f64())
            .sum());
    }
    let metrics = t.metrics().await?;
    let line = metrics
        .lines()
        .find(|l| l.starts_with(r#"edgegate_otlp_spans_total{outcome="dropped_export_failed"}"#))
        .ok_or_else(|| format!("no dropped-span counter in /metrics:\n{metrics}"))?;
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("not a number: {line}"))
}
