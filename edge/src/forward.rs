//! Forwarding: the plan's attempts in order. The next attempt is tried only
//! while nothing has reached the client: a connect error, no first byte in
//! time, or a status `AttemptFailure::try_next` allows. Every outcome feeds
//! this isolate's region health.

use crate::clock::{now_ms, sleep_ms};
use crate::region_health;
use edgegate_core::gateway::{Attempt, ForwardPlan};
use edgegate_core::health::{AttemptFailure, Observation};
use edgegate_core::{GatewayError, response};
use futures_util::future::{Either, select};
use std::pin::pin;
use worker::wasm_bindgen::JsValue;
use worker::{AbortController, ByteStream, Fetch, Headers, Method, Request, RequestInit};

pub enum Body {
    /// A non-streamed answer, read whole within the first-byte deadline.
    Complete(Vec<u8>),
    /// A streamed answer whose headers arrived; the body is still upstream.
    Stream(ByteStream),
}

/// A 2xx answer from one attempt.
pub struct Answer {
    pub attempt: usize,
    pub attempts_made: u32,
    pub content_type: Option<String>,
    pub body: Body,
    /// From sending to the response headers.
    pub first_byte_ms: u64,
}

/// Every attempt failed, or one failed in a way that must not be retried.
pub struct Failure {
    /// The attempt that failed last, if any was made.
    pub attempt: Option<usize>,
    pub attempts_made: u32,
    pub error: GatewayError,
}

pub async fn forward(plan: &ForwardPlan, started_ms: u64) -> Result<Answer, Failure> {
    let total_deadline = started_ms.saturating_add(plan.timeouts.total_ms);
    let mut failure = Failure {
        attempt: None,
        attempts_made: 0,
        error: GatewayError::NoUpstream {
            model: plan.model.clone(),
        },
    };
    for (index, attempt) in plan.attempts.iter().enumerate() {
        let sent_ms = now_ms();
        let budget = plan
            .timeouts
            .first_byte_ms
            .min(total_deadline.saturating_sub(sent_ms));
        if budget == 0 {
            break;
        }
        failure.attempt = Some(index);
        failure.attempts_made += 1;
        let body = &plan.bodies[attempt.body];
        match try_attempt(plan, attempt, body, budget).await {
            Ok(Received {
                content_type,
                body,
                first_byte_ms,
            }) => {
                let latency_ms = u32::try_from(first_byte_ms).unwrap_or(u32::MAX);
                region_health::observe(
                    &attempt.region,
                    now_ms(),
                    Observation::Success { latency_ms },
                );
                return Ok(Answer {
                    attempt: index,
                    attempts_made: failure.attempts_made,
                    content_type,
                    body,
                    first_byte_ms,
                });
            }
            Err((kind, error)) => {
                if kind.region_fault() {
                    region_health::observe(&attempt.region, now_ms(), Observation::Failure);
                }
                failure.error = error;
                if !kind.try_next() {
                    return Err(failure);
                }
            }
        }
    }
    Err(failure)
}

/// What one attempt got back before anything reached the client.
struct Received {
    content_type: Option<String>,
    body: Body,
    first_byte_ms: u64,
}

type AttemptResult = Result<Received, (AttemptFailure, GatewayError)>;

async fn try_attempt(
    plan: &ForwardPlan,
    attempt: &Attempt,
    body: &str,
    budget_ms: u64,
) -> AttemptResult {
    let request = upstream_request(plan, attempt, body).map_err(|_| {
        (
            AttemptFailure::Connect,
            GatewayError::UpstreamUnavailable {
                message: format!("region {} has an unusable URL", attempt.region),
            },
        )
    })?;
    let sent_ms = now_ms();
    let controller = AbortController::default();
    let fetch = Fetch::Request(request);
    let deadline = sleep_ms(budget_ms);
    let (mut response, deadline) =
        match select(pin!(fetch.send_with_signal(&controller.signal())), deadline).await {
            Either::Left((Ok(response), deadline)) => (response, deadline),
            Either::Left((Err(_), _)) => {
                return Err((
                    AttemptFailure::Connect,
                    GatewayError::UpstreamUnavailable {
                        message: format!("region {} did not accept the connection", attempt.region),
                    },
                ));
            }
            Either::Right(_) => {
                controller.abort();
                return Err(timeout("waiting for response headers"));
            }
        };
    let first_byte_ms = now_ms().saturating_sub(sent_ms);
    let status = response.status_code();
    let content_type = response.headers().get("content-type").ok().flatten();
    if !(200..300).contains(&status) {
        // The error body explains the failure; waiting for it is bounded too.
        let body = match select(pin!(response.bytes()), deadline).await {
            Either::Left((Ok(bytes), _)) => bytes,
            _ => {
                controller.abort();
                Vec::new()
            }
        };
        return Err((
            AttemptFailure::Status { status },
            response::upstream_error(status, &body),
        ));
    }
    if plan.stream {
        let stream = response.stream().map_err(|_| {
            (
                AttemptFailure::Connect,
                GatewayError::UpstreamUnavailable {
                    message: "the upstream response has no body".into(),
                },
            )
        })?;
        return Ok(Received {
            content_type,
            body: Body::Stream(stream),
            first_byte_ms,
        });
    }
    match select(pin!(response.bytes()), deadline).await {
        Either::Left((Ok(bytes), _)) => Ok(Received {
            content_type,
            body: Body::Complete(bytes),
            first_byte_ms,
        }),
        Either::Left((Err(_), _)) => Err((
            AttemptFailure::Connect,
            GatewayError::UpstreamUnavailable {
                message: "the connection broke while reading the response".into(),
            },
        )),
        Either::Right(_) => {
            controller.abort();
            Err(timeout("reading the response body"))
        }
    }
}

fn timeout(phase: &str) -> (AttemptFailure, GatewayError) {
    (
        AttemptFailure::Timeout,
        GatewayError::UpstreamTimeout {
            phase: phase.to_owned(),
        },
    )
}

fn upstream_request(plan: &ForwardPlan, attempt: &Attempt, body: &str) -> worker::Result<Request> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set("x-request-id", &plan.upstream_request_id)?;
    if plan.stream {
        headers.set("accept", "text/event-stream")?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(JsValue::from_str(body)));
    Request::new_with_init(&attempt.url, &init)
}
