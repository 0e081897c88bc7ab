//! Routing: the canary split, stickiness per user, the pin header, and the
//! fallback chain when a version's only region is down; a degraded answer,
//! marked, when a route's model cannot serve and its policy says so. The simulated
//! backends answer with the upstream model name, so `model` shows the version.

use crate::client::{CHAT, Reply, chat_body, content_of, region_of};
use crate::gateway::{DEGRADED_MAX_TOKENS, LONE_TTL_SECONDS, PIN_HEADER, keys};
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

/// The upstream model that answered `user`'s request.
async fn version_for(t: &Target, user: String) -> Result<String, String> {
    let mut body = chat_body("which version?");
    body["user"] = json!(user);
    let answer = t.chat(keys::ROUTING, &body).await?.expect(200)?;
    Ok(answer["model"].as_str().unwrap_or_default().to_owned())
}

pub async fn canary_split_90_10(t: &Target) -> Outcome {
    const USERS: usize = 2_000;
    let versions: Vec<Result<String, String>> = futures_util::stream::iter(0..USERS)
        .map(|i| version_for(t, format!("canary-user-{i}")))
        .buffer_unordered(32)
        .collect()
        .await;
    let mut canary = 0;
    for version in versions {
        match version?.as_str() {
            "chat-v1" => {}
            "chat-v2" => canary += 1,
            other => return Err(format!("answered by unexpected model {other:?}")),
        }
    }
    let share = canary as f64 * 100.0 / USERS as f64;
    ensure!(
        (7.0..=13.0).contains(&share),
        "the 10% canary got {share:.1}% of {USERS} users"
    );
    Ok(())
}

pub async fn same_user_same_version(t: &Target) -> Outcome {
    let mut seen_canary = false;
    for i in 0..60 {
        let user = format!("sticky-user-{i}");
        let first = version_for(t, user.clone()).await?;
        seen_canary |= first == "chat-v2";
        for _ in 0..3 {
            ensure_eq!(
                version_for(t, user.clone()).await?,
                first,
                "{user}'s version"
            );
        }
    }
    ensure!(seen_canary, "none of 60 users got the canary");
    Ok(())
}

pub async fn pin_header_overrides_split(t: &Target) -> Outcome {
    let pinned = |version: &str| {
        let mut body = chat_body("pinned");
        body["user"] = json!("pinned-user");
        t.post(CHAT)
            .key(keys::ROUTING)
            .header(PIN_HEADER, version)
            .json(&body)
            .send()
    };
    for (version, upstream) in [("v2", "chat-v2"), ("v1", "chat-v1")] {
        for _ in 0..3 {
            let answer = pinned(version).await?.expect(200)?;
            ensure_eq!(answer["model"], upstream, "pinned to {version}");
        }
    }
    let unknown = pinned("v9").await?;
    unknown.expect_error(400, "invalid_request_error", "invalid_request")?;
    Ok(())
}

pub async fn fallback_when_version_is_down(t: &Target) -> Outcome {
    let solo = json!({
        "model": "solo",
        "messages": [{"role": "user", "content": "solo or fallback?"}],
        "max_tokens": 8,
    });
    let solo = &solo;
    let ask = || async move {
        let answer: Value = t.chat(keys::ROUTING, solo).await?.expect(200)?;
        let region = region_of(content_of(&answer))
            .unwrap_or_default()
            .to_owned();
        Ok::<_, String>((
            answer["model"].as_str().unwrap_or_default().to_owned(),
            region,
        ))
    };
    ensure_eq!(
        ask().await?,
        ("solo-v1".to_owned(), "solo-east".to_owned()),
        "(model, region) while solo-east is up"
    );
    // `solo` has one region; its route falls back to chat@v1.
    t.backend("solo-east").set_down(true);
    ensure_eq!(
        ask().await?,
        ("chat-v1".to_owned(), "us-east".to_owned()),
        "(model, region) while solo-east is down"
    );
    Ok(())
}

pub async fn a_stale_answer_when_every_attempt_fails(t: &Target) -> Outcome {
    let body = json!({"model": "lone", "temperature": 0, "max_tokens": 20,
                      "messages": [{"role": "user", "content": "keep me"}]});
    let first = t.chat(keys::ROUTING, &body).await?;
    let kept = first.expect(200)?;
    ensure_eq!(
        first.header("x-edgegate-cache"),
        Some("MISS"),
        "the first answer"
    );
    tokio::time::sleep(Duration::from_millis(LONE_TTL_SECONDS * 1000 + 300)).await;
    t.backend("solo-east").set_down(true);
    let stale = t.chat(keys::ROUTING, &body).await?;
    let answer = stale.expect(200)?;
    ensure_eq!(
        stale.header("x-edgegate-cache"),
        Some("STALE"),
        "x-edgegate-cache"
    );
    ensure_eq!(
        stale.header("x-edgegate-degraded"),
        Some("stale"),
        "x-edgegate-degraded"
    );
    ensure_eq!(content_of(&answer), content_of(&kept), "the kept answer");
    let record = t.the_record(&stale.request_id()).await?;
    ensure_eq!(record["degraded"], "stale", "the usage record");
    ensure_eq!(record["cache"], "stale", "the usage record's cache status");
    // A request never answered before has nothing to fall back on.
    let mut other = body.clone();
    other["messages"][0]["content"] = json!("never kept");
    let none = t.chat(keys::ROUTING, &other).await?;
    none.expect_error(502, "upstream_error", "upstream_error")?;
    // Back up: a fresh answer again (which also resets the breaker).
    t.backend("solo-east").set_down(false);
    let fresh = t.chat(keys::ROUTING, &body).await?;
    fresh.expect(200)?;
    ensure_eq!(
        fresh.header("x-edgegate-cache"),
        Some("MISS"),
        "once solo-east is back"
    );
    ensure_eq!(
        fresh.header("x-edgegate-degraded"),
        None,
        "once solo-east is back"
    );
    Ok(())
}

/// Checks that `reply` is the `tiny` model's answer, capped, marked with
/// `reason` in its header and its usage record; the record.
pub async fn is_degraded(t: &Target, reply: &Reply, reason: &str) -> Result<Value, String> {
    let answer = reply.expect(200)?;
    ensure_eq!(
        reply.header("x-edgegate-degraded"),
        Some(reason),
        "x-edgegate-degraded"
    );
    ensure_eq!(answer["model"], "tiny", "the degraded answer's model");
    ensure!(
        answer["usage"]["completion_tokens"].as_u64() <= Some(DEGRADED_MAX_TOKENS),
        "a degraded answer past the cap: {}",
        answer["usage"]
    );
    let record = t.the_record(&reply.request_id()).await?;
    ensure_eq!(record["degraded"], reason, "the usage record");
    Ok(record)
}

pub async fn a_degraded_answer_when_the_primary_cannot_serve(t: &Target) -> Outcome {
    let body = |model: &str| {
        json!({
            "model": model,
            "messages": [{"role": "user", "content": "degrade me"}],
            "max_tokens": 50,
        })
    };
    let up = t.chat(keys::ROUTING, &body("lead")).await?;
    up.expect(200)?;
    ensure_eq!(
        up.header("x-edgegate-degraded"),
        None,
        "while solo-east is up"
    );
    t.backend("solo-east").set_down(true);
    // `lead` degrades to `tiny`, capped; `lone` has no policy.
    let degraded = t.chat(keys::ROUTING, &body("lead")).await?;
    let record = is_degraded(t, &degraded, "primary_unavailable").await?;
    // Recorded (and priced, and ledgered) under the model that answered.
    ensure_eq!(record["model"], "tiny", "the usage record's model");
    let lone = t.chat(keys::ROUTING, &body("lone")).await?;
    lone.expect_error(502, "upstream_error", "upstream_error")?;
    ensure_eq!(lone.header("x-edgegate-degraded"), None, "without a policy");
    // Back up: the primary answers again, undegraded (and the answer resets
    // the breaker the failures above pushed towards open, which on the
    // Worker no probe would reset before later cases).
    t.backend("solo-east").set_down(false);
    let back = t.chat(keys::ROUTING, &body("lead")).await?;
    let answer = back.expect(200)?;
    ensure_eq!(
        back.header("x-edgegate-degraded"),
        None,
        "once solo-east is back"
    );
    ensure_eq!(answer["model"], "lead", "the primary's answer");
    Ok(())
}
