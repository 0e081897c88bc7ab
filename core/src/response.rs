//! Upstream response handling: validating non-streamed bodies, mapping upstream
//! errors, watching streamed responses as they pass through, and replaying cached
//! answers as streams.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::error::GatewayError;
use crate::sse::{SseEvent, SseParser};
use crate::tokens::estimate_text;
use plain_chunk::PlainChunk;
pub use replay::replay_as_sse;

mod plain_chunk;
mod replay;

/// Upstream messages are cut to this many characters before reaching clients or logs.
const MAX_MESSAGE_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// What an answer used, as it will be charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metered {
    /// The backend's own `usage`.
    Reported(Usage),
    /// The backend reported none (some never do in streams, and a stream may
    /// break before its usage chunk): the output tokens are estimated from the
    /// content the gateway relayed, the prompt is charged at its estimate.
    Relayed { completion_tokens: u64 },
    /// Nothing is known (the host lost track of the answer): the whole
    /// reservation is charged.
    #[default]
    Unknown,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseKind {
    Chat,
    Completion,
    Embedding,
}

impl ResponseKind {
    fn label(self) -> &'static str {
        match self {
            ResponseKind::Chat => "chat completion",
            ResponseKind::Completion => "completion",
            ResponseKind::Embedding => "embedding",
        }
    }

    /// The `object` of a non-streamed response of this kind.
    fn object(self) -> &'static str {
        match self {
            ResponseKind::Chat => "chat.completion",
            ResponseKind::Completion => "text_completion",
            ResponseKind::Embedding => "list",
        }
    }
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::UpstreamInvalidResponse {
        message: message.into(),
    }
}

/// JSON type name for error messages: says what was wrong without echoing the value.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Makes upstream text safe to show: one line, trimmed, at most [`MAX_MESSAGE_CHARS`].
fn clean_message(s: &str) -> String {
    let one_line: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= MAX_MESSAGE_CHARS {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// The human-readable message of an error body, in the shapes backends use:
/// OpenAI `{"error":{"message":..}}`, TGI `{"error":"..."}`, older vLLM
/// `{"object":"error","message":..}` and FastAPI `{"detail":"..."}`.
fn error_message_of(obj: &Map<String, Value>) -> Option<&str> {
    let msg = match obj.get("error") {
        Some(Value::Object(e)) => e.get("message").and_then(Value::as_str),
        Some(Value::String(s)) => Some(s.as_str()),
        _ if obj.get("object").and_then(Value::as_str) == Some("error") => {
            obj.get("message").and_then(Value::as_str)
        }
        _ => obj.get("detail").and_then(Value::as_str),
    };
    msg.filter(|m| !m.trim().is_empty())
}

/// Reads a token count: a non-negative integer (an integral float is tolerated).
fn token_count(usage: &Map<String, Value>, field: &str) -> Result<Option<u64>, String> {
    match usage.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..9.0e15).contains(f))
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "`usage.{field}` is {}, expected a non-negative integer",
                    type_name(v)
                )
            }),
    }
}

/// `usage` of a response or chunk. Absent or null -> None. Embeddings only have
/// prompt tokens; for the others both counts are required.
fn usage_of(kind: ResponseKind, obj: &Map<String, Value>) -> Result<Option<Usage>, String> {
    let usage = match obj.get("usage") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(u)) => u,
        Some(v) => return Err(format!("`usage` is {}, expected an object", type_name(v))),
    };
    let prompt_tokens =
        token_count(usage, "prompt_tokens")?.ok_or("`usage.prompt_tokens` is missing")?;
    let completion_tokens = match (kind, token_count(usage, "completion_tokens")?) {
        (_, Some(n)) => n,
        (ResponseKind::Embedding, None) => 0,
        (_, None) => return Err("`usage.completion_tokens` is missing".into()),
    };
    Ok(Some(Usage {
        prompt_tokens,
        completion_tokens,
    }))
}

/// Validates a non-streamed upstream success body for its kind (object with the right `object` field or
/// the required arrays: chat -> `choices[]` each with `message`; completion -> `choices[]` each with `text`;
/// embedding -> `data[]` each with `embedding` array) and extracts `usage`
/// (`prompt_tokens`, `completion_tokens`; embeddings have only prompt_tokens). Missing usage ->
/// [`Metered::Relayed`] with the output tokens estimated from the answer's content.
/// Bad JSON or wrong shape -> GatewayError::UpstreamInvalidResponse with a precise message.
///
/// The arrays are always required (a cached answer without them could not be
/// replayed); `object`, when present, must match the kind. Embeddings may be a
/// base64 string: OpenAI's Python client asks for `encoding_format: "base64"` by default.
pub fn parse_upstream_body(kind: ResponseKind, body: &[u8]) -> Result<Metered, GatewayError> {
    let label = kind.label();
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("upstream {label} response is not valid JSON: {e}")))?;
    let Value::Object(obj) = &value else {
        return Err(invalid(format!(
            "upstream {label} response is {}, expected a JSON object",
            type_name(&value)
        )));
    };
    let list_key = if kind == ResponseKind::Embedding {
        "data"
    } else {
        "choices"
    };
    if !obj.contains_key(list_key)
        && let Some(msg) = error_message_of(obj)
    {
        return Err(invalid(format!(
            "upstream returned an error in a successful {label} response: {}",
            clean_message(msg)
        )));
    }
    match obj.get("object") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == kind.object() => {}
        Some(Value::String(s)) => {
            return Err(invalid(format!(
                "upstream {label} response has `object` \"{}\", expected \"{}\"",
                clean_message(s),
                kind.object()
            )));
        }
        Some(v) => {
            return Err(invalid(format!(
                "upstream {label} response has `object` of type {}, expected \"{}\"",
                type_name(v),
                kind.object()
            )));
        }
    }
    let items = match obj.get(list_key) {
        Some(Value::Array(items)) => items,
        Some(v) => {
            return Err(invalid(format!(
                "upstream {label} response `{list_key}` is {}, expected an array",
                type_name(v)
            )));
        }
        None => {
            return Err(invalid(format!(
                "upstream {label} response has no `{list_key}` array"
            )));
        }
    };
    for (i, item) in items.iter().enumerate() {
        let Value::Object(item) = item else {
            return Err(invalid(format!(
                "upstream {label} response `{list_key}[{i}]` is {}, expected an object",
                type_name(item)
            )));
        };
        check_item(kind, item)
            .map_err(|what| invalid(format!("upstream {label} response `{list_key}[{i}]{what}")))?;
    }
    let usage =
        usage_of(kind, obj).map_err(|e| invalid(format!("upstream {label} response {e}")))?;
    Ok(match usage {
        Some(u) => Metered::Reported(u),
        None => Metered::Relayed {
            completion_tokens: items.iter().map(|item| answer_tokens(kind, item)).sum(),
        },
    })
}

/// Estimated tokens of one answer (`choices[]` entry): its text, and the
/// strings of tool calls, refusals and the like, which the model generated too.
fn answer_tokens(kind: ResponseKind, item: &Value) -> u64 {
    let mut text = String::new();
    match kind {
        ResponseKind::Chat => {
            if let Some(Value::Object(message)) = item.get("message") {
                for (key, v) in message {
                    if key != "role" {
                        push_strings(v, &mut text);
                    }
                }
            }
        }
        ResponseKind::Completion => {
            push_strings(item.get("text").unwrap_or(&Value::Null), &mut text)
        }
        ResponseKind::Embedding => {}
    }
    u64::from(estimate_text(&text))
}

/// Appends every string inside `v` (objects' values, arrays' items), one per line.
fn push_strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|i| push_strings(i, out)),
        Value::Object(o) => o.values().for_each(|i| push_strings(i, out)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Checks one `choices[]`/`data[]` entry; the error continues "`choices[i]".
fn check_item(kind: ResponseKind, item: &Map<String, Value>) -> Result<(), String> {
    let field = match kind {
        ResponseKind::Chat => "message",
        ResponseKind::Completion => "text",
        ResponseKind::Embedding => "embedding",
    };
    let Some(v) = item.get(field) else {
        return Err(format!("` has no `{field}`"));
    };
    let ok = match (kind, v) {
        (ResponseKind::Chat, Value::Object(m)) => {
            return match m.get("content") {
                None | Some(Value::Null | Value::String(_)) => Ok(()),
                Some(c) => Err(format!(
                    ".message.content` is {}, expected a string or null",
                    type_name(c)
                )),
            };
        }
        (ResponseKind::Completion, Value::String(_)) => true,
        (ResponseKind::Embedding, Value::String(_)) => true,
        (ResponseKind::Embedding, Value::Array(xs)) => {
            return match xs.iter().position(|x| !x.is_number()) {
                None => Ok(()),
                Some(j) => Err(format!(
                    ".embedding[{j}]` is {}, expected a number",
                    type_name(&xs[j])
                )),
            };
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        let expected = match kind {
            ResponseKind::Chat => "an object",
            ResponseKind::Completion => "a string",
            ResponseKind::Embedding => "an array of numbers",
        };
        Err(format!(
            ".{field}` is {}, expected {expected}",
            type_name(v)
        ))
    }
}

/// Maps an upstream error response (non-2xx status + body) to UpstreamStatus, taking the upstream's
/// OpenAI `error.message` when present (truncated to 200 chars), else a short generic text. Never echo the raw body beyond that.
///
/// Other common error shapes (TGI, older vLLM, FastAPI `detail`) are read too. For
/// 401/403/407 the message is always generic: those are about the gateway's own
/// upstream credentials, and OpenAI's text quotes part of the key.
pub fn upstream_error(status: u16, body: &[u8]) -> GatewayError {
    let credential_problem = matches!(status, 401 | 403 | 407);
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(|_| !credential_problem)
        .and_then(|v| v.as_object().and_then(error_message_of).map(clean_message))
        .unwrap_or_else(|| generic_status_message(status));
    GatewayError::UpstreamStatus { status, message }
}

fn generic_status_message(status: u16) -> String {
    let reason = match status {
        400 => "bad request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        407 => "proxy authentication required",
        408 => "request timeout",
        409 => "conflict",
        413 => "payload too large",
        422 => "unprocessable entity",
        429 => "too many requests",
        500 => "internal server error",
        502 => "bad gateway",
        503 => "service unavailable",
        504 => "gateway timeout",
        _ => "",
    };
    if reason.is_empty() {
        format!("upstream returned HTTP {status}")
    } else {
        format!("upstream returned HTTP {status} ({reason})")
    }
}

/// A value that carries information (so dropping it would change the answer).
fn is_meaningful(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

#[derive(Debug, Default)]
struct ChoiceAcc {
    role: Option<String>,
    content: String,
    /// Generated text the rebuilt answer does not carry (tool-call arguments,
    /// refusals, reasoning): counted, not cached.
    other: String,
    finish_reason: Option<Value>,
}

/// The non-streamed response being rebuilt from chunks.
#[derive(Debug, Default)]
struct Assembly {
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
    system_fingerprint: Option<Value>,
    choices: BTreeMap<u64, ChoiceAcc>,
    /// Something seen that the rebuilt response could not reproduce (tool calls,
    /// logprobs, reasoning, a malformed chunk): refuse to assemble rather than cache it wrong.
    lossy: bool,
}

impl Assembly {
    fn absorb(&mut self, kind: ResponseKind, chunk: &Map<String, Value>) {
        for (slot, key) in [
            (&mut self.id, "id"),
            (&mut self.created, "created"),
            (&mut self.model, "model"),
            (&mut self.system_fingerprint, "system_fingerprint"),
        ] {
            if slot.is_none()
                && let Some(v) = chunk.get(key).filter(|v| !v.is_null())
            {
                *slot = Some(v.clone());
            }
        }
        let choices = match chunk.get("choices") {
            None | Some(Value::Null) => return,
            Some(Value::Array(c)) => c,
            Some(_) => {
                self.lossy = true;
                return;
            }
        };
        for (pos, choice) in choices.iter().enumerate() {
            let Some(choice) = choice.as_object() else {
                self.lossy = true;
                continue;
            };
            let index = match choice.get("index") {
                None => pos as u64,
                Some(i) => match i.as_u64() {
                    Some(i) => i,
                    None => {
                        self.lossy = true;
                        continue;
                    }
                },
            };
            if choice.get("logprobs").is_some_and(is_meaningful) {
                self.lossy = true;
            }
            let acc = self.choices.entry(index).or_default();
            if let Some(reason) = choice.get("finish_reason").filter(|v| !v.is_null()) {
                acc.finish_reason = Some(reason.clone());
            }
            match kind {
                ResponseKind::Chat => match choice.get("delta") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(delta)) => {
                        for (key, v) in delta {
                            match (key.as_str(), v) {
                                (_, Value::Null) => {}
                                ("role", Value::String(r)) => acc.role = Some(r.clone()),
                                ("content", Value::String(s)) => acc.content.push_str(s),
                                // tool_calls, function_call, refusal, reasoning...: not rebuilt.
                                (_, v) if is_meaningful(v) || key == "content" => {
                                    push_strings(v, &mut acc.other);
                                    self.lossy = true;
                                }
                                _ => {}
                            }
                        }
                    }
                    Some(_) => self.lossy = true,
                },
                ResponseKind::Completion => match choice.get("text") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => acc.content.push_str(s),
                    Some(_) => self.lossy = true,
                },
                ResponseKind::Embedding => self.lossy = true,
            }
        }
    }
}

/// Watches a streamed chat/completion SSE response as it passes through a proxy.
#[derive(Debug)]
pub struct StreamObserver {
    kind: ResponseKind,
    strip_usage_chunk: bool,
    parser: SseParser,
    usage: Option<Usage>,
    done: bool,
    error: Option<String>,
    assembly: Assembly,
}

impl StreamObserver {
    /// `strip_usage_chunk`: the gateway added `stream_options.include_usage` itself, so the client must not see
    /// the final usage-only chunk (a `chat.completion.chunk` whose `choices` is empty and `usage` is set).
    pub fn new(kind: ResponseKind, strip_usage_chunk: bool) -> Self {
        Self {
            kind,
            strip_usage_chunk,
            parser: SseParser::new(),
            usage: None,
            done: false,
            error: None,
            assembly: Assembly::default(),
        }
    }

    /// Returns the bytes to forward to the client right now: every complete event, byte-exact (raw), except a
    /// stripped usage-only chunk. Also records usage from any chunk carrying `usage` (some backends put usage on
    /// the last content chunk), `[DONE]`, and an in-stream error event (`{"error":{...}}`).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len());
        for event in self.parser.feed(chunk) {
            if self.observe(&event) {
                out.extend_from_slice(&event.raw);
            }
        }
        out
    }

    /// End of upstream body: flush any trailing partial event (forward it raw).
    ///
    /// The trailing event is interpreted like any other (a `data: [DONE]` without its
    /// blank line still counts) and is stripped if it is a usage-only chunk.
    pub fn finish(&mut self) -> Vec<u8> {
        match self.parser.finish() {
            Some(event) if self.observe(&event) => event.raw,
            _ => Vec::new(),
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// What to charge for the stream so far: the reported usage, else the
    /// output tokens estimated from the content relayed (all choices).
    pub fn metered(&self) -> Metered {
        match self.usage {
            Some(u) => Metered::Reported(u),
            None => Metered::Relayed {
                completion_tokens: self
                    .assembly
                    .choices
                    .values()
                    .map(|c| {
                        u64::from(estimate_text(&c.content)) + u64::from(estimate_text(&c.other))
                    })
                    .sum(),
            },
        }
    }

    /// Whether anything the client would see as the answer has arrived:
    /// text, a tool call, a finish reason, or something not understood.
    /// Role-only deltas and empty chunks are not content.
    pub fn has_content(&self) -> bool {
        let a = &self.assembly;
        a.lossy
            || a.choices
                .values()
                .any(|c| !c.content.is_empty() || !c.other.is_empty() || c.finish_reason.is_some())
    }

    pub fn saw_done(&self) -> bool {
        self.done
    }

    /// message of an in-stream error event, if any
    pub fn upstream_error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Bytes of an incomplete event held back (for memory caps).
    pub fn buffered_len(&self) -> usize {
        self.parser.buffered_len()
    }

    /// Records what `event` says; returns whether to forward it.
    fn observe(&mut self, event: &SseEvent) -> bool {
        let is_error_event = event.event.as_deref() == Some("error");
        let data = event.data.trim();
        if data.is_empty() && !is_error_event {
            return true;
        }
        if data == "[DONE]" {
            self.done = true;
            return true;
        }
        if !is_error_event && let Some(chunk) = PlainChunk::parse(self.kind, data) {
            // Content after [DONE] is not part of the answer.
            if !self.done {
                chunk.absorb(self.kind, &mut self.assembly);
            }
            return true;
        }
        let parsed = serde_json::from_str::<Value>(data);
        let obj = match &parsed {
            Ok(Value::Object(obj)) => Some(obj),
            _ => None,
        };
        let error_key = obj.is_some_and(|o| {
            o.get("error").is_some_and(|e| !e.is_null())
                || o.get("object").and_then(Value::as_str) == Some("error")
        });
        if is_error_event || error_key {
            // The first error is the cause; later ones are usually its echo.
            if self.error.is_none() {
                let msg = obj
                    .and_then(error_message_of)
                    .map(clean_message)
                    .unwrap_or_else(|| "upstream reported an error mid-stream".to_owned());
                self.error = Some(msg);
            }
            return true;
        }
        let Some(obj) = obj else {
            self.assembly.lossy = true;
            return true;
        };
        // A malformed usage is not worth failing a stream over: it is just not recorded.
        if let Ok(Some(usage)) = usage_of(self.kind, obj) {
            self.usage = Some(usage);
        }
        // Content after [DONE] is not part of the answer.
        if !self.done {
            self.assembly.absorb(self.kind, obj);
        }
        let usage_only = obj.get("usage").is_some_and(|u| !u.is_null())
            && match obj.get("choices") {
                None | Some(Value::Null) => true,
                Some(Value::Array(c)) => c.is_empty(),
                Some(_) => false,
            };
        !(self.strip_usage_chunk && usage_only)
    }

    /// The completion assembled from the deltas seen so far, as a non-streamed OpenAI response JSON
    /// (chat: {id, object:"chat.completion", created, model, choices:[{index, message:{role, content}, finish_reason}], usage};
    /// completion: {id, object:"text_completion", ..., choices:[{index, text, finish_reason}], usage}),
    /// so a gateway can cache a streamed answer. None if the stream did not end with [DONE] or had an error.
    /// Tool-call deltas may be ignored (return None if any were seen, so they aren't cached wrongly).
    ///
    /// Also None when anything else could not be rebuilt faithfully (logprobs, refusal
    /// or reasoning deltas, a malformed chunk), when no choice was seen, or when a
    /// choice has no `finish_reason`. `usage` is left out when the stream had none.
    pub fn assembled(&self) -> Option<Value> {
        let a = &self.assembly;
        if !self.done || self.error.is_some() || a.lossy || a.choices.is_empty() {
            return None;
        }
        let mut choices = Vec::with_capacity(a.choices.len());
        for (index, c) in &a.choices {
            let finish_reason = c.finish_reason.clone()?;
            choices.push(match self.kind {
                ResponseKind::Chat => json!({
                    "index": index,
                    "message": {
                        "role": c.role.as_deref().unwrap_or("assistant"),
                        "content": c.content,
                    },
                    "finish_reason": finish_reason,
                }),
                _ => json!({
                    "index": index,
                    "text": c.content,
                    "logprobs": null,
                    "finish_reason": finish_reason,
                }),
            });
        }
        let mut out = Map::new();
        out.insert("id".into(), a.id.clone().unwrap_or(Value::Null));
        out.insert("object".into(), self.kind.object().into());
        out.insert("created".into(), a.created.clone().unwrap_or(Value::Null));
        out.insert("model".into(), a.model.clone().unwrap_or(Value::Null));
        if let Some(fp) = &a.system_fingerprint {
            out.insert("system_fingerprint".into(), fp.clone());
        }
        out.insert("choices".into(), Value::Array(choices));
        if let Some(usage) = self.usage {
            out.insert("usage".into(), usage.to_json());
        }
        Some(Value::Object(out))
    }
}

#[cfg(test)]
mod tests;
