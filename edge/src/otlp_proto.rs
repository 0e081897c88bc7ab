//! The OTLP trace messages the Worker sends (`ExportTraceServiceRequest`
//! and what it holds, from opentelemetry-proto's `trace.proto`,
//! `common.proto` and `resource.proto`, with their field numbers), as
//! prost messages. Hand-declared because `opentelemetry-proto`'s generated
//! ones bring the OpenTelemetry SDK, whose `rand`/`getrandom` do not build
//! for `wasm32-unknown-unknown`; the conformance suite's collector decodes
//! what these encode with `opentelemetry-proto` itself.

use edgegate_core::telemetry::trace::{Span as CoreSpan, SpanKind, Value};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    /// 2 server, 3 client.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    /// W3C trace flags (bits 0–7) and whether the parent is remote
    /// (bit 8: known, bit 9: remote).
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    /// 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
    }
}

pub fn key_value(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// 16 or 8 bytes from lowercase hex (empty when not hex).
fn bytes(id: &str) -> Vec<u8> {
    hex::decode(id).unwrap_or_default()
}

const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

impl From<CoreSpan> for Span {
    fn from(s: CoreSpan) -> Span {
        use any_value::Value as V;
        let remote = if s.parent_is_remote {
            FLAG_IS_REMOTE
        } else {
            0
        };
        Span {
            trace_id: bytes(&s.trace_id),
            span_id: bytes(&s.span_id),
            parent_span_id: s.parent_span_id.as_deref().map(bytes).unwrap_or_default(),
            name: s.name,
            kind: match s.kind {
                SpanKind::Server => 2,
                SpanKind::Client => 3,
            },
            start_time_unix_nano: s.start_unix_ns,
            end_time_unix_nano: s.end_unix_ns,
            attributes: s
                .attributes
                .into_iter()
                .map(|(key, value)| {
                    let value = match value {
                        Value::Str(v) => V::String(v),
                        Value::Int(v) => V::Int(v),
                        Value::Bool(v) => V::Bool(v),
                        Value::Float(v) => V::Double(v),
                    };
                    key_value(key, value)
                })
                .collect(),
            status: s.error.map(|message| Status { message, code: 2 }),
            flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | remote,
        }
    }
}
