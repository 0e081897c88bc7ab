//! Prometheus metrics at `/metrics`, in the OpenMetrics text format from
//! `prometheus-client` (it escapes label values): counters and per-phase
//! histograms the request path updates once per request, and a collector
//! ([`Live`]) that reads the live state at scrape time — the regions'
//! health, the replicas' load, the gates, the sandbox's traps — so nothing
//! is copied for metrics. Labels are low-cardinality: endpoints, status
//! classes, models, regions and the core's error labels; never tenants'
//! keys or request data.
//!
//! Names carry their unit (`_seconds`) without OpenMetrics' `UNIT` line,
//! which some parsers refuse for histograms.
//!
//! Phases of a request (`edgegate_*_seconds`, by endpoint, model and
//! region): the gateway's own work, the queue (a sandbox instance, a
//! replica's permit at its gate), the upstream's first token, the time per
//! output token after it, and the total.

mod label;
mod live;

pub use live::Live;

use label::Text;

use edgegate_core::config::observability::Observability;
use edgegate_core::telemetry::{CacheStatus, LATENCY_BUCKETS_S, TOKEN_BUCKETS_S, UsageRecord};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    endpoint: Text,
    status: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Phase {
    endpoint: Text,
    model: Text,
    region: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorKind {
    kind: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tokens {
    model: Text,
    direction: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Model {
    model: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantOutcome {
    tenant: Text,
    status: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantTokens {
    tenant: Text,
    direction: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tenant {
    tenant: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cache {
    result: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Failure {
    region: Text,
    kind: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackKind {
    kind: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SafetyTrigger {
    action: Text,
    kind: Text,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpanOutcome {
    outcome: Text,
}

/// The OTLP export's counts (`edgegate_otlp_spans_total` by outcome).
#[derive(Clone, Debug)]
pub struct SpanCounters {
    pub exported: Counter,
    /// The queue was full: the collector is slower than the traffic.
    pub dropped_queue_full: Counter,
    /// The collector refused the batch, was not there or timed out.
    pub dropped_export_failed: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: Text,
}

type Histograms = Family<Phase, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_S)
}

fn per_token() -> Histogram {
    Histogram::new(TOKEN_BUCKETS_S)
}

pub struct Metrics {
    registry: Registry,
    /// Which tenants have series of their own (`observability.metrics_tenants`).
    observability: Observability,
    tenant_requests: Family<TenantOutcome, Counter>,
    tenant_tokens: Family<TenantTokens, Counter>,
    tenant_cost: Family<Tenant, Counter<f64, AtomicU64>>,
    requests: Family<Outcome, Counter>,
    errors: Family<ErrorKind, Counter>,
    total: Histograms,
    gateway: Histograms,
    queue: Histograms,
    first_token: Histograms,
    per_output_token: Histograms,
    tokens: Family<Tokens, Counter>,
    cost: Family<Model, Counter<f64, AtomicU64>>,
    cache: Family<Cache, Counter>,
    upstream_failures: Family<Failure, Counter>,
    degraded: Family<Reason, Counter>,
    fallbacks: Family<FallbackKind, Counter>,
    safety: Family<SafetyTrigger, Counter>,
    spans: Family<SpanOutcome, Counter>,
}

fn or_none(v: &Option<String>) -> Text {
    Text(v.clone().unwrap_or_else(|| "none".into()))
}

impl Metrics {
    /// The families, registered; per-tenant series for the tenants
    /// `observability` lists, the rest as `other`.
    pub fn new(observability: &Observability) -> Metrics {
        let histograms = |f: fn() -> Histogram| Histograms::new_with_constructor(f);
        let mut m = Metrics {
            observability: observability.clone(),
            tenant_requests: Family::default(),
            tenant_tokens: Family::default(),
            tenant_cost: Family::default(),
            requests: Family::default(),
            errors: Family::default(),
            total: histograms(latency),
            gateway: histograms(latency),
            queue: histograms(latency),
            first_token: histograms(latency),
            per_output_token: histograms(per_token),
            tokens: Family::default(),
            cost: Family::default(),
            cache: Family::default(),
            upstream_failures: Family::default(),
            degraded: Family::default(),
            fallbacks: Family::default(),
            safety: Family::default(),
            spans: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut m.registry;
        r.register(
            "edgegate_requests",
            "Requests by endpoint and status class",
            m.requests.clone(),
        );
        r.register(
            "edgegate_errors",
            "Failed requests by error kind",
            m.errors.clone(),
        );
        for (name, help, family) in [
            (
                "edgegate_request_duration_seconds",
                "Total request latency (gen_ai.server.request.duration)",
                &m.total,
            ),
            (
                "edgegate_gateway_duration_seconds",
                "The gateway's own work: core calls, quota store, cache lookup",
                &m.gateway,
            ),
            (
                "edgegate_queue_duration_seconds",
                "Waiting for a sandbox instance or a replica's permit at its gate",
                &m.queue,
            ),
            (
                "edgegate_time_to_first_token_seconds",
                "From sending upstream to the first byte (gen_ai.server.time_to_first_token)",
                &m.first_token,
            ),
            (
                "edgegate_time_per_output_token_seconds",
                "After the first token, per output token (gen_ai.server.time_per_output_token)",
                &m.per_output_token,
            ),
        ] {
            r.register(name, help, family.clone());
        }
        r.register(
            "edgegate_tokens",
            "Tokens settled, by model and direction (gen_ai.client.token.usage)",
            m.tokens.clone(),
        );
        r.register(
            "edgegate_cost_usd",
            "Cost accounted, by model",
            m.cost.clone(),
        );
        r.register(
            "edgegate_cache_requests",
            "Cache lookups by result",
            m.cache.clone(),
        );
        r.register(
            "edgegate_upstream_failures",
            "Upstream tries that failed, by region and kind",
            m.upstream_failures.clone(),
        );
        r.register(
            "edgegate_degraded",
            "Answers given by a route's degradation policy, by reason",
            m.degraded.clone(),
        );
        r.register(
            "edgegate_fallbacks",
            "Answers from a later attempt than the first: another region or replica of the model, or another model",
            m.fallbacks.clone(),
        );
        r.register(
            "edgegate_safety_triggers",
            "Prompt screening: injections flagged or blocked, PII redacted (by kind)",
            m.safety.clone(),
        );
        r.register(
            "edgegate_otlp_spans",
            "Spans exported over OTLP, or dropped (queue full, export failed) by outcome",
            m.spans.clone(),
        );
        r.register(
            "edgegate_tenant_requests",
            "Requests by tenant (those listed in observability.metrics_tenants, the rest as other) and status class",
            m.tenant_requests.clone(),
        );
        r.register(
            "edgegate_tenant_tokens",
            "Tokens settled, by tenant (listed, or other) and direction",
            m.tenant_tokens.clone(),
        );
        r.register(
            "edgegate_tenant_cost_usd",
            "Cost accounted, by tenant (listed, or other)",
            m.tenant_cost.clone(),
        );
        m
    }

    /// The OTLP export's counters, each series present from the start.
    pub fn span_counters(&self) -> SpanCounters {
        let counter = |outcome: &str| {
            self.spans
                .get_or_create(&SpanOutcome {
                    outcome: outcome.into(),
                })
                .clone()
        };
        SpanCounters {
            exported: counter("exported"),
            dropped_queue_full: counter("dropped_queue_full"),
            dropped_export_failed: counter("dropped_export_failed"),
        }
    }

    /// Reads `live` at every scrape.
    pub fn read_live(&mut self, live: Live) {
        self.registry.register_collector(Box::new(live));
    }

    pub fn record(&self, r: &UsageRecord) {
        let endpoint = or_none(&r.endpoint);
        let status = Text(format!("{}xx", r.status / 100));
        let tenant: Text = self.observability.tenant_label(r.tenant.as_deref()).into();
        self.tenant_requests
            .get_or_create(&TenantOutcome {
                tenant: tenant.clone(),
                status: status.clone(),
            })
            .inc();
        for (direction, n) in [("input", r.input_tokens), ("output", r.output_tokens)] {
            self.tenant_tokens
                .get_or_create(&TenantTokens {
                    tenant: tenant.clone(),
                    direction: direction.into(),
                })
                .inc_by(n);
        }
        self.tenant_cost
            .get_or_create(&Tenant { tenant })
            .inc_by(r.cost_usd);
        self.requests
            .get_or_create(&Outcome {
                endpoint: endpoint.clone(),
                status,
            })
            .inc();
        if let Some(kind) = &r.error {
            self.errors
                .get_or_create(&ErrorKind {
                    kind: Text(kind.clone()),
                })
                .inc();
        }
        if let Some(reason) = &r.degraded {
            self.degraded
                .get_or_create(&Reason {
                    reason: Text(reason.clone()),
                })
                .inc();
        }
        if let Some(fallback) = r.fallback {
            self.fallbacks
                .get_or_create(&FallbackKind {
                    kind: fallback.label().into(),
                })
                .inc();
        }
        self.record_safety(r);
        let phase = Phase {
            endpoint,
            model: or_none(&r.model),
            region: or_none(&r.region),
        };
        let seconds = |us: u64| us as f64 / 1e6;
        let l = &r.latency;
        self.total
            .get_or_create(&phase)
            .observe(seconds(l.total_us));
        self.gateway
            .get_or_create(&phase)
            .observe(seconds(l.gateway_us));
        self.queue
            .get_or_create(&phase)
            .observe(seconds(l.queue_us));
        if let Some(first) = l.first_token_us {
            self.first_token
                .get_or_create(&phase)
                .observe(seconds(first));
        }
        if let Some(each) = r.time_per_output_token_s() {
            self.per_output_token.get_or_create(&phase).observe(each);
        }
        if let Some(model) = &r.model {
            for (direction, n) in [("input", r.input_tokens), ("output", r.output_tokens)] {
                self.tokens
                    .get_or_create(&Tokens {
                        model: Text(model.clone()),
                        direction: direction.into(),
                    })
                    .inc_by(n);
            }
            self.cost
                .get_or_create(&Model {
                    model: Text(model.clone()),
                })
                .inc_by(r.cost_usd);
        }
        let result = match r.cache {
            CacheStatus::Hit => "hit",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Stale => "stale",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Off => return,
        };
        self.cache
            .get_or_create(&Cache {
                result: result.into(),
            })
            .inc();
    }

    fn record_safety(&self, r: &UsageRecord) {
        for (action, kind, n) in r.safety_triggers() {
            self.safety
                .get_or_create(&SafetyTrigger {
                    action: action.into(),
                    kind: kind.into(),
                })
                .inc_by(n);
        }
    }

    pub fn upstream_failure(&self, region: &str, kind: &str) {
        self.upstream_failures
            .get_or_create(&Failure {
                region: region.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            out = format!("# edgegate: metrics not encoded: {e}\n# EOF\n");
        }
        out
    }
}

#[cfg(test)]
mod tests;
