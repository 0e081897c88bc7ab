//! Priority admission at the edge: one Durable Object per region (binding
//! `GATE`) holding the core's `admission::Gate` in memory, so every isolate
//! in the world counts against one capacity per replica. A request that
//! must wait stays inside the object's `fetch`, looking for its answer every
//! few ms until the gate decides or its deadline passes (a future woken from
//! another request's handler would break workerd's I/O-context rule).
//!
//! The state is soft: an evicted object starts from zero, and a permit
//! whose release never comes (an isolate that died mid-stream) is taken
//! back when its lease (the request's time left) ends.

use crate::clock::{now_ms, sleep_ms};
use edgegate_core::admission::{Answer, Ask, Gate};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use worker::{
    DurableObject, Env, ObjectNamespace, Request, Response, Result, State, console_warn,
    durable_object,
};

const BINDING: &str = "GATE";
/// How often a waiting request looks for its answer.
const POLL_MS: u64 = 5;
/// A decided answer older than this has nobody waiting for it.
const UNCLAIMED_MS: u64 = 5_000;

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
    /// Answers decided for waiters that have not looked yet, and when.
    decided: RefCell<HashMap<String, (Answer, u64)>>,
}

impl DurableObject for GateObject {
    fn new(_state: State, _env: Env) -> Self {
        GateObject {
            gate: RefCell::new(None),
            decided: RefCell::new(HashMap::new()),
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
                let deadline = now_ms().saturating_add(ask.wait_ms);
                let mut answer = None;
                self.with_gate(Some(queue_limit), |gate, now| {
                    let (a, decided) = gate.acquire(ask, now);
                    answer = Some(a);
                    decided
                });
                let mut answer = answer.unwrap_or(Answer::Full {
                    retry_after_ms: 1000,
                });
                while answer == Answer::Queued {
                    sleep_ms(POLL_MS).await;
                    self.with_gate(None, |gate, now| gate.expire(now));
                    let found = self.decided.borrow_mut().remove(&id);
                    if let Some((a, _)) = found {
                        answer = a;
                    } else if now_ms() > deadline.saturating_add(100) {
                        // The gate's own deadline should have answered.
                        let cancelled = self.gate.borrow_mut().as_mut().and_then(|g| g.cancel(&id));
                        answer = cancelled.unwrap_or(Answer::Full {
                            retry_after_ms: 1000,
                        });
                    }
                }
                Response::from_json(&answer)
            }
        }
    }
}

impl GateObject {
    /// Runs `f` on the gate (made with `create`'s queue limit on first use;
    /// without it, nothing is there to change) and keeps the answers it
    /// decided for their waiters. An answer nobody came for within
    /// [`UNCLAIMED_MS`] (its request was cancelled) is dropped, and its
    /// permit given back.
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
        let mut kept = self.decided.borrow_mut();
        let unclaimed: Vec<String> = kept
            .iter()
            .filter(|(_, (_, at))| now.saturating_sub(*at) > UNCLAIMED_MS)
            .map(|(id, _)| id.clone())
            .collect();
        for id in unclaimed {
            if let Some((Answer::Granted { permit, .. }, _)) = kept.remove(&id) {
                decided.extend(gate.release(permit, now));
            }
        }
        kept.extend(decided.into_iter().map(|(id, a)| (id, (a, now))));
    }
}
