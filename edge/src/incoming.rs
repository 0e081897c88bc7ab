//! What the Worker knows about an incoming request besides its bytes: a
//! fresh request id, the client's address and location (`request.cf`, or
//! trusted `x-edgegate-client-*` headers when the deployment opts in).

use edgegate_core::GatewayError;
use edgegate_core::geo::ClientGeo;
use edgegate_core::request::{Headers, HttpRequest};
use std::net::IpAddr;
use worker::js_sys::Reflect;
use worker::wasm_bindgen::JsValue;
use worker::{Env, Request};

/// A random request id (`req_` + 32 hex digits, see
/// `edgegate_core::request_id`) from `crypto.getRandomValues`.
pub fn request_id() -> Result<String, GatewayError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| GatewayError::Internal {
        message: format!("no randomness for a request id: {e}"),
    })?;
    Ok(edgegate_core::request_id::new(bytes))
}

/// The request as the core sees it. The whole body is read: the core checks
/// its size and shape before anything is forwarded.
pub async fn http_request(req: &mut Request) -> Result<HttpRequest, GatewayError> {
    let body = req
        .bytes()
        .await
        .map_err(|_| GatewayError::invalid("The request body could not be read.", None))?;
    Ok(HttpRequest {
        method: req.inner().method(),
        path: req.path(),
        headers: headers(req),
        body,
    })
}

/// The request's headers as the core sees them.
pub fn headers(req: &Request) -> Headers {
    Headers::new(req.headers().entries())
}

/// The client's address, as Cloudflare's edge saw it.
pub fn client_ip(req: &Request) -> Option<IpAddr> {
    req.headers()
        .get("cf-connecting-ip")
        .ok()
        .flatten()
        .and_then(|ip| ip.trim().parse().ok())
}

/// The var that opts in to location headers set by a trusted proxy in front
/// of the Worker (which must strip any a client sent).
const TRUST_GEO_HEADERS_VAR: &str = "TRUST_CLIENT_GEO_HEADERS";

/// The client's location: from `x-edgegate-client-*` headers when the
/// deployment trusts them and they are present, else from `request.cf`. The
/// local runner's `--trust-geo-headers` reads the same headers the same way.
pub fn client_geo(req: &Request, headers: &Headers, env: &Env) -> Option<ClientGeo> {
    let trusted = env
        .var(TRUST_GEO_HEADERS_VAR)
        .is_ok_and(|v| v.to_string().trim() == "true");
    trusted
        .then(|| ClientGeo::from_trusted_headers(headers))
        .flatten()
        .or_else(|| cf_geo(req))
}

/// The client's location from `request.cf`. Read field by field from the raw
/// object: coordinates arrive as strings at the edge and as numbers from
/// test harnesses, and a missing or odd field must never fail the request.
fn cf_geo(req: &Request) -> Option<ClientGeo> {
    let cf = Reflect::get(req.inner(), &JsValue::from_str("cf"))
        .ok()
        .filter(JsValue::is_object)?;
    let field = |name: &str| Reflect::get(&cf, &JsValue::from_str(name)).ok();
    let text = |name: &str| field(name).and_then(|v| v.as_string());
    let number = |name: &str| {
        field(name).and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_string().and_then(|s| s.trim().parse().ok()))
        })
    };
    Some(ClientGeo {
        latitude: number("latitude"),
        longitude: number("longitude"),
        country: text("country"),
        continent: text("continent"),
        colo: text("colo"),
    })
}
