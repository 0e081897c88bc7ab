//! A request's path through the Worker, top to bottom. The core decides
//! (`Gateway::admit`, `Gateway::settle`); this file only moves bytes:
//!
//! read the request → API key record from KV → region health → `admit` →
//! reserve quota in the tenant's Durable Object → cache lookup in KV →
//! forward to the plan's attempts → relay or return the answer → settle the
//! quota, fill the cache and write the usage record after the response.

use crate::clock::now_ms;
use crate::forward::{self, Answer, Body, Failure};
use crate::kv_store::EdgeKv;
use crate::quota_object::QuotaStore;
use crate::relay::{self, Limits, StreamEnd};
use crate::{config, incoming, region_health, respond, usage};
use edgegate_core::auth::{self, ApiKeyRecord};
use edgegate_core::cache::CacheDecision;
use edgegate_core::gateway::{ForwardPlan, QuotaRequest, Settlement};
use edgegate_core::quota::{self, Amounts};
use edgegate_core::request::Headers as CoreHeaders;
use edgegate_core::response::{self, StreamObserver};
use edgegate_core::telemetry::{CacheStatus, Latency, PlanOutcome, UsageRecord};
use edgegate_core::{Decision, Gateway, GatewayError, RequestContext};
use std::rc::Rc;
use worker::{Context, Env, Request, Response};

pub async fn handle(mut req: Request, env: Env, ctx: Context) -> Response {
    let started_ms = now_ms();
    let request_id = match incoming::request_id() {
        Ok(id) => id,
        Err(e) => return respond::error(&e, "", &[]),
    };
    let decided = decide(&mut req, &env, &request_id, started_ms).await;
    match decided {
        Ok((_, Decision::Respond(local))) => respond::local(&local, &[]),
        Ok((gateway, Decision::Forward(plan))) => {
            let mut served = Served {
                gateway,
                plan: *plan,
                env,
                started_ms,
            };
            served.serve(&ctx).await
        }
        Err(error) => {
            let latency = latency_since(started_ms, started_ms);
            usage::emit(&env, &UsageRecord::rejected(&request_id, &error, latency));
            respond::error(&error, &request_id, &[])
        }
    }
}

/// Everything `admit` needs, gathered, then its decision.
async fn decide(
    req: &mut Request,
    env: &Env,
    request_id: &str,
    now: u64,
) -> Result<(Rc<Gateway>, Decision), GatewayError> {
    let gateway = config::gateway(env)?;
    let kv = EdgeKv::new(env)?;
    let http = incoming::http_request(req).await?;
    let provisioned_key = provisioned_key(&gateway, &kv, &http.headers).await?;
    let ctx = RequestContext {
        now_ms: now,
        request_id: request_id.to_owned(),
        client_ip: incoming::client_ip(req),
        client_geo: incoming::client_geo(req),
        regions: region_health::statuses(&kv, now).await,
        provisioned_key,
    };
    let decision = gateway.admit(&http, &ctx)?;
    Ok((gateway, decision))
}

/// The KV record for a presented API key the config does not list (the
/// core prefers config keys; JWTs never touch KV).
async fn provisioned_key(
    gateway: &Gateway,
    kv: &EdgeKv,
    headers: &CoreHeaders,
) -> Result<Option<ApiKeyRecord>, GatewayError> {
    let Some(hash) = auth::presented_key_hash(headers) else {
        return Ok(None);
    };
    let listed = auth::presented_credential(headers).is_some_and(|key| {
        gateway
            .config()
            .tenant_by_key_hash(&auth::key_hash(key))
            .is_some()
    });
    if listed {
        return Ok(None);
    }
    kv.api_key(&hash).await
}

/// An admitted request being served.
struct Served {
    gateway: Rc<Gateway>,
    plan: ForwardPlan,
    env: Env,
    started_ms: u64,
}

impl Served {
    async fn serve(&mut self, ctx: &Context) -> Response {
        let plan = &self.plan;
        let quotas = match QuotaStore::new(&self.env) {
            Ok(q) => q,
            Err(e) => return self.failed(&e, None, 0, CacheStatus::Off, &[]),
        };
        let reserved = match quotas.reserve(&plan.quota, &plan.request_id).await {
            Ok(outcome) => QuotaRequest::outcome(outcome),
            Err(e) => return self.failed(&e, None, 0, CacheStatus::Off, &[]),
        };
        let mut headers = plan.response_headers.clone();
        match reserved {
            Ok(snapshot) => headers.extend(quota::rate_limit_headers(&snapshot)),
            Err((limited, snapshot)) => {
                headers.extend(quota::rate_limit_headers(&snapshot));
                return self.failed(&limited, None, 0, CacheStatus::Off, &headers);
            }
        }

        let kv = EdgeKv::new(&self.env).ok();
        let cache = CacheStatus::before_lookup(&plan.cache);
        if let (CacheDecision::Lookup { key, .. }, Some(kv)) = (&plan.cache, &kv)
            && let Some(body) = self.cached_body(kv, key).await
        {
            return self.serve_hit(ctx, quotas, body, headers);
        }
        if let Some(value) = cache.header_value() {
            headers.push(("x-edgegate-cache".into(), value.into()));
        }

        let forwarded_ms = now_ms();
        match forward::forward(plan, self.started_ms).await {
            Err(Failure {
                attempt,
                attempts_made,
                error,
            }) => {
                quotas.release(&plan.quota, &plan.request_id).await;
                self.failed(&error, attempt, attempts_made, cache, &headers)
            }
            Ok(answer) => self.serve_answer(ctx, quotas, kv, answer, cache, headers, forwarded_ms),
        }
    }

    /// A cached answer in the shape the client asked for; one that cannot be
    /// replayed as a stream is a miss.
    async fn cached_body(&self, kv: &EdgeKv, key: &str) -> Option<Vec<u8>> {
        let body = kv.cached_answer(key).await?;
        if !self.plan.stream {
            return Some(body);
        }
        let value = serde_json::from_slice(&body).ok()?;
        response::replay_as_sse(
            self.plan.response_kind(),
            &value,
            self.plan.client_wants_usage,
        )
        .ok()
    }

    /// A hit costs the backend nothing: only the request itself is charged.
    fn serve_hit(
        &self,
        ctx: &Context,
        quotas: QuotaStore,
        body: Vec<u8>,
        mut headers: Vec<(String, String)>,
    ) -> Response {
        let plan = self.plan.clone();
        let settlement = Settlement {
            actual: Amounts {
                requests: plan.quota.amounts.requests,
                ..Amounts::default()
            },
            input_tokens: 0,
            output_tokens: 0,
            usage_reported: false,
        };
        let outcome_latency = latency_since(self.started_ms, now_ms());
        let env = self.env.clone();
        ctx.wait_until(async move {
            quotas
                .settle(&plan.quota, &plan.request_id, settlement.actual)
                .await;
            let outcome = PlanOutcome {
                attempt: None,
                attempts_made: 0,
                status: 200,
                error: None,
                settlement: Some(&settlement),
                cache: CacheStatus::Hit,
                latency: outcome_latency,
            };
            usage::emit(&env, &UsageRecord::planned(&plan, &outcome));
        });
        headers.push(("x-edgegate-cache".into(), "HIT".into()));
        headers.push(("content-type".into(), content_type(self.plan.stream, None)));
        respond::fixed(200, respond::headers(&headers), body)
    }

    #[allow(clippy::too_many_arguments)]
    fn serve_answer(
        &self,
        ctx: &Context,
        quotas: QuotaStore,
        kv: Option<EdgeKv>,
        answer: Answer,
        cache: CacheStatus,
        mut headers: Vec<(String, String)>,
        forwarded_ms: u64,
    ) -> Response {
        let Answer {
            attempt,
            attempts_made,
            content_type: upstream_type,
            body,
            first_byte_ms,
        } = answer;
        headers.push((
            "content-type".into(),
            content_type(self.plan.stream, upstream_type),
        ));
        let first_byte = Some(first_byte_ms);
        match body {
            Body::Complete(bytes) => {
                let usage = match response::parse_upstream_body(self.plan.response_kind(), &bytes) {
                    Ok(usage) => usage,
                    Err(error) => {
                        let plan = self.plan.clone();
                        ctx.wait_until(async move {
                            quotas.release(&plan.quota, &plan.request_id).await;
                        });
                        return self.failed(&error, Some(attempt), attempts_made, cache, &headers);
                    }
                };
                let settlement = self.gateway.settle(&self.plan, attempt, usage);
                let latency = Latency {
                    gateway_us: ms_to_us(forwarded_ms.saturating_sub(self.started_ms)),
                    queue_us: 0,
                    upstream_first_byte_us: first_byte.map(ms_to_us),
                    total_us: ms_to_us(now_ms().saturating_sub(self.started_ms)),
                };
                let plan = self.plan.clone();
                let env = self.env.clone();
                let cached = bytes.clone();
                ctx.wait_until(async move {
                    quotas
                        .settle(&plan.quota, &plan.request_id, settlement.actual)
                        .await;
                    if let (CacheDecision::Lookup { key, ttl_seconds }, Some(kv)) =
                        (&plan.cache, kv)
                    {
                        kv.store_answer(key, &cached, *ttl_seconds).await;
                    }
                    let outcome = PlanOutcome {
                        attempt: Some(attempt),
                        attempts_made,
                        status: 200,
                        error: None,
                        settlement: Some(&settlement),
                        cache,
                        latency,
                    };
                    usage::emit(&env, &UsageRecord::planned(&plan, &outcome));
                });
                respond::fixed(200, respond::headers(&headers), bytes)
            }
            Body::Stream(upstream) => {
                headers.push(("cache-control".into(), "no-cache".into()));
                let observer =
                    StreamObserver::new(self.plan.response_kind(), self.plan.strip_usage_chunk);
                let limits = Limits {
                    idle_ms: self.plan.timeouts.stream_idle_ms,
                    deadline_ms: self.started_ms.saturating_add(self.plan.timeouts.total_ms),
                };
                let (client_body, ended) = relay::relay(upstream, observer, limits);
                let gateway = Rc::clone(&self.gateway);
                let plan = self.plan.clone();
                let env = self.env.clone();
                let (started_ms, gateway_ms) = (
                    self.started_ms,
                    forwarded_ms.saturating_sub(self.started_ms),
                );
                ctx.wait_until(async move {
                    let end = ended.await.unwrap_or(StreamEnd {
                        usage: None,
                        error: None,
                        assembled: None,
                    });
                    let settlement = gateway.settle(&plan, attempt, end.usage);
                    quotas
                        .settle(&plan.quota, &plan.request_id, settlement.actual)
                        .await;
                    if let (CacheDecision::Lookup { key, ttl_seconds }, Some(kv), Some(answer)) =
                        (&plan.cache, kv, &end.assembled)
                    {
                        kv.store_answer(key, answer.to_string().as_bytes(), *ttl_seconds)
                            .await;
                    }
                    let latency = Latency {
                        gateway_us: ms_to_us(gateway_ms),
                        queue_us: 0,
                        upstream_first_byte_us: first_byte.map(ms_to_us),
                        total_us: ms_to_us(now_ms().saturating_sub(started_ms)),
                    };
                    let outcome = PlanOutcome {
                        attempt: Some(attempt),
                        attempts_made,
                        status: 200,
                        error: end.error.as_ref(),
                        settlement: Some(&settlement),
                        cache,
                        latency,
                    };
                    usage::emit(&env, &UsageRecord::planned(&plan, &outcome));
                });
                respond::streamed(
                    respond::headers(&headers),
                    client_body,
                    &self.plan.request_id,
                )
            }
        }
    }

    /// An admitted request that ends in an error response.
    fn failed(
        &self,
        error: &GatewayError,
        attempt: Option<usize>,
        attempts_made: u32,
        cache: CacheStatus,
        headers: &[(String, String)],
    ) -> Response {
        let outcome = PlanOutcome {
            attempt,
            attempts_made,
            status: error.status(),
            error: Some(error),
            settlement: None,
            cache,
            latency: latency_since(self.started_ms, now_ms()),
        };
        usage::emit(&self.env, &UsageRecord::planned(&self.plan, &outcome));
        respond::error(error, &self.plan.request_id, headers)
    }
}

fn content_type(stream: bool, upstream: Option<String>) -> String {
    upstream.unwrap_or_else(|| {
        if stream {
            "text/event-stream".into()
        } else {
            "application/json".into()
        }
    })
}

fn ms_to_us(ms: u64) -> u64 {
    ms.saturating_mul(1000)
}

/// Latency of a request that never reached a backend.
fn latency_since(started_ms: u64, now: u64) -> Latency {
    let total_us = ms_to_us(now.saturating_sub(started_ms));
    Latency {
        gateway_us: total_us,
        queue_us: 0,
        upstream_first_byte_us: None,
        total_us,
    }
}
