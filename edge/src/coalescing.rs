//! Request coalescing in this isolate: a cache miss that arrives while an
//! identical request (the same cache key) is in flight here waits for its
//! answer instead of calling the backend again. Isolates do not share this:
//! identical requests that reach different isolates (or colos) each call the
//! backend, and the later ones find the answer in KV once it is stored.
//!
//! A waiter polls for the answer on its own timer (every 10 ms) rather than
//! being woken by the leader: a wake-up from another request's handler would
//! run the waiter's I/O in that handler's context, which Workers refuse.

use crate::clock::{now_ms, sleep_ms};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// How often a waiter looks for the leader's answer.
const POLL_MS: u64 = 10;

struct Flight {
    /// The leader's answer, once it has one.
    answer: Option<Rc<Vec<u8>>>,
    /// Waiters that have not picked it up yet.
    waiting: usize,
}

thread_local! {
    static IN_FLIGHT: RefCell<HashMap<String, Flight>> = RefCell::new(HashMap::new());
}

/// The request that calls the backend for a key; dropping it without
/// [`Lead::publish`] tells the waiters there is no answer.
pub struct Lead {
    key: String,
    published: bool,
}

/// What a waiter found on one look.
enum Look {
    Answer(Rc<Vec<u8>>),
    /// The leader ended without one (the flight is gone).
    Gone,
    Waiting,
}

fn look(key: &str) -> Look {
    IN_FLIGHT.with_borrow_mut(|m| {
        let Some(flight) = m.get_mut(key) else {
            return Look::Gone;
        };
        let Some(answer) = flight.answer.clone() else {
            return Look::Waiting;
        };
        leave(m, key);
        Look::Answer(answer)
    })
}

/// One waiter stops waiting; an answered flight nobody waits for goes.
fn leave(m: &mut HashMap<String, Flight>, key: &str) {
    if let Some(flight) = m.get_mut(key) {
        flight.waiting = flight.waiting.saturating_sub(1);
        if flight.waiting == 0 && flight.answer.is_some() {
            m.remove(key);
        }
    }
}

/// On a miss: `Ok(lead)` when no identical request is in flight (this one
/// calls the backend), else the in-flight one's answer, waited for up to
/// `wait_ms` (`Err(None)`: it ended without one, or took too long).
pub async fn join(key: &str, wait_ms: u64) -> Result<Lead, Option<Vec<u8>>> {
    let leads = IN_FLIGHT.with_borrow_mut(|m| match m.get_mut(key) {
        Some(flight) => {
            flight.waiting += 1;
            false
        }
        None => {
            let flight = Flight {
                answer: None,
                waiting: 0,
            };
            m.insert(key.to_owned(), flight);
            true
        }
    });
    if leads {
        return Ok(Lead {
            key: key.to_owned(),
            published: false,
        });
    }
    let deadline = now_ms().saturating_add(wait_ms);
    loop {
        match look(key) {
            Look::Answer(answer) => return Err(Some(answer.to_vec())),
            Look::Gone => return Err(None),
            Look::Waiting if now_ms() >= deadline => {
                IN_FLIGHT.with_borrow_mut(|m| leave(m, key));
                return Err(None);
            }
            Look::Waiting => sleep_ms(POLL_MS).await,
        }
    }
}

impl Lead {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The answer, for everyone waiting.
    pub fn publish(mut self, answer: &[u8]) {
        self.published = true;
        IN_FLIGHT.with_borrow_mut(|m| match m.get_mut(&self.key) {
            Some(flight) if flight.waiting > 0 => flight.answer = Some(Rc::new(answer.to_vec())),
            _ => {
                m.remove(&self.key);
            }
        });
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if !self.published {
            IN_FLIGHT.with_borrow_mut(|m| m.remove(&self.key));
        }
    }
}
