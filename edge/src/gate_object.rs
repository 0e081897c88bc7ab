//! Priority admission at the edge: one Durable Object per region (binding
//! `GATE`) holding the core's `admission::Gate` in memory, so every isolate
//! in the world counts against one capacity per replica. A request that
//! must wait stays inside the object's `fetch` until the gate decides for
//! it or its deadline passes: the requests of one object share its I/O
//! context, so the request that frees a permit wakes the one it lets in.
//!
//! The state is soft: an evicted object starts from zero, and a permit
//! whose release never comes (an isolate that died mid-stream) is taken
//! back when its lease (the request's time left) ends.

use crate::clock::{now_ms, sleep_ms};
use edgegate_core::admission::{Answer, Ask, Gate};
use futures_channel::oneshot;
use futures_util::future::{Either, select};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use worker::{
    DurableObject, Env, ObjectNamespace, Request, Response, Result, State, console_warn,
    durable_object,
};

const BINDING: &str = "GATE";
/// How long past its deadline a waiter gives the gate to answer it.
const DEADLINE_SLACK_MS: u64 = 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Command {
    Acquire { ask: Ask, queue_limit: usize },
    Release { permit: u64 },
}

/// The Worker's handle on the gate objects.
pub struct GateStore(ObjectNamespace);

impl GateStore {
    pub fn new(env: &Env) -> Option<Self> {
        match env.durable_object(BINDING) {
            Ok(ns) => Some(GateStore(ns)),
            Err(e) => {
                console_warn!("edgegate: Durable Object binding `{BINDING}` is missing: {e}");
                None
            }
        }
    }

    /// A permit at `region`'s gate, waiting for one as `ask` allows. A gate
    /// that cannot be asked lets the request through (its first candidate,
    /// without a permit): a capacity is protection, not a reason to fail.
    pub async fn acquire(&self, region: &str, ask: Ask, queue_limit: usize) -> Answer {
        let attempt = ask.candidates.first().map_or(0, |c| c.attempt);
        let command = Command::Acquire { ask, queue_limit };
        match self.call::<Answer>(region, &command).await {
            Ok(answer) => answer,
            Err(e) => {
                console_warn!("edgegate: gate {region}: {e}");
                Answer::Granted { attempt, permit: 0 }
            }
        }
    }

    pub async fn release(&self, region: &str, permit: u64) {
        if permit == 0 {
            return;
        }
        if let Err(e) = self
            .call::<Released>(region, &Command::Release { permit })
            .await
        {
            console_warn!("edgegate: gate {region}: release failed (its lease ends it): {e}");
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        region: &str,
        command: &Command,
    ) -> Result<T> {
        crate::object_call::call(&self.0, region, "https://gate.internal/", command).await
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Released {
    released: bool,
}

#[durable_object]
pub struct GateObject {
    gate: RefCell<Option<Gate>>,
    /// Where the answers of queued requests go.
    waiters: RefCell<HashMap<String, oneshot::Sender<Answer>>>,
}

impl DurableObject for GateObject {
    fn new(_state: State, _env: Env) -> Self {
        GateObject {
            gate: RefCell::new(None),
            waiters: RefCell::new(HashMap::new()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let command: Command = match req.json().await {
            Ok(c) => c,
            Err(e) => return Response::error(format!("bad gate command: {e}"), 400),
        };
        match command {
            Command::Release { permit } => {
                self.with_gate(None, |gate, now| gate.release(permit, now));
                Response::from_json(&Released { released: true })
            }
            Command::Acquire { ask, queue_limit } => {
                let id = ask.id.clone();
                let wait_ms = ask.wait_ms;
                let (tx, mut rx) = oneshot::channel();
                // Registered first: the gate may decide for it at once.
                self.waiters.borrow_mut().insert(id.clone(), tx);
                let mut answer = Answer::Full {
                    retry_after_ms: 1000,
                };
                self.with_gate(Some(queue_limit), |gate, now| {
                    let (a, decided) = gate.acquire(ask, now);
                    answer = a;
                    decided
                });
                if answer != Answer::Queued {
                    self.waiters.borrow_mut().remove(&id);
                    return Response::from_json(&answer);
                }
                // Answered by whoever frees a permit (one actor: a promise
                // another request resolves wakes this one), or at the deadline.
                let deadline = sleep_ms(wait_ms.saturating_add(DEADLINE_SLACK_MS));
                let answer = match select(&mut rx, deadline).await {
                    Either::Left((Ok(answer), _)) => answer,
                    _ => {
                        self.with_gate(None, |gate, now| gate.expire(now));
                        match rx.try_recv() {
                            Ok(Some(answer)) => answer,
                            _ => {
                                self.waiters.borrow_mut().remove(&id);
                                let cancelled =
                                    self.gate.borrow_mut().as_mut().and_then(|g| g.cancel(&id));
                                cancelled.unwrap_or(Answer::Full {
                                    retry_after_ms: 1000,
                                })
                            }
                        }
                    }
                };
                Response::from_json(&answer)
            }
        }
    }
}

impl GateObject {
    /// Runs `f` on the gate (made with `create`'s queue limit on first use;
    /// without it, nothing is there to change) and hands the answers it
    /// decided to their waiters. A permit granted to a waiter that is gone
    /// (its request was cancelled) is given back at once.
    fn with_gate(
        &self,
        create: Option<usize>,
        f: impl FnOnce(&mut Gate, u64) -> Vec<(String, Answer)>,
    ) {
        let now = now_ms();
        let mut slot = self.gate.borrow_mut();
        let gate = match (slot.as_mut(), create) {
            (Some(gate), _) => gate,
            (None, Some(limit)) => slot.insert(Gate::new(limit.max(1))),
            (None, None) => return,
        };
        let mut decided = f(gate, now);
        let mut waiters = self.waiters.borrow_mut();
        while let Some((id, answer)) = decided.pop() {
            let delivered = waiters
                .remove(&id)
                .is_some_and(|tx| tx.send(answer).is_ok());
            if let (false, Answer::Granted { permit, .. }) = (delivered, answer) {
                decided.extend(gate.release(permit, now));
            }
        }
    }
}
