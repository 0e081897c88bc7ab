//! A request's life after admission, decided once in the core's exchange:
//! failover before the client saw content, an SSE error event after, the
//! route's total time bounding the attempts, streamed answers cached, a
//! JSON answer to a stream request replayed as SSE, and exactly one usage
//! record per request on every path.

use crate::client::{CHAT, chat_body, region_of};
use crate::gateway::{TINY_FIRST_BYTE_MS, TINY_TOTAL_MS, keys};
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A Worker writes its record after the response (`waitUntil`).
const RECORD_WITHIN: Duration = Duration::from_secs(5);

fn streamed(content: &str) -> Value {
    let mut body = chat_body(content);
    body["stream"] = json!(true);
    body["max_tokens"] = json!(12);
    body
}

pub async fn a_break_before_content_fails_over_invisibly(t: &Target) -> Outcome {
    // The role-only opening chunk, then the connection drops.
    t.backend("us-east").break_after_chunks(Some(1));
    let reply = t
        .post(CHAT)
        .key(keys::LIFECYCLE)
        .json(&streamed("break early"))
        .stream()
        .await?;
    ensure_eq!(reply.status, 200, "status");
    ensure!(
        reply.ends_with_done(),
        "the stream does not end with [DONE]"
    );
    let chunks = reply.chunks()?;
    ensure!(
        chunks.iter().all(|c| c.get("error").is_none()),
        "the client saw an error: {chunks:?}"
    );
    let roles = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["role"].is_string())
        .count();
    ensure_eq!(roles, 1, "opening role chunks the client saw");
    let content = reply.content()?;
    ensure!(
        region_of(&content).is_some_and(|r| r != "us-east"),
        "answered by {:?}: {content}",
        region_of(&content)
    );
    let id = reply.request_id()?;
    let record = t.the_record(&id).await?;
    ensure_eq!(record["status"], json!(200), "record status");
    ensure_eq!(record["attempts"], json!(2), "record attempts");
    Ok(())
}

pub async fn a_break_after_content_is_an_error_event_and_a_502_record(t: &Target) -> Outcome {
    // The role chunk and two words, then the connection drops. Paced, so
    // the words are on the wire before the break (a backend that breaks
    // with answers still in its buffers sends none of them).
    let us_east = t.backend("us-east");
    us_east.set_latency(0, 50);
    us_east.break_after_chunks(Some(3));
    let reply = t
        .post(CHAT)
        .key(keys::LIFECYCLE)
        .json(&streamed("break late"))
        .stream()
        .await?;
    ensure_eq!(reply.status, 200, "status");
    let content = reply.content().unwrap_or_default();
    ensure!(
        region_of(&content) == Some("us-east"),
        "the words before the break: {content:?}"
    );
    ensure_eq!(
        last_error_code(&reply)?,
        json!("upstream_unavailable"),
        "the last event"
    );
    ensure!(
        !reply.events.iter().any(|e| e.data == "[DONE]"),
        "a broken stream ended with [DONE]"
    );
    ensure_eq!(us_east.requests_received(), 1, "attempts after content");
    let id = reply.request_id()?;
    let record = t.the_record(&id).await?;
    ensure_eq!(record["status"], json!(502), "record status");
    ensure_eq!(
        record["error"],
        json!("upstream_unavailable"),
        "record error"
    );
    ensure!(
        record["output_tokens"].as_u64().is_some_and(|n| n > 0),
        "what was relayed is charged: {record}"
    );
    Ok(())
}

pub async fn attempts_stop_at_the_routes_total_time(t: &Target) -> Outcome {
    let regions = ["us-east", "eu-west", "ap-southeast"];
    for region in regions {
        t.backend(region).set_latency(TINY_FIRST_BYTE_MS + 1_500, 0);
    }
    let mut body = chat_body("slow everywhere");
    body["model"] = json!("tiny");
    let started = Instant::now();
    let reply = t.post(CHAT).key(keys::LIFECYCLE).json(&body).send().await?;
    let took = started.elapsed();
    reply.expect_error(504, "upstream_error", "upstream_timeout")?;
    let total = Duration::from_millis(TINY_TOTAL_MS);
    ensure!(
        took >= total.mul_f64(0.9) && took < total + Duration::from_millis(700),
        "answered after {took:?}: the route's total is {total:?}"
    );
    let tried: u64 = regions
        .iter()
        .map(|r| t.backend(r).requests_received())
        .sum();
    ensure_eq!(tried, 2, "attempts within the total time");
    let record = t.the_record(&reply.request_id()).await?;
    ensure_eq!(record["attempts"], json!(2), "record attempts");
    ensure_eq!(record["status"], json!(504), "record status");
    Ok(())
}

pub async fn a_streamed_answer_is_cached(t: &Target) -> Outcome {
    let mut body = streamed("keep my stream");
    body["temperature"] = json!(0);
    let reply = t
        .post(CHAT)
        .key(keys::LIFECYCLE)
        .json(&body)
        .stream()
        .await?;
    ensure_eq!(reply.header("x-edgegate-cache"), Some("MISS"), "first");
    let streamed_content = reply.content()?;
    body["stream"] = json!(false);
    let deadline = Instant::now() + RECORD_WITHIN;
    loop {
        let r = t.chat(keys::LIFECYCLE, &body).await?;
        let answer = r.expect(200)?;
        match r.header("x-edgegate-cache") {
            Some("HIT") => {
                ensure_eq!(
                    answer["choices"][0]["message"]["content"],
                    json!(streamed_content),
                    "the cached answer"
                );
                return Ok(());
            }
            Some("MISS") if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return Err(format!("no HIT within {RECORD_WITHIN:?} (last: {other:?})")),
        }
    }
}

pub async fn one_record_per_request_on_every_path(t: &Target) -> Outcome {
    // A cache hit.
    let mut body = chat_body("count my records");
    body["temperature"] = json!(0);
    let first = t.chat(keys::LIFECYCLE, &body).await?;
    first.expect(200)?;
    let deadline = Instant::now() + RECORD_WITHIN;
    let hit = loop {
        let r = t.chat(keys::LIFECYCLE, &body).await?;
        r.expect(200)?;
        if r.header("x-edgegate-cache") == Some("HIT") {
            break r;
        }
        ensure!(Instant::now() < deadline, "no HIT within {RECORD_WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let record = t.the_record(&hit.request_id()).await?;
    ensure_eq!(record["cache"], json!("hit"), "a hit's record");

    // A 429 (the tight tier allows two a minute).
    let mut limited = None;
    for _ in 0..4 {
        let r = t.chat(keys::TIGHT, &chat_body("count my 429")).await?;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.ok_or("no 429 from the tight tier")?;
    let record = t.the_record(&limited.request_id()).await?;
    ensure_eq!(record["status"], json!(429), "a 429's record");

    // A stream.
    let reply = t
        .post(CHAT)
        .key(keys::LIFECYCLE)
        .json(&streamed("count my stream"))
        .stream()
        .await?;
    let id = reply.request_id()?;
    let record = t.the_record(&id).await?;
    ensure_eq!(record["status"], json!(200), "a stream's record");

    // A client that leaves mid-stream (slow wherever it is served).
    for region in ["us-east", "eu-west", "ap-southeast"] {
        t.backend(region).set_latency(0, 100);
    }
    let response = t
        .post(CHAT)
        .key(keys::LIFECYCLE)
        .json(&streamed("leave my stream"))
        .unread()
        .await?;
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .ok_or("no x-request-id")?
        .to_owned();
    let mut body = response.bytes_stream();
    let _ = body.next().await;
    drop(body);
    let record = t.the_record(&id).await?;
    ensure_eq!(record["status"], json!(499), "a client that left");
    Ok(())
}

pub async fn a_json_answer_to_a_stream_request_is_replayed_as_sse(t: &Target) -> Outcome {
    t.reported_up("us-east").await?;
    t.backend("us-east").set_never_stream(true);
    let reply = t
        .post(CHAT)
        .key(keys::LIFECYCLE)
        .json(&streamed("json for a stream"))
        .stream()
        .await?;
    ensure_eq!(reply.status, 200, "status");
    ensure!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "content-type {:?}",
        reply.header("content-type")
    );
    ensure!(
        reply.ends_with_done(),
        "the replay does not end with [DONE]"
    );
    let content = reply.content()?;
    ensure!(
        region_of(&content) == Some("us-east"),
        "the replayed answer: {content:?}"
    );
    Ok(())
}

/// The stream's last event as an OpenAI error's `code`.
fn last_error_code(reply: &crate::client::StreamReply) -> Result<Value, String> {
    let last = reply.events.last().ok_or("an empty stream")?;
    let event: Value =
        serde_json::from_str(&last.data).map_err(|e| format!("last event {:?}: {e}", last.data))?;
    Ok(event["error"]["code"].clone())
}

pub async fn an_endless_event_ends_the_stream_at_its_cap(t: &Target) -> Outcome {
    t.reported_up("us-east").await?;
    let us_east = t.backend("us-east");
    us_east.set_latency(0, 50);
    us_east.runaway_event_after_chunks(Some(3));
    let reply = t
        .post(CHAT)
        .key(keys::LIFECYCLE)
        .json(&streamed("run away"))
        .stream()
        .await?;
    ensure_eq!(reply.status, 200, "status");
    ensure!(
        reply.content().is_ok_and(|c| !c.is_empty()),
        "the words before the endless event"
    );
    ensure_eq!(
        last_error_code(&reply)?,
        json!("upstream_invalid_response"),
        "the last event"
    );
    let id = reply.request_id()?;
    let record = t.the_record(&id).await?;
    ensure_eq!(record["status"], json!(502), "record status");
    Ok(())
}

pub async fn a_stream_ends_at_the_routes_total_time(t: &Target) -> Outcome {
    t.reported_up("us-east").await?;
    // 12 words 300 ms apart: 3.6 s, past the tiny route's 2 s.
    t.backend("us-east").set_latency(0, 300);
    let mut body = streamed("a long answer");
    body["model"] = json!("tiny");
    let started = Instant::now();
    let reply = t
        .post(CHAT)
        .key(keys::LIFECYCLE)
        .json(&body)
        .stream()
        .await?;
    let took = started.elapsed();
    ensure_eq!(reply.status, 200, "status");
    ensure_eq!(
        last_error_code(&reply)?,
        json!("upstream_timeout"),
        "the last event"
    );
    let total = Duration::from_millis(TINY_TOTAL_MS);
    ensure!(
        took >= total.mul_f64(0.9) && took < total + Duration::from_millis(700),
        "ended after {took:?}: the route's total is {total:?}"
    );
    let id = reply.request_id()?;
    let record = t.the_record(&id).await?;
    ensure_eq!(record["status"], json!(504), "record status");
    Ok(())
}

pub async fn an_answer_past_the_cap_is_refused(t: &Target) -> Outcome {
    // Every region pads its answers past the 64 MiB a non-streamed answer may have.
    for region in ["us-east", "eu-west", "ap-southeast"] {
        t.backend(region).pad_answers(65 << 20);
    }
    let reply = t
        .post(CHAT)
        .key(keys::LIFECYCLE)
        .json(&chat_body("a huge answer"))
        .send()
        .await?;
    reply.expect_error(502, "upstream_error", "upstream_invalid_response")?;
    let record = t.the_record(&reply.request_id()).await?;
    ensure_eq!(record["status"], json!(502), "record status");
    ensure_eq!(record["attempts"], json!(1), "a cap is not retried");
    Ok(())
}
