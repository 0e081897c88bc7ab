//! One usage record per request, the same from every host: a structured
//! access-log line and a metering event. Never contains keys, tokens
//! (credentials) or prompt text.

use crate::cache::CacheDecision;
use crate::error::GatewayError;
use crate::gateway::{ForwardPlan, Settlement, UsageSource};
use crate::safety::SafetyReport;
use serde::{Deserialize, Serialize};

pub mod trace;
pub use trace::{Trace, Try};

/// Latency histogram buckets, seconds (upper bounds): 1, 1.5, 2, 3, 5, 7.5
/// per decade from 0.25 ms to 60 s, so a quantile interpolated within one
/// (as Prometheus does) is off by at most half its value. `/metrics` and
/// the latency ledger ([`crate::ledger::latency`]) count in the same ones.
pub const LATENCY_BUCKETS_S: [f64; 32] = [
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
    0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0,
    30.0, 60.0,
];

/// Time per output token buckets, seconds.
pub const TOKEN_BUCKETS_S: [f64; 16] = [
    0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
    0.3, 0.6,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStatus {
    Hit,
    /// Answered by an identical request that was in flight (one backend call for both).
    Coalesced,
    /// Every attempt failed; answered from the cache past its TTL (stale-if-error).
    Stale,
    Miss,
    Bypass,
    /// Caching is off for the route, or the request never got that far.
    Off,
}

impl CacheStatus {
    /// The decision before the lookup; a host turns `Miss` into `Hit` when it finds one.
    pub fn before_lookup(decision: &CacheDecision) -> Self {
        match decision {
            CacheDecision::Disabled => CacheStatus::Off,
            CacheDecision::Bypass { .. } => CacheStatus::Bypass,
            CacheDecision::Lookup { .. } => CacheStatus::Miss,
        }
    }

    /// The `x-edgegate-cache` header value, if caching applies.
    pub fn header_value(self) -> Option<&'static str> {
        match self {
            CacheStatus::Hit => Some("HIT"),
            CacheStatus::Coalesced => Some("COALESCED"),
            CacheStatus::Stale => Some("STALE"),
            CacheStatus::Miss => Some("MISS"),
            CacheStatus::Bypass => Some("BYPASS"),
            CacheStatus::Off => None,
        }
    }
}

/// How the attempt that answered differs from the plan's first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Another replica or region of the same model answered.
    Region,
    /// Another model of the route's fallback chain answered.
    Model,
}

impl Fallback {
    pub fn label(self) -> &'static str {
        match self {
            Fallback::Region => "region",
            Fallback::Model => "model",
        }
    }
}

/// Where the time went, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// The gateway's own work (core calls, quota store, cache lookup).
    pub gateway_us: u64,
    /// Waiting for a sandbox instance, a quota-store lock, or a replica's
    /// permit at its gate.
    pub queue_us: u64,
    /// From sending upstream to the first response byte.
    pub upstream_first_byte_us: Option<u64>,
    /// From sending upstream to the first token the client could be sent:
    /// a stream's first content, a whole answer's arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_us: Option<u64>,
    /// A stream's time from its first content to its end (the output
    /// tokens after the first took it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_first_token_us: Option<u64>,
    pub total_us: u64,
}

impl Latency {
    /// A request the gateway answered alone: all of it its own work.
    pub fn gateway_only(total_us: u64) -> Latency {
        Latency {
            gateway_us: total_us,
            total_us,
            ..Latency::default()
        }
    }
}

/// How a planned request ended, as the host saw it.
#[derive(Debug, Clone, Copy)]
pub struct PlanOutcome<'a> {
    /// The attempt that answered (or failed last).
    pub attempt: Option<usize>,
    pub attempts_made: u32,
    pub status: u16,
    pub error: Option<&'a GatewayError>,
    pub settlement: Option<&'a Settlement>,
    pub cache: CacheStatus,
    pub latency: Latency,
}

impl<'a> PlanOutcome<'a> {
    /// Answered from the response cache: no upstream try was made.
    pub fn cache_hit(settlement: &'a Settlement, latency: Latency) -> Self {
        PlanOutcome {
            attempt: None,
            attempts_made: 0,
            status: 200,
            error: None,
            settlement: Some(settlement),
            cache: CacheStatus::Hit,
            latency,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub request_id: String,
    pub tenant: Option<String>,
    /// The API key's id (never the key); none for a token or a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub tier: Option<String>,
    pub endpoint: Option<String>,
    /// The model that answered (a fallback's or a degraded answer's own),
    /// else the one asked for.
    pub model: Option<String>,
    pub version: Option<String>,
    pub region: Option<String>,
    pub status: u16,
    /// The error's metric label, when the request failed.
    pub error: Option<String>,
    pub stream: bool,
    pub cache: CacheStatus,
    /// Upstream tries made (0 for cache hits and rejections).
    pub attempts: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// Where the token counts come from; none when nothing was settled.
    pub usage: Option<UsageSource>,
    /// Why a degraded answer was given (`x-edgegate-degraded`), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// Whether a later attempt than the first answered (not counting a
    /// degraded answer, which `degraded` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// What prompt screening found (flagged injection, redactions).
    #[serde(default, skip_serializing_if = "SafetyReport::is_empty")]
    pub safety: SafetyReport,
    /// The W3C trace id the backend was sent (`traceparent`), when the
    /// request got that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The spans' times and ids, when the request's trace is exported
    /// ([`trace::spans`]); not in the access log.
    #[serde(skip)]
    pub trace: Option<Box<Trace>>,
    pub latency: Latency,
}

impl UsageRecord {
    /// What prompt screening did, as (action, kind, count) with count > 0:
    /// `blocked`/`flagged` `prompt_injection`, `redacted` `email`/`phone`/`card`.
    pub fn safety_triggers(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> {
        let blocked = self.error.as_deref() == Some(GatewayError::CONTENT_BLOCKED);
        let flagged = self.safety.injection_rule.is_some();
        let r = &self.safety.redactions;
        [
            ("blocked", "prompt_injection", u64::from(blocked)),
            ("flagged", "prompt_injection", u64::from(flagged)),
            ("redacted", "email", r.emails.into()),
            ("redacted", "phone", r.phones.into()),
            ("redacted", "card", r.cards.into()),
        ]
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
    }

    /// A stream's time per output token after the first, in seconds.
    pub fn time_per_output_token_s(&self) -> Option<f64> {
        let after = self.latency.after_first_token_us.filter(|us| *us > 0)?;
        (self.output_tokens > 1).then(|| after as f64 / 1e6 / (self.output_tokens - 1) as f64)
    }

    /// A request refused before a plan existed (auth, validation, ...).
    pub fn rejected(request_id: &str, err: &GatewayError, latency: Latency) -> Self {
        UsageRecord {
            error: Some(err.metric_label().to_owned()),
            ..UsageRecord::answered(request_id, err.status(), latency)
        }
    }

    /// A request the gateway answered itself (e.g. the models list).
    pub fn answered(request_id: &str, status: u16, latency: Latency) -> Self {
        UsageRecord {
            request_id: request_id.to_owned(),
            tenant: None,
            key_id: None,
            tier: None,
            endpoint: None,
            model: None,
            version: None,
            region: None,
            status,
            error: None,
            stream: false,
            cache: CacheStatus::Off,
            attempts: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            usage: None,
            degraded: None,
            fallback: None,
            safety: SafetyReport::default(),
            trace_id: None,
            trace: None,
            latency,
        }
    }

    /// A planned request: served (with a settlement) or failed after admission.
    pub fn planned(plan: &ForwardPlan, outcome: &PlanOutcome<'_>) -> Self {
        let PlanOutcome {
            attempt,
            attempts_made,
            status,
            error,
            settlement,
            cache,
            latency,
        } = *outcome;
        let tried = attempt.and_then(|i| plan.attempts.get(i));
        UsageRecord {
            request_id: plan.request_id.clone(),
            tenant: Some(plan.tenant_id.clone()),
            key_id: plan.key_id.clone(),
            tier: Some(plan.tier.clone()),
            endpoint: Some(plan.endpoint.label().to_owned()),
            model: Some(tried.map_or(&plan.model, |a| &a.model).clone()),
            version: tried.map(|a| a.version.clone()),
            region: tried.map(|a| a.region.clone()),
            status,
            error: error.map(|e| e.metric_label().to_owned()),
            stream: plan.stream,
            cache,
            attempts: attempts_made,
            input_tokens: settlement.map_or(0, |s| s.input_tokens),
            output_tokens: settlement.map_or(0, |s| s.output_tokens),
            cost_usd: settlement.map_or(0.0, |s| s.actual.cost_micros as f64 / 1e6),
            usage: settlement.map(|s| s.usage),
            degraded: tried
                .filter(|_| settlement.is_some())
                .and_then(|a| a.degraded.clone()),
            fallback: tried
                .filter(|a| settlement.is_some() && attempt != Some(0) && a.degraded.is_none())
                .map(|a| match plan.attempts.first() {
                    Some(first) if first.model != a.model => Fallback::Model,
                    _ => Fallback::Region,
                }),
            safety: plan.safety.clone(),
            trace_id: Some(plan.trace_id.clone()),
            trace: None,
            latency,
        }
    }
}
