//! Prompt-token estimates, offline: no vocabulary tables (they would not fit
//! a Worker), biased to over-count so a reservation is an upper bound. The
//! backend's real `usage` settles the difference afterwards.

mod text;

pub use text::estimate_text;

use crate::request::{Endpoint, ParsedBody};
use serde_json::Value;

/// Chat framing per message (`<|start|>role<|message|>…<|end|>`) and the
/// reply primer, as OpenAI counts them.
const PER_MESSAGE: u32 = 4;
const REPLY_PRIMER: u32 = 3;
/// An image part, counted as one high-detail 1024×1024 image.
const PER_IMAGE: u32 = 765;

/// `estimate` for a model whose tokenizer needs `factor` tokens per
/// estimated one (`models[].prompt_estimate_factor`), rounded up.
pub fn scaled(estimate: u32, factor: f64) -> u32 {
    if factor == 1.0 {
        return estimate;
    }
    // An f64 holds every u32 exactly; `as` saturates at u32::MAX.
    (f64::from(estimate) * factor).ceil() as u32
}

/// Estimated prompt tokens of a validated request.
pub fn estimate_request(parsed: &ParsedBody) -> u32 {
    let body = &parsed.body;
    match parsed.endpoint {
        Endpoint::ChatCompletions => {
            let mut total = REPLY_PRIMER;
            if let Some(Value::Array(messages)) = body.get("messages") {
                for m in messages {
                    total = total
                        .saturating_add(PER_MESSAGE)
                        .saturating_add(message_tokens(m));
                }
            }
            // Tool and schema definitions are sent to the model as text too.
            for key in ["tools", "functions", "response_format"] {
                if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
                    total = total.saturating_add(estimate_text(&v.to_string()));
                }
            }
            total
        }
        Endpoint::Completions => prompt_tokens(body.get("prompt")),
        Endpoint::Embeddings => prompt_tokens(body.get("input")),
        Endpoint::Models => 0,
    }
}

fn message_tokens(m: &Value) -> u32 {
    let Value::Object(m) = m else { return 0 };
    let mut total = 0u32;
    for (key, v) in m {
        let t = match (key.as_str(), v) {
            ("content", Value::Array(parts)) => parts.iter().map(part_tokens).sum(),
            (_, Value::String(s)) => estimate_text(s),
            (_, Value::Null) => 0,
            // tool_calls and other structured fields reach the model as JSON.
            (_, other) => estimate_text(&other.to_string()),
        };
        total = total.saturating_add(t);
    }
    total
}

fn part_tokens(part: &Value) -> u32 {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => part
            .get("text")
            .and_then(Value::as_str)
            .map_or(0, estimate_text),
        Some("image_url") | Some("input_image") => PER_IMAGE,
        _ => estimate_text(&part.to_string()),
    }
}

/// `prompt` / `input`: strings are estimated, token-id arrays counted exactly.
fn prompt_tokens(v: Option<&Value>) -> u32 {
    match v {
        Some(Value::String(s)) => estimate_text(s),
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) => items.len() as u32,
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => estimate_text(s),
                Value::Array(ids) => ids.len() as u32,
                _ => 1,
            })
            .fold(0u32, u32::saturating_add),
        _ => 0,
    }
}
