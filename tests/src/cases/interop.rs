//! What real inference servers need from a gateway, checked against the
//! simulated backends: a request id backends accept (a UUID), and honest
//! charging when a backend reports no usage (llama.cpp's Python server never
//! sends a stream usage chunk) or a stream breaks off before it.

use super::limits::{SETTLE_TOLERANCE, SETTLE_WAIT};
use crate::client::{CHAT, StreamReply, chat_body};
use crate::gateway::{METER_BURST, keys};
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};
use serde_json::{Value, json};

/// `8-4-4-4-12` hex digits.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub async fn upstream_request_id_is_a_uuid(t: &Target) -> Outcome {
    let reply = t
        .chat(keys::INTEROP, &chat_body("which id do you see"))
        .await?;
    reply.expect(200)?;
    let client_id = reply.request_id();
    let seen = t
        .backend("us-east")
        .last_request()
        .ok_or("the backend saw no request")?;
    let upstream = seen
        .headers
        .iter()
        .find(|(name, _)| name == "x-request-id")
        .map(|(_, v)| v.clone())
        .ok_or("no x-request-id upstream")?;
    ensure!(
        is_uuid(&upstream),
        "upstream x-request-id `{upstream}` is not a UUID"
    );
    ensure_eq!(
        upstream.replace('-', ""),
        client_id.trim_start_matches("req_"),
        "the upstream id spells the client's"
    );
    Ok(())
}

fn remaining(r: &StreamReply) -> Result<u64, String> {
    r.header("x-ratelimit-remaining-tokens")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "no x-ratelimit-remaining-tokens".to_owned())
}

async fn stream(t: &Target, key: &str, body: &Value) -> Result<StreamReply, String> {
    let reply = t.post(CHAT).key(key).json(body).stream().await?;
    ensure_eq!(reply.status, 200, "status");
    Ok(reply)
}

/// Streams `body` twice on a `meter` tenant; the second reply's headers
/// show what the first was charged. Returns (charged, reserved, first reply).
pub(super) async fn charged_for(
    t: &Target,
    key: &str,
    body: &Value,
) -> Result<(u64, u64, StreamReply), String> {
    let first = stream(t, key, body).await?;
    let after_reserve = remaining(&first)?;
    let reserved = METER_BURST - after_reserve;
    tokio::time::sleep(SETTLE_WAIT).await;
    let second = stream(t, key, body).await?;
    let charged = after_reserve.saturating_sub(remaining(&second)?);
    Ok((charged, reserved, first))
}

/// The relayed text's words: every estimate counts at least one token each.
fn words(reply: &StreamReply) -> Result<u64, String> {
    Ok(reply.content()?.split_whitespace().count() as u64)
}

pub async fn stream_without_usage_is_charged_what_was_relayed(t: &Target) -> Outcome {
    t.backend("us-east").set_report_usage(false);
    let mut body = chat_body("count what you relay");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(500);
    body["stream_options"] = json!({"include_usage": true});
    let (charged, reserved, first) = charged_for(t, keys::METER_RELAYED, &body).await?;
    ensure!(
        first.ends_with_done(),
        "the stream does not end with [DONE]"
    );
    ensure!(
        first
            .chunks()?
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null)),
        "the backend sent usage although told not to"
    );
    let relayed = words(&first)?;
    ensure!(relayed >= 3, "only {relayed} words relayed");
    ensure!(
        charged >= relayed && charged + 400 < reserved,
        "charged {charged} tokens for {relayed} relayed words ({reserved} reserved): \
         a stream without usage is charged its prompt estimate and what was relayed"
    );
    Ok(())
}

pub async fn answer_without_usage_is_charged_what_was_relayed(t: &Target) -> Outcome {
    t.backend("us-east").set_report_usage(false);
    let mut body = chat_body("count this answer");
    body["max_tokens"] = json!(500);
    let first = t.chat(keys::METER_PLAIN, &body).await?;
    let answer = first.expect(200)?;
    ensure!(
        answer.get("usage").is_none(),
        "the backend reported usage: {answer}"
    );
    let remaining = |r: &crate::client::Reply| -> Result<u64, String> {
        r.header("x-ratelimit-remaining-tokens")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| "no x-ratelimit-remaining-tokens".to_owned())
    };
    let after_reserve = remaining(&first)?;
    let reserved = METER_BURST - after_reserve;
    tokio::time::sleep(SETTLE_WAIT).await;
    let second = t.chat(keys::METER_PLAIN, &body).await?;
    second.expect(200)?;
    let charged = after_reserve.saturating_sub(remaining(&second)?);
    let words = crate::client::content_of(&answer)
        .split_whitespace()
        .count() as u64;
    ensure!(
        words >= 3 && charged >= words && charged + 400 < reserved,
        "charged {charged} tokens for an answer of {words} words without usage ({reserved} reserved)"
    );
    Ok(())
}

pub async fn broken_stream_is_charged_what_was_relayed(t: &Target) -> Outcome {
    t.backend("us-east").stall_after_chunks(Some(4));
    let mut body = chat_body("break off after a few words");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(500);
    let (charged, reserved, first) = charged_for(t, keys::METER_BROKEN, &body).await?;
    ensure!(
        !first.ends_with_done(),
        "a stalled stream ended with [DONE]"
    );
    let relayed = words(&first)?;
    ensure!(relayed >= 1, "nothing relayed before the stall");
    ensure!(
        charged + SETTLE_TOLERANCE >= relayed && charged + 400 < reserved,
        "charged {charged} tokens for {relayed} words relayed before the stream broke \
         ({reserved} reserved)"
    );
    Ok(())
}
