//! An admitted request's path: reserve quota → serve from cache or forward
//! through the plan's attempts (failing over only before the client saw a
//! byte) → pass streams through chunk by chunk → settle the quota with the
//! backend's real usage → log and meter. Every decision on the way is a call
//! into the sandboxed core.

use crate::app::{App, Body, Timing, full, json_response, local_response, stream_response};
use crate::response_cache::CachedResponse;
use bytes::Bytes;
use edgegate_core::GatewayError;
use edgegate_core::cache::CacheDecision;
use edgegate_core::gateway::{ForwardPlan, QuotaRequest, Settlement};
use edgegate_core::health::{AttemptFailure, Observation};
use edgegate_core::quota::{Amounts, QuotaSnapshot, rate_limit_headers};
use edgegate_core::response::Metered;
use edgegate_core::telemetry::{CacheStatus, PlanOutcome, UsageRecord};
use futures_util::StreamExt;
use hyper::Response;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upstream error bodies are read for their message, never more than this.
const MAX_ERROR_BODY: usize = 64 << 10;
/// A non-streamed answer larger than this is refused rather than buffered.
const MAX_RESPONSE_BODY: usize = 64 << 20;

pub async fn serve(app: Arc<App>, plan: ForwardPlan, timing: Timing) -> Response<Body> {
    let now = crate::clock::now_ms();
    // In memory, then awaited until the group commit holding it is durable.
    let reserved = app.quota.reserve(&plan.quota, &plan.request_id, now).await;
    let snapshot = match reserved.map(QuotaRequest::outcome) {
        Ok(Ok(snapshot)) => snapshot,
        Ok(Err((err, snapshot))) => {
            return fail(&app, &plan, timing, &err, Some(&snapshot), None, 0, None).await;
        }
        Err(err) => return fail(&app, &plan, timing, &err, None, None, 0, None).await,
    };
    let held = HeldQuota::new(&app, &plan);
    let cache = CacheStatus::before_lookup(&plan.cache);
    if let CacheDecision::Lookup { key, .. } = &plan.cache
        && let Some(hit) = app.cache.get(key)
        && let Some(body) = cached_body(&app, &plan, &hit)
    {
        return serve_cached(&app, &plan, &snapshot, body, timing, held);
    }

    let mut last_error = GatewayError::NoUpstream {
        model: plan.model.clone(),
    };
    for (index, attempt) in plan.attempts.iter().enumerate() {
        let body = plan.bodies[attempt.body].clone();
        let sent = Instant::now();
        let t = plan.timeouts;
        let outcome = app
            .upstream
            .send(
                attempt,
                body,
                &plan.upstream_request_id,
                t.connect_ms,
                t.first_byte_ms,
            )
            .await;
        let first_byte = sent.elapsed();
        let failure = match outcome {
            Ok(response) if response.status().is_success() => {
                let latency_ms = first_byte.as_millis().min(u32::MAX as u128) as u32;
                observe(&app, &attempt.region, Observation::Success { latency_ms });
                let timing = timing.with_first_byte(first_byte);
                let is_sse = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("text/event-stream"));
                if plan.stream && is_sse {
                    return stream(app, plan, index, response, snapshot, cache, timing, held);
                }
                match crate::upstream::read_body(
                    response,
                    Duration::from_millis(t.total_ms),
                    MAX_RESPONSE_BODY,
                )
                .await
                {
                    Ok(body) => {
                        return complete(&app, &plan, index, body, &snapshot, cache, timing, held)
                            .await;
                    }
                    Err(f) => f,
                }
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body = crate::upstream::read_body(
                    response,
                    Duration::from_millis(t.first_byte_ms),
                    MAX_ERROR_BODY,
                )
                .await
                .unwrap_or_default();
                last_error = app.sandbox.upstream_error(status, &body);
                AttemptFailure::Status { status }
            }
            Err(f) => f,
        };
        app.metrics
            .upstream_failure(&attempt.region, failure.label());
        if failure.region_fault() {
            observe(&app, &attempt.region, Observation::Failure);
        }
        match failure {
            AttemptFailure::Connect => {
                last_error = GatewayError::UpstreamUnavailable {
                    message: format!("region {} did not answer", attempt.region),
                }
            }
            AttemptFailure::Timeout => {
                last_error = GatewayError::UpstreamTimeout {
                    phase: "first byte".into(),
                }
            }
            AttemptFailure::Status { .. } => {}
        }
        if !failure.try_next() {
            return fail(
                &app,
                &plan,
                timing,
                &last_error,
                Some(&snapshot),
                Some(index),
                index as u32 + 1,
                Some(held),
            )
            .await;
        }
    }
    let tried = plan.attempts.len();
    fail(
        &app,
        &plan,
        timing,
        &last_error,
        Some(&snapshot),
        tried.checked_sub(1),
        tried as u32,
        Some(held),
    )
    .await
}

fn observe(app: &App, region: &str, obs: Observation) {
    app.health.observe(&app.sandbox, &app.metrics, region, obs);
}

fn success_headers(
    plan: &ForwardPlan,
    snapshot: &QuotaSnapshot,
    cache: CacheStatus,
) -> Vec<(String, String)> {
    let mut headers = plan.response_headers.clone();
    headers.extend(rate_limit_headers(snapshot));
    if let Some(v) = cache.header_value() {
        headers.push(("x-edgegate-cache".into(), v.into()));
    }
    headers
}

/// The request's reservation until it is settled or released. A request
/// dropped first (its client went away before the answer) charges the whole
/// reservation: never an undercharge, and its concurrency slot is freed now
/// instead of when the reservation expires.
struct HeldQuota {
    app: Arc<App>,
    quota: QuotaRequest,
    id: String,
    open: bool,
}

impl HeldQuota {
    fn new(app: &Arc<App>, plan: &ForwardPlan) -> Self {
        HeldQuota {
            app: app.clone(),
            quota: plan.quota.clone(),
            id: plan.request_id.clone(),
            open: true,
        }
    }

    fn settle(mut self, actual: Amounts) {
        self.open = false;
        self.settle_now(actual);
    }

    fn settle_now(&self, actual: Amounts) {
        let (q, now) = (&self.quota, crate::clock::now_ms());
        self.app
            .quota
            .settle(&q.key, &q.limits, &self.id, actual, now);
    }

    /// A call that failed before the backend did any work gives it all back.
    fn release(mut self) {
        self.open = false;
        let (q, now) = (&self.quota, crate::clock::now_ms());
        self.app.quota.release(&q.key, &q.limits, &self.id, now);
    }
}

impl Drop for HeldQuota {
    fn drop(&mut self) {
        if self.open {
            self.settle_now(self.quota.amounts);
        }
    }
}

fn log(app: &App, plan: &ForwardPlan, outcome: PlanOutcome<'_>) {
    app.record(&UsageRecord::planned(plan, &outcome));
}

/// A request that ends in an error after admission: give the reservation back.
#[allow(clippy::too_many_arguments)]
async fn fail(
    app: &Arc<App>,
    plan: &ForwardPlan,
    timing: Timing,
    err: &GatewayError,
    snapshot: Option<&QuotaSnapshot>,
    attempt: Option<usize>,
    attempts_made: u32,
    held: Option<HeldQuota>,
) -> Response<Body> {
    if let Some(held) = held {
        held.release();
    }
    let mut response = app.sandbox.error_response(err, &plan.request_id);
    if let Some(s) = snapshot {
        response.headers.extend(rate_limit_headers(s));
    }
    log(
        app,
        plan,
        PlanOutcome {
            attempt,
            attempts_made,
            status: response.status,
            error: Some(err),
            settlement: None,
            cache: CacheStatus::Off,
            latency: timing.finish(),
        },
    );
    local_response(response)
}

/// The cached answer in the form the client asked for; `None` if it cannot
/// be replayed as a stream (e.g. tool calls), which is treated as a miss.
fn cached_body(app: &App, plan: &ForwardPlan, hit: &CachedResponse) -> Option<Bytes> {
    if !plan.stream {
        return Some(hit.body.clone());
    }
    let json = std::str::from_utf8(&hit.body).ok()?;
    match app
        .sandbox
        .replay_as_sse(plan.response_kind(), json, plan.client_wants_usage)
    {
        Ok(Ok(sse)) => Some(Bytes::from(sse)),
        _ => None,
    }
}

fn serve_cached(
    app: &Arc<App>,
    plan: &ForwardPlan,
    snapshot: &QuotaSnapshot,
    body: Bytes,
    timing: Timing,
    held: HeldQuota,
) -> Response<Body> {
    let settlement = Settlement::cache_hit();
    held.settle(settlement.actual);
    let headers = success_headers(plan, snapshot, CacheStatus::Hit);
    log(
        app,
        plan,
        PlanOutcome::cache_hit(&settlement, timing.finish()),
    );
    let content_type = if plan.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    json_response(200, content_type, headers, full(body))
}

#[allow(clippy::too_many_arguments)]
async fn complete(
    app: &Arc<App>,
    plan: &ForwardPlan,
    index: usize,
    body: Bytes,
    snapshot: &QuotaSnapshot,
    cache: CacheStatus,
    timing: Timing,
    held: HeldQuota,
) -> Response<Body> {
    let metered = match app.sandbox.parse_upstream_body(plan.response_kind(), &body) {
        Ok(metered) => metered,
        Err(err) => {
            return fail(
                app,
                plan,
                timing,
                &err,
                Some(snapshot),
                Some(index),
                index as u32 + 1,
                Some(held),
            )
            .await;
        }
    };
    let settlement = app.gateway.settle(plan, index, metered);
    held.settle(settlement.actual);
    if let Some((key, ttl_seconds)) = plan.cache_store(index) {
        app.cache.put(
            key.to_owned(),
            CachedResponse { body: body.clone() },
            Duration::from_secs(ttl_seconds),
        );
    }
    log(
        app,
        plan,
        PlanOutcome {
            attempt: Some(index),
            attempts_made: index as u32 + 1,
            status: 200,
            error: None,
            settlement: Some(&settlement),
            cache,
            latency: timing.finish(),
        },
    );
    json_response(
        200,
        "application/json",
        success_headers(plan, snapshot, cache),
        full(body),
    )
}

enum StreamEnd {
    Completed,
    ClientGone,
    IdleTimeout,
    UpstreamBroke,
}

/// Passes an SSE stream through as it arrives; settles and logs when it ends.
#[allow(clippy::too_many_arguments)]
fn stream(
    app: Arc<App>,
    plan: ForwardPlan,
    index: usize,
    response: reqwest::Response,
    snapshot: QuotaSnapshot,
    cache: CacheStatus,
    timing: Timing,
    held: HeldQuota,
) -> Response<Body> {
    let headers = success_headers(&plan, &snapshot, cache);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
    tokio::spawn(async move {
        let idle = Duration::from_millis(plan.timeouts.stream_idle_ms);
        let handle = match app
            .sandbox
            .stream_open(plan.response_kind(), plan.strip_usage_chunk)
        {
            Ok(h) => h,
            Err(fault) => {
                let _ = tx
                    .send(Bytes::from(GatewayError::from(fault).to_sse_event()))
                    .await;
                return;
            }
        };
        let mut upstream = response.bytes_stream();
        let end = loop {
            let next = tokio::select! {
                _ = tx.closed() => break StreamEnd::ClientGone,
                next = tokio::time::timeout(idle, upstream.next()) => next,
            };
            match next {
                Err(_) => break StreamEnd::IdleTimeout,
                Ok(None) => break StreamEnd::Completed,
                Ok(Some(Err(_))) => break StreamEnd::UpstreamBroke,
                Ok(Some(Ok(chunk))) => match app.sandbox.stream_feed(handle, &chunk) {
                    Ok(out) if out.is_empty() => {}
                    Ok(out) => {
                        if tx.send(Bytes::from(out)).await.is_err() {
                            break StreamEnd::ClientGone;
                        }
                    }
                    Err(fault) => {
                        let _ = tx
                            .send(Bytes::from(GatewayError::from(fault).to_sse_event()))
                            .await;
                        break StreamEnd::UpstreamBroke;
                    }
                },
            }
        };
        // Dropping the upstream body here closes the backend connection: a
        // client that went away cancels the generation.
        drop(upstream);
        let metered = match end {
            StreamEnd::Completed => match app.sandbox.stream_finish(handle) {
                Ok((tail, metered)) => {
                    if !tail.is_empty() {
                        let _ = tx.send(Bytes::from(tail)).await;
                    }
                    metered
                }
                Err(_) => Metered::Unknown,
            },
            StreamEnd::IdleTimeout => {
                let metered = app.sandbox.stream_close(handle);
                let err = GatewayError::UpstreamTimeout {
                    phase: "stream inactivity".into(),
                };
                let _ = tx.send(Bytes::from(err.to_sse_event())).await;
                metered
            }
            StreamEnd::ClientGone | StreamEnd::UpstreamBroke => app.sandbox.stream_close(handle),
        };
        drop(tx);
        let settlement = app.gateway.settle(&plan, index, metered);
        held.settle(settlement.actual);
        let (status, error) = match end {
            StreamEnd::Completed => (200, None),
            StreamEnd::ClientGone => (499, None),
            StreamEnd::IdleTimeout => (
                504,
                Some(GatewayError::UpstreamTimeout {
                    phase: "stream inactivity".into(),
                }),
            ),
            StreamEnd::UpstreamBroke => (
                502,
                Some(GatewayError::UpstreamUnavailable {
                    message: "the stream broke off".into(),
                }),
            ),
        };
        log(
            &app,
            &plan,
            PlanOutcome {
                attempt: Some(index),
                attempts_made: index as u32 + 1,
                status,
                error: error.as_ref(),
                settlement: Some(&settlement),
                cache,
                latency: timing.finish(),
            },
        );
    });
    stream_response(headers, rx)
}
