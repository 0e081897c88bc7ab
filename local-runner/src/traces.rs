//! Spans exported over OTLP/HTTP (protobuf) by `opentelemetry-otlp`, when
//! `observability.otlp_endpoint` is set. The core decides the spans
//! (`telemetry::trace::spans`, GenAI attributes, the attempt span as the
//! backend's parent); this file only ships them.
//!
//! The request path never waits: a finished request's spans go into a
//! bounded queue with `try_send` (`otlp_queue_spans`); when it is full they
//! are dropped and counted. One task drains it in batches (up to
//! [`MAX_BATCH`] spans, or whatever came within [`FLUSH_EVERY`]) and posts
//! each batch, one at a time, within [`EXPORT_TIMEOUT`]: a slow or absent
//! collector fills the queue, never memory or the request's latency. The
//! SDK's `BatchSpanProcessor` would do the batching too, but it counts
//! what it drops only in its own log; here the counts are metrics.

use crate::metrics::SpanCounters;
use edgegate_core::config::observability::Otlp;
use edgegate_core::telemetry::UsageRecord;
use edgegate_core::telemetry::trace::{self, Span, SpanKind, Value};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind as OtelKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use std::borrow::Cow;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// The most spans in one export request.
pub const MAX_BATCH: usize = 512;
/// A partial batch waits at most this long for more.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// One export may take this long; then its spans are dropped and counted.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The request path's end of the export queue.
pub struct Traces {
    queue: mpsc::Sender<Span>,
    counters: SpanCounters,
}

impl Traces {
    /// Starts the export task (on the current tokio runtime) for `otlp`.
    pub fn start(otlp: &Otlp, counters: SpanCounters) -> anyhow::Result<Traces> {
        let headers = otlp
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.header_value().to_owned()))
            .collect();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(otlp.traces_url.clone())
            .with_headers(headers)
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name("edgegate")
                .with_attribute(KeyValue::new("edgegate.runner", "local-runner"))
                .build(),
        );
        let (queue, rx) = mpsc::channel(otlp.queue_spans);
        tokio::spawn(export(exporter, rx, counters.clone()));
        Ok(Traces { queue, counters })
    }

    /// Queues the spans of `record` (none unless its trace is exported);
    /// never waits.
    pub fn record(&self, record: &UsageRecord) {
        let Some(trace) = &record.trace else {
            return;
        };
        // A full queue drops them without building them.
        let n = trace.span_count();
        if self.queue.capacity() < n {
            self.counters.dropped_queue_full.inc_by(n as u64);
            return;
        }
        for span in trace::spans(record) {
            if self.queue.try_send(span).is_err() {
                self.counters.dropped_queue_full.inc();
            }
        }
    }
}

/// Drains the queue into export requests until the runner stops.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<Span>,
    counters: SpanCounters,
) {
    let scope = InstrumentationScope::builder("edgegate")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < MAX_BATCH {
            let more = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, more)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let n = batch.len() as u64;
        let data = batch.drain(..).map(|s| span_data(s, &scope)).collect();
        let sent = tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(data)).await;
        match sent {
            Ok(Ok(())) => counters.exported.inc_by(n),
            Ok(Err(_)) | Err(_) => counters.dropped_export_failed.inc_by(n),
        };
    }
}

fn span_data(span: Span, scope: &InstrumentationScope) -> SpanData {
    let trace_id = TraceId::from_hex(&span.trace_id).unwrap_or(TraceId::INVALID);
    let span_id = |hex: &str| SpanId::from_hex(hex).unwrap_or(SpanId::INVALID);
    let at = |ns: u64| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns);
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id(&span.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: span
            .parent_span_id
            .as_deref()
            .map_or(SpanId::INVALID, span_id),
        parent_span_is_remote: span.parent_is_remote,
        span_kind: match span.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Client => OtelKind::Client,
        },
        name: Cow::Owned(span.name),
        start_time: at(span.start_unix_ns),
        end_time: at(span.end_unix_ns),
        attributes: span
            .attributes
            .into_iter()
            .map(|(key, value)| match value {
                Value::Str(s) => KeyValue::new(key, s),
                Value::Int(i) => KeyValue::new(key, i),
                Value::Bool(b) => KeyValue::new(key, b),
                Value::Float(f) => KeyValue::new(key, f),
            })
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match span.error {
            Some(error) => Status::error(error),
            None => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    }
}
