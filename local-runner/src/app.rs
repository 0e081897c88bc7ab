//! The HTTP front: reads the request (never more than the core would
//! accept), gathers what the host knows (clock, request id, client address,
//! region health), asks the sandboxed core to `admit` it, and hands a forward
//! plan to [`crate::proxy`]. Also `/healthz` and `/metrics`.

use crate::health_monitor::HealthMonitor;
use crate::metrics::Metrics;
use crate::quota_store::QuotaStore;
use crate::response_cache::ResponseCache;
use crate::sandbox::Sandbox;
use crate::upstream::Upstream;
use bytes::Bytes;
use edgegate_core::Gateway;
use edgegate_core::gateway::{Decision, LocalResponse, RequestContext};
use edgegate_core::geo::ClientGeo;
use edgegate_core::request::{Headers, HttpRequest};
use edgegate_core::telemetry::{Latency, UsageRecord};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use std::convert::Infallible;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type Body = BoxBody<Bytes, Infallible>;

pub struct App {
    pub sandbox: Arc<Sandbox>,
    /// The core linked natively, for decisions on trusted data only (what
    /// to charge once the sandbox parsed the usage); untrusted bytes go to
    /// the sandbox.
    pub gateway: Gateway,
    pub quota: Arc<QuotaStore>,
    pub cache: ResponseCache,
    pub health: Arc<HealthMonitor>,
    pub metrics: Arc<Metrics>,
    pub upstream: Upstream,
    pub max_body_bytes: usize,
    /// Take the client's location from `x-edgegate-client-*` headers (set by
    /// a trusted load balancer or CDN in front of the runner).
    pub trust_geo_headers: bool,
    /// Take the client's address from `x-forwarded-for` (trusted proxy in front).
    pub trust_forwarded_for: bool,
}

impl App {
    /// One JSON access-log line per request, and the metrics.
    pub fn record(&self, r: &UsageRecord) {
        self.metrics.record(r);
        self.metrics.set_sandbox_traps(self.sandbox.traps());
        if let Ok(line) = serde_json::to_string(r) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
    }
}

/// Where the time of one request went.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    started: Instant,
    gateway: Duration,
    queue: Duration,
    first_byte: Option<Duration>,
}

impl Timing {
    pub fn with_first_byte(mut self, d: Duration) -> Self {
        self.first_byte = Some(d);
        self
    }

    pub fn finish(&self) -> Latency {
        let total = self.started.elapsed();
        Latency {
            gateway_us: self.gateway.as_micros() as u64,
            queue_us: self.queue.as_micros() as u64,
            upstream_first_byte_us: self.first_byte.map(|d| d.as_micros() as u64),
            total_us: total.as_micros() as u64,
        }
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn json_response(
    status: u16,
    content_type: &str,
    headers: Vec<(String, String)>,
    body: Body,
) -> Response<Body> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", content_type);
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(full(r#"{"error":{"message":"Invalid response header.","type":"server_error","param":null,"code":"internal_error"}}"#));
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

pub fn local_response(r: LocalResponse) -> Response<Body> {
    let headers = r
        .headers
        .into_iter()
        .filter(|(k, _)| k != "content-type")
        .collect();
    json_response(r.status, "application/json", headers, full(r.body))
}

pub fn stream_response(
    headers: Vec<(String, String)>,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> Response<Body> {
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut headers = headers;
    headers.push(("cache-control".into(), "no-cache".into()));
    json_response(
        200,
        "text/event-stream",
        headers,
        BodyExt::boxed(StreamBody::new(chunks)),
    )
}

fn client_ip(app: &App, headers: &Headers, peer: SocketAddr) -> IpAddr {
    if app.trust_forwarded_for
        && let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    peer.ip()
}

fn client_geo(app: &App, headers: &Headers) -> Option<ClientGeo> {
    app.trust_geo_headers
        .then(|| ClientGeo::from_trusted_headers(headers))
        .flatten()
}

pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => {
            return json_response(
                200,
                "application/json",
                Vec::new(),
                full(r#"{"status":"ok"}"#),
            );
        }
        (&Method::GET, "/metrics") => {
            return json_response(
                200,
                "text/plain; version=0.0.4",
                Vec::new(),
                full(app.metrics.render()),
            );
        }
        _ => {}
    }
    let request_id = edgegate_core::request_id::new(uuid::Uuid::new_v4().into_bytes());
    let (parts, body) = req.into_parts();
    // One byte past the limit is enough for the core to answer 413.
    let body = match Limited::new(body, app.max_body_bytes + 1).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            vec![b' '; app.max_body_bytes + 1]
        }
        Err(_) => {
            let err =
                edgegate_core::GatewayError::invalid("The request body could not be read.", None);
            return local_response(app.sandbox.error_response(&err, &request_id));
        }
    };
    let headers = Headers::new(
        parts
            .headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v.to_owned()))),
    );
    let ctx = RequestContext {
        now_ms: crate::clock::now_ms(),
        request_id: request_id.clone(),
        client_ip: Some(client_ip(&app, &headers, peer)),
        client_geo: client_geo(&app, &headers),
        regions: app.health.statuses(&app.sandbox),
        provisioned_key: None,
    };
    let request = HttpRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        headers,
        body,
    };
    let decision = app.sandbox.admit(&request, &ctx);
    let timing = Timing {
        started,
        gateway: started.elapsed(),
        queue: Sandbox::take_queue_time(),
        first_byte: None,
    };
    match decision {
        Ok(Decision::Forward(plan)) => crate::proxy::serve(app, *plan, timing).await,
        Ok(Decision::Respond(response)) => {
            app.record(&UsageRecord::answered(
                &request_id,
                response.status,
                timing.finish(),
            ));
            local_response(response)
        }
        Err(err) => {
            app.record(&UsageRecord::rejected(&request_id, &err, timing.finish()));
            local_response(app.sandbox.error_response(&err, &request_id))
        }
    }
}
