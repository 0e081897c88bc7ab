//! A request's spans, the same from every host: a server span for the
//! request and a client span per upstream attempt, named and attributed
//! with the OpenTelemetry GenAI semantic conventions
//! (<https://opentelemetry.io/docs/specs/semconv/gen-ai/>). The exchange
//! notes each attempt's times ([`Try`]); [`spans`] turns a usage record
//! into the spans a host exports. Each attempt's span id is the parent its
//! backend was sent (`traceparent`), so a backend's own spans hang under it.
//!
//! ```text
//! client span (the caller's, if it sent a traceparent)
//! └── server span  "chat gpt-x"          the request, gateway to client
//!     ├── client span "chat gpt-x"       attempt 0 (failed: 503)
//!     └── client span "chat gpt-x"       attempt 1 (answered) → backend's spans
//! ```

use super::UsageRecord;

/// What a span exporter needs of a request that the record does not say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    /// The gateway's span (16 hex digits).
    pub span_id: String,
    /// The client's span it continues, if the client sent one.
    pub parent_span_id: Option<String>,
    /// When the request reached the gateway, by the wall clock (µs since
    /// 1970); the offsets below count from it.
    pub start_unix_us: u64,
    /// The model asked for (aliases resolved): `gen_ai.request.model`.
    pub request_model: String,
    /// The upstream attempts, in the order they were sent.
    pub tries: Vec<Try>,
}

/// One upstream attempt: its span and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Try {
    pub span_id: String,
    /// The replica's target (`region` or `region/replica`).
    pub target: String,
    pub model: String,
    pub version: String,
    /// Offsets from the request's start, µs.
    pub sent_us: u64,
    pub first_byte_us: Option<u64>,
    pub end_us: u64,
    /// The backend's status, when it answered.
    pub status: Option<u16>,
    /// The error label of its failure, if it failed.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Float(f64),
}

/// One span, ready for an exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    pub parent_span_id: Option<String>,
    /// The parent is another process's span (the client's).
    pub parent_is_remote: bool,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// The error's label when the span failed (status `ERROR`).
    pub error: Option<String>,
    pub attributes: Vec<(&'static str, Value)>,
}

impl Trace {
    /// How many spans it makes: the server span and one per attempt.
    pub fn span_count(&self) -> usize {
        1 + self.tries.len()
    }
}

/// `gen_ai.operation.name` for an endpoint label.
fn operation(endpoint: Option<&str>) -> &'static str {
    match endpoint {
        Some("chat") => "chat",
        Some("completions") => "text_completion",
        Some("embeddings") => "embeddings",
        _ => "http",
    }
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The spans of the request `record` describes: none unless it carries a
/// trace (its plan asked for export).
pub fn spans(record: &UsageRecord) -> Vec<Span> {
    let (Some(trace), Some(trace_id)) = (record.trace.as_deref(), record.trace_id.as_deref())
    else {
        return Vec::new();
    };
    let op = operation(record.endpoint.as_deref());
    let model = record.model.as_deref().unwrap_or("");
    let at = |offset_us: u64| {
        trace
            .start_unix_us
            .saturating_add(offset_us)
            .saturating_mul(1000)
    };
    let answering = trace.tries.len().checked_sub(1);
    let mut spans = Vec::with_capacity(trace.tries.len() + 1);

    let mut attributes = vec![
        ("gen_ai.operation.name", Value::Str(op.into())),
        (
            "gen_ai.request.model",
            Value::Str(trace.request_model.clone()),
        ),
        (
            "http.response.status_code",
            Value::Int(record.status.into()),
        ),
        ("edgegate.request_id", Value::Str(record.request_id.clone())),
        ("edgegate.attempts", Value::Int(record.attempts.into())),
        ("gen_ai.request.stream", Value::Bool(record.stream)),
    ];
    if let Some(tenant) = &record.tenant {
        attributes.push(("edgegate.tenant", Value::Str(tenant.clone())));
    }
    if let Some(key) = &record.key_id {
        attributes.push(("edgegate.key_id", Value::Str(key.clone())));
    }
    let served = record.usage.is_some();
    if served {
        attributes.extend([
            ("gen_ai.response.model", Value::Str(model.into())),
            ("gen_ai.usage.input_tokens", int(record.input_tokens)),
            ("gen_ai.usage.output_tokens", int(record.output_tokens)),
            ("edgegate.cost_usd", Value::Float(record.cost_usd)),
        ]);
    }
    if let Some(cache) = record.cache.header_value() {
        attributes.push(("edgegate.cache", Value::Str(cache.to_ascii_lowercase())));
    }
    if let Some(reason) = &record.degraded {
        attributes.push(("edgegate.degraded", Value::Str(reason.clone())));
    }
    if let Some(fallback) = record.fallback {
        attributes.push(("edgegate.fallback", Value::Str(fallback.label().into())));
    }
    if let Some(first) = record.latency.first_token_us {
        attributes.push((
            "gen_ai.server.time_to_first_token",
            Value::Float(first as f64 / 1e6),
        ));
    }
    if let Some(error) = &record.error {
        attributes.push(("error.type", Value::Str(error.clone())));
    }
    spans.push(Span {
        trace_id: trace_id.to_owned(),
        span_id: trace.span_id.clone(),
        parent_span_id: trace.parent_span_id.clone(),
        parent_is_remote: trace.parent_span_id.is_some(),
        name: format!("{op} {}", trace.request_model),
        kind: SpanKind::Server,
        start_unix_ns: at(0),
        end_unix_ns: at(record.latency.total_us),
        error: record.error.clone(),
        attributes,
    });

    for (i, t) in trace.tries.iter().enumerate() {
        let mut attributes = vec![
            ("gen_ai.operation.name", Value::Str(op.into())),
            ("gen_ai.request.model", Value::Str(t.model.clone())),
            ("edgegate.target", Value::Str(t.target.clone())),
            ("edgegate.version", Value::Str(t.version.clone())),
            ("edgegate.attempt", int(i as u64)),
        ];
        if let Some(status) = t.status {
            attributes.push(("http.response.status_code", Value::Int(status.into())));
        }
        if let Some(first) = t.first_byte_us {
            attributes.push((
                "edgegate.time_to_first_byte",
                Value::Float(first.saturating_sub(t.sent_us) as f64 / 1e6),
            ));
        }
        let answered = Some(i) == answering && served && t.error.is_none();
        if answered {
            attributes.extend([
                ("gen_ai.response.model", Value::Str(t.model.clone())),
                ("gen_ai.usage.input_tokens", int(record.input_tokens)),
                ("gen_ai.usage.output_tokens", int(record.output_tokens)),
            ]);
            if let Some(first) = record.latency.first_token_us {
                attributes.push((
                    "gen_ai.server.time_to_first_token",
                    Value::Float(first as f64 / 1e6),
                ));
            }
            if let Some(reason) = &record.degraded {
                attributes.push(("edgegate.degraded", Value::Str(reason.clone())));
            }
            if let Some(fallback) = record.fallback {
                attributes.push(("edgegate.fallback", Value::Str(fallback.label().into())));
            }
        }
        if let Some(error) = &t.error {
            attributes.push(("error.type", Value::Str(error.clone())));
        }
        spans.push(Span {
            trace_id: trace_id.to_owned(),
            span_id: t.span_id.clone(),
            parent_span_id: Some(trace.span_id.clone()),
            parent_is_remote: false,
            name: format!("{op} {}", t.model),
            kind: SpanKind::Client,
            start_unix_ns: at(t.sent_us),
            end_unix_ns: at(t.end_us.max(t.sent_us)),
            error: t.error.clone(),
            attributes,
        });
    }
    spans
}
