//! The dashboard page at `/dashboard`: its HTML (`dashboard/src`), and its
//! script and style sheet, bundled from `dashboard/src` (uPlot from the npm
//! registry) by scripts/build-dashboard.sh; all built into every host here,
//! so no CDN is asked for anything. The page holds no data: it signs in with the admin
//! key and reads the admin API's JSON, so it shows what the API says.
//!
//! Off (404) unless the admin API is on. `GET` and `HEAD` only; each asset
//! carries a strong `ETag` (its SHA-256) and is revalidated on every load
//! (`cache-control: no-cache`), so a new build is never shown stale; the
//! page may load only its own assets and call only its own origin
//! (`content-security-policy`).

use crate::config::Config;
use crate::error::GatewayError;
use crate::gateway::LocalResponse;
use crate::request::Headers;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// Where the page lives; its assets are under it.
pub const PATH: &str = "/dashboard";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
    etag: LazyLock<String>,
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_str!($file),
            etag: LazyLock::new(|| {
                let hash = Sha256::digest(include_str!($file));
                format!("\"{}\"", hex::encode(&hash[..16]))
            }),
        }
    };
}

static ASSETS: [Asset; 3] = [
    asset!(
        "/dashboard",
        "../../dashboard/src/index.html",
        "text/html; charset=utf-8"
    ),
    asset!(
        "/dashboard/app.js",
        "dashboard/assets/app.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "/dashboard/app.css",
        "dashboard/assets/app.css",
        "text/css; charset=utf-8"
    ),
];

/// Whether `path` is the dashboard's (the host sends it to [`serve`]).
pub fn is_dashboard_path(path: &str) -> bool {
    path == PATH
        || path
            .strip_prefix(PATH)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The answer to a request for one of the dashboard's paths.
pub fn serve(
    config: &Config,
    method: &str,
    path: &str,
    headers: &Headers,
    request_id: &str,
) -> LocalResponse {
    let unknown = || GatewayError::UnknownEndpoint {
        path: path.chars().take(200).collect(),
    };
    let route = match path.trim_end_matches('/') {
        "" => PATH,
        route => route,
    };
    let asset = match (&config.admin, ASSETS.iter().find(|a| a.path == route)) {
        (Some(_), Some(asset)) => asset,
        _ => return LocalResponse::error(&unknown(), request_id),
    };
    if method != "GET" && method != "HEAD" {
        let err = GatewayError::MethodNotAllowed {
            method: method.chars().take(16).collect(),
            path: path.chars().take(200).collect(),
        };
        let mut refused = LocalResponse::error(&err, request_id);
        refused.headers.push(("allow".into(), "GET, HEAD".into()));
        return refused;
    }
    let etag: &str = &asset.etag;
    let fresh = headers
        .get("if-none-match")
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    // A HEAD's body is dropped by the host's server, its length kept.
    let (status, body) = if fresh {
        (304, String::new())
    } else {
        (200, asset.body.to_owned())
    };
    let mut headers: Vec<(String, String)> = vec![
        ("content-type".into(), asset.content_type.into()),
        ("etag".into(), etag.into()),
        ("cache-control".into(), "no-cache".into()),
        ("x-content-type-options".into(), "nosniff".into()),
        ("referrer-policy".into(), "no-referrer".into()),
        ("x-request-id".into(), request_id.into()),
    ];
    if asset.path == PATH {
        headers.push(("content-security-policy".into(), CSP.into()));
        headers.push(("x-frame-options".into(), "DENY".into()));
    }
    LocalResponse {
        status,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests;
