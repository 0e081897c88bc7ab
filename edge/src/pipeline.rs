//! A request's path through the Worker, top to bottom. The core decides
//! (`Gateway::admit`, `Gateway::settle`); this file only moves bytes:
//!
//! read the request → API key record from KV → region health → `admit` →
//! reserve quota in the tenant's Durable Object → cache lookup in KV →
//! forward to the plan's attempts → relay or return the answer → after the
//! response: settle the quota, fill the cache, write the usage record.

use crate::clock::now_ms;
use crate::forward::{self, Answer, Body, Failure};
use crate::kv_store::EdgeKv;
use crate::quota_object::QuotaStore;
use crate::relay::{self, Limits, StreamEnd};
use crate::{config, incoming, region_health, respond, usage};
use edgegate_core::auth::{self, ApiKeyRecord};
use edgegate_core::cache::CacheDecision;
use edgegate_core::gateway::{ForwardPlan, QuotaRequest, Settlement};
use edgegate_core::quota;
use edgegate_core::request::Headers as CoreHeaders;
use edgegate_core::response::{self, Metered, StreamObserver};
use edgegate_core::telemetry::{CacheStatus, Latency, PlanOutcome, UsageRecord};
use edgegate_core::{Decision, Gateway, GatewayError, RequestContext};
use std::rc::Rc;
use worker::{ByteStream, Context, Env, Request, Response};

type HeaderList = Vec<(String, String)>;

pub async fn handle(mut req: Request, env: Env, ctx: Context) -> Response {
    let started_ms = now_ms();
    let request_id = match incoming::request_id() {
        Ok(id) => id,
        Err(e) => return respond::error(&e, "", &[]),
    };
    match decide(&mut req, &env, &request_id, started_ms).await {
        Ok(Admitted {
            decision: Decision::Respond(local),
            ..
        }) => {
            let latency = latency_since(started_ms);
            usage::emit(
                &env,
                &UsageRecord::answered(&request_id, local.status, latency),
            );
            respond::local(&local, &[])
        }
        Ok(Admitted {
            gateway,
            kv,
            decision: Decision::Forward(plan),
        }) => match QuotaStore::new(&env) {
            Ok(quotas) => {
                let served = Served {
                    gateway,
                    plan: *plan,
                    env,
                    kv,
                    quotas,
                    started_ms,
                };
                Rc::new(served).serve(&ctx).await
            }
            Err(error) => reject(&env, &request_id, &error, started_ms),
        },
        Err(error) => reject(&env, &request_id, &error, started_ms),
    }
}

/// A request refused before a plan existed.
fn reject(env: &Env, request_id: &str, error: &GatewayError, started_ms: u64) -> Response {
    let latency = latency_since(started_ms);
    usage::emit(env, &UsageRecord::rejected(request_id, error, latency));
    respond::error(error, request_id, &[])
}

struct Admitted {
    gateway: Rc<Gateway>,
    kv: EdgeKv,
    decision: Decision,
}

/// Everything `admit` needs, gathered, then its decision.
async fn decide(
    req: &mut Request,
    env: &Env,
    request_id: &str,
    now: u64,
) -> Result<Admitted, GatewayError> {
    let gateway = config::gateway(env)?;
    let kv = EdgeKv::new(env)?;
    let http = incoming::http_request(req).await?;
    let provisioned_key = provisioned_key(&gateway, &kv, &http.headers).await?;
    let ctx = RequestContext {
        now_ms: now,
        request_id: request_id.to_owned(),
        client_ip: incoming::client_ip(req),
        client_geo: incoming::client_geo(req, &http.headers, env),
        regions: region_health::statuses(&kv, now).await,
        provisioned_key,
    };
    let decision = gateway.admit(&http, &ctx)?;
    Ok(Admitted {
        gateway,
        kv,
        decision,
    })
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

/// An admitted request being served. Shared (`Rc`) with the work that
/// finishes it after the response is sent.
struct Served {
    gateway: Rc<Gateway>,
    plan: ForwardPlan,
    env: Env,
    kv: EdgeKv,
    quotas: QuotaStore,
    started_ms: u64,
}

/// Which attempt answered, and how long it took to.
#[derive(Clone, Copy)]
struct Answered {
    attempt: usize,
    attempts_made: u32,
    cache: CacheStatus,
    forwarded_ms: u64,
    first_byte_ms: u64,
}

impl Served {
    async fn serve(self: Rc<Self>, ctx: &Context) -> Response {
        let plan = &self.plan;
        let snapshot = match self.quotas.reserve(&plan.quota, &plan.request_id).await {
            Ok(outcome) => QuotaRequest::outcome(outcome),
            Err(error) => return self.failed(&error, None, 0, CacheStatus::Off, &[]),
        };
        let mut headers = plan.response_headers.clone();
        match snapshot {
            Ok(snapshot) => headers.extend(quota::rate_limit_headers(&snapshot)),
            Err((limited, snapshot)) => {
                headers.extend(quota::rate_limit_headers(&snapshot));
                return self.failed(&limited, None, 0, CacheStatus::Off, &headers);
            }
        }

        if let Some(body) = self.cached_body().await {
            return self.serve_hit(ctx, body, headers);
        }
        let cache = CacheStatus::before_lookup(&plan.cache);
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
                self.release_later(ctx);
                self.failed(&error, attempt, attempts_made, cache, &headers)
            }
            Ok(Answer {
                attempt,
                attempts_made,
                content_type,
                body,
                first_byte_ms,
            }) => {
                let answered = Answered {
                    attempt,
                    attempts_made,
                    cache,
                    forwarded_ms,
                    first_byte_ms,
                };
                headers.push(("content-type".into(), self.content_type(content_type)));
                match body {
                    Body::Complete(bytes) => self.serve_complete(ctx, answered, bytes, headers),
                    Body::Stream(upstream) => self.serve_stream(ctx, answered, upstream, headers),
                }
            }
        }
    }

    /// A cached answer in the shape the client asked for; one that cannot be
    /// replayed as a stream counts as a miss.
    async fn cached_body(&self) -> Option<Vec<u8>> {
        let CacheDecision::Lookup { key, .. } = &self.plan.cache else {
            return None;
        };
        let body = self.kv.cached_answer(key).await?;
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

    fn serve_hit(
        self: Rc<Self>,
        ctx: &Context,
        body: Vec<u8>,
        mut headers: HeaderList,
    ) -> Response {
        let latency = latency_since(self.started_ms);
        let this = Rc::clone(&self);
        ctx.wait_until(async move {
            let settlement = Settlement::cache_hit();
            this.quotas
                .settle(&this.plan.quota, &this.plan.request_id, settlement.actual)
                .await;
            this.record(&PlanOutcome::cache_hit(&settlement, latency));
        });
        headers.push(("x-edgegate-cache".into(), "HIT".into()));
        headers.push(("content-type".into(), self.content_type(None)));
        respond::fixed(200, respond::headers(&headers), body)
    }

    fn serve_complete(
        self: Rc<Self>,
        ctx: &Context,
        answered: Answered,
        bytes: Vec<u8>,
        headers: HeaderList,
    ) -> Response {
        let metered = match response::parse_upstream_body(self.plan.response_kind(), &bytes) {
            Ok(metered) => metered,
            Err(error) => {
                self.release_later(ctx);
                return self.failed(
                    &error,
                    Some(answered.attempt),
                    answered.attempts_made,
                    answered.cache,
                    &headers,
                );
            }
        };
        let this = Rc::clone(&self);
        let cached = bytes.clone();
        ctx.wait_until(async move {
            this.finish(answered, metered, Some(cached), None).await;
        });
        respond::fixed(200, respond::headers(&headers), bytes)
    }

    fn serve_stream(
        self: Rc<Self>,
        ctx: &Context,
        answered: Answered,
        upstream: ByteStream,
        mut headers: HeaderList,
    ) -> Response {
        headers.push(("cache-control".into(), "no-cache".into()));
        let observer = StreamObserver::new(self.plan.response_kind(), self.plan.strip_usage_chunk);
        let limits = Limits {
            idle_ms: self.plan.timeouts.stream_idle_ms,
            deadline_ms: self.started_ms.saturating_add(self.plan.timeouts.total_ms),
        };
        let (client_body, ended) = relay::relay(upstream, observer, limits);
        let this = Rc::clone(&self);
        ctx.wait_until(async move {
            let StreamEnd {
                metered,
                error,
                assembled,
            } = ended.await.unwrap_or_default();
            let answer = assembled.map(|a| a.to_string().into_bytes());
            this.finish(answered, metered, answer, error.as_ref()).await;
        });
        respond::streamed(
            respond::headers(&headers),
            client_body,
            &self.plan.request_id,
        )
    }

    /// After an answer: charge what it used (the core prices the backend's
    /// usage, or what was relayed when it reported none), keep a cacheable
    /// answer, and write the usage record.
    async fn finish(
        &self,
        answered: Answered,
        metered: Metered,
        answer: Option<Vec<u8>>,
        error: Option<&GatewayError>,
    ) {
        let plan = &self.plan;
        let settlement = self.gateway.settle(plan, answered.attempt, metered);
        self.quotas
            .settle(&plan.quota, &plan.request_id, settlement.actual)
            .await;
        if let (Some((key, ttl_seconds)), Some(answer)) =
            (plan.cache_store(answered.attempt), answer)
        {
            self.kv.store_answer(key, &answer, ttl_seconds).await;
        }
        let latency = Latency {
            gateway_us: ms_to_us(answered.forwarded_ms.saturating_sub(self.started_ms)),
            queue_us: 0,
            upstream_first_byte_us: Some(ms_to_us(answered.first_byte_ms)),
            total_us: ms_to_us(now_ms().saturating_sub(self.started_ms)),
        };
        self.record(&PlanOutcome {
            attempt: Some(answered.attempt),
            attempts_made: answered.attempts_made,
            status: 200,
            error,
            settlement: Some(&settlement),
            cache: answered.cache,
            latency,
        });
    }

    /// A failed call gives its whole reservation back, after the response.
    fn release_later(self: &Rc<Self>, ctx: &Context) {
        let this = Rc::clone(self);
        ctx.wait_until(async move {
            this.quotas
                .release(&this.plan.quota, &this.plan.request_id)
                .await;
        });
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
        self.record(&PlanOutcome {
            attempt,
            attempts_made,
            status: error.status(),
            error: Some(error),
            settlement: None,
            cache,
            latency: latency_since(self.started_ms),
        });
        respond::error(error, &self.plan.request_id, headers)
    }

    fn record(&self, outcome: &PlanOutcome<'_>) {
        usage::emit(&self.env, &UsageRecord::planned(&self.plan, outcome));
    }

    fn content_type(&self, upstream: Option<String>) -> String {
        upstream.unwrap_or_else(|| {
            if self.plan.stream {
                "text/event-stream".into()
            } else {
                "application/json".into()
            }
        })
    }
}

fn ms_to_us(ms: u64) -> u64 {
    ms.saturating_mul(1000)
}

/// Latency of a request that never reached a backend.
fn latency_since(started_ms: u64) -> Latency {
    let total_us = ms_to_us(now_ms().saturating_sub(started_ms));
    Latency {
        gateway_us: total_us,
        queue_us: 0,
        upstream_first_byte_us: None,
        total_us,
    }
}
