//! A cached answer replayed as the SSE stream its backend would have sent:
//! the same chunk shapes and field order as OpenAI's, content in small
//! pieces, usage on the last chunk when the client asked for it.

use super::{ResponseKind, invalid, is_meaningful, type_name};
use crate::error::GatewayError;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Replayed streams carry about this many characters per content chunk.
pub(super) const REPLAY_PIECE_CHARS: usize = 16;

/// One replayed chunk; a struct so fields come out in OpenAI's order.
#[derive(Serialize)]
struct ChunkOut<'a> {
    #[serde(flatten)]
    head: &'a Head<'a>,
    choices: Vec<ChoiceOut<'a>>,
    /// OpenAI sends `"usage": null` on every chunk but the last when usage was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a Value>,
}

/// The fields every replayed chunk copies from the cached response.
#[derive(Serialize)]
struct Head<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a Value>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    logprobs: Value,
    finish_reason: &'a Value,
}

fn choice_out<'a>(
    index: &'a Value,
    delta: Option<Value>,
    text: Option<&'a str>,
    finish_reason: &'a Value,
) -> ChoiceOut<'a> {
    ChoiceOut {
        index,
        delta,
        text,
        logprobs: Value::Null,
        finish_reason,
    }
}

fn write_chunk(
    out: &mut Vec<u8>,
    head: &Head,
    choice: Option<ChoiceOut>,
    usage: Option<&Value>,
) -> Result<(), GatewayError> {
    let chunk = ChunkOut {
        head,
        choices: choice.into_iter().collect(),
        usage,
    };
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, &chunk)
        .map_err(|e| invalid(format!("cannot serialize a replayed chunk: {e}")))?;
    out.extend_from_slice(b"\n\n");
    Ok(())
}

/// Splits `s` into pieces of [`REPLAY_PIECE_CHARS`] chars, on char boundaries.
fn pieces(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = rest
            .char_indices()
            .nth(REPLAY_PIECE_CHARS)
            .map_or(rest.len(), |(i, _)| i);
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

/// A one-field delta object, e.g. `{"content": "piece"}`.
fn delta1(key: &str, value: Value) -> Option<Value> {
    let mut m = Map::new();
    m.insert(key.to_owned(), value);
    Some(Value::Object(m))
}

/// Turns a cached non-streamed chat or completion response into an SSE stream a client would have got with
/// stream=true: one role chunk (chat), content chunks (split the content into pieces of about 16 chars on
/// char boundaries so clients see a real stream), a finish chunk, a usage-only chunk when `include_usage`,
/// then `data: [DONE]\n\n`. Chunks carry the same id/model/created as the response; object = "chat.completion.chunk"
/// or "text_completion".
///
/// Chat messages may also carry `tool_calls` (one delta per call, whole) and other
/// string fields such as `reasoning_content` or `refusal` (streamed like content,
/// before it). Errors (as `UpstreamInvalidResponse`, so a caller can treat them as a
/// cache miss): embeddings, a wrong shape, non-null `logprobs`, a message field that
/// cannot be streamed, or `include_usage` with no `usage` in the response.
pub fn replay_as_sse(
    kind: ResponseKind,
    response: &Value,
    include_usage: bool,
) -> Result<Vec<u8>, GatewayError> {
    let chunk_object = match kind {
        ResponseKind::Chat => "chat.completion.chunk",
        ResponseKind::Completion => "text_completion",
        ResponseKind::Embedding => return Err(invalid("embedding responses cannot be streamed")),
    };
    let bad = |what: String| invalid(format!("cached {} response {what}", kind.label()));
    let obj = response
        .as_object()
        .ok_or_else(|| bad(format!("is {}, expected an object", type_name(response))))?;
    match obj.get("object") {
        None => {}
        Some(Value::String(s)) if s == kind.object() => {}
        Some(_) => {
            return Err(bad(format!(
                "has the wrong `object`, expected \"{}\"",
                kind.object()
            )));
        }
    }
    let choices = obj
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("has no `choices` array".into()))?;
    let usage = match obj.get("usage") {
        _ if !include_usage => None,
        Some(u @ Value::Object(_)) => Some(u),
        _ => return Err(bad("has no `usage` to send for include_usage".into())),
    };
    let head = Head {
        id: obj.get("id"),
        object: chunk_object,
        created: obj.get("created"),
        model: obj.get("model"),
        system_fingerprint: obj.get("system_fingerprint").filter(|v| !v.is_null()),
    };
    let null = Value::Null;
    // Every chunk but the usage one says `"usage": null` when usage was asked for.
    let no_usage = include_usage.then_some(&null);
    let mut out = Vec::new();
    for (pos, choice) in choices.iter().enumerate() {
        let c = choice
            .as_object()
            .ok_or_else(|| bad(format!("`choices[{pos}]` is not an object")))?;
        let position = json!(pos);
        let index = c.get("index").unwrap_or(&position);
        if c.get("logprobs").is_some_and(is_meaningful) {
            return Err(bad(format!(
                "`choices[{pos}]` has logprobs, which are not replayed"
            )));
        }
        let finish_reason = c.get("finish_reason").unwrap_or(&null);
        let piece = |delta, text| choice_out(index, delta, text, &null);
        match kind {
            ResponseKind::Chat => {
                let msg = c
                    .get("message")
                    .and_then(Value::as_object)
                    .ok_or_else(|| bad(format!("`choices[{pos}].message` is not an object")))?;
                let role = msg
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("assistant");
                let content = match msg.get("content") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.as_str()),
                    Some(_) => {
                        return Err(bad(format!(
                            "`choices[{pos}].message.content` is not a string"
                        )));
                    }
                };
                // OpenAI's first chunk: the role, and content "" (null for tool-call-only answers).
                let first = json!({"role": role, "content": content.map(|_| "")});
                write_chunk(&mut out, &head, Some(piece(Some(first), None)), no_usage)?;
                let mut tool_calls: &[Value] = &[];
                for (key, v) in msg {
                    match (key.as_str(), v) {
                        ("role" | "content", _) => {}
                        ("tool_calls", Value::Array(calls)) => tool_calls = calls,
                        (key, Value::String(s)) => {
                            for p in pieces(s) {
                                let delta = delta1(key, p.into());
                                write_chunk(&mut out, &head, Some(piece(delta, None)), no_usage)?;
                            }
                        }
                        (_, v) if !is_meaningful(v) => {}
                        (key, _) => {
                            return Err(bad(format!(
                                "`choices[{pos}].message.{key}` cannot be replayed"
                            )));
                        }
                    }
                }
                for p in content.into_iter().flat_map(pieces) {
                    let delta = delta1("content", p.into());
                    write_chunk(&mut out, &head, Some(piece(delta, None)), no_usage)?;
                }
                for (i, call) in tool_calls.iter().enumerate() {
                    let mut call = call.as_object().cloned().ok_or_else(|| {
                        bad(format!(
                            "`choices[{pos}].message.tool_calls[{i}]` is not an object"
                        ))
                    })?;
                    call.insert("index".into(), json!(i));
                    let delta = delta1("tool_calls", json!([call]));
                    write_chunk(&mut out, &head, Some(piece(delta, None)), no_usage)?;
                }
                let finish = ChoiceOut {
                    finish_reason,
                    ..piece(Some(json!({})), None)
                };
                write_chunk(&mut out, &head, Some(finish), no_usage)?;
            }
            _ => {
                let text = c
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("`choices[{pos}].text` is not a string")))?;
                for p in pieces(text) {
                    write_chunk(&mut out, &head, Some(piece(None, Some(p))), no_usage)?;
                }
                let finish = ChoiceOut {
                    finish_reason,
                    ..piece(None, Some(""))
                };
                write_chunk(&mut out, &head, Some(finish), no_usage)?;
            }
        }
    }
    if let Some(usage) = usage {
        write_chunk(&mut out, &head, None, Some(usage))?;
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Ok(out)
}
