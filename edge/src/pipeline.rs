//! A request's path through the Worker, top to bottom. The core decides
//! everything (`Gateway::admit`, then the `Exchange`); this file gathers what
//! `admit` needs and carries out the exchange's actions:
//!
//! read the request → API key record from KV → region health → `admit` →
//! the exchange: reserve in the tenant's Durable Object → look the answer up
//! in KV → fetch the attempts → respond, whole or streamed as it arrives →
//! after the response, in `waitUntil`: settle, store in KV, write the usage
//! record, export the spans.

use crate::clock::now_ms;
use crate::gate_object::GateStore;
use crate::kv_store::EdgeKv;
use crate::quota_object::QuotaStore;
use crate::upstream::Upstream;
use crate::{coalescing, config, incoming, region_health, respond, traces, usage};
use edgegate_core::admission::Answer;
use edgegate_core::auth::{self, ApiKeyRecord};
use edgegate_core::exchange::{Action, Event, Exchange, ResponseBody, Transport};
use edgegate_core::request::Headers as CoreHeaders;
use edgegate_core::{Decision, Gateway, GatewayError, RequestContext};
use futures_channel::oneshot;
use futures_util::stream;
use std::rc::Rc;
use worker::{Context, Env, Request, Response};

pub async fn handle(mut req: Request, env: Env, ctx: Context) -> Response {
    let started_ms = now_ms();
    let request_id = match incoming::request_id() {
        Ok(id) => id,
        Err(e) => return respond::error(&e, ""),
    };
    let (io, decision) = match decide(&mut req, &env, &request_id, started_ms).await {
        Ok(Admitted { io, decision }) => (Some(io), Ok(decision)),
        Err(error) => (None, Err(error)),
    };
    let driver = Driver {
        exchange: Exchange::new(decision, &request_id, us(started_ms)),
        io,
        env,
        upstream: None,
        in_flight: None,
        permit: None,
        leading: None,
        deferred: None,
    };
    driver.respond(&ctx, &request_id).await
}

/// The I/O an admitted request needs.
struct Io {
    gateway: Rc<Gateway>,
    kv: EdgeKv,
    /// Bound at the first reservation (a missing binding fails that).
    quotas: Option<QuotaStore>,
    /// Bound at the first permit asked for.
    gates: Option<GateStore>,
}

struct Admitted {
    io: Io,
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
        loads: region_health::loads(gateway.config(), now),
        provisioned_key,
    };
    let decision = gateway.admit(&http, &ctx)?;
    Ok(Admitted {
        io: Io {
            gateway,
            kv,
            quotas: None,
            gates: None,
        },
        decision,
    })
}

/// The KV record for a presented API key the config does not list.
pub async fn provisioned_key(
    gateway: &Gateway,
    kv: &EdgeKv,
    headers: &CoreHeaders,
) -> Result<Option<ApiKeyRecord>, GatewayError> {
    match auth::key_to_look_up(gateway.config(), headers) {
        Some(hash) => kv.api_key(&hash).await,
        None => Ok(None),
    }
}

/// Carries out one request's exchange.
struct Driver {
    exchange: Exchange,
    io: Option<Io>,
    env: Env,
    /// The current attempt's call.
    upstream: Option<Upstream>,
    /// The current attempt, counted in its replica's load.
    in_flight: Option<region_health::InFlight>,
    /// The gate's permit for the attempt: its region, its number, and
    /// whether its `Send` is still to come.
    permit: Option<(String, u64, bool)>,
    /// Identical requests in this isolate wait for this one's answer.
    leading: Option<coalescing::Lead>,
    /// An action taken from the exchange but not yet carried out.
    deferred: Option<Action>,
}

impl Driver {
    /// Runs the exchange up to its response; what follows the response
    /// (the stream, settling, the record) runs after it is returned.
    async fn respond(mut self, ctx: &Context, request_id: &str) -> Response {
        let head = loop {
            match self.next_action() {
                Some(Action::Respond(head)) => break head,
                Some(action) => self.run(action).await,
                None => {
                    let error = GatewayError::Internal {
                        message: "the exchange ended without a response".into(),
                    };
                    return respond::error(&error, request_id);
                }
            }
        };
        let headers = respond::headers(&head.headers);
        match head.body {
            ResponseBody::Full(body) => {
                ctx.wait_until(self.finish(false));
                respond::fixed(head.status, headers, body)
            }
            ResponseBody::Stream => {
                let (report, ended) = oneshot::channel();
                ctx.wait_until(async move {
                    if let Ok((driver, client_gone)) = ended.await {
                        Driver::finish(driver, client_gone).await;
                    }
                });
                let relay = Relay {
                    driver: Some(self),
                    report: Some(report),
                };
                let body = stream::unfold(relay, |mut relay| async move {
                    let bytes = relay.next().await?;
                    Some((Ok(bytes), relay))
                });
                respond::streamed(head.status, headers, body, request_id)
            }
        }
    }

    /// The rest of the exchange after the response: settle, store, record.
    async fn finish(mut self, client_gone: bool) {
        if client_gone {
            self.handle(Event::ClientGone);
        }
        while let Some(action) = self.next_action() {
            self.run(action).await;
        }
        self.release_permit().await;
    }

    /// Gives the attempt's permit back to its gate.
    async fn release_permit(&mut self) {
        let (Some((region, permit, _)), Some(io)) = (self.permit.take(), self.io.as_mut()) else {
            return;
        };
        if let Some(gates) = gate_store(&mut io.gates, &self.env) {
            gates.release(&region, permit).await;
        }
    }

    fn next_action(&mut self) -> Option<Action> {
        self.deferred.take().or_else(|| self.exchange.poll())
    }

    fn handle(&mut self, event: Event) {
        if let Some(io) = &self.io {
            self.exchange.handle(&io.gateway, event, us(now_ms()));
        }
    }

    /// One action; those that ask a question get their answer back to the exchange.
    async fn run(&mut self, action: Action) {
        let Some(io) = self.io.as_mut() else {
            // A request refused before it had a plan: only its record.
            if let Action::Record(record) = action {
                usage::emit(&self.env, &record);
            }
            return;
        };
        let event = match action {
            Action::Reserve { quota, id } => {
                // The exchange asks for the cache lookup with the
                // reservation: the Durable Object and KV are asked at once.
                let lookup = match self.exchange.poll() {
                    Some(Action::LookupCache { key, coalesce_ms }) => Some((key, coalesce_ms)),
                    other => {
                        self.deferred = other;
                        None
                    }
                };
                let store = quota_store(&mut io.quotas, &self.env);
                let reserve = async {
                    match store {
                        Ok(quotas) => quotas.reserve(&quota, &id).await,
                        Err(error) => Err(error),
                    }
                };
                let kv = &io.kv;
                let leading = &mut self.leading;
                let (reserved, looked_up) = futures_util::join!(reserve, async {
                    match &lookup {
                        Some((key, coalesce_ms)) => {
                            Some(look_up(kv, key, *coalesce_ms, leading).await)
                        }
                        None => None,
                    }
                });
                if let Some(looked_up) = looked_up {
                    self.handle(looked_up);
                }
                Event::Reserved(reserved)
            }
            Action::LookupCache { key, coalesce_ms } => {
                look_up(&io.kv, &key, coalesce_ms, &mut self.leading).await
            }
            Action::Acquire { region, ask } => {
                // The gate object's name.
                let region = region.to_string();
                self.release_permit().await;
                let Some(io) = self.io.as_mut() else { return };
                let queue_limit = io.gateway.config().admission.queue_limit;
                let attempt = ask.candidates.first().map_or(0, |c| c.attempt);
                let answer = match gate_store(&mut io.gates, &self.env) {
                    Some(gates) => gates.acquire(&region, ask, queue_limit).await,
                    // Without the binding, the capacity is not enforced.
                    None => Answer::Granted { attempt, permit: 0 },
                };
                if let Answer::Granted { permit, .. } = answer {
                    self.permit = Some((region, permit, true));
                }
                match Event::of_gate(answer) {
                    Some(event) => event,
                    None => return,
                }
            }
            Action::Send {
                attempt,
                head_ms,
                read,
                ..
            } => {
                // The permit is for the send right after it was granted.
                match self.permit.as_mut() {
                    Some((_, _, fresh @ true)) => *fresh = false,
                    _ => self.release_permit().await,
                }
                let Some(io) = self.io.as_mut() else { return };
                self.upstream = None;
                let Some(request) = self.exchange.upstream_request(attempt) else {
                    return self.handle(Event::Failed(Transport::Connect));
                };
                self.in_flight = region_health::start(io.gateway.config(), request.target);
                let (upstream, head) = Upstream::send(request, head_ms).await;
                self.upstream = upstream;
                let limit = match &head {
                    Event::Head { status, .. } => read.for_status(*status),
                    _ => None,
                };
                self.handle(head);
                match (limit, self.upstream.as_mut()) {
                    (Some(limit), Some(upstream)) => {
                        upstream.read_body(limit.max_bytes, limit.within_ms).await
                    }
                    _ => return,
                }
            }
            Action::ReadBody {
                max_bytes,
                within_ms,
            } => match self.upstream.as_mut() {
                Some(upstream) => upstream.read_body(max_bytes, within_ms).await,
                None => Event::Failed(Transport::Broke),
            },
            Action::ReadChunk { within_ms } => match self.upstream.as_mut() {
                Some(upstream) => upstream.read_chunk(within_ms).await,
                None => Event::Failed(Transport::Broke),
            },
            Action::EndStream => {
                self.upstream = None;
                self.in_flight = None;
                return;
            }
            Action::Settle { actual, ledger } => {
                if let (Some(plan), Ok(quotas)) =
                    (self.exchange.plan(), quota_store(&mut io.quotas, &self.env))
                {
                    quotas
                        .settle(&plan.quota, &plan.request_id, actual, ledger)
                        .await;
                }
                return;
            }
            Action::Release { ledger } => {
                if let (Some(plan), Ok(quotas)) =
                    (self.exchange.plan(), quota_store(&mut io.quotas, &self.env))
                {
                    quotas.release(&plan.quota, &plan.request_id, ledger).await;
                }
                return;
            }
            Action::Store {
                key,
                body,
                ttl_seconds,
            } => {
                // Those waiting here get it at once; KV takes its time.
                if let Some(lead) = self.leading.take_if(|l| l.key() == key) {
                    lead.publish(&body);
                }
                io.kv.store_answer(&key, &body, ttl_seconds).await;
                return;
            }
            Action::Observe { region, outcome } => {
                if let Some(observation) = outcome.observation() {
                    region_health::observe(&region, now_ms(), observation);
                }
                if let Some(ms) = outcome.first_token_ms() {
                    region_health::sample(&region, ms, now_ms());
                }
                return;
            }
            Action::Record(record) => {
                usage::emit(&self.env, &record);
                let gateway = io.gateway.clone();
                if let Some(otlp) = &gateway.config().observability.otlp {
                    traces::export(otlp, &record).await;
                }
                return;
            }
            // Carried out where the response is built.
            Action::Respond(_) | Action::Write(_) => return,
        };
        self.handle(event);
    }
}

/// The cached answer; on a miss, an identical request's answer when one is
/// in flight in this isolate (waited for up to `coalesce_ms`), or this
/// request leads.
async fn look_up(
    kv: &EdgeKv,
    key: &str,
    coalesce_ms: u64,
    leading: &mut Option<coalescing::Lead>,
) -> Event {
    if let Some(hit) = kv.cached_answer(key).await {
        return Event::Cached(Some(hit));
    }
    if coalesce_ms == 0 {
        return Event::Cached(None);
    }
    match coalescing::join(key, coalesce_ms).await {
        Ok(lead) => {
            *leading = Some(lead);
            Event::Cached(None)
        }
        Err(Some(answer)) => Event::Shared(answer),
        Err(None) => Event::Cached(None),
    }
}

/// The gate objects' binding, bound at first use.
fn gate_store<'a>(gates: &'a mut Option<GateStore>, env: &Env) -> Option<&'a GateStore> {
    if gates.is_none() {
        *gates = GateStore::new(env);
    }
    gates.as_ref()
}

/// The quota objects' binding, bound at first use.
fn quota_store<'a>(
    quotas: &'a mut Option<QuotaStore>,
    env: &Env,
) -> Result<&'a QuotaStore, GatewayError> {
    if quotas.is_none() {
        *quotas = Some(QuotaStore::new(env)?);
    }
    quotas.as_ref().ok_or_else(|| GatewayError::Internal {
        message: "the quota store is unavailable".into(),
    })
}

/// A streamed response's body: the exchange's writes as they come. When it
/// ends, or the client goes away (the body is dropped), the exchange goes
/// to `waitUntil` to be finished.
struct Relay {
    driver: Option<Driver>,
    report: Option<oneshot::Sender<(Driver, bool)>>,
}

impl Relay {
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            let driver = self.driver.as_mut()?;
            match driver.next_action() {
                Some(Action::Write(bytes)) => return Some(bytes),
                Some(Action::EndStream) | None => {
                    driver.upstream = None;
                    driver.in_flight = None;
                    self.hand_over(false);
                    return None;
                }
                Some(action) => driver.run(action).await,
            }
        }
    }

    fn hand_over(&mut self, client_gone: bool) {
        if let (Some(driver), Some(report)) = (self.driver.take(), self.report.take()) {
            // The isolate may be shutting down: then nobody finishes it.
            let _ = report.send((driver, client_gone));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.hand_over(true);
    }
}

fn us(ms: u64) -> u64 {
    ms.saturating_mul(1000)
}
