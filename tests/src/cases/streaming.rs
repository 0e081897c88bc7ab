//! Streaming: chunks pass through with the backend's pacing, a stall past
//! the inactivity timeout ends the stream with an SSE error event, and the
//! stream's real usage settles the token reservation afterwards.

use super::limits::{SETTLE_TOLERANCE, SETTLE_WAIT};
use crate::client::{CHAT, StreamReply, chat_body};
use crate::gateway::{METER_BURST, STREAM_IDLE_MS, keys};
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TOKEN_INTERVAL_MS: u64 = 60;

async fn stream(t: &Target, key: &str, body: &Value) -> Result<StreamReply, String> {
    let reply = t.post(CHAT).key(key).json(body).stream().await?;
    ensure_eq!(reply.status, 200, "status");
    ensure!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "content-type {:?}",
        reply.header("content-type")
    );
    Ok(reply)
}

fn streamed(content: &str, max_tokens: u64) -> Value {
    let mut body = chat_body(content);
    body["stream"] = json!(true);
    body["max_tokens"] = json!(max_tokens);
    body
}

pub async fn chunks_keep_the_backend_pacing(t: &Target) -> Outcome {
    t.backend("us-east").set_latency(0, TOKEN_INTERVAL_MS);
    let reply = stream(t, keys::STREAMING, &streamed("pace me", 8)).await?;
    ensure!(
        reply.ends_with_done(),
        "the stream does not end with [DONE]"
    );
    let chunks = reply.chunks()?;
    ensure!(
        chunks
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null)),
        "a usage chunk the client did not ask for"
    );
    let arrivals = reply.content_arrivals();
    ensure_eq!(arrivals.len(), 8, "content chunks");
    let spread = arrivals[7] - arrivals[0];
    let paced = Duration::from_millis(TOKEN_INTERVAL_MS * 7);
    ensure!(
        spread >= paced.mul_f64(0.7),
        "8 chunks paced {TOKEN_INTERVAL_MS} ms apart arrived within {spread:?}: buffered"
    );
    let gaps = arrivals.windows(2).map(|w| w[1] - w[0]);
    let spaced = gaps
        .filter(|g| *g >= Duration::from_millis(TOKEN_INTERVAL_MS / 2))
        .count();
    ensure!(spaced >= 5, "only {spaced} of 7 gaps kept the pacing");
    Ok(())
}

pub async fn stall_ends_with_an_error_event(t: &Target) -> Outcome {
    let us_east = t.backend("us-east");
    us_east.stall_after_chunks(Some(3));
    let started = Instant::now();
    let reply = stream(t, keys::STREAMING, &streamed("stall me", 20)).await?;
    let last = reply.events.last().ok_or("an empty stream")?;
    let event: Value =
        serde_json::from_str(&last.data).map_err(|e| format!("last event {:?}: {e}", last.data))?;
    let error = event["error"]
        .as_object()
        .ok_or_else(|| format!("the last event is not an error: {event}"))?;
    ensure_eq!(
        error.get("code"),
        Some(&json!("upstream_timeout")),
        "error.code"
    );
    ensure!(
        error.get("message").is_some_and(Value::is_string)
            && error.contains_key("type")
            && error.contains_key("param"),
        "not an OpenAI error: {event}"
    );
    let idle = Duration::from_millis(STREAM_IDLE_MS);
    ensure!(
        last.at >= idle.mul_f64(0.9),
        "ended after {:?}, before the {idle:?} inactivity timeout",
        last.at
    );
    ensure!(
        started.elapsed() < idle * 5,
        "took {:?} to end",
        started.elapsed()
    );
    // The gateway hung up on the stalled backend.
    let deadline = Instant::now() + Duration::from_secs(3);
    while us_east.streams_cancelled() == 0 {
        ensure!(
            Instant::now() < deadline,
            "the stalled upstream stream was never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

pub async fn usage_settled_after_the_stream(t: &Target) -> Outcome {
    let mut body = streamed("meter my stream", 500);
    body["stream_options"] = json!({"include_usage": true});
    let remaining = |r: &StreamReply| -> Result<u64, String> {
        r.header("x-ratelimit-remaining-tokens")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| "no x-ratelimit-remaining-tokens".to_owned())
    };
    let first = stream(t, keys::METER_STREAM, &body).await?;
    ensure!(
        first.ends_with_done(),
        "the stream does not end with [DONE]"
    );
    let chunks = first.chunks()?;
    let usage = chunks
        .last()
        .and_then(|c| c["usage"]["total_tokens"].as_u64())
        .ok_or("the client asked for usage but the last chunk has none")?;
    let after_reserve = remaining(&first)?;
    let reserved = METER_BURST - after_reserve;
    ensure!(
        reserved >= 500 && reserved > usage,
        "reserved {reserved}, used {usage}"
    );
    tokio::time::sleep(SETTLE_WAIT).await;
    let second = stream(t, keys::METER_STREAM, &body).await?;
    let charged = after_reserve as i64 - remaining(&second)? as i64;
    ensure!(
        charged.abs_diff(usage as i64) <= SETTLE_TOLERANCE,
        "charged {charged} tokens for a stream that used {usage} ({reserved} reserved)"
    );
    Ok(())
}
