//! One request's life after `admit`, as a sans-IO state machine (the shape
//! of `quinn-proto` and `rustls`): the exchange says what to do next
//! ([`Action`], from [`Exchange::poll`]) and is told what happened
//! ([`Event`], to [`Exchange::handle`]). Every decision after admission is
//! made here, once, for every host: reserve, look the answer up, which
//! attempt to send and with which deadlines, how to read its answer, when to
//! fail over, how a stream is relayed and how it ends, what to charge, what
//! to cache, the response's status and headers, and the one usage record.
//!
//! reserve → (cache lookup) → attempt k: send → head → body or stream →
//! respond → settle or release → store → record.
//!
//! A failure before any content reached the client moves on to the next
//! attempt, invisibly: a stream's opening frames that carry no content
//! (role-only deltas, empty chunks) are held back until the first content.
//! After content, a failure ends the stream with an OpenAI-style SSE error
//! event and a non-200 record.
//!
//! Time is the host's monotonic clock in microseconds, passed with every
//! event; deadlines go out as durations the host arms as timers.

mod gating;
mod protocol;
mod stream;
#[cfg(test)]
mod tests;
mod tracing;

use crate::cache::CacheDecision;
use crate::config::Credential;
use crate::error::ErrorSource;
use crate::error::GatewayError;
use crate::gateway::STALE;
use crate::gateway::{Decision, ForwardPlan, Gateway, LocalResponse, QuotaRequest, Settlement};
use crate::health::AttemptFailure;
use crate::ledger::LedgerEntry;
use crate::quota::{Amounts, ReserveOutcome, rate_limit_headers};
use crate::response::{self, Metered};
use crate::telemetry::{CacheStatus, Latency, PlanOutcome, Try, UsageRecord};
use gating::Scan;
pub use protocol::*;
use std::collections::VecDeque;
use stream::{Relay, RelayStep};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for the reservation (and the cache lookup, when there is one).
    Admitting,
    /// Waiting for a permit at a gated attempt's region; `end` is the
    /// first attempt after those asked for.
    Queued {
        end: usize,
    },
    AwaitingHead,
    ReadingError {
        status: u16,
    },
    /// A whole JSON answer (replayed as SSE when a stream was asked for).
    ReadingAnswer,
    Relaying,
    Done,
}

/// How a held reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Settle(Amounts),
    Release,
}

pub struct Exchange {
    request_id: String,
    plan: Option<Box<ForwardPlan>>,
    step: Step,
    actions: VecDeque<Action>,
    /// The client's response headers so far (plan, rate limits, cache).
    headers: HeaderList,
    cache: CacheStatus,
    /// The quota is reserved and not yet settled or released.
    holds_quota: bool,
    /// How the reservation closes, once the record says what to ledger.
    closing: Option<Closing>,
    /// The attempt being tried, or that answered or failed last.
    attempt: usize,
    attempts_made: u32,
    error: Option<GatewayError>,
    started_us: u64,
    queue_us: u64,
    forwarded_us: Option<u64>,
    sent_us: u64,
    first_byte_us: Option<u64>,
    /// The answering attempt's first token, after its send.
    first_token_us: Option<u64>,
    /// When a stream's first content came (the host's clock).
    first_content_at_us: Option<u64>,
    relay: Option<Relay>,
    reserved: Option<Result<ReserveOutcome, GatewayError>>,
    /// The lookup's answer; `None` until it came (or when none was asked).
    cached: Option<Option<Vec<u8>>>,
    /// The answer came from an identical request in flight.
    shared: bool,
    /// Looking for a permit, from this attempt on.
    scan: Option<Scan>,
    /// When the permit now asked for was asked for.
    asked_us: u64,
    /// A kept answer past its TTL, within the stale-if-error window.
    stale: Option<Vec<u8>>,
    /// Why the answer is degraded when no attempt says so (a stale one).
    degraded_as: Option<&'static str>,
    /// The longest `Retry-After` a full gate gave.
    retry_after_ms: u64,
    /// The attempts sent, for the trace (only when it is exported).
    tries: Vec<Try>,
}

impl Exchange {
    /// The exchange for `admit`'s answer to a request, started at `now_us`.
    pub fn new(decision: Result<Decision, GatewayError>, request_id: &str, now_us: u64) -> Self {
        let mut ex = Exchange {
            request_id: request_id.to_owned(),
            plan: None,
            step: Step::Done,
            actions: VecDeque::new(),
            headers: Vec::new(),
            cache: CacheStatus::Off,
            holds_quota: false,
            closing: None,
            attempt: 0,
            attempts_made: 0,
            error: None,
            started_us: now_us,
            queue_us: 0,
            forwarded_us: None,
            sent_us: now_us,
            first_byte_us: None,
            first_token_us: None,
            first_content_at_us: None,
            relay: None,
            reserved: None,
            cached: None,
            shared: false,
            scan: None,
            asked_us: now_us,
            stale: None,
            degraded_as: None,
            retry_after_ms: 0,
            tries: Vec::new(),
        };
        match decision {
            Err(error) => {
                let local = LocalResponse::error(&error, request_id);
                ex.respond_local(local, now_us, Some(error));
            }
            Ok(Decision::Respond(local)) => ex.respond_local(local, now_us, None),
            Ok(Decision::Forward(plan)) => {
                ex.headers = plan.response_headers.clone();
                ex.cache = CacheStatus::before_lookup(&plan.cache);
                ex.step = Step::Admitting;
                ex.actions.push_back(Action::Reserve {
                    quota: plan.quota.clone(),
                    id: plan.request_id.clone(),
                });
                if let CacheDecision::Lookup { key, coalesce, .. } = &plan.cache {
                    let key = key.clone();
                    // Waiting longer than the request may take is pointless.
                    let coalesce_ms = if *coalesce { plan.timeouts.total_ms } else { 0 };
                    ex.actions
                        .push_back(Action::LookupCache { key, coalesce_ms });
                } else {
                    ex.cached = Some(None);
                }
                ex.plan = Some(plan);
            }
        }
        ex
    }

    /// Time spent waiting before admission (for a sandbox instance, say),
    /// reported in the usage record.
    pub fn with_queue_us(mut self, queue_us: u64) -> Self {
        self.queue_us = queue_us;
        self
    }

    /// The next thing to do, until the record is out.
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the usage record was handed out (nothing else will be).
    pub fn is_done(&self) -> bool {
        self.step == Step::Done && self.actions.is_empty()
    }

    pub fn plan(&self) -> Option<&ForwardPlan> {
        self.plan.as_deref()
    }

    /// What to send for `attempt`.
    pub fn upstream_request(&self, attempt: usize) -> Option<UpstreamRequest<'_>> {
        let plan = self.plan.as_deref()?;
        let a = plan.attempts.get(attempt)?;
        let accept = if plan.stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        Some(UpstreamRequest {
            target: &a.region,
            url: &a.url,
            body: plan.bodies.get(a.body)?,
            headers: [
                ("content-type", "application/json"),
                ("accept", accept),
                ("x-request-id", &plan.upstream_request_id),
                ("traceparent", &a.traceparent),
            ],
            tracestate: plan.tracestate.as_deref(),
            authorization: a.authorization.as_ref().map(Credential::header_value),
        })
    }

    /// Tells the exchange what happened. Events that do not fit the current
    /// step (a host's late timer, say) change nothing.
    pub fn handle(&mut self, gateway: &Gateway, event: Event, now_us: u64) {
        if self.plan.is_none() {
            return;
        }
        match (self.step, event) {
            (Step::Done, _) => {}
            (_, Event::ClientGone) => self.client_gone(gateway, now_us),
            (Step::Admitting, Event::Reserved(outcome)) => {
                self.reserved = Some(outcome);
                self.admitted(now_us);
            }
            (Step::Admitting, Event::Cached(found)) => {
                self.cached = Some(found);
                self.admitted(now_us);
            }
            (Step::Admitting, Event::Shared(answer)) => {
                self.cached = Some(Some(answer));
                self.shared = true;
                self.admitted(now_us);
            }
            (Step::Queued { .. }, Event::Granted { attempt }) => {
                self.queue_us += now_us.saturating_sub(self.asked_us);
                self.scan = None;
                self.attempt = attempt;
                self.send_now(now_us);
            }
            (Step::Queued { end }, Event::Full { retry_after_ms }) => {
                self.queue_us += now_us.saturating_sub(self.asked_us);
                self.retry_after_ms = self.retry_after_ms.max(retry_after_ms);
                self.gate_full(end, now_us);
            }
            (
                Step::AwaitingHead,
                Event::Head {
                    status,
                    content_type,
                },
            ) => self.head(status, content_type.as_deref(), now_us),
            (Step::AwaitingHead, Event::Failed(t)) => {
                let failure = match t {
                    Transport::Timeout => AttemptFailure::Timeout,
                    _ => AttemptFailure::Connect,
                };
                self.attempt_failed(
                    failure,
                    transport_error(t, self.region(), "first byte"),
                    now_us,
                );
            }
            (Step::ReadingError { status }, Event::Body(body)) => {
                let error = response::upstream_error(status, &body);
                self.attempt_failed(AttemptFailure::Status { status }, error, now_us);
            }
            (Step::ReadingError { status }, Event::Failed(_)) => {
                let error = response::upstream_error(status, &[]);
                self.attempt_failed(AttemptFailure::Status { status }, error, now_us);
            }
            (Step::ReadingAnswer, Event::Body(body)) => self.answer(gateway, body, now_us),
            (Step::ReadingAnswer, Event::Failed(t)) => {
                let error = transport_error(t, self.region(), "reading the response body");
                match t {
                    Transport::TooLarge => self.fail(error, now_us),
                    Transport::Timeout => {
                        self.attempt_failed(AttemptFailure::Timeout, error, now_us)
                    }
                    Transport::Connect | Transport::Broke => {
                        self.attempt_failed(AttemptFailure::Connect, error, now_us)
                    }
                }
            }
            (Step::Relaying, Event::Chunk(bytes)) => {
                self.relayed(gateway, |r| r.chunk(&bytes), now_us)
            }
            (Step::Relaying, Event::End) => self.relayed(gateway, Relay::end, now_us),
            (Step::Relaying, Event::Failed(t)) => self.relayed(gateway, |r| r.failed(t), now_us),
            _ => {}
        }
    }

    fn plan_ref(&self) -> &ForwardPlan {
        self.plan
            .as_deref()
            .expect("a forwarded exchange has a plan")
    }

    fn region(&self) -> &str {
        self.plan_ref()
            .attempts
            .get(self.attempt)
            .map_or("", |a| a.region.as_str())
    }

    /// Once the reservation and the lookup are both in: a refusal, the
    /// cached answer, or the attempts.
    fn admitted(&mut self, now_us: u64) {
        if self.cached.is_none() {
            return;
        }
        let Some(reserved) = self.reserved.take() else {
            return;
        };
        let found = self.cached.take().flatten();
        let outcome = match reserved {
            Ok(outcome) => QuotaRequest::outcome(outcome),
            Err(error) => return self.fail(error, now_us),
        };
        match outcome {
            Ok(snapshot) => {
                merge(&mut self.headers, rate_limit_headers(&snapshot));
                self.holds_quota = true;
                self.looked_up(found, now_us);
            }
            Err((limited, snapshot)) => {
                if let Some(snapshot) = snapshot {
                    merge(&mut self.headers, rate_limit_headers(&snapshot));
                }
                self.fail(limited, now_us);
            }
        }
    }

    /// A kept answer younger than the TTL (or shared by the identical
    /// request it waited for) answers; one past it but within the
    /// stale-if-error window is held in case every attempt fails.
    fn looked_up(&mut self, found: Option<Vec<u8>>, now_us: u64) {
        let plan = self.plan_ref();
        let (ttl_ms, stale_ms) = match &plan.cache {
            CacheDecision::Lookup {
                ttl_seconds,
                stale_seconds,
                ..
            } => (ttl_seconds * 1000, stale_seconds * 1000),
            _ => (0, 0),
        };
        let kept = found.as_deref().and_then(crate::cache::unwrap_stored);
        let kept =
            kept.map(|(stored_ms, body)| (plan.now_ms.saturating_sub(stored_ms), body.to_vec()));
        match kept {
            Some((age_ms, body)) if self.shared || age_ms < ttl_ms => {
                let status = if self.shared {
                    CacheStatus::Coalesced
                } else {
                    CacheStatus::Hit
                };
                if self.serve_cached(body, status, now_us) {
                    return;
                }
            }
            Some((age_ms, body)) if age_ms < ttl_ms.saturating_add(stale_ms) => {
                self.stale = Some(body);
            }
            _ => {}
        }
        self.forward(now_us)
    }

    /// Answers from the cache (a whole answer, replayed as SSE for a
    /// stream), charged as a hit; false when it cannot be replayed.
    fn serve_cached(&mut self, body: Vec<u8>, status: CacheStatus, now_us: u64) -> bool {
        let plan = self.plan_ref();
        let body = if plan.stream {
            let replayed = serde_json::from_slice(&body).ok().and_then(|value| {
                response::replay_as_sse(plan.response_kind(), &value, plan.client_wants_usage).ok()
            });
            match replayed {
                Some(sse) => sse,
                None => return false,
            }
        } else {
            body
        };
        self.cache = status;
        let value = status.header_value().unwrap_or("HIT");
        merge(
            &mut self.headers,
            [("x-edgegate-cache".into(), value.into())],
        );
        if status == CacheStatus::Stale {
            self.degraded_as = Some(STALE);
            merge(
                &mut self.headers,
                [("x-edgegate-degraded".into(), STALE.into())],
            );
        }
        let settlement = Settlement::cache_hit();
        self.respond_full(body);
        self.settle(settlement.actual);
        self.record(Some(&settlement), 200, None, now_us);
        true
    }

    /// Starts the attempts, after the quota (and the cache) said go.
    fn forward(&mut self, now_us: u64) {
        if let Some(value) = self.cache.header_value() {
            merge(
                &mut self.headers,
                [("x-edgegate-cache".into(), value.into())],
            );
        }
        self.forwarded_us = Some(now_us);
        self.attempt = 0;
        self.send(now_us);
    }

    /// Sends `self.attempt` (with a permit first, when it is gated), within
    /// the route's first-byte timeout and what is left of its total time.
    fn send(&mut self, now_us: u64) {
        if let Some(a) = self.plan_ref().attempts.get(self.attempt)
            && a.gate.is_some()
            && self.left_ms(now_us) > 0
        {
            let from = self.attempt;
            let scan = *self.scan.get_or_insert(Scan {
                from,
                waiting: false,
            });
            return self.acquire(scan.waiting, now_us);
        }
        self.scan = None;
        self.send_now(now_us);
    }

    fn left_ms(&self, now_us: u64) -> u64 {
        self.total_deadline_us().saturating_sub(now_us) / 1000
    }

    /// Sends `self.attempt` now.
    fn send_now(&mut self, now_us: u64) {
        let plan = self.plan_ref();
        let t = plan.timeouts;
        let left_ms = self.left_ms(now_us);
        let head_ms = t.first_byte_ms.min(left_ms);
        if self.attempt >= plan.attempts.len() || head_ms == 0 {
            let fallback = match head_ms {
                0 => GatewayError::UpstreamTimeout {
                    phase: "total time".into(),
                },
                _ => GatewayError::NoUpstream {
                    model: plan.model.clone(),
                },
            };
            let error = self.error.take().unwrap_or(fallback);
            self.attempt = self.attempt.saturating_sub(1);
            return self.fail(error, now_us);
        }
        let read = BodyRead {
            // A streamed answer is read as it comes.
            success: (!plan.stream).then_some(BodyLimit {
                max_bytes: MAX_ANSWER_BYTES,
                within_ms: left_ms,
            }),
            error: BodyLimit {
                max_bytes: MAX_ERROR_BODY_BYTES,
                within_ms: head_ms,
            },
        };
        self.attempts_made += 1;
        self.sent_us = now_us;
        self.note_sent(now_us);
        self.relay = None;
        self.step = Step::AwaitingHead;
        self.actions.push_back(Action::Send {
            attempt: self.attempt,
            connect_ms: t.connect_ms.min(head_ms),
            head_ms,
            read,
        });
    }

    fn total_deadline_us(&self) -> u64 {
        let total_ms = self.plan_ref().timeouts.total_ms;
        self.started_us
            .saturating_add(total_ms.saturating_mul(1000))
    }

    fn head(&mut self, status: u16, content_type: Option<&str>, now_us: u64) {
        let latency_us = now_us.saturating_sub(self.sent_us);
        let offset_us = now_us.saturating_sub(self.started_us);
        if let Some(t) = self.tries.last_mut() {
            t.status = Some(status);
            t.first_byte_us = (200..300).contains(&status).then_some(offset_us);
        }
        // The host reads an error's body, and a non-streamed answer's,
        // without being asked (`Send::read`).
        if !(200..300).contains(&status) {
            self.step = Step::ReadingError { status };
            return;
        }
        self.first_byte_us = Some(latency_us);
        let degraded = self
            .plan_ref()
            .attempts
            .get(self.attempt)
            .and_then(|a| a.degraded.clone());
        if let Some(reason) = degraded {
            merge(&mut self.headers, [("x-edgegate-degraded".into(), reason)]);
        }
        let latency_ms = u32::try_from(latency_us / 1000).unwrap_or(u32::MAX);
        self.observe(AttemptOutcome::Answered { latency_ms });
        let is_sse = content_type.is_some_and(|c| c.trim_start().starts_with("text/event-stream"));
        let within_ms = self.total_deadline_us().saturating_sub(now_us) / 1000;
        if !self.plan_ref().stream || !is_sse {
            // A whole answer: its first token came with it.
            self.observe(AttemptOutcome::FirstToken { latency_ms });
        }
        let plan = self.plan_ref();
        if !plan.stream {
            self.step = Step::ReadingAnswer;
        } else if is_sse {
            let mut relay = Relay::new(plan, self.total_deadline_us());
            self.step = Step::Relaying;
            self.actions.push_back(relay.read(now_us));
            self.relay = Some(relay);
        } else {
            // A stream request answered with JSON is replayed as a stream.
            self.step = Step::ReadingAnswer;
            self.actions.push_back(Action::ReadBody {
                max_bytes: MAX_ANSWER_BYTES,
                within_ms: within_ms.max(1),
            });
        }
    }

    fn observe(&mut self, outcome: AttemptOutcome) {
        let region = self.region().to_owned();
        self.actions.push_back(Action::Observe { region, outcome });
    }

    /// The attempt failed before the client saw anything: the next one, if
    /// the failure allows it.
    fn attempt_failed(&mut self, failure: AttemptFailure, error: GatewayError, now_us: u64) {
        self.observe(AttemptOutcome::Failed(failure));
        self.note_ended(Some(&error), now_us);
        if failure.try_next() {
            self.error = Some(error);
            self.attempt += 1;
            self.send(now_us);
        } else {
            self.fail(error, now_us);
        }
    }

    /// A whole answer: checked, charged, sent, kept.
    fn answer(&mut self, gateway: &Gateway, body: Vec<u8>, now_us: u64) {
        // A whole answer: its first token came with it.
        self.first_token_us = Some(now_us.saturating_sub(self.sent_us));
        let plan = self.plan_ref();
        let kind = plan.response_kind();
        let metered = match response::parse_upstream_body(kind, &body) {
            Ok(metered) => metered,
            Err(error) => return self.fail(error, now_us),
        };
        let client_body = if plan.stream {
            let replayed = serde_json::from_slice(&body)
                .map_err(|e| GatewayError::UpstreamInvalidResponse {
                    message: format!("the upstream answer is not JSON: {e}"),
                })
                .and_then(|v| response::replay_as_sse(kind, &v, plan.client_wants_usage));
            match replayed {
                Ok(sse) => sse,
                Err(error) => return self.fail(error, now_us),
            }
        } else {
            body.clone()
        };
        let settlement = gateway.settle(plan, self.attempt, metered);
        let store = self.store_action(body, now_us);
        self.respond_full(client_body);
        self.settle(settlement.actual);
        self.actions.extend(store);
        self.record(Some(&settlement), 200, None, now_us);
    }

    /// Keeping `answer` under the request's key, if the attempt that
    /// answered is the one the key names.
    fn store_action(&self, answer: Vec<u8>, now_us: u64) -> Option<Action> {
        let plan = self.plan_ref();
        let (key, ttl_seconds) = plan.cache_store(self.attempt)?;
        let stored_ms = plan.now_ms + now_us.saturating_sub(self.started_us) / 1000;
        Some(Action::Store {
            key: key.to_owned(),
            body: crate::cache::wrap_stored(stored_ms, &answer),
            ttl_seconds,
        })
    }

    /// Applies a stream event to the relay and carries out what it decided.
    fn relayed(
        &mut self,
        gateway: &Gateway,
        apply: impl FnOnce(&mut Relay) -> RelayStep,
        now_us: u64,
    ) {
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        match apply(relay) {
            RelayStep::Continue { open, write } => {
                if open {
                    self.first_token(now_us);
                    self.open_stream();
                }
                if !write.is_empty() {
                    self.actions.push_back(Action::Write(write));
                }
                let next = self.relay.as_mut().map(|r| r.read(now_us));
                self.actions.extend(next);
            }
            RelayStep::Retry { failure, error } => {
                self.relay = None;
                self.attempt_failed(failure, error, now_us);
            }
            RelayStep::Refuse(error) => {
                self.relay = None;
                self.fail(error, now_us);
            }
            RelayStep::Finished {
                open,
                write,
                error,
                metered,
                assembled,
            } => {
                if open {
                    self.first_token(now_us);
                    self.open_stream();
                }
                if !write.is_empty() {
                    self.actions.push_back(Action::Write(write));
                }
                self.actions.push_back(Action::EndStream);
                self.finish_stream(gateway, metered, assembled, error, now_us);
            }
        }
    }

    /// The stream's first content: the replica's time to first token.
    fn first_token(&mut self, now_us: u64) {
        self.first_token_us = Some(now_us.saturating_sub(self.sent_us));
        self.first_content_at_us = Some(now_us);
        let latency_ms =
            u32::try_from(now_us.saturating_sub(self.sent_us) / 1000).unwrap_or(u32::MAX);
        self.observe(AttemptOutcome::FirstToken { latency_ms });
    }

    fn open_stream(&mut self) {
        let mut headers = self.headers.clone();
        merge(
            &mut headers,
            [
                ("content-type".into(), "text/event-stream".into()),
                ("cache-control".into(), "no-cache".into()),
            ],
        );
        self.actions.push_back(Action::Respond(Head {
            status: 200,
            headers,
            body: ResponseBody::Stream,
        }));
    }

    fn finish_stream(
        &mut self,
        gateway: &Gateway,
        metered: Metered,
        assembled: Option<Vec<u8>>,
        error: Option<GatewayError>,
        now_us: u64,
    ) {
        let settlement = gateway.settle(self.plan_ref(), self.attempt, metered);
        self.settle(settlement.actual);
        if error.is_none()
            && let Some(answer) = assembled
        {
            let store = self.store_action(answer, now_us);
            self.actions.extend(store);
        }
        let status = error.as_ref().map_or(200, GatewayError::status);
        self.record(Some(&settlement), status, error.as_ref(), now_us);
    }

    /// The client left: whatever the backend did is charged (what a stream
    /// relayed, else the whole reservation), nothing is sent.
    fn client_gone(&mut self, gateway: &Gateway, now_us: u64) {
        if !self.holds_quota {
            self.actions.clear();
            return self.record(None, 499, None, now_us);
        }
        let metered = self.relay.as_ref().map_or(Metered::Unknown, Relay::metered);
        let settlement = if self.forwarded_us.is_some() {
            gateway.settle(self.plan_ref(), self.attempt, metered)
        } else {
            Settlement::cache_hit()
        };
        self.actions.clear();
        self.settle(settlement.actual);
        self.record(Some(&settlement), 499, None, now_us);
    }

    /// An error answer after admission; the reservation goes back. When
    /// the backends are at fault and a stale answer is held, it answers.
    fn fail(&mut self, error: GatewayError, now_us: u64) {
        if error.source() == ErrorSource::Upstream
            && let Some(body) = self.stale.take()
            && self.serve_cached(body, CacheStatus::Stale, now_us)
        {
            return;
        }
        if self.holds_quota {
            self.holds_quota = false;
            self.closing = Some(Closing::Release);
        }
        let local = LocalResponse::error(&error, &self.request_id);
        let mut headers = self.headers.clone();
        merge(&mut headers, local.headers);
        self.actions.push_back(Action::Respond(Head {
            status: local.status,
            headers,
            body: ResponseBody::Full(local.body.into_bytes()),
        }));
        self.record(None, local.status, Some(&error), now_us);
    }

    fn respond_full(&mut self, body: Vec<u8>) {
        let stream = self.plan.as_deref().is_some_and(|p| p.stream);
        let content_type = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut headers = self.headers.clone();
        merge(&mut headers, [("content-type".into(), content_type.into())]);
        self.actions.push_back(Action::Respond(Head {
            status: 200,
            headers,
            body: ResponseBody::Full(body),
        }));
    }

    /// Charges `actual` when the record is out (the ledger needs it).
    fn settle(&mut self, actual: Amounts) {
        if self.holds_quota {
            self.holds_quota = false;
            self.closing = Some(Closing::Settle(actual));
        }
    }

    /// A request answered without a plan: a local answer or a refusal.
    fn respond_local(&mut self, local: LocalResponse, now_us: u64, error: Option<GatewayError>) {
        let latency = self.latency(now_us);
        let record = match &error {
            Some(e) => UsageRecord::rejected(&self.request_id, e, latency),
            None => UsageRecord::answered(&self.request_id, local.status, latency),
        };
        self.actions.push_back(Action::Respond(Head {
            status: local.status,
            headers: local.headers,
            body: ResponseBody::Full(local.body.into_bytes()),
        }));
        self.actions.push_back(Action::Record(Box::new(record)));
        self.step = Step::Done;
    }

    fn latency(&self, now_us: u64) -> Latency {
        let total_us = now_us.saturating_sub(self.started_us);
        Latency {
            gateway_us: self
                .forwarded_us
                .map_or(total_us, |f| f.saturating_sub(self.started_us)),
            queue_us: self.queue_us,
            upstream_first_byte_us: self.first_byte_us,
            first_token_us: self.first_token_us,
            after_first_token_us: self.first_content_at_us.map(|t| now_us.saturating_sub(t)),
            total_us,
        }
    }

    fn record(
        &mut self,
        settlement: Option<&Settlement>,
        status: u16,
        error: Option<&GatewayError>,
        now_us: u64,
    ) {
        let attempt = (self.attempts_made > 0).then_some(self.attempt);
        let outcome = PlanOutcome {
            attempt,
            attempts_made: self.attempts_made,
            status,
            error,
            settlement,
            cache: self.cache,
            latency: self.latency(now_us),
        };
        let mut record = UsageRecord::planned(self.plan_ref(), &outcome);
        if let Some(reason) = self.degraded_as {
            record.degraded = Some(reason.to_owned());
        }
        self.note_ended(error, now_us);
        record.trace = self.trace();
        match self.closing.take() {
            Some(Closing::Settle(actual)) => {
                let ledger = LedgerEntry::of(self.plan_ref(), &record, actual.cost_micros);
                let ledger = Box::new(ledger);
                self.actions.push_back(Action::Settle { actual, ledger });
            }
            Some(Closing::Release) => {
                let ledger = Box::new(LedgerEntry::of(self.plan_ref(), &record, 0));
                self.actions.push_back(Action::Release { ledger });
            }
            None => {}
        }
        self.actions.push_back(Action::Record(Box::new(record)));
        self.step = Step::Done;
        self.relay = None;
    }
}

/// Adds `extra` to `headers`; a name already there (in any case) is replaced.
fn merge(headers: &mut HeaderList, extra: impl IntoIterator<Item = (String, String)>) {
    for (name, value) in extra {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        headers.push((name, value));
    }
}

fn transport_error(t: Transport, region: &str, phase: &str) -> GatewayError {
    match t {
        Transport::Connect => GatewayError::UpstreamUnavailable {
            message: format!("region {region} did not answer"),
        },
        Transport::Timeout => GatewayError::UpstreamTimeout {
            phase: phase.to_owned(),
        },
        Transport::Broke => GatewayError::UpstreamUnavailable {
            message: "the connection broke while reading the response".into(),
        },
        Transport::TooLarge => GatewayError::UpstreamInvalidResponse {
            message: format!(
                "the upstream answer is larger than {} MiB",
                MAX_ANSWER_BYTES >> 20
            ),
        },
    }
}
