//! The priority gates of regions whose replicas have a `capacity`: the
//! core's `admission::Gate` per region, in memory (the core's rules, linked
//! natively: permits are the host's own bookkeeping, no untrusted bytes).
//! A queued request waits on a oneshot that whoever frees a permit answers;
//! a permit goes back when its [`Permit`] is dropped, and a waiter that is
//! dropped (its client left) leaves the queue.

use edgegate_core::admission::{Answer, Ask, Decided, Gate};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// What the gates hold now.
pub struct GateSnapshot {
    /// Requests waiting, by region.
    pub waiting: Vec<(String, usize)>,
    /// Permits held, by target.
    pub permits: Vec<(String, u32)>,
}

pub struct Gates {
    queue_limit: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    gates: HashMap<String, Gate>,
    /// (region, request id) → where its answer goes.
    waiters: HashMap<(String, String), oneshot::Sender<Answer>>,
}

/// A permit at a replica; given back when dropped.
pub struct Permit {
    gates: Arc<Gates>,
    region: String,
    permit: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gates.release(&self.region, self.permit);
    }
}

/// A queued request; leaves the queue when dropped before its answer.
struct Waiting {
    gates: Arc<Gates>,
    key: (String, String),
    answer: oneshot::Receiver<Answer>,
    done: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Answer::Granted { permit, .. } = self.gates.give_up(&self.key, &mut self.answer) {
            self.gates.release(&self.key.0, permit);
        }
    }
}

impl Inner {
    fn deliver(&mut self, region: &str, decided: Vec<Decided>) {
        for (id, answer) in decided {
            // A waiter leaves the map before its receiver is dropped.
            if let Some(tx) = self.waiters.remove(&(region.to_owned(), id)) {
                let _ = tx.send(answer);
            }
        }
    }
}

impl Gates {
    pub fn new(queue_limit: usize) -> Arc<Gates> {
        Arc::new(Gates {
            queue_limit,
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A permit at one of `ask`'s replicas, waiting for one in priority
    /// order up to `ask.wait_ms`; `None` with the gate's `Full` answer.
    pub async fn acquire(self: &Arc<Self>, region: &str, ask: Ask) -> (Answer, Option<Permit>) {
        let now = crate::clock::now_ms();
        let wait = Duration::from_millis(ask.wait_ms);
        let key = (region.to_owned(), ask.id.clone());
        let answer = {
            let mut inner = self.lock();
            let limit = self.queue_limit;
            let gate = inner
                .gates
                .entry(region.to_owned())
                .or_insert_with(|| Gate::new(limit));
            let (answer, decided) = gate.acquire(ask, now);
            inner.deliver(region, decided);
            if answer == Answer::Queued {
                let (tx, rx) = oneshot::channel();
                inner.waiters.insert(key.clone(), tx);
                Err(rx)
            } else {
                Ok(answer)
            }
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(rx) => {
                let mut waiting = Waiting {
                    gates: self.clone(),
                    key,
                    answer: rx,
                    done: false,
                };
                let answer = match tokio::time::timeout(wait, &mut waiting.answer).await {
                    Ok(Ok(answer)) => answer,
                    _ => self.give_up(&waiting.key, &mut waiting.answer),
                };
                waiting.done = true;
                answer
            }
        };
        let permit = match answer {
            Answer::Granted { permit, .. } => Some(Permit {
                gates: self.clone(),
                region: region.to_owned(),
                permit,
            }),
            _ => None,
        };
        (answer, permit)
    }

    /// Leaves the queue: `Full`, or the answer that was given meanwhile.
    fn give_up(&self, key: &(String, String), rx: &mut oneshot::Receiver<Answer>) -> Answer {
        let mut inner = self.lock();
        inner.waiters.remove(key);
        let cancelled = inner.gates.get_mut(&key.0).and_then(|g| g.cancel(&key.1));
        if let Some(answer) = cancelled {
            return answer;
        }
        // Decided under the lock before this: the answer is in the channel.
        match rx.try_recv() {
            Ok(answer) => answer,
            Err(_) => Answer::Full {
                retry_after_ms: 1000,
            },
        }
    }

    fn release(&self, region: &str, permit: u64) {
        let now = crate::clock::now_ms();
        let mut inner = self.lock();
        let Some(gate) = inner.gates.get_mut(region) else {
            return;
        };
        let decided = gate.release(permit, now);
        inner.deliver(region, decided);
    }

    /// For `/metrics`: requests waiting by region, permits held by target
    /// (each sorted).
    pub fn snapshot(&self) -> GateSnapshot {
        let inner = self.lock();
        let mut waiting: Vec<(String, usize)> = inner
            .gates
            .iter()
            .map(|(r, g)| (r.clone(), g.waiting()))
            .collect();
        let mut permits: Vec<(String, u32)> = inner
            .gates
            .values()
            .flat_map(|g| g.permits().map(|(t, n)| (t.to_owned(), n)))
            .collect();
        waiting.sort();
        permits.sort();
        GateSnapshot { waiting, permits }
    }
}
