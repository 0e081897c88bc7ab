//! A request's exchange carried out on this machine. The sandboxed core
//! decides everything, admission included (`edgegate_core::exchange`); this
//! file only does what its actions say — the quota store, the response
//! cache, HTTP to the backends within the deadlines it names, the client's
//! response, the access log and metrics — and reports back what happened.
//! Reports are batched: a non-streamed cache miss crosses into the sandbox
//! three times (start; reserved and looked up; the answer's head and body).

use crate::app::{App, Body, full, response, stream_response};
use crate::coalescing::{Lead, Turn};
use crate::gates::Permit;
use crate::load_tracker::InFlight;
use crate::response_cache::CachedResponse;
use crate::sandbox::guest::{self, Action, Event};
use crate::sandbox::{SandboxFault, SandboxedExchange, convert};
use crate::upstream::UpstreamBody;
use bytes::Bytes;
use edgegate_core::GatewayError;
use edgegate_core::gateway::{LocalResponse, QuotaRequest, RequestContext};
use edgegate_core::health::Observation;
use edgegate_core::quota::ReserveOutcome;
use edgegate_core::request::HttpRequest;
use edgegate_core::telemetry::{Latency, UsageRecord};
use hyper::Response;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Admits and serves one request.
pub async fn serve(
    app: Arc<App>,
    request: HttpRequest,
    ctx: RequestContext,
    started_us: u64,
) -> Response<Body> {
    let request_id = ctx.request_id.clone();
    let mut run = match app.sandbox.start(&request, &ctx, started_us) {
        Ok((exchange, actions)) => Run {
            app,
            exchange,
            request_id,
            started_us,
            pending: actions.into(),
            events: Vec::new(),
            reserved: None,
            body: None,
            in_flight: None,
            permit: None,
            leading: None,
            responded: false,
            finished: false,
        },
        Err(fault) => return refused(&app, &request_id, fault.into(), started_us),
    };
    let head = loop {
        match run.next() {
            Some(Action::Respond(head)) => break head,
            Some(action) => run.run(action).await,
            None => break run.fault_head(),
        }
    };
    run.responded = true;
    match head.body {
        guest::ResponseBody::Full(body) => {
            // What follows (settle, store, record) is in memory: no waiting.
            while let Some(action) = run.next() {
                run.run(action).await;
            }
            response(head.status, head.headers, full(body))
        }
        guest::ResponseBody::Stream => {
            // The body carries the exchange: when the client goes away, it
            // is dropped, and `Run`'s `Drop` tells the exchange.
            let chunks = futures_util::stream::unfold(run, |mut run| async move {
                run.next_write().await.map(|bytes| (bytes, run))
            });
            stream_response(head.status, head.headers, chunks)
        }
    }
}

/// A request refused before the sandbox could start its exchange.
pub fn refused(
    app: &App,
    request_id: &str,
    error: GatewayError,
    started_us: u64,
) -> Response<Body> {
    let total_us = crate::clock::now_us().saturating_sub(started_us);
    let latency = Latency::gateway_only(total_us);
    app.record(&UsageRecord::rejected(request_id, &error, latency));
    let local = LocalResponse::error(&error, request_id);
    response(local.status, local.headers, full(local.body))
}

/// One request's exchange being carried out.
struct Run {
    app: Arc<App>,
    exchange: SandboxedExchange,
    request_id: String,
    started_us: u64,
    /// Actions not yet carried out.
    pending: VecDeque<Action>,
    /// What happened since the last crossing.
    events: Vec<Event>,
    /// The reservation made and not yet settled or released.
    reserved: Option<(QuotaRequest, String)>,
    /// The current attempt's body, still upstream.
    body: Option<UpstreamBody>,
    /// The current attempt, counted in its replica's load.
    in_flight: Option<InFlight>,
    /// The gate's permit for the attempt, and whether its `Send` is still
    /// to come.
    permit: Option<(Permit, bool)>,
    /// Identical requests wait for this one's answer.
    leading: Option<Lead>,
    responded: bool,
    /// The usage record was written (or the exchange is lost).
    finished: bool,
}

impl Run {
    /// The next action: the pending ones, then what the events lead to.
    fn next(&mut self) -> Option<Action> {
        if self.pending.is_empty() && !self.events.is_empty() && !self.finished {
            let events = std::mem::take(&mut self.events);
            match self.exchange.handle(&events, crate::clock::now_us()) {
                Ok(actions) => self.pending.extend(actions),
                Err(fault) => self.fault(fault),
            }
        }
        self.pending.pop_front()
    }

    /// Carries out one action; those that ask a question leave an event.
    async fn run(&mut self, action: Action) {
        let Some(action) = self.effect(action) else {
            return;
        };
        let event = match action {
            Action::Reserve(quota) => {
                let (quota, id) = convert::quota_request(quota);
                let now = crate::clock::now_ms();
                let refusal =
                    self.app
                        .directory
                        .refusal(&quota.key.name, quota.presented.as_ref(), now);
                let reserved = match refusal {
                    Some(refusal) => Ok(ReserveOutcome::Refused { refusal }),
                    None => self.app.quota.reserve(&quota, &id, now).await,
                };
                match reserved {
                    Ok(outcome) => {
                        if matches!(outcome, ReserveOutcome::Admit { .. }) {
                            self.reserved = Some((quota, id));
                        }
                        Event::Reserved(convert::reserve_outcome(outcome))
                    }
                    Err(error) => Event::ReserveFailed(error.to_string()),
                }
            }
            Action::Acquire(ask) => {
                self.permit = None;
                let (region, ask) = convert::gate_ask(ask);
                let (answer, permit) = self.app.gates.acquire(&region, ask).await;
                self.permit = permit.map(|p| (p, true));
                convert::gate_answer(answer)
            }
            Action::Send(send) => {
                // The permit is for the send right after it was granted.
                match self.permit.as_mut() {
                    Some((_, fresh @ true)) => *fresh = false,
                    _ => self.permit = None,
                }
                self.body = None;
                self.in_flight = self.app.loads.start(&send.target);
                let read = convert::body_reads(send.read);
                let (body, head) = self.app.upstream.send(send).await;
                self.body = body;
                let limit = match &head {
                    Event::Head(h) => read.for_status(h.status),
                    _ => None,
                };
                self.events.push(head);
                match (limit, self.body.as_mut()) {
                    (Some(limit), Some(body)) => body.read_body(limit).await,
                    _ => return,
                }
            }
            Action::LookupCache(lookup) => self.look_up(lookup).await,
            Action::ReadBody(limit) => match self.body.as_mut() {
                Some(body) => body.read_body(convert::body_limit(limit)).await,
                None => Event::Failed(guest::Transport::Broke),
            },
            Action::ReadChunk(within_ms) => match self.body.as_mut() {
                Some(body) => body.read_chunk(within_ms).await,
                None => Event::Failed(guest::Transport::Broke),
            },
            // Carried out where the response is.
            _ => return,
        };
        self.events.push(event);
    }

    /// Carries out an action that needs no waiting; hands back the others.
    fn effect(&mut self, action: Action) -> Option<Action> {
        let app = &self.app;
        match action {
            Action::Settle(settlement) => {
                if let Some((quota, id)) = self.reserved.take() {
                    let now = crate::clock::now_ms();
                    let actual = convert::amounts(settlement.actual);
                    let ledger = convert::ledger_entry(settlement.ledger);
                    app.quota.settle(&quota, &id, actual, Some(ledger), now);
                }
            }
            Action::Release(ledger) => {
                if let Some((quota, id)) = self.reserved.take() {
                    let now = crate::clock::now_ms();
                    let ledger = convert::ledger_entry(ledger);
                    app.quota.release(&quota, &id, Some(ledger), now);
                }
            }
            Action::Store(store) => {
                let body = Bytes::from(store.body);
                let lead = self.leading.take_if(|l| l.key() == store.key);
                app.cache.put(
                    store.key,
                    CachedResponse { body: body.clone() },
                    Duration::from_secs(store.ttl_seconds),
                );
                if let Some(lead) = lead {
                    lead.publish(&body);
                }
            }
            Action::Observe(o) => {
                if let Some(label) = &o.failure {
                    app.metrics.upstream_failure(&o.region, label);
                }
                let observation = o.observation.map(|obs| match obs {
                    guest::Observation::Success(latency_ms) => Observation::Success { latency_ms },
                    guest::Observation::Failure => Observation::Failure,
                });
                if let Some(observation) = observation {
                    app.health.observe(&o.region, observation);
                }
                if let Some(ms) = o.first_token_ms {
                    app.loads.sample(&o.region, ms);
                }
            }
            Action::Record(record) => {
                app.record(&convert::usage_record(record));
                self.finished = true;
            }
            Action::EndStream => {
                self.body = None;
                self.in_flight = None;
                self.permit = None;
            }
            Action::Reserve(_)
            | Action::Acquire(_)
            | Action::LookupCache(_)
            | Action::Send(_)
            | Action::ReadBody(_)
            | Action::ReadChunk(_)
            | Action::Respond(_)
            | Action::Write(_) => return Some(action),
        }
        None
    }

    /// The cached answer; on a miss, an identical request's answer when one
    /// is in flight (waited for up to `coalesce_ms`), or this request leads.
    async fn look_up(&mut self, lookup: guest::Lookup) -> Event {
        if let Some(hit) = self.app.cache.get(&lookup.key) {
            return Event::Cached(Some(hit.body.to_vec()));
        }
        if lookup.coalesce_ms == 0 {
            return Event::Cached(None);
        }
        match self.app.coalescing.join(&lookup.key) {
            Turn::Lead(lead) => {
                self.leading = Some(lead);
                Event::Cached(None)
            }
            Turn::Follow(answer) => {
                let wait = Duration::from_millis(lookup.coalesce_ms);
                match tokio::time::timeout(wait, answer).await {
                    Ok(Ok(Some(body))) => Event::Shared(body.to_vec()),
                    _ => Event::Cached(None),
                }
            }
        }
    }

    /// The streamed response's next bytes: what the exchange writes, after
    /// carrying out the actions before it (reading upstream); `None` once
    /// it ended the stream (and settled and recorded it).
    async fn next_write(&mut self) -> Option<Bytes> {
        while let Some(action) = self.next() {
            match action {
                Action::Write(bytes) => return Some(Bytes::from(bytes)),
                other => self.run(other).await,
            }
        }
        None
    }

    /// The sandbox lost the exchange: its reservation goes back, its record
    /// is written here, and a client without an answer gets a 500.
    fn fault(&mut self, fault: SandboxFault) {
        self.pending.clear();
        self.events.clear();
        self.finished = true;
        if let Some((quota, id)) = self.reserved.take() {
            let now = crate::clock::now_ms();
            self.app.quota.release(&quota, &id, None, now);
        }
        let error = GatewayError::from(fault);
        let total_us = crate::clock::now_us().saturating_sub(self.started_us);
        let latency = Latency::gateway_only(total_us);
        self.app
            .record(&UsageRecord::rejected(&self.request_id, &error, latency));
        if !self.responded {
            let head = error_head(&error, &self.request_id);
            self.pending.push_back(Action::Respond(head));
        }
    }

    /// The response when the exchange ended without one (a bug: a failed
    /// sandbox call queues its 500 itself).
    fn fault_head(&mut self) -> guest::Head {
        let message = "the exchange ended without a response";
        if !self.finished {
            self.fault(SandboxFault(message.into()));
            if let Some(Action::Respond(head)) = self.pending.pop_front() {
                return head;
            }
        }
        error_head(
            &GatewayError::Internal {
                message: message.into(),
            },
            &self.request_id,
        )
    }
}

fn error_head(error: &GatewayError, request_id: &str) -> guest::Head {
    let local = LocalResponse::error(error, request_id);
    guest::Head {
        status: local.status,
        headers: local.headers,
        body: guest::ResponseBody::Full(local.body.into_bytes()),
    }
}

impl Drop for Run {
    /// A request dropped before its record (the client went away while it
    /// waited, or during its stream, which drops the body holding this): the
    /// exchange is told, and settles and records now.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.pending.clear();
        self.body = None;
        self.events.push(Event::ClientGone);
        while let Some(action) = self.next() {
            // Only in-memory effects are left after a client left.
            let _ = self.effect(action);
        }
    }
}
