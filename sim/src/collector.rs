//! An OpenTelemetry collector's OTLP/HTTP trace endpoint, for tests and
//! benchmarks: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`
//! (decoded with `opentelemetry-proto`), kept in memory. It can be told to
//! refuse every export (503) or to answer late, as a collector that is down
//! or overloaded would.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// One span as the collector received it.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedSpan {
    /// Lowercase hex.
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    /// OTLP's `SpanKind`: 2 server, 3 client.
    pub kind: i32,
    /// OTLP's status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// String, integer, float and boolean values.
    pub attributes: BTreeMap<String, Value>,
    /// The resource's `service.name`.
    pub service: Option<String>,
}

impl CollectedSpan {
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }
}

#[derive(Default)]
struct State {
    spans: Mutex<Vec<CollectedSpan>>,
    /// Headers of the last export.
    last_headers: Mutex<Vec<(String, String)>>,
    exports: AtomicU64,
    /// Spans received (kept or not).
    received: AtomicU64,
    /// Only count what comes (a long benchmark's collector).
    counting_only: AtomicBool,
    refusing: AtomicBool,
    delay_ms: AtomicU64,
}

/// A running collector; dropping it stops it.
pub struct Collector {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl Collector {
    /// Listens on `addr` (loopback only; port 0 picks a free port).
    pub async fn start(addr: SocketAddr) -> io::Result<Collector> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to listen on {addr}: the collector serves loopback only"),
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let server = tokio::spawn(serve(listener, state.clone()));
        Ok(Collector {
            addr,
            state,
            server,
        })
    }

    /// `http://127.0.0.1:PORT` (exports go to `/v1/traces`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        lock(&self.state.spans).clone()
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<CollectedSpan> {
        lock(&self.state.spans)
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Export requests answered (refused ones included).
    pub fn exports(&self) -> u64 {
        self.state.exports.load(Ordering::Relaxed)
    }

    /// Spans received so far, kept or not.
    pub fn received(&self) -> u64 {
        self.state.received.load(Ordering::Relaxed)
    }

    /// Count spans without keeping them, so a long run's memory stays flat.
    pub fn set_counting_only(&self, counting_only: bool) {
        self.state
            .counting_only
            .store(counting_only, Ordering::Relaxed);
    }

    /// The headers of the last export request.
    pub fn last_headers(&self) -> Vec<(String, String)> {
        lock(&self.state.last_headers).clone()
    }

    /// Answer every export with 503, keeping nothing (a collector that is down).
    pub fn set_refusing(&self, refusing: bool) {
        self.state.refusing.store(refusing, Ordering::Relaxed);
    }

    /// Answer each export only after `delay` (an overloaded collector).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Forgets the spans received and goes back to answering at once.
    pub fn reset(&self) {
        lock(&self.state.spans).clear();
        self.set_refusing(false);
        self.set_delay(Duration::ZERO);
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>, content_type: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        response.headers_mut().insert("content-type", v);
    }
    response
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if (req.method(), req.uri().path()) != (&Method::POST, "/v1/traces") {
        return Ok(reply(StatusCode::NOT_FOUND, "not found", "text/plain"));
    }
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    *lock(&state.last_headers) = headers;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                "unreadable body",
                "text/plain",
            ));
        }
    };
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    state.exports.fetch_add(1, Ordering::Relaxed);
    if state.refusing.load(Ordering::Relaxed) {
        return Ok(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "refusing",
            "text/plain",
        ));
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => return Ok(reply(StatusCode::BAD_REQUEST, e.to_string(), "text/plain")),
    };
    let spans = collected(request);
    state
        .received
        .fetch_add(spans.len() as u64, Ordering::Relaxed);
    if !state.counting_only.load(Ordering::Relaxed) {
        lock(&state.spans).extend(spans);
    }
    // An empty ExportTraceServiceResponse.
    Ok(reply(
        StatusCode::OK,
        Bytes::new(),
        "application/x-protobuf",
    ))
}

fn collected(request: ExportTraceServiceRequest) -> Vec<CollectedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans.resource.and_then(|r| {
            r.attributes
                .into_iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| value(kv.value?.value?))
                .and_then(|v| v.as_str().map(str::to_owned))
        });
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .into_iter()
                    .filter_map(|kv| Some((kv.key, value(kv.value?.value?)?)))
                    .collect();
                out.push(CollectedSpan {
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then(|| hex::encode(&span.parent_span_id)),
                    name: span.name,
                    kind: span.kind,
                    status_code: span.status.map_or(0, |s| s.code),
                    start_unix_ns: span.start_time_unix_nano,
                    end_unix_ns: span.end_time_unix_nano,
                    attributes,
                    service: service.clone(),
                });
            }
        }
    }
    out
}

fn value(v: any_value::Value) -> Option<Value> {
    match v {
        any_value::Value::StringValue(s) => Some(Value::from(s)),
        any_value::Value::IntValue(i) => Some(Value::from(i)),
        any_value::Value::DoubleValue(f) => Some(Value::from(f)),
        any_value::Value::BoolValue(b) => Some(Value::from(b)),
        _ => None,
    }
}
