//! Priority admission to replicas with a capacity: a [`Gate`] per region
//! counts the requests each replica is serving for this gate (its permits)
//! and, when every replica a request may use is full, holds the request in
//! a bounded queue in priority order until a permit frees, its deadline
//! passes, or a more important request takes its place.
//!
//! The rules are here, once; the host keeps the gate (in memory on
//! local-runner, in a Durable Object per region on the Worker) and carries
//! its answers to the waiting requests. Time is the host's clock in ms.
//! Permits are leases: one whose holder never releases it (an isolate that
//! died mid-stream) is taken back when its lease ends.

use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A region's gate (one per region, or per shard with `gate_shards`).
pub type GateKey = crate::names::ShardedName;

/// A tier's priority class: who is served first when replicas are full,
/// and who is refused or degraded first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
}

/// A replica a request may be served by, in the order it prefers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The plan's attempt that goes to it.
    pub attempt: u32,
    pub target: String,
    /// Requests it may serve at once for this gate (at least 1).
    pub capacity: u32,
}

/// A request asking for a permit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    /// Unique among the gate's waiters (the request id).
    pub id: String,
    pub priority: Priority,
    pub candidates: Vec<Candidate>,
    /// How long it may wait for a permit; 0: not at all.
    pub wait_ms: u64,
    /// How long a permit is held at most (the request's time left).
    pub lease_ms: u64,
    /// How long one request to these replicas takes (its estimate), for
    /// `Retry-After`.
    pub service_ms: u64,
}

/// The gate's answer to an [`Ask`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// Served by `attempt`'s replica; give `permit` back when it ends.
    Granted { attempt: u32, permit: u64 },
    /// Waiting; the answer comes later (from `release`, `expire`, or a
    /// more important `acquire`).
    Queued,
    /// Not served in time: every replica is full and the queue had no
    /// room or the wait ended. When to ask again.
    Full { retry_after_ms: u64 },
}

/// A later answer to a request that was [`Answer::Queued`].
pub type Decided = (String, Answer);

#[derive(Debug, Clone)]
struct Waiter {
    ask: Ask,
    deadline_ms: u64,
}

#[derive(Debug, Clone)]
struct Permit {
    target: String,
    expires_ms: u64,
}

/// Queue order: higher priority first, then first come.
type Place = (Reverse<Priority>, u64);

/// One region's permits and waiters.
#[derive(Debug, Clone)]
pub struct Gate {
    queue_limit: usize,
    in_use: HashMap<String, u32>,
    permits: HashMap<u64, Permit>,
    /// (lease end, permit).
    leases: BTreeSet<(u64, u64)>,
    queue: BTreeMap<Place, Waiter>,
    /// (deadline, place).
    deadlines: BTreeSet<(u64, Place)>,
    places: HashMap<String, Place>,
    next: u64,
}

/// A `Retry-After` is never shorter than this.
const MIN_RETRY_MS: u64 = 1000;
/// Nor longer.
const MAX_RETRY_MS: u64 = 60_000;

impl Gate {
    /// A gate holding at most `queue_limit` waiting requests.
    pub fn new(queue_limit: usize) -> Gate {
        Gate {
            queue_limit,
            in_use: HashMap::new(),
            permits: HashMap::new(),
            leases: BTreeSet::new(),
            queue: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            places: HashMap::new(),
            next: 1,
        }
    }

    /// Permits held at `target`.
    pub fn in_use(&self, target: &str) -> u32 {
        self.in_use.get(target).copied().unwrap_or(0)
    }

    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Permits held, by target.
    pub fn permits(&self) -> impl Iterator<Item = (&str, u32)> {
        self.in_use.iter().map(|(t, n)| (t.as_str(), *n))
    }

    /// A permit at the first candidate with room; else the ask waits (when
    /// it may and the queue has room for it, if need be by turning away
    /// the least important waiter, whose answer is among those returned);
    /// else `Full`.
    pub fn acquire(&mut self, ask: Ask, now_ms: u64) -> (Answer, Vec<Decided>) {
        let mut decided = self.expire(now_ms);
        if let Some(answer) = self.grant(&ask, now_ms) {
            return (answer, decided);
        }
        if ask.wait_ms == 0 || self.places.contains_key(&ask.id) {
            return (self.full(&ask), decided);
        }
        if self.queue.len() >= self.queue_limit {
            let last = self
                .queue
                .last_key_value()
                .map(|(p, w)| (*p, w.ask.priority));
            match last {
                Some((place, p)) if p < ask.priority => {
                    if let Some(w) = self.remove(place) {
                        let answer = self.full(&w.ask);
                        decided.push((w.ask.id, answer));
                    }
                }
                _ => return (self.full(&ask), decided),
            }
        }
        let place = (Reverse(ask.priority), self.next);
        self.next += 1;
        let deadline_ms = now_ms.saturating_add(ask.wait_ms);
        self.deadlines.insert((deadline_ms, place));
        self.places.insert(ask.id.clone(), place);
        self.queue.insert(place, Waiter { ask, deadline_ms });
        (Answer::Queued, decided)
    }

    /// Gives a permit back (again: nothing); waiters it lets in are answered.
    pub fn release(&mut self, permit: u64, now_ms: u64) -> Vec<Decided> {
        self.free(permit);
        let mut decided = self.expire(now_ms);
        decided.extend(self.admit_waiting(now_ms));
        decided
    }

    /// A waiter gives up (its client left, or its own timer ran out):
    /// `Full` if it was waiting, `None` if it was answered already.
    pub fn cancel(&mut self, id: &str) -> Option<Answer> {
        let place = *self.places.get(id)?;
        let waiter = self.remove(place)?;
        Some(self.full(&waiter.ask))
    }

    /// Waiters past their deadline are turned away; leases past their end
    /// are taken back, and the waiters that lets in are answered.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Decided> {
        let mut decided = Vec::new();
        while let Some(&(deadline, place)) = self.deadlines.first() {
            if deadline > now_ms {
                break;
            }
            if let Some(w) = self.remove(place) {
                let answer = self.full(&w.ask);
                decided.push((w.ask.id, answer));
            }
        }
        let mut freed = false;
        while let Some(&(end, permit)) = self.leases.first() {
            if end > now_ms {
                break;
            }
            self.free(permit);
            freed = true;
        }
        if freed {
            decided.extend(self.admit_waiting(now_ms));
        }
        decided
    }

    /// When the next waiter's deadline or lease ends (for a host's timer).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let waiter = self.deadlines.first().map(|d| d.0);
        let lease = self.leases.first().map(|l| l.0);
        waiter.into_iter().chain(lease).min()
    }

    fn grant(&mut self, ask: &Ask, now_ms: u64) -> Option<Answer> {
        let c = ask
            .candidates
            .iter()
            .find(|c| self.in_use(&c.target) < c.capacity.max(1))?;
        let permit = self.next;
        self.next += 1;
        *self.in_use.entry(c.target.clone()).or_insert(0) += 1;
        let expires_ms = now_ms.saturating_add(ask.lease_ms.max(1));
        self.leases.insert((expires_ms, permit));
        let target = c.target.clone();
        self.permits.insert(permit, Permit { target, expires_ms });
        Some(Answer::Granted {
            attempt: c.attempt,
            permit,
        })
    }

    fn free(&mut self, permit: u64) {
        let Some(p) = self.permits.remove(&permit) else {
            return;
        };
        self.leases.remove(&(p.expires_ms, permit));
        if let Some(n) = self.in_use.get_mut(&p.target) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_use.remove(&p.target);
            }
        }
    }

    /// Grants, in queue order, every waiter that now fits somewhere.
    fn admit_waiting(&mut self, now_ms: u64) -> Vec<Decided> {
        let mut decided = Vec::new();
        let places: Vec<Place> = self.queue.keys().copied().collect();
        for place in places {
            let Some(w) = self.queue.get(&place) else {
                continue;
            };
            let ask = w.ask.clone();
            if let Some(answer) = self.grant(&ask, now_ms) {
                self.remove(place);
                decided.push((ask.id, answer));
            }
        }
        decided
    }

    fn remove(&mut self, place: Place) -> Option<Waiter> {
        let w = self.queue.remove(&place)?;
        self.deadlines.remove(&(w.deadline_ms, place));
        self.places.remove(&w.ask.id);
        Some(w)
    }

    /// `Full`, with a `Retry-After` from the work ahead of `ask`: the
    /// waiters as important as it, served by its replicas' capacity.
    fn full(&self, ask: &Ask) -> Answer {
        let capacity: u64 = ask
            .candidates
            .iter()
            .map(|c| u64::from(c.capacity.max(1)))
            .sum::<u64>()
            .max(1);
        let ahead = self
            .queue
            .values()
            .filter(|w| w.ask.priority >= ask.priority)
            .count() as u64;
        let rounds = (ahead + 1).div_ceil(capacity);
        let retry_after_ms = rounds
            .saturating_mul(ask.service_ms)
            .clamp(MIN_RETRY_MS, MAX_RETRY_MS);
        Answer::Full { retry_after_ms }
    }
}

#[cfg(test)]
mod tests;
