//! The WIT types to the core's and back, field by field.

use crate::bindings::exports::edgegate::gateway::core as wit;
use edgegate_core::GatewayError;
use edgegate_core::admission::Priority;
use edgegate_core::auth::ApiKeyRecord;
use edgegate_core::directory::{KeyHash, KeyStanding, Refusal, TenantRecord, TenantSettings};
use edgegate_core::error::LimitKind;
use edgegate_core::exchange::{Action, BodyLimit, Event, Exchange, Head, ResponseBody, Transport};
use edgegate_core::gateway::{QuotaRequest, RequestContext, UsageSource};
use edgegate_core::geo::{ClientGeo, Health, RegionStatus};
use edgegate_core::health::Observation;
use edgegate_core::ledger::LedgerEntry;
use edgegate_core::ledger::latency::Phase;
use edgegate_core::load::{BackendLoad, TargetLoad};
use edgegate_core::names::ShardedName;
use edgegate_core::quota::{Amounts, Level, LevelKind, QuotaLimits, QuotaSnapshot, ReserveOutcome};
use edgegate_core::telemetry::{CacheStatus, Fallback, UsageRecord};

/// Every action the exchange has for the host now.
pub fn drain(exchange: &mut Exchange) -> Vec<wit::Action> {
    let mut out = Vec::new();
    while let Some(action) = exchange.poll() {
        out.push(action_to_wit(exchange, action));
    }
    out
}

pub fn context(c: wit::RequestContext) -> RequestContext {
    RequestContext {
        now_ms: c.now_ms,
        request_id: c.request_id,
        client_ip: c.client_ip.and_then(|ip| ip.parse().ok()),
        client_geo: c.client_geo.map(|g| ClientGeo {
            latitude: g.latitude,
            longitude: g.longitude,
            country: g.country,
            continent: g.continent,
            colo: g.colo,
        }),
        regions: c
            .regions
            .into_iter()
            .map(|r| RegionStatus {
                region: r.region,
                health: match r.health {
                    wit::Health::Up => Health::Up,
                    wit::Health::Degraded => Health::Degraded,
                    wit::Health::Down => Health::Down,
                },
                latency_ms: r.latency_ms,
                backend: r.backend.map(|b| BackendLoad {
                    running: b.running,
                    waiting: b.waiting,
                    kv_cache_usage: b.kv_cache_usage,
                }),
            })
            .collect(),
        loads: c
            .loads
            .into_iter()
            .map(|l| TargetLoad {
                target: l.target,
                in_flight: l.in_flight,
                latency_ms: l.latency_ms,
                latency_age_ms: l.latency_age_ms,
            })
            .collect(),
        provisioned_key: c.provisioned_key.map(api_key_record),
    }
}

fn api_key_record(r: wit::ApiKeyRecord) -> ApiKeyRecord {
    ApiKeyRecord {
        tenant: r.tenant,
        id: r.id,
        tier: r.tier,
        user: r.user,
        standing: r.standing.map(|s| KeyStanding {
            revoked: s.revoked,
            expires_ms: s.expires_ms,
            hashes: s
                .hashes
                .into_iter()
                .map(|h| KeyHash {
                    sha256: h.sha256,
                    until_ms: h.until_ms,
                })
                .collect(),
            budget: s.budget.map(core_limits),
        }),
        tenant_record: r.tenant_record.map(|t| TenantRecord {
            id: t.id,
            settings: TenantSettings {
                tier: t.settings.tier,
                models: t.settings.models,
                ip_allow: t.settings.ip_allow,
                ip_deny: t.settings.ip_deny,
                residency: t.settings.residency,
            },
            disabled: t.disabled,
            created_ms: t.created_ms,
        }),
        models: r.models,
    }
}

fn core_limits(l: wit::QuotaLimits) -> QuotaLimits {
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

pub fn event(e: wit::Event) -> Event {
    match e {
        wit::Event::Reserved(outcome) => Event::Reserved(Ok(reserve_outcome(outcome))),
        wit::Event::ReserveFailed(message) => Event::Reserved(Err(GatewayError::Internal {
            message: format!("quota store: {message}"),
        })),
        wit::Event::Granted(attempt) => Event::Granted {
            attempt: attempt as usize,
        },
        wit::Event::Full(retry_after_ms) => Event::Full { retry_after_ms },
        wit::Event::Cached(found) => Event::Cached(found),
        wit::Event::Shared(answer) => Event::Shared(answer),
        wit::Event::Head(h) => Event::Head {
            status: h.status,
            content_type: h.content_type,
        },
        wit::Event::Body(b) => Event::Body(b),
        wit::Event::Chunk(b) => Event::Chunk(b),
        wit::Event::End => Event::End,
        wit::Event::Failed(t) => Event::Failed(match t {
            wit::Transport::Connect => Transport::Connect,
            wit::Transport::Timeout => Transport::Timeout,
            wit::Transport::Broke => Transport::Broke,
            wit::Transport::TooLarge => Transport::TooLarge,
        }),
        wit::Event::ClientGone => Event::ClientGone,
    }
}

fn reserve_outcome(o: wit::ReserveOutcome) -> ReserveOutcome {
    match o {
        wit::ReserveOutcome::Admit(s) => ReserveOutcome::Admit {
            snapshot: snapshot(s),
        },
        wit::ReserveOutcome::Deny(d) => ReserveOutcome::Deny {
            level: match d.level {
                wit::LimitLevel::Tenant => LevelKind::Tenant,
                wit::LimitLevel::Key => LevelKind::Key,
                wit::LimitLevel::User => LevelKind::User,
            },
            limit: match d.limit {
                wit::LimitKind::Requests => LimitKind::Requests,
                wit::LimitKind::Tokens => LimitKind::Tokens,
                wit::LimitKind::TokensPerDay => LimitKind::TokensPerDay,
                wit::LimitKind::Cost => LimitKind::Cost,
                wit::LimitKind::Concurrency => LimitKind::Concurrency,
                wit::LimitKind::TokensPerMonth => LimitKind::TokensPerMonth,
                wit::LimitKind::CostPerMonth => LimitKind::CostPerMonth,
            },
            retry_after_ms: d.retry_after_ms,
            snapshot: snapshot(d.snapshot),
        },
        wit::ReserveOutcome::Refused(r) => ReserveOutcome::Refused {
            refusal: match r {
                wit::Refusal::KeyRevoked => Refusal::KeyRevoked,
                wit::Refusal::KeyExpired => Refusal::KeyExpired,
                wit::Refusal::KeyRotated => Refusal::KeyRotated,
                wit::Refusal::TenantDisabled => Refusal::TenantDisabled,
            },
        },
    }
}

fn snapshot(s: wit::QuotaSnapshot) -> QuotaSnapshot {
    QuotaSnapshot {
        limit_requests: s.limit_requests,
        limit_tokens: s.limit_tokens,
        remaining_requests: s.remaining_requests,
        remaining_tokens: s.remaining_tokens,
        reset_requests_ms: s.reset_requests_ms,
        reset_tokens_ms: s.reset_tokens_ms,
    }
}

fn action_to_wit(exchange: &Exchange, action: Action) -> wit::Action {
    match action {
        Action::Reserve { quota, id } => wit::Action::Reserve(quota_request(quota, id)),
        Action::Acquire { region, ask } => wit::Action::Acquire(wit::GateAsk {
            region: sharded_name(region),
            id: ask.id,
            priority: match ask.priority {
                Priority::Low => wit::Priority::Low,
                Priority::Normal => wit::Priority::Normal,
                Priority::High => wit::Priority::High,
            },
            candidates: ask
                .candidates
                .into_iter()
                .map(|c| wit::Candidate {
                    attempt: c.attempt,
                    target: c.target,
                    capacity: c.capacity,
                })
                .collect(),
            wait_ms: ask.wait_ms,
            lease_ms: ask.lease_ms,
            service_ms: ask.service_ms,
        }),
        Action::LookupCache { key, coalesce_ms } => {
            wit::Action::LookupCache(wit::Lookup { key, coalesce_ms })
        }
        Action::Send {
            attempt,
            connect_ms,
            head_ms,
            read,
        } => {
            let request = exchange.upstream_request(attempt);
            wit::Action::Send(wit::Send {
                target: request.map_or_else(String::new, |r| r.target.to_owned()),
                url: request.map_or_else(String::new, |r| r.url.to_owned()),
                body: request.map_or_else(String::new, |r| r.body.to_owned()),
                headers: request
                    .map(|r| {
                        r.header_pairs()
                            .map(|(n, v)| (n.to_owned(), v.to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                connect_ms,
                head_ms,
                read: wit::BodyRead {
                    success: read.success.map(limit),
                    error: limit(read.error),
                },
            })
        }
        Action::ReadBody {
            max_bytes,
            within_ms,
        } => wit::Action::ReadBody(limit(BodyLimit {
            max_bytes,
            within_ms,
        })),
        Action::ReadChunk { within_ms } => wit::Action::ReadChunk(within_ms),
        Action::Respond(head) => wit::Action::Respond(respond(head)),
        Action::Write(bytes) => wit::Action::Write(bytes),
        Action::EndStream => wit::Action::EndStream,
        Action::Settle { actual, ledger } => wit::Action::Settle(wit::Settlement {
            actual: amounts(actual),
            ledger: ledger_entry(*ledger),
        }),
        Action::Release { ledger } => wit::Action::Release(ledger_entry(*ledger)),
        Action::Store {
            key,
            body,
            ttl_seconds,
        } => wit::Action::Store(wit::Store {
            key,
            body,
            ttl_seconds,
        }),
        Action::Observe { region, outcome } => wit::Action::Observe(wit::Observe {
            region,
            observation: outcome.observation().map(|o| match o {
                Observation::Success { latency_ms } => wit::Observation::Success(latency_ms),
                Observation::Failure => wit::Observation::Failure,
            }),
            failure: outcome.failure_label().map(str::to_owned),
            first_token_ms: outcome.first_token_ms(),
        }),
        Action::Record(record) => wit::Action::Record(usage_record(*record)),
    }
}

fn limit(l: BodyLimit) -> wit::BodyLimit {
    wit::BodyLimit {
        max_bytes: l.max_bytes as u64,
        within_ms: l.within_ms,
    }
}

fn respond(head: Head) -> wit::Head {
    wit::Head {
        status: head.status,
        headers: head.headers,
        body: match head.body {
            ResponseBody::Full(b) => wit::ResponseBody::Full(b),
            ResponseBody::Stream => wit::ResponseBody::Stream,
        },
    }
}

fn quota_request(q: QuotaRequest, id: String) -> wit::QuotaRequest {
    wit::QuotaRequest {
        key: sharded_name(q.key),
        limits: quota_limits(q.limits),
        amounts: amounts(q.amounts),
        ttl_ms: q.ttl_ms,
        id,
        presented: q.presented.map(|p| wit::PresentedKey {
            id: p.id,
            sha256: p.sha256,
        }),
        budgets: q
            .budgets
            .into_iter()
            .map(|b| wit::Budget {
                level: match b.level {
                    Level::Key(id) => wit::Level::Key(id),
                    Level::User(id) => wit::Level::User(id),
                },
                limits: quota_limits(b.limits),
            })
            .collect(),
    }
}

fn quota_limits(l: QuotaLimits) -> wit::QuotaLimits {
    let QuotaLimits {
        requests_per_minute,
        request_burst,
        tokens_per_minute,
        token_burst,
        tokens_per_day,
        cost_per_day_micros,
        tokens_per_month,
        cost_per_month_micros,
        max_concurrent,
    } = l;
    wit::QuotaLimits {
        requests_per_minute,
        request_burst,
        tokens_per_minute,
        token_burst,
        tokens_per_day,
        cost_per_day_micros,
        tokens_per_month,
        cost_per_month_micros,
        max_concurrent,
    }
}

fn sharded_name(n: ShardedName) -> wit::ShardedName {
    wit::ShardedName {
        name: n.name,
        shard: n.shard,
    }
}

fn amounts(a: Amounts) -> wit::Amounts {
    wit::Amounts {
        requests: a.requests,
        tokens: a.tokens,
        cost_micros: a.cost_micros,
    }
}

fn ledger_entry(e: LedgerEntry) -> wit::LedgerEntry {
    let c = e.counts;
    wit::LedgerEntry {
        tenant: e.key.tenant,
        key_id: e.key.key,
        model: e.key.model,
        version: e.key.version,
        day: e.key.day.number(),
        requests: c.requests,
        input_tokens: c.input_tokens,
        output_tokens: c.output_tokens,
        cost_micros: c.cost_micros,
        errors: c.errors,
        cache_hits: c.cache_hits,
        degraded: c.degraded,
        last_ms: c.last_ms,
        latency: e.latency.map(|l| wit::LatencySample {
            hour: l.hour.number(),
            buckets: l
                .buckets
                .into_iter()
                .map(|(phase, bucket)| wit::PhaseBucket {
                    phase: match phase {
                        Phase::Gateway => wit::LatencyPhase::Gateway,
                        Phase::Queue => wit::LatencyPhase::Queue,
                        Phase::TimeToFirstToken => wit::LatencyPhase::TimeToFirstToken,
                        Phase::TimePerOutputToken => wit::LatencyPhase::TimePerOutputToken,
                        Phase::Total => wit::LatencyPhase::Total,
                    },
                    bucket,
                })
                .collect(),
        }),
    }
}

fn usage_record(r: UsageRecord) -> wit::UsageRecord {
    wit::UsageRecord {
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
            CacheStatus::Hit => wit::CacheStatus::Hit,
            CacheStatus::Coalesced => wit::CacheStatus::Coalesced,
            CacheStatus::Stale => wit::CacheStatus::Stale,
            CacheStatus::Miss => wit::CacheStatus::Miss,
            CacheStatus::Bypass => wit::CacheStatus::Bypass,
            CacheStatus::Off => wit::CacheStatus::Off,
        },
        attempts: r.attempts,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cost_usd: r.cost_usd,
        usage: r.usage.map(|u| match u {
            UsageSource::Reported => wit::UsageSource::Reported,
            UsageSource::Estimated => wit::UsageSource::Estimated,
            UsageSource::Reserved => wit::UsageSource::Reserved,
        }),
        degraded: r.degraded,
        fallback: r.fallback.map(|f| match f {
            Fallback::Region => wit::Fallback::Region,
            Fallback::Model => wit::Fallback::Model,
        }),
        safety: wit::SafetyReport {
            injection_rule: r.safety.injection_rule,
            emails: r.safety.redactions.emails,
            phones: r.safety.redactions.phones,
            cards: r.safety.redactions.cards,
        },
        trace_id: r.trace_id,
        trace: r.trace.map(|t| wit::Trace {
            span_id: t.span_id,
            parent_span_id: t.parent_span_id,
            start_unix_us: t.start_unix_us,
            request_model: t.request_model,
            tries: t
                .tries
                .into_iter()
                .map(|t| wit::AttemptTrace {
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
        }),
        latency: wit::Latency {
            gateway_us: r.latency.gateway_us,
            queue_us: r.latency.queue_us,
            upstream_first_byte_us: r.latency.upstream_first_byte_us,
            first_token_us: r.latency.first_token_us,
            after_first_token_us: r.latency.after_first_token_us,
            total_us: r.latency.total_us,
        },
    }
}
