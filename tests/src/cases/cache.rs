//! The response cache: MISS then HIT for a deterministic request (without
//! calling a backend), BYPASS for a sampled one, no hit across tenants
//! when the route caches per tenant, and a fallback's answer never served
//! from the cache for the primary model; identical requests in flight
//! share one backend call (coalescing).

use crate::client::{chat_body, content_of};
use crate::gateway::keys;
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The Worker stores answers after responding; a HIT may take a moment.
const HIT_WITHIN: Duration = Duration::from_secs(5);

fn deterministic(content: &str) -> Value {
    let mut body = chat_body(content);
    body["temperature"] = json!(0);
    body
}

/// A MISS answered by a backend, then a HIT with the same answer that no backend saw.
async fn miss_then_hit(t: &Target, key: &str, body: &Value) -> Outcome {
    let first = t.chat(key, body).await?;
    let original = first.expect(200)?;
    ensure_eq!(
        first.header("x-edgegate-cache"),
        Some("MISS"),
        "first x-edgegate-cache"
    );
    let us_east = t.backend("us-east");
    let deadline = Instant::now() + HIT_WITHIN;
    loop {
        let seen = us_east.requests_received();
        let r = t.chat(key, body).await?;
        let answer = r.expect(200)?;
        match r.header("x-edgegate-cache") {
            Some("HIT") => {
                ensure_eq!(
                    content_of(&answer),
                    content_of(&original),
                    "the cached answer"
                );
                ensure_eq!(
                    us_east.requests_received(),
                    seen,
                    "backend requests during a HIT"
                );
                return Ok(());
            }
            Some("MISS") if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return Err(format!("no HIT within {HIT_WITHIN:?} (last: {other:?})")),
        }
    }
}

pub async fn miss_then_hit_when_deterministic(t: &Target) -> Outcome {
    miss_then_hit(t, keys::CACHE_A, &deterministic("cache me")).await?;
    // A seed makes a sampled request deterministic too.
    let mut seeded = chat_body("cache me, seeded");
    seeded["temperature"] = json!(0.8);
    seeded["seed"] = json!(7);
    miss_then_hit(t, keys::CACHE_A, &seeded).await
}

pub async fn bypass_when_sampled(t: &Target) -> Outcome {
    let mut sampled = chat_body("sample me");
    sampled["temperature"] = json!(0.7);
    for _ in 0..2 {
        let r = t.chat(keys::CACHE_A, &sampled).await?;
        r.expect(200)?;
        ensure_eq!(
            r.header("x-edgegate-cache"),
            Some("BYPASS"),
            "x-edgegate-cache"
        );
    }
    // The client can opt out of a cacheable request.
    let opted_out = t
        .post(crate::client::CHAT)
        .key(keys::CACHE_A)
        .header("cache-control", "no-store")
        .json(&deterministic("cache me"))
        .send()
        .await?;
    opted_out.expect(200)?;
    ensure_eq!(
        opted_out.header("x-edgegate-cache"),
        Some("BYPASS"),
        "x-edgegate-cache with Cache-Control: no-store"
    );
    Ok(())
}

pub async fn no_hit_across_tenants(t: &Target) -> Outcome {
    let body = deterministic("cached for one tenant only");
    miss_then_hit(t, keys::CACHE_A, &body).await?;
    let other = t.chat(keys::CACHE_B, &body).await?;
    other.expect(200)?;
    ensure!(
        other.header("x-edgegate-cache") == Some("MISS"),
        "another tenant got x-edgegate-cache {:?} for a per-tenant cached answer",
        other.header("x-edgegate-cache")
    );
    Ok(())
}

/// `solo` falls back to `chat@v1`. An answer of the fallback must not be
/// kept under the key of the primary (`solo@v1`): later `solo` requests
/// would get `chat`'s answer until the TTL ran out.
pub async fn fallback_answer_not_cached_for_primary(t: &Target) -> Outcome {
    let mut body = deterministic("solo, cached?");
    body["model"] = json!("solo");
    let solo = t.backend("solo-east");
    solo.fail_next(1, 503);
    let fallback = t.chat(keys::ROUTING, &body).await?;
    let answer = fallback.expect(200)?;
    ensure_eq!(answer["model"], "chat-v1", "the fallback's answer");
    // The Worker stores answers after responding: give a wrong store the
    // time it would take to land, asking all along.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut primary = None;
    while Instant::now() < deadline {
        let r = t.chat(keys::ROUTING, &body).await?;
        let answer = r.expect(200)?;
        ensure_eq!(
            answer["model"],
            "solo-v1",
            "the answer for solo once solo-east is back (x-edgegate-cache {:?})",
            r.header("x-edgegate-cache")
        );
        primary.get_or_insert(answer);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The primary's own answer is cached: the cache was on all along.
    let deadline = Instant::now() + HIT_WITHIN;
    loop {
        let seen = solo.requests_received();
        let r = t.chat(keys::ROUTING, &body).await?;
        let answer = r.expect(200)?;
        if r.header("x-edgegate-cache") == Some("HIT") {
            ensure_eq!(answer["model"], "solo-v1", "the cached answer's model");
            ensure_eq!(
                content_of(&answer),
                primary.as_ref().map(content_of).unwrap_or_default(),
                "the cached answer"
            );
            ensure_eq!(
                solo.requests_received(),
                seen,
                "solo-east requests during a HIT"
            );
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "no HIT for solo within {HIT_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn identical_requests_in_flight_share_one_backend_call(t: &Target) -> Outcome {
    let us_east = t.backend("us-east");
    // Long enough that all of them arrive while the first is in flight.
    us_east.set_latency(800, 0);
    let body = deterministic("coalesce me");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let seen = us_east.requests_received();
    // 50 at once, one of them streamed.
    let calls = (0..50).map(|i| t.chat(keys::COALESCE, if i == 7 { &streamed } else { &body }));
    let replies = futures_util::future::join_all(calls).await;
    ensure_eq!(
        us_east.requests_received() - seen,
        1,
        "backend calls for 50 identical requests"
    );
    let mut answers = std::collections::BTreeSet::new();
    let mut labels: std::collections::BTreeMap<String, usize> = Default::default();
    for (i, reply) in replies.into_iter().enumerate() {
        let reply = reply?;
        let label = reply.header("x-edgegate-cache").unwrap_or("-").to_owned();
        if i == 7 {
            ensure!(
                reply.status == 200 && reply.text.ends_with("data: [DONE]\n\n"),
                "the streamed one: {} {}",
                reply.status,
                reply.text
            );
        } else {
            answers.insert(content_of(&reply.expect(200)?).to_owned());
        }
        // Each record check waits for the record to settle: two are enough.
        if label == "COALESCED" && labels.get("COALESCED").copied().unwrap_or(0) < 2 {
            let record = t.the_record(&reply.request_id()).await?;
            ensure_eq!(record["cache"], "coalesced", "request {i}'s usage record");
        }
        *labels.entry(label).or_default() += 1;
    }
    ensure_eq!(answers.len(), 1, "distinct answers: {answers:?}");
    ensure_eq!(labels.get("MISS"), Some(&1), "x-edgegate-cache: {labels:?}");
    ensure!(
        labels.get("COALESCED").copied().unwrap_or(0) >= 40,
        "x-edgegate-cache: {labels:?}"
    );
    // 50 different ones are 50 calls.
    let seen = us_east.requests_received();
    let bodies: Vec<Value> = (0..50)
        .map(|i| deterministic(&format!("distinct {i}")))
        .collect();
    let replies =
        futures_util::future::join_all(bodies.iter().map(|b| t.chat(keys::COALESCE, b))).await;
    for reply in replies {
        reply?.expect(200)?;
    }
    ensure_eq!(
        us_east.requests_received() - seen,
        50,
        "backend calls for 50 different requests"
    );
    Ok(())
}
