//! The HTTP front: reads the request (never more than the core would
//! accept), gathers what the host knows (clock, request id, client address,
//! region health) and hands both to [`crate::exchange`], where the sandboxed
//! core admits and serves it. Also `/healthz`, `/metrics` and the
//! dashboard's page and assets (`/dashboard`, served as the core says).

use crate::coalescing::Coalescing;
use crate::directory::Directory;
use crate::gates::Gates;
use crate::health_monitor::HealthMonitor;
use crate::load_tracker::LoadTracker;
use crate::metrics::Metrics;
use crate::quota_store::QuotaStore;
use crate::response_cache::ResponseCache;
use crate::sandbox::Sandbox;
use crate::traces::Traces;
use crate::upstream::Upstream;
use bytes::Bytes;
use edgegate_core::gateway::RequestContext;
use edgegate_core::geo::ClientGeo;
use edgegate_core::request::{Headers, HttpRequest};
use edgegate_core::telemetry::UsageRecord;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use std::convert::Infallible;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

pub struct App {
    pub sandbox: Arc<Sandbox>,
    /// The config, read natively too: the admin API's checks and health probes.
    pub config: Arc<edgegate_core::Config>,
    pub quota: Arc<QuotaStore>,
    /// Tenants and keys created through the admin API.
    pub directory: Arc<Directory>,
    pub cache: ResponseCache,
    /// Cache misses waiting for an identical request in flight.
    pub coalescing: Arc<Coalescing>,
    /// Priority admission to replicas with a capacity.
    pub gates: Arc<Gates>,
    pub health: Arc<HealthMonitor>,
    pub loads: Arc<LoadTracker>,
    pub metrics: Arc<Metrics>,
    /// The OTLP span export, when `observability.otlp_endpoint` is set.
    pub traces: Option<Traces>,
    pub upstream: Upstream,
    pub max_body_bytes: usize,
    /// Take the client's location from `x-edgegate-client-*` headers (set by
    /// a trusted load balancer or CDN in front of the runner).
    pub trust_geo_headers: bool,
    /// Take the client's address from `x-forwarded-for` (trusted proxy in front).
    pub trust_forwarded_for: bool,
}

impl App {
    /// One JSON access-log line per request, the metrics and the spans.
    pub fn record(&self, r: &UsageRecord) {
        self.metrics.record(r);
        if let Some(traces) = &self.traces {
            traces.record(r);
        }
        if let Ok(line) = serde_json::to_string(r) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A response with the core's status and headers.
pub fn response(status: u16, headers: Vec<(String, String)>, body: Body) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(full(r#"{"error":{"message":"Invalid response header.","type":"server_error","param":null,"code":"internal_error"}}"#));
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// A response whose body is `chunks`, each sent as it comes: the client's
/// connection polls them, so an upstream chunk reaches it without a hand-off
/// to another task.
pub fn stream_response(
    status: u16,
    headers: Vec<(String, String)>,
    chunks: impl Stream<Item = Bytes> + Send + 'static,
) -> Response<Body> {
    let frames = chunks.map(|b| Ok::<_, Infallible>(Frame::data(b)));
    response(status, headers, StreamBody::new(frames).boxed_unsync())
}

fn plain(content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    response(
        200,
        vec![("content-type".into(), content_type.into())],
        full(body),
    )
}

/// The request's headers whose values are text, as the core reads them.
fn request_headers(headers: &hyper::HeaderMap) -> Headers {
    Headers::new(
        headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v.to_owned()))),
    )
}

/// An admin API request, its body read up to one byte past the admin
/// API's limit (enough for the core to answer 413).
async fn admin_request(app: &App, req: Request<Incoming>, request_id: &str) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let headers = request_headers(&parts.headers);
    let limit = edgegate_core::admin::MAX_BODY_BYTES + 1;
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            vec![b' '; limit]
        }
        Err(_) => Vec::new(),
    };
    let now_ms = crate::clock::now_ms();
    let call = edgegate_core::admin::AdminCall {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body: &body,
        today: edgegate_core::ledger::Day::of_ms(now_ms),
    };
    crate::admin::handle(app, &call, now_ms, request_id).await
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
    let started_us = crate::clock::now_us();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => return plain("application/json", r#"{"status":"ok"}"#),
        (&Method::GET, "/metrics") => {
            return plain(crate::metrics::CONTENT_TYPE, app.metrics.render());
        }
        _ => {}
    }
    let request_id = edgegate_core::request_id::new(uuid::Uuid::new_v4().into_bytes());
    let path = req.uri().path();
    if edgegate_core::admin::is_admin_path(path) || path == edgegate_core::admin::OWN_USAGE_PATH {
        return admin_request(&app, req, &request_id).await;
    }
    if edgegate_core::dashboard::is_dashboard_path(path) {
        let local = edgegate_core::dashboard::serve(
            &app.config,
            req.method().as_str(),
            path,
            &request_headers(req.headers()),
            &request_id,
        );
        return response(local.status, local.headers, full(local.body));
    }
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
            return crate::exchange::refused(&app, &request_id, err, started_us);
        }
    };
    let headers = request_headers(&parts.headers);
    let ctx = RequestContext {
        now_ms: crate::clock::now_ms(),
        request_id,
        client_ip: Some(client_ip(&app, &headers, peer)),
        client_geo: client_geo(&app, &headers),
        regions: app.health.statuses(),
        loads: app.loads.loads(),
        provisioned_key: app.directory.provisioned(&app.config, &headers),
    };
    let request = HttpRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        headers,
        body,
    };
    crate::exchange::serve(app, request, ctx, started_us).await
}
