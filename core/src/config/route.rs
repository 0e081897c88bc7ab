//! Routes: which versions serve a model (split, pin, fallback,
//! degradation) and the settings a route may override (timeouts, cache,
//! safety, attempts).

use super::raw::{RawCache, RawRoute, RawSafety, RawTimeouts};
use super::{ConfigError, Lookup, Result, VersionRef, parse_endpoints, positive, to_u32};
use crate::request::Endpoint;
use crate::safety::InjectionMode;

/// `cache.stale_if_error_seconds` at most: a week.
const MAX_STALE_SECONDS: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timeouts {
    pub connect_ms: u64,
    pub first_byte_ms: u64,
    pub stream_idle_ms: u64,
    pub total_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    Tenant,
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub enabled: bool,
    pub ttl_seconds: u64,
    pub scope: CacheScope,
    /// A miss arriving while an identical request is in flight waits for
    /// its answer instead of calling the backend again.
    pub coalesce: bool,
    /// How long past its TTL an answer may still be served when every
    /// attempt failed (stale-if-error); 0: never.
    pub stale_if_error_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafetyPolicy {
    pub injection: InjectionMode,
    pub redact_pii: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSettings {
    pub timeouts: Timeouts,
    pub cache: CachePolicy,
    pub safety: SafetyPolicy,
    /// Upstream attempts at most (targets tried before giving up).
    pub max_attempts: u32,
}

impl Default for RouteSettings {
    fn default() -> Self {
        RouteSettings {
            timeouts: Timeouts {
                connect_ms: 2_000,
                first_byte_ms: 30_000,
                stream_idle_ms: 30_000,
                total_ms: 300_000,
            },
            cache: CachePolicy {
                enabled: false,
                ttl_seconds: 300,
                scope: CacheScope::Tenant,
                coalesce: true,
                stale_if_error_seconds: 0,
            },
            safety: SafetyPolicy {
                injection: InjectionMode::Off,
                redact_pii: false,
            },
            max_attempts: 3,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub model: usize,
    pub endpoints: Option<Vec<Endpoint>>,
    /// (version index, weight > 0); never empty.
    pub split: Vec<(usize, f64)>,
    pub pin_header: Option<String>,
    pub fallback: Vec<VersionRef>,
    /// What answers, marked, when the primary and its fallbacks cannot.
    pub degrade: Option<Degrade>,
    pub settings: RouteSettings,
}

/// A route's degradation policy: a smaller model, and a cap on its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Degrade {
    pub version: VersionRef,
    pub max_tokens: Option<u64>,
}

pub(crate) fn validate_settings(
    path: &str,
    base: &RouteSettings,
    timeouts: Option<&RawTimeouts>,
    cache: Option<&RawCache>,
    safety: Option<&RawSafety>,
    max_attempts: Option<u64>,
) -> Result<RouteSettings> {
    let mut s = *base;
    if let Some(t) = timeouts {
        let pick = |name: &str, v: Option<u64>, d: u64| -> Result<u64> {
            v.map_or(Ok(d), |v| positive(&format!("{path}.timeouts.{name}"), v))
        };
        s.timeouts = Timeouts {
            connect_ms: pick("connect_ms", t.connect_ms, s.timeouts.connect_ms)?,
            first_byte_ms: pick("first_byte_ms", t.first_byte_ms, s.timeouts.first_byte_ms)?,
            stream_idle_ms: pick(
                "stream_idle_ms",
                t.stream_idle_ms,
                s.timeouts.stream_idle_ms,
            )?,
            total_ms: pick("total_ms", t.total_ms, s.timeouts.total_ms)?,
        };
    }
    if let Some(c) = cache {
        s.cache.enabled = c.enabled.unwrap_or(true);
        if let Some(coalesce) = c.coalesce {
            s.cache.coalesce = coalesce;
        }
        match c.stale_if_error_seconds {
            None => {}
            Some(secs @ 0..=MAX_STALE_SECONDS) => s.cache.stale_if_error_seconds = secs,
            Some(_) => {
                return Err(ConfigError::new(
                    format!("{path}.cache.stale_if_error_seconds"),
                    format!("must be at most {MAX_STALE_SECONDS} (a week)"),
                ));
            }
        }
        if let Some(ttl) = c.ttl_seconds {
            s.cache.ttl_seconds = positive(&format!("{path}.cache.ttl_seconds"), ttl)?;
        }
        if let Some(scope) = &c.scope {
            s.cache.scope = match scope.as_str() {
                "tenant" => CacheScope::Tenant,
                "global" => CacheScope::Global,
                other => {
                    return Err(ConfigError::new(
                        format!("{path}.cache.scope"),
                        format!("unknown scope `{other}` (expected tenant or global)"),
                    ));
                }
            };
        }
    }
    if let Some(sf) = safety {
        if let Some(mode) = &sf.injection {
            s.safety.injection = match mode.as_str() {
                "off" => InjectionMode::Off,
                "flag" => InjectionMode::Flag,
                "block" => InjectionMode::Block,
                other => {
                    return Err(ConfigError::new(
                        format!("{path}.safety.injection"),
                        format!("unknown mode `{other}` (expected off, flag or block)"),
                    ));
                }
            };
        }
        if let Some(r) = sf.redact_pii {
            s.safety.redact_pii = r;
        }
    }
    if let Some(n) = max_attempts {
        s.max_attempts = to_u32(
            &format!("{path}.max_attempts"),
            positive(&format!("{path}.max_attempts"), n)?,
        )?;
    }
    Ok(s)
}

pub(crate) fn validate_route(
    path: &str,
    r: &RawRoute,
    defaults: &RouteSettings,
    lookup: &Lookup,
) -> Result<Route> {
    let model = lookup.model(&format!("{path}.model"), &r.model)?;
    let endpoints = r
        .endpoints
        .as_ref()
        .map(|e| parse_endpoints(&format!("{path}.endpoints"), e))
        .transpose()?;
    let mut split = Vec::new();
    for (i, s) in r.split.iter().enumerate() {
        let version = lookup.version(&format!("{path}.split[{i}].version"), model, &s.version)?;
        if !(s.weight.is_finite() && s.weight > 0.0) {
            return Err(ConfigError::new(
                format!("{path}.split[{i}].weight"),
                "must be > 0",
            ));
        }
        split.push((version, s.weight));
    }
    if split.is_empty() {
        split.push((0, 1.0));
    }
    let fallback = r
        .fallback
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let p = format!("{path}.fallback[{i}]");
            match lookup.model_spec(&p, spec)? {
                (model, Some(version)) => Ok(VersionRef { model, version }),
                (model, None) => Ok(VersionRef { model, version: 0 }),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let pin_header = r.pin_header.as_ref().map(|h| h.to_ascii_lowercase());
    let degrade = match &r.degrade {
        None => None,
        Some(d) => {
            let p = format!("{path}.degrade");
            let (model, version) = lookup.model_spec(&format!("{p}.model"), &d.model)?;
            let max_tokens = d
                .max_tokens
                .map(|n| positive(&format!("{p}.max_tokens"), n))
                .transpose()?;
            Some(Degrade {
                version: VersionRef {
                    model,
                    version: version.unwrap_or(0),
                },
                max_tokens,
            })
        }
    };
    Ok(Route {
        model,
        endpoints,
        split,
        pin_header,
        fallback,
        degrade,
        settings: validate_settings(
            path,
            defaults,
            r.timeouts.as_ref(),
            r.cache.as_ref(),
            r.safety.as_ref(),
            r.max_attempts,
        )?,
    })
}
