//! Errors and headers: every error is OpenAI-shaped and every response
//! carries a request id. (The client checks both on every reply of every
//! case; these cases reach the errors no other family produces.)

use crate::client::{CHAT, chat_body};
use crate::gateway::keys;
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};
use serde_json::json;
use std::collections::BTreeSet;

pub async fn every_error_is_openai_shaped(t: &Target) -> Outcome {
    let r = t.get("/v1/nowhere").key(keys::ERRORS).send().await?;
    r.expect_error(404, "invalid_request_error", "unknown_url")?;
    let r = t.get(CHAT).key(keys::ERRORS).send().await?;
    r.expect_error(405, "invalid_request_error", "method_not_allowed")?;
    let r = t.post(CHAT).key(keys::ERRORS).body("").send().await?;
    r.expect_error(400, "invalid_request_error", "invalid_request")?;
    let r = t
        .post("/v1/embeddings")
        .key(keys::ERRORS)
        .json(&json!({"model": "chat", "input": "hi"}))
        .send()
        .await?;
    let error = r.expect_error(400, "invalid_request_error", "invalid_request")?;
    ensure_eq!(
        error.param.as_deref(),
        Some("model"),
        "param for a chat model on /v1/embeddings"
    );
    // A backend's own 4xx reaches the client in the gateway's shape.
    t.backend("us-east").fail_next(1, 400);
    let r = t.chat(keys::ERRORS, &chat_body("refused upstream")).await?;
    r.expect_error(400, "upstream_error", "upstream_error")?;
    Ok(())
}

pub async fn request_id_on_every_response(t: &Target) -> Outcome {
    let mut ids = Vec::new();
    let ok = t.chat(keys::ERRORS, &chat_body("hello")).await?;
    ok.expect(200)?;
    ids.push(ok.request_id());
    let models = t.get("/v1/models").key(keys::ERRORS).send().await?;
    let list = models.expect(200)?;
    let names: Vec<&str> = list["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect();
    for name in ["chat", "gpt-4o-mini", "embed"] {
        ensure!(names.contains(&name), "/v1/models lacks {name}: {names:?}");
    }
    ids.push(models.request_id());
    let embedding = t
        .post("/v1/embeddings")
        .key(keys::ERRORS)
        .json(&json!({"model": "embed", "input": ["a", "b"]}))
        .send()
        .await?;
    let vectors = embedding.expect(200)?;
    ensure_eq!(
        vectors["data"].as_array().map(Vec::len),
        Some(2),
        "embeddings"
    );
    ids.push(embedding.request_id());
    let mut body = chat_body("stream");
    body["stream"] = json!(true);
    let streamed = t.post(CHAT).key(keys::ERRORS).json(&body).stream().await?;
    ids.push(
        streamed
            .header("x-request-id")
            .unwrap_or_default()
            .to_owned(),
    );
    let refused = t.chat("sk-conf-nobody", &chat_body("hello")).await?;
    ids.push(refused.request_id());
    let unknown = t.get("/v1/nowhere").send().await?;
    ids.push(unknown.request_id());
    let distinct: BTreeSet<&String> = ids.iter().collect();
    ensure_eq!(distinct.len(), ids.len(), "distinct request ids in {ids:?}");
    Ok(())
}
