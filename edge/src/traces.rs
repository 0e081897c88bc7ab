//! The Worker's span export, when `observability.otlp_endpoint` is set:
//! the spans the core builds (`telemetry::trace::spans`) go to the
//! collector as OTLP/HTTP protobuf with `fetch`, after the response, in the
//! request's `waitUntil`.
//!
//! Batched per isolate: a request's spans join the isolate's queue; the
//! request that finds it empty becomes its flusher, waits [`FLUSH_AFTER_MS`]
//! for other requests' spans (its `waitUntil` keeps it alive) and then sends
//! everything queued, [`MAX_BATCH`] spans a request, each within
//! [`EXPORT_TIMEOUT_MS`]. The queue holds at most `otlp_queue_spans`; what
//! does not fit, and what the collector refuses or does not take in time,
//! is dropped and counted in a log line (`{"otlp_spans_dropped": n,
//! "reason": …}`), never retried. Spans queued in an isolate that is
//! evicted before its flusher runs are lost; nothing on the client's path
//! ever waits for the collector.

use crate::clock::sleep_ms;
use crate::otlp_proto::{
    self, ExportTraceServiceRequest, InstrumentationScope, Resource, ResourceSpans, ScopeSpans,
    any_value::Value, key_value,
};
use edgegate_core::config::observability::Otlp;
use edgegate_core::telemetry::{UsageRecord, trace};
use futures_util::future::{Either, select};
use prost::Message;
use std::cell::RefCell;
use std::pin::pin;
use worker::js_sys::Uint8Array;
use worker::{Fetch, Headers, Method, Request, RequestInit, console_warn};

/// The most spans in one export request.
const MAX_BATCH: usize = 512;
/// How long the flusher waits for more spans before it sends.
const FLUSH_AFTER_MS: u64 = 1_000;
/// One export may take this long; then its spans are dropped and counted.
const EXPORT_TIMEOUT_MS: u64 = 10_000;

#[derive(Default)]
struct Queue {
    spans: Vec<otlp_proto::Span>,
    /// A request's `waitUntil` is sending what is queued.
    flushing: bool,
}

thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::default();
}

/// Queues `record`'s spans (none unless its trace is exported); the first
/// request to queue into an empty isolate queue sends it.
pub async fn export(otlp: &Otlp, record: &UsageRecord) {
    let Some(t) = &record.trace else {
        return;
    };
    let n = t.span_count();
    let flusher = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        if q.spans.len() + n > otlp.queue_spans {
            return None;
        }
        q.spans
            .extend(trace::spans(record).into_iter().map(otlp_proto::Span::from));
        Some(!std::mem::replace(&mut q.flushing, true))
    });
    match flusher {
        None => dropped(n, "queue_full"),
        Some(false) => {}
        Some(true) => {
            sleep_ms(FLUSH_AFTER_MS).await;
            flush(otlp).await;
        }
    }
}

/// Sends what is queued, batch by batch, until the queue is empty.
async fn flush(otlp: &Otlp) {
    loop {
        let batch: Vec<otlp_proto::Span> = QUEUE.with(|q| {
            let mut q = q.borrow_mut();
            let n = q.spans.len().min(MAX_BATCH);
            if n == 0 {
                q.flushing = false;
            }
            q.spans.drain(..n).collect()
        });
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        if !post(otlp, batch).await {
            dropped(n, "export_failed");
        }
    }
}

fn dropped(n: usize, reason: &str) {
    let line = serde_json::json!({"otlp_spans_dropped": n, "reason": reason});
    console_warn!("{line}");
}

/// Whether the collector took the batch (a 2xx within the timeout).
async fn post(otlp: &Otlp, spans: Vec<otlp_proto::Span>) -> bool {
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    key_value("service.name", Value::String("edgegate".into())),
                    key_value("edgegate.runner", Value::String("worker".into())),
                ],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "edgegate".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
            }],
        }],
    }
    .encode_to_vec();
    let Ok(request) = request(otlp, &body) else {
        return false;
    };
    let fetch = Fetch::Request(request);
    let sent = pin!(fetch.send());
    match select(sent, pin!(sleep_ms(EXPORT_TIMEOUT_MS))).await {
        Either::Left((Ok(response), _)) => (200..300).contains(&response.status_code()),
        _ => false,
    }
}

fn request(otlp: &Otlp, body: &[u8]) -> worker::Result<Request> {
    let headers = Headers::new();
    headers.set("content-type", "application/x-protobuf")?;
    for (name, value) in &otlp.headers {
        headers.set(name, value.header_value())?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(Uint8Array::from(body).into()));
    Request::new_with_init(&otlp.traces_url, &init)
}
