//! Exact-match response cache keys and the cacheability decision.
//!
//! The key is a SHA-256 over the scope (tenant or global), the endpoint, the
//! resolved model version and the canonical request body: object keys sorted,
//! no whitespace (serde_json's map is ordered, so serialising a parsed value is
//! canonical). Only fields that cannot change the answer are left out:
//! `model` (replaced by the resolved version), `stream` and `stream_options`
//! (a streamed request can be answered by replaying a cached completion).

use crate::config::{CachePolicy, CacheScope};
use crate::request::{Endpoint, Headers, ParsedBody};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

const IGNORED_FIELDS: [&str; 3] = ["model", "stream", "stream_options"];

/// What the host should do with its response cache for this request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheDecision {
    /// Caching is off for this route.
    Disabled,
    /// Not cacheable (sampled request, or the client opted out): `x-edgegate-cache: BYPASS`.
    Bypass { reason: String },
    /// Look up `key`; on a miss, store a successful answer for `ttl_seconds`
    /// (and, when `coalesce`, share it with identical requests waiting).
    Lookup {
        key: String,
        ttl_seconds: u64,
        #[serde(default)]
        coalesce: bool,
        /// How long past `ttl_seconds` an answer is kept to serve when the
        /// backends fail (stale-if-error); 0: not at all.
        #[serde(default)]
        stale_seconds: u64,
    },
}

/// An answer as the host keeps it: when it was stored (wall clock, ms) on
/// its own line, then the body; the core judges its age, so a host that
/// keeps entries longer than asked (KV's 60 s minimum) changes nothing.
pub fn wrap_stored(stored_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{stored_ms}\n").into_bytes();
    out.extend_from_slice(body);
    out
}

/// When a kept answer was stored, and its body; `None` for anything else.
pub fn unwrap_stored(kept: &[u8]) -> Option<(u64, &[u8])> {
    let newline = kept.iter().take(21).position(|&b| b == b'\n')?;
    let stored_ms = std::str::from_utf8(&kept[..newline]).ok()?.parse().ok()?;
    Some((stored_ms, &kept[newline + 1..]))
}

/// The client opted out with `x-edgegate-cache: bypass` or `Cache-Control: no-store/no-cache`.
fn client_opted_out(headers: &Headers) -> bool {
    let bypass = headers
        .get("x-edgegate-cache")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("bypass"));
    let no_store = headers.get("cache-control").is_some_and(|v| {
        v.split(',').any(|d| {
            matches!(
                d.trim().to_ascii_lowercase().as_str(),
                "no-store" | "no-cache"
            )
        })
    });
    bypass || no_store
}

pub fn decide(
    policy: &CachePolicy,
    headers: &Headers,
    parsed: &ParsedBody,
    tenant_id: &str,
    version_label: &str,
) -> CacheDecision {
    if !policy.enabled {
        return CacheDecision::Disabled;
    }
    if client_opted_out(headers) {
        return CacheDecision::Bypass {
            reason: "client opted out".into(),
        };
    }
    if !parsed.is_deterministic() {
        return CacheDecision::Bypass {
            reason: "not deterministic (set temperature 0 or a seed)".into(),
        };
    }
    let scope = match policy.scope {
        CacheScope::Tenant => tenant_id,
        CacheScope::Global => "",
    };
    CacheDecision::Lookup {
        key: cache_key(scope, parsed.endpoint, version_label, &parsed.body),
        ttl_seconds: policy.ttl_seconds,
        coalesce: policy.coalesce,
        stale_seconds: policy.stale_if_error_seconds,
    }
}

/// Hex SHA-256 cache key. `scope` is the tenant id, or empty for a global cache.
pub fn cache_key(
    scope: &str,
    endpoint: Endpoint,
    version_label: &str,
    body: &Map<String, Value>,
) -> String {
    let mut h = Sha256::new();
    // Length-prefixed parts, so no two different tuples hash the same bytes.
    for part in [scope, endpoint.label(), version_label] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let top: Vec<(&String, &Value)> = body
        .iter()
        .filter(|(k, _)| !IGNORED_FIELDS.contains(&k.as_str()))
        .collect();
    write_object(&mut h, top);
    hex::encode(h.finalize())
}

/// Canonical JSON into the hasher: keys sorted at every level, no whitespace.
/// Sorting here (not relying on the map's order) keeps keys stable even if a
/// dependency turns on serde_json's `preserve_order`.
fn write_canonical(h: &mut Sha256, v: &Value) {
    match v {
        Value::Object(map) => write_object(h, map.iter().collect()),
        Value::Array(items) => {
            h.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                write_canonical(h, item);
            }
            h.update(b"]");
        }
        // Scalars serialise the same whatever the input spacing was.
        scalar => h.update(scalar.to_string().as_bytes()),
    }
}

fn write_object(h: &mut Sha256, mut entries: Vec<(&String, &Value)>) {
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    h.update(b"{");
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            h.update(b",");
        }
        h.update(Value::String(k.clone()).to_string().as_bytes());
        h.update(b":");
        write_canonical(h, v);
    }
    h.update(b"}");
}

#[cfg(test)]
mod tests;
