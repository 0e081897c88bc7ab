//! Validation: the right 4xx, in OpenAI's shape, with `param` naming the field.

use crate::client::{CHAT, chat_body};
use crate::gateway::{MAX_BODY_BYTES, TIER_CAP, TINY_CONTEXT, keys};
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};
use serde_json::{Value, json};

async fn invalid(t: &Target, body: &Value, param: &str) -> Outcome {
    let r = t.chat(keys::VALIDATION, body).await?;
    let error = r
        .expect_error(400, "invalid_request_error", "invalid_request")
        .map_err(|e| format!("{body}: {e}"))?;
    ensure_eq!(error.param.as_deref(), Some(param), "param for {body}");
    Ok(())
}

pub async fn malformed_json(t: &Target) -> Outcome {
    let r = t
        .post(CHAT)
        .key(keys::VALIDATION)
        .body(r#"{"model": "chat", "messages": [{"role": "user", "content": "hi"}"#)
        .send()
        .await?;
    let error = r.expect_error(400, "invalid_request_error", "invalid_request")?;
    // No field to name: the whole body is at fault.
    ensure_eq!(error.param, None, "param");
    ensure!(
        error.message.contains("parse"),
        "the message does not say the JSON did not parse: {}",
        error.message
    );
    Ok(())
}

pub async fn wrong_field_types(t: &Target) -> Outcome {
    let chat = chat_body("hello");
    let with = |field: &str, value: Value| {
        let mut body = chat.clone();
        body[field] = value;
        body
    };
    invalid(t, &with("model", json!(42)), "model").await?;
    invalid(t, &with("messages", json!("hello")), "messages").await?;
    invalid(t, &with("temperature", json!("hot")), "temperature").await?;
    invalid(t, &with("max_tokens", json!("ten")), "max_tokens").await?;
    invalid(t, &with("stream", json!("yes")), "stream").await
}

pub async fn body_too_large(t: &Target) -> Outcome {
    let body = chat_body(&"x".repeat(MAX_BODY_BYTES + 1));
    let r = t.chat(keys::VALIDATION, &body).await?;
    let error = r.expect_error(413, "invalid_request_error", "request_too_large")?;
    ensure!(
        error.message.contains(&MAX_BODY_BYTES.to_string()),
        "the message does not give the limit: {}",
        error.message
    );
    Ok(())
}

pub async fn max_tokens_over_tier_cap(t: &Target) -> Outcome {
    let mut body = chat_body("hello");
    body["max_tokens"] = json!(TIER_CAP + 1);
    invalid(t, &body, "max_tokens").await?;
    let body = json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "hello"}],
        "max_completion_tokens": TIER_CAP + 1,
    });
    invalid(t, &body, "max_completion_tokens").await?;
    // At the cap is fine.
    let mut body = chat_body("hello");
    body["max_tokens"] = json!(TIER_CAP);
    t.chat(keys::VALIDATION, &body).await?.expect(200).map(drop)
}

pub async fn max_tokens_over_context_window(t: &Target) -> Outcome {
    let body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": TINY_CONTEXT,
    });
    let r = t.chat(keys::VALIDATION, &body).await?;
    let error = r.expect_error(400, "invalid_request_error", "context_length_exceeded")?;
    // As OpenAI does: the prompt is what no longer fits.
    ensure_eq!(error.param.as_deref(), Some("messages"), "param");
    Ok(())
}

pub async fn unknown_model(t: &Target) -> Outcome {
    let mut body = chat_body("hello");
    body["model"] = json!("no-such-model");
    let r = t.chat(keys::VALIDATION, &body).await?;
    let error = r.expect_error(404, "invalid_request_error", "model_not_found")?;
    ensure_eq!(error.param.as_deref(), Some("model"), "param");
    Ok(())
}
