//! Credentials to the backends: a region's `api_key_secret` is sent to its
//! servers as `Authorization: Bearer …` (the `keyed` backend refuses
//! requests without it, as `vllm serve --api-key` does), to no other
//! backend, and never shows in a response, a usage record or a log.

use crate::client::{CHAT, chat_body};
use crate::gateway::{KEYED, KEYED_SECRET, keys};
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};
use serde_json::json;

pub async fn a_keyed_backend_gets_its_secret_which_never_shows(t: &Target) -> Outcome {
    let body = json!({"model": KEYED, "max_tokens": 8,
                      "messages": [{"role": "user", "content": "with a key"}]});
    let reply = t.post(CHAT).key(keys::ROUTING).json(&body).send().await?;
    reply.expect(200)?;
    let sent = t.last_header(KEYED, "authorization")?;
    ensure_eq!(
        sent,
        Some(format!("Bearer {KEYED_SECRET}")),
        "what the keyed backend was sent"
    );
    // The client's own key is never passed on, nor the secret elsewhere.
    let other = t.chat(keys::ROUTING, &chat_body("without a key")).await?;
    other.expect(200)?;
    ensure_eq!(
        t.last_header("us-east", "authorization")?,
        None,
        "what us-east was sent"
    );
    t.the_record(&reply.request_id()).await?;
    for (what, text) in [
        ("the response", reply.text.as_str()),
        ("the other response", other.text.as_str()),
        ("the runner's logs", &t.logs()),
    ] {
        ensure!(!text.contains(KEYED_SECRET), "the secret is in {what}");
    }
    Ok(())
}
