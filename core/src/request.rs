//! The incoming HTTP request as the core sees it, and validation of OpenAI
//! request bodies: precise messages with `param` naming the field at fault.
//! Unknown fields are kept and forwarded untouched.

use crate::config::RequestLimits;
use crate::error::GatewayError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Request headers with lower-cased names, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        Headers(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.into()))
                .collect(),
        )
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// The first value of a header; `name` must be lower case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP request handed to the core by a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
}

impl Endpoint {
    pub fn from_config_name(name: &str) -> Option<Endpoint> {
        match name {
            "chat" => Some(Endpoint::ChatCompletions),
            "completions" => Some(Endpoint::Completions),
            "embeddings" => Some(Endpoint::Embeddings),
            _ => None,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Models => "/v1/models",
        }
    }

    /// A fixed label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Models => "models",
        }
    }

    pub fn resolve(method: &str, path: &str) -> Result<Endpoint, GatewayError> {
        let path = path.trim_end_matches('/');
        let (endpoint, wanted) = match path {
            "/v1/chat/completions" => (Endpoint::ChatCompletions, "POST"),
            "/v1/completions" => (Endpoint::Completions, "POST"),
            "/v1/embeddings" => (Endpoint::Embeddings, "POST"),
            "/v1/models" => (Endpoint::Models, "GET"),
            _ => {
                return Err(GatewayError::UnknownEndpoint {
                    path: truncate(path, 200).to_owned(),
                });
            }
        };
        if method.eq_ignore_ascii_case(wanted) {
            Ok(endpoint)
        } else {
            Err(GatewayError::MethodNotAllowed {
                method: truncate(method, 20).to_owned(),
                path: path.to_owned(),
            })
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A validated OpenAI request body.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedBody {
    pub endpoint: Endpoint,
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// The client itself asked for `stream_options.include_usage`.
    pub client_wants_usage: bool,
    /// `max_completion_tokens` or `max_tokens`, as sent.
    pub max_tokens: Option<u32>,
}

impl ParsedBody {
    /// Temperature 0 or a fixed seed: the same request should give the same answer.
    pub fn is_deterministic(&self) -> bool {
        if self.endpoint == Endpoint::Embeddings {
            return true;
        }
        let temp_zero = self
            .body
            .get("temperature")
            .and_then(Value::as_f64)
            .is_some_and(|t| t == 0.0);
        let seeded = self.body.get("seed").is_some_and(|s| !s.is_null());
        temp_zero || seeded
    }

    /// The end user named in the body (`user`), for sticky routing.
    pub fn user(&self) -> Option<&str> {
        self.body.get("user").and_then(Value::as_str)
    }
}

/// Refuses headers larger, all names and values together, than the limit
/// (431, as a CDN in front would): a signed 200 KB JWT is not worth verifying.
pub fn check_header_size(headers: &Headers, limits: &RequestLimits) -> Result<(), GatewayError> {
    let size: usize = headers.pairs().iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > limits.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge {
            limit_bytes: limits.max_header_bytes,
        });
    }
    Ok(())
}

/// Checks size, encoding and nesting, parses JSON and validates the fields of
/// the endpoint's schema.
pub fn parse_body(
    endpoint: Endpoint,
    body: &[u8],
    limits: &RequestLimits,
) -> Result<ParsedBody, GatewayError> {
    if body.len() > limits.max_body_bytes {
        return Err(GatewayError::PayloadTooLarge {
            limit_bytes: limits.max_body_bytes,
        });
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        GatewayError::invalid(
            format!(
                "The request body is not valid UTF-8 (invalid byte at offset {}).",
                e.valid_up_to()
            ),
            None,
        )
    })?;
    if text.trim().is_empty() {
        return Err(GatewayError::invalid(
            "The request body is empty; send a JSON object.",
            None,
        ));
    }
    // serde_json stops at 128 levels, so parsing cannot overflow the stack;
    // the configured limit (at most 128) is checked on the parsed value.
    let value: Value = serde_json::from_str(text).map_err(|e| {
        if e.to_string().starts_with("recursion limit exceeded") {
            too_deep(limits.max_json_depth)
        } else {
            GatewayError::invalid(
                format!("We could not parse the JSON body of your request: {e}."),
                None,
            )
        }
    })?;
    if depth(&value) > limits.max_json_depth {
        return Err(too_deep(limits.max_json_depth));
    }
    let Value::Object(body) = value else {
        return Err(GatewayError::invalid(
            "The request body must be a JSON object.",
            None,
        ));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None => {
            return Err(GatewayError::invalid(
                "you must provide a model parameter",
                Some("model"),
            ));
        }
        Some(other) => return Err(wrong_type("model", "a string", other)),
    };
    let checks = FieldChecks { body: &body };
    match endpoint {
        Endpoint::ChatCompletions => {
            checks.messages(limits.max_messages)?;
            checks.sampling()?;
        }
        Endpoint::Completions => {
            checks.prompt_like("prompt")?;
            checks.sampling()?;
        }
        Endpoint::Embeddings => {
            checks.prompt_like("input")?;
            checks.optional_enum("encoding_format", &["float", "base64"])?;
            checks.optional_int("dimensions", 1, 1 << 20)?;
        }
        Endpoint::Models => {}
    }
    let stream = checks.optional_bool("stream")?.unwrap_or(false);
    let client_wants_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => {
            if !stream {
                return Err(GatewayError::invalid(
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    Some("stream_options"),
                ));
            }
            match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(wrong_type(
                        "stream_options.include_usage",
                        "a boolean",
                        other,
                    ));
                }
            }
        }
        Some(other) => return Err(wrong_type("stream_options", "an object", other)),
    };
    if stream && endpoint == Endpoint::Embeddings {
        return Err(GatewayError::invalid(
            "Embeddings cannot be streamed.",
            Some("stream"),
        ));
    }
    let max_tokens = match checks.optional_int("max_completion_tokens", 1, u32::MAX.into())? {
        Some(n) => Some(n),
        None => checks.optional_int("max_tokens", 1, u32::MAX.into())?,
    }
    .map(|n| n as u32);
    Ok(ParsedBody {
        endpoint,
        body,
        model,
        stream,
        client_wants_usage,
        max_tokens,
    })
}

/// Nesting depth of a parsed value (a scalar is 0, `[]` is 1).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn too_deep(max: usize) -> GatewayError {
    GatewayError::invalid(
        format!("The JSON body is nested more than {max} levels deep."),
        None,
    )
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(param: &str, expected: &str, got: &Value) -> GatewayError {
    GatewayError::invalid(
        format!(
            "Invalid type for '{param}': expected {expected}, but got {}.",
            type_name(got)
        ),
        Some(param),
    )
}

struct FieldChecks<'a> {
    body: &'a Map<String, Value>,
}

impl FieldChecks<'_> {
    fn present(&self, name: &str) -> Option<&Value> {
        self.body.get(name).filter(|v| !v.is_null())
    }

    fn optional_bool(&self, name: &str) -> Result<Option<bool>, GatewayError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(name, "a boolean", other)),
        }
    }

    fn optional_int(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, GatewayError> {
        match self.present(name) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => match n.as_u64() {
                Some(i) if (min..=max).contains(&i) => Ok(Some(i)),
                Some(_) => Err(GatewayError::invalid(
                    format!("Invalid '{name}': {n} is out of range; expected {min} to {max}."),
                    Some(name),
                )),
                None if n.is_i64() => Err(GatewayError::invalid(
                    format!("Invalid '{name}': {n} is out of range; expected {min} to {max}."),
                    Some(name),
                )),
                None => Err(wrong_type(name, "an integer", v)),
            },
            Some(other) => Err(wrong_type(name, "an integer", other)),
        }
    }

    fn optional_number(&self, name: &str, min: f64, max: f64) -> Result<(), GatewayError> {
        match self.present(name) {
            None => Ok(()),
            Some(Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if (min..=max).contains(&x) {
                    Ok(())
                } else {
                    Err(GatewayError::invalid(
                        format!("Invalid '{name}': {n} is out of range; expected {min} to {max}."),
                        Some(name),
                    ))
                }
            }
            Some(other) => Err(wrong_type(name, "a number", other)),
        }
    }

    fn optional_enum(&self, name: &str, allowed: &[&str]) -> Result<(), GatewayError> {
        match self.present(name) {
            None => Ok(()),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
            Some(Value::String(s)) => Err(GatewayError::invalid(
                format!(
                    "Invalid value for '{name}': `{}`; expected one of {}.",
                    truncate(s, 50),
                    allowed.join(", ")
                ),
                Some(name),
            )),
            Some(other) => Err(wrong_type(name, "a string", other)),
        }
    }

    fn optional_kind(
        &self,
        name: &str,
        is_ok: fn(&Value) -> bool,
        expected: &str,
    ) -> Result<(), GatewayError> {
        match self.present(name) {
            Some(v) if !is_ok(v) => Err(wrong_type(name, expected, v)),
            _ => Ok(()),
        }
    }

    /// Sampling and generation parameters shared by chat and completions.
    fn sampling(&self) -> Result<(), GatewayError> {
        self.optional_number("temperature", 0.0, 2.0)?;
        self.optional_number("top_p", 0.0, 1.0)?;
        self.optional_number("presence_penalty", -2.0, 2.0)?;
        self.optional_number("frequency_penalty", -2.0, 2.0)?;
        self.optional_int("n", 1, 128)?;
        self.optional_kind("seed", |v| v.is_i64() || v.is_u64(), "an integer")?;
        self.optional_kind("user", Value::is_string, "a string")?;
        self.optional_kind("logit_bias", Value::is_object, "an object")?;
        self.optional_kind("tools", Value::is_array, "an array")?;
        self.optional_kind("response_format", Value::is_object, "an object")?;
        match self.present("stop") {
            None | Some(Value::String(_)) => Ok(()),
            Some(Value::Array(items)) => {
                if items.len() > 4 {
                    return Err(GatewayError::invalid(
                        "Invalid 'stop': at most 4 stop sequences are allowed.",
                        Some("stop"),
                    ));
                }
                match items.iter().position(|s| !s.is_string()) {
                    Some(i) => Err(wrong_type(&format!("stop[{i}]"), "a string", &items[i])),
                    None => Ok(()),
                }
            }
            Some(other) => Err(wrong_type("stop", "a string or an array of strings", other)),
        }
    }

    fn messages(&self, max: usize) -> Result<(), GatewayError> {
        let messages = match self.body.get("messages") {
            None | Some(Value::Null) => {
                return Err(GatewayError::invalid(
                    "Missing required parameter: 'messages'.",
                    Some("messages"),
                ));
            }
            Some(Value::Array(m)) => m,
            Some(other) => return Err(wrong_type("messages", "an array", other)),
        };
        if messages.is_empty() {
            return Err(GatewayError::invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1.",
                Some("messages"),
            ));
        }
        if messages.len() > max {
            return Err(GatewayError::invalid(
                format!(
                    "Invalid 'messages': array too long. Expected at most {max} messages, got {}.",
                    messages.len()
                ),
                Some("messages"),
            ));
        }
        for (i, m) in messages.iter().enumerate() {
            let Value::Object(m) = m else {
                return Err(wrong_type(&format!("messages[{i}]"), "an object", m));
            };
            let role = match m.get("role") {
                Some(Value::String(r)) => r.as_str(),
                None => {
                    return Err(GatewayError::invalid(
                        format!("Missing required parameter: 'messages[{i}].role'."),
                        Some(&format!("messages[{i}].role")),
                    ));
                }
                Some(other) => {
                    return Err(wrong_type(
                        &format!("messages[{i}].role"),
                        "a string",
                        other,
                    ));
                }
            };
            if !matches!(
                role,
                "system" | "developer" | "user" | "assistant" | "tool" | "function"
            ) {
                return Err(GatewayError::invalid(
                    format!(
                        "Invalid value: '{}'. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool' and 'function'.",
                        truncate(role, 40)
                    ),
                    Some(&format!("messages[{i}].role")),
                ));
            }
            match m.get("content") {
                None | Some(Value::Null) if role == "assistant" => {}
                None | Some(Value::Null) => {
                    return Err(GatewayError::invalid(
                        format!("Missing required parameter: 'messages[{i}].content'."),
                        Some(&format!("messages[{i}].content")),
                    ));
                }
                Some(Value::String(_)) => {}
                Some(Value::Array(parts)) => {
                    for (j, p) in parts.iter().enumerate() {
                        let param = format!("messages[{i}].content[{j}]");
                        let Value::Object(p) = p else {
                            return Err(wrong_type(&param, "an object", p));
                        };
                        match (p.get("type").and_then(Value::as_str), p.get("text")) {
                            (Some("text"), Some(Value::String(_))) => {}
                            (Some("text"), other) => {
                                return Err(wrong_type(
                                    &format!("{param}.text"),
                                    "a string",
                                    other.unwrap_or(&Value::Null),
                                ));
                            }
                            (Some(_), _) => {}
                            (None, _) => {
                                return Err(GatewayError::invalid(
                                    format!("Missing required parameter: '{param}.type'."),
                                    Some(&format!("{param}.type")),
                                ));
                            }
                        }
                    }
                }
                Some(other) => {
                    return Err(wrong_type(
                        &format!("messages[{i}].content"),
                        "a string or an array of content parts",
                        other,
                    ));
                }
            }
        }
        Ok(())
    }

    /// `prompt` (completions) or `input` (embeddings): a string, an array of
    /// strings, an array of token ids, or an array of token-id arrays.
    fn prompt_like(&self, name: &str) -> Result<(), GatewayError> {
        let value = match self.body.get(name) {
            None | Some(Value::Null) => {
                return Err(GatewayError::invalid(
                    format!("Missing required parameter: '{name}'."),
                    Some(name),
                ));
            }
            Some(v) => v,
        };
        let expected = "a string, an array of strings, or an array of token arrays";
        match value {
            Value::String(_) => Ok(()),
            Value::Array(items) if items.is_empty() => Err(GatewayError::invalid(
                format!("Invalid '{name}': empty array."),
                Some(name),
            )),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let ok = match item {
                        Value::String(_) => true,
                        Value::Number(n) => n.is_u64(),
                        Value::Array(tokens) => tokens.iter().all(Value::is_u64),
                        _ => false,
                    };
                    if !ok {
                        return Err(wrong_type(&format!("{name}[{i}]"), expected, item));
                    }
                }
                Ok(())
            }
            other => Err(wrong_type(name, expected, other)),
        }
    }
}

#[cfg(test)]
mod tests;
