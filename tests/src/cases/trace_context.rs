//! W3C trace context: a client's `traceparent` reaches the backend with
//! the gateway's span as its parent (and its `tracestate` unchanged); a
//! request without one starts a trace, which its usage record names.

use crate::client::{CHAT, chat_body};
use crate::gateway::keys;
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};

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
