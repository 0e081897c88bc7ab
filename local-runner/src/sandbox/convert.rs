//! The host's side of the WIT types: what it sends into the sandbox (the
//! request, its context, what the quota store answered) and what it takes
//! out of it (a reservation to make, a usage record), field by field.

use super::guest;
use edgegate_core::admission::{Answer, Ask, Candidate, Priority};
use edgegate_core::auth::ApiKeyRecord;
use edgegate_core::directory::{PresentedKey, Refusal};
use edgegate_core::error::LimitKind;
use edgegate_core::exchange::{BodyLimit, BodyRead, Transport};
use edgegate_core::gateway::{QuotaRequest, RequestContext, UsageSource};
use edgegate_core::geo::Health;
use edgegate_core::ledger::latency::{Hour, Phase};
use edgegate_core::ledger::{Day, LatencySample, LedgerCounts, LedgerEntry, LedgerKey};
use edgegate_core::names::ShardedName;
use edgegate_core::quota::{
    Amounts, Budget, Level, LevelKind, QuotaLimits, QuotaSnapshot, ReserveOutcome,
};
use edgegate_core::request::HttpRequest;
use edgegate_core::safety::{RedactionCounts, SafetyReport};
use edgegate_core::telemetry::{CacheStatus, Fallback, Latency, Trace, Try, UsageRecord};

pub fn request(r: &HttpRequest) -> guest::HttpRequest {
    guest::HttpRequest {
        method: r.method.clone(),
        path: r.path.clone(),
        headers: r.headers.pairs().to_vec(),
        body: r.body.clone(),
    }
}

pub fn context(c: &RequestContext) -> guest::RequestContext {
    guest::RequestContext {
        now_ms: c.now_ms,
        request_id: c.request_id.clone(),
        client_ip: c.client_ip.map(|ip| ip.to_string()),
        client_geo: c.client_geo.as_ref().map(|g| guest::ClientGeo {
            latitude: g.latitude,
            longitude: g.longitude,
            country: g.country.clone(),
            continent: g.continent.clone(),
            colo: g.colo.clone(),
        }),
        regions: c
            .regions
            .iter()
            .map(|r| guest::RegionStatus {
                region: r.region.clone(),
                health: match r.health {
                    Health::Up => guest::Health::Up,
                    Health::Degraded => guest::Health::Degraded,
                    Health::Down => guest::Health::Down,
                },
                latency_ms: r.latency_ms,
                backend: r.backend.map(|b| guest::BackendLoad {
                    running: b.running,
                    waiting: b.waiting,
                    kv_cache_usage: b.kv_cache_usage,
                }),
            })
            .collect(),
        loads: c
            .loads
            .iter()
            .map(|l| guest::TargetLoad {
                target: l.target.clone(),
                in_flight: l.in_flight,
                latency_ms: l.latency_ms,
                latency_age_ms: l.latency_age_ms,
            })
            .collect(),
        provisioned_key: c.provisioned_key.as_ref().map(api_key_record),
    }
}

fn api_key_record(r: &ApiKeyRecord) -> guest::ApiKeyRecord {
    guest::ApiKeyRecord {
        tenant: r.tenant.clone(),
        id: r.id.clone(),
        tier: r.tier.clone(),
        user: r.user.clone(),
        standing: r.standing.as_ref().map(|s| guest::KeyStanding {
            revoked: s.revoked,
            expires_ms: s.expires_ms,
            hashes: s
                .hashes
                .iter()
                .map(|h| guest::KeyHash {
                    sha256: h.sha256.clone(),
                    until_ms: h.until_ms,
                })
                .collect(),
            budget: s.budget.clone().map(guest_limits),
        }),
        tenant_record: r.tenant_record.as_ref().map(|t| guest::TenantRecord {
            id: t.id.clone(),
            settings: guest::TenantSettings {
                tier: t.settings.tier.clone(),
                models: t.settings.models.clone(),
                ip_allow: t.settings.ip_allow.clone(),
                ip_deny: t.settings.ip_deny.clone(),
                residency: t.settings.residency.clone(),
            },
            disabled: t.disabled,
            created_ms: t.created_ms,
        }),
        models: r.models.clone(),
    }
}

fn guest_limits(l: QuotaLimits) -> guest::QuotaLimits {
    guest::QuotaLimits {
        requests_per_minute: l.requests_per_minute,
        request_burst: l.request_burst,
        tokens_per_minute: l.tokens_per_minute,
        token_burst: l.token_burst,
        tokens_per_day: l.tokens_per_day,
        cost_per_day_micros: l.cost_per_day_micros,
        tokens_per_month: l.tokens_per_month,
        cost_per_month_micros: l.cost_per_month_micros,
        max_concurrent: l.max_concurrent,
    }
}

/// The reservation to make, and its id.
pub fn quota_request(q: guest::QuotaRequest) -> (QuotaRequest, String) {
    let request = QuotaRequest {
        key: sharded_name(q.key),
        limits: quota_limits(q.limits),
        amounts: amounts(q.amounts),
        ttl_ms: q.ttl_ms,
        presented: q.presented.map(|p| PresentedKey {
            id: p.id,
            sha256: p.sha256,
        }),
        budgets: q
            .budgets
            .into_iter()
            .map(|b| Budget {
                level: match b.level {
                    guest::Level::Key(id) => Level::Key(id),
                    guest::Level::User(id) => Level::User(id),
                },
                limits: quota_limits(b.limits),
            })
            .collect(),
    };
    (request, q.id)
}

fn quota_limits(l: guest::QuotaLimits) -> QuotaLimits {
    QuotaLimits {
        requests_per_minute: l.requests_per_minute,
        request_burst: l.request_burst,
        tokens_per_minute: l.tokens_per_minute,
        token_burst: l.token_burst,
        tokens_per_day: l.tokens_per_day,
        cost_per_day_micros: l.cost_per_day_micros,
        tokens_per_month: l.tokens_per_month,
        cost_per_month_micros: l.cost_per_month_micros,
        max_concurrent: l.max_concurrent,
    }
}

pub fn amounts(a: guest::Amounts) -> Amounts {
    Amounts {
        requests: a.requests,
        tokens: a.tokens,
        cost_micros: a.cost_micros,
    }
}

pub fn reserve_outcome(o: ReserveOutcome) -> guest::ReserveOutcome {
    match o {
        ReserveOutcome::Admit { snapshot: s } => guest::ReserveOutcome::Admit(snapshot(s)),
        ReserveOutcome::Deny {
            level,
            limit,
            retry_after_ms,
            snapshot: s,
        } => guest::ReserveOutcome::Deny(guest::Denial {
            level: match level {
                LevelKind::Tenant => guest::LimitLevel::Tenant,
                LevelKind::Key => guest::LimitLevel::Key,
                LevelKind::User => guest::LimitLevel::User,
            },
            limit: match limit {
                LimitKind::Requests => guest::LimitKind::Requests,
                LimitKind::Tokens => guest::LimitKind::Tokens,
                LimitKind::TokensPerDay => guest::LimitKind::TokensPerDay,
                LimitKind::Cost => guest::LimitKind::Cost,
                LimitKind::Concurrency => guest::LimitKind::Concurrency,
                LimitKind::TokensPerMonth => guest::LimitKind::TokensPerMonth,
                LimitKind::CostPerMonth => guest::LimitKind::CostPerMonth,
            },
            retry_after_ms,
            snapshot: snapshot(s),
        }),
        ReserveOutcome::Refused { refusal } => guest::ReserveOutcome::Refused(match refusal {
            Refusal::KeyRevoked => guest::Refusal::KeyRevoked,
            Refusal::KeyExpired => guest::Refusal::KeyExpired,
            Refusal::KeyRotated => guest::Refusal::KeyRotated,
            Refusal::TenantDisabled => guest::Refusal::TenantDisabled,
        }),
    }
}

fn snapshot(s: QuotaSnapshot) -> guest::QuotaSnapshot {
    guest::QuotaSnapshot {
        limit_requests: s.limit_requests,
        limit_tokens: s.limit_tokens,
        remaining_requests: s.remaining_requests,
        remaining_tokens: s.remaining_tokens,
        reset_requests_ms: s.reset_requests_ms,
        reset_tokens_ms: s.reset_tokens_ms,
    }
}

pub fn body_limit(l: guest::BodyLimit) -> BodyLimit {
    BodyLimit {
        max_bytes: usize::try_from(l.max_bytes).unwrap_or(usize::MAX),
        within_ms: l.within_ms,
    }
}

pub fn body_reads(r: guest::BodyRead) -> BodyRead {
    BodyRead {
        success: r.success.map(body_limit),
        error: body_limit(r.error),
    }
}

/// How a body read ended (`edgegate_core::exchange::BodyCollector`).
pub fn body_read(read: Result<Vec<u8>, Transport>) -> guest::Event {
    match read {
        Ok(body) => guest::Event::Body(body),
        Err(Transport::Connect) => guest::Event::Failed(guest::Transport::Connect),
        Err(Transport::Timeout) => guest::Event::Failed(guest::Transport::Timeout),
        Err(Transport::Broke) => guest::Event::Failed(guest::Transport::Broke),
        Err(Transport::TooLarge) => guest::Event::Failed(guest::Transport::TooLarge),
    }
}

pub fn ledger_entry(e: guest::LedgerEntry) -> LedgerEntry {
    LedgerEntry {
        key: LedgerKey {
            tenant: e.tenant,
            key: e.key_id,
            model: e.model,
            version: e.version,
            day: Day::from_number(e.day),
        },
        counts: LedgerCounts {
            requests: e.requests,
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            cost_micros: e.cost_micros,
            errors: e.errors,
            cache_hits: e.cache_hits,
            degraded: e.degraded,
            last_ms: e.last_ms,
        },
        latency: e.latency.map(|l| LatencySample {
            hour: Hour::from_number(l.hour),
            buckets: l
                .buckets
                .into_iter()
                .map(|b| {
                    let phase = match b.phase {
                        guest::LatencyPhase::Gateway => Phase::Gateway,
                        guest::LatencyPhase::Queue => Phase::Queue,
                        guest::LatencyPhase::TimeToFirstToken => Phase::TimeToFirstToken,
                        guest::LatencyPhase::TimePerOutputToken => Phase::TimePerOutputToken,
                        guest::LatencyPhase::Total => Phase::Total,
                    };
                    (phase, b.bucket)
                })
                .collect(),
        }),
    }
}

pub fn usage_record(r: guest::UsageRecord) -> UsageRecord {
    UsageRecord {
        request_id: r.request_id,
        tenant: r.tenant,
        key_id: r.key_id,
        tier: r.tier,
        endpoint: r.endpoint,
        model: r.model,
        version: r.version,
        region: r.region,
        status: r.status,
        error: r.error,
        stream: r.stream,
        cache: match r.cache {
            guest::CacheStatus::Hit => CacheStatus::Hit,
            guest::CacheStatus::Coalesced => CacheStatus::Coalesced,
            guest::CacheStatus::Stale => CacheStatus::Stale,
            guest::CacheStatus::Miss => CacheStatus::Miss,
            guest::CacheStatus::Bypass => CacheStatus::Bypass,
            guest::CacheStatus::Off => CacheStatus::Off,
        },
        attempts: r.attempts,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cost_usd: r.cost_usd,
        usage: r.usage.map(|u| match u {
            guest::UsageSource::Reported => UsageSource::Reported,
            guest::UsageSource::Estimated => UsageSource::Estimated,
            guest::UsageSource::Reserved => UsageSource::Reserved,
        }),
        degraded: r.degraded,
        fallback: r.fallback.map(|f| match f {
            guest::Fallback::Region => Fallback::Region,
            guest::Fallback::Model => Fallback::Model,
        }),
        safety: SafetyReport {
            injection_rule: r.safety.injection_rule,
            redactions: RedactionCounts {
                emails: r.safety.emails,
                phones: r.safety.phones,
                cards: r.safety.cards,
            },
        },
        trace_id: r.trace_id,
        trace: r.trace.map(|t| {
            Box::new(Trace {
                span_id: t.span_id,
                parent_span_id: t.parent_span_id,
                start_unix_us: t.start_unix_us,
                request_model: t.request_model,
                tries: t
                    .tries
                    .into_iter()
                    .map(|t| Try {
                        span_id: t.span_id,
                        target: t.target,
                        model: t.model,
                        version: t.version,
                        sent_us: t.sent_us,
                        first_byte_us: t.first_byte_us,
                        end_us: t.end_us,
                        status: t.status,
                        error: t.error,
                    })
                    .collect(),
            })
        }),
        latency: Latency {
            gateway_us: r.latency.gateway_us,
            queue_us: r.latency.queue_us,
            upstream_first_byte_us: r.latency.upstream_first_byte_us,
            first_token_us: r.latency.first_token_us,
            after_first_token_us: r.latency.after_first_token_us,
            total_us: r.latency.total_us,
        },
    }
}

fn sharded_name(n: guest::ShardedName) -> ShardedName {
    ShardedName {
        name: n.name,
        shard: n.shard,
    }
}

/// A permit request, as the host's gate takes it: the gate's name, the ask.
pub fn gate_ask(a: guest::GateAsk) -> (String, Ask) {
    let ask = Ask {
        id: a.id,
        priority: match a.priority {
            guest::Priority::Low => Priority::Low,
            guest::Priority::Normal => Priority::Normal,
            guest::Priority::High => Priority::High,
        },
        candidates: a
            .candidates
            .into_iter()
            .map(|c| Candidate {
                attempt: c.attempt,
                target: c.target,
                capacity: c.capacity,
            })
            .collect(),
        wait_ms: a.wait_ms,
        lease_ms: a.lease_ms,
        service_ms: a.service_ms,
    };
    (sharded_name(a.region).to_string(), ask)
}

/// The gate's answer, as the exchange takes it.
pub fn gate_answer(a: Answer) -> guest::Event {
    match a {
        Answer::Granted { attempt, .. } => guest::Event::Granted(attempt),
        Answer::Full { retry_after_ms } => guest::Event::Full(retry_after_ms),
        // The host answers only once the gate has decided.
        Answer::Queued => guest::Event::Full(1000),
    }
}
