//! Permits for gated attempts ([`crate::admission`]): which gate to ask,
//! for which replicas, how long to wait, and what follows a full gate.

use super::{Action, Exchange, Step};
use crate::admission::{Ask, Candidate};
use crate::error::GatewayError;
use crate::gateway::{AttemptGate, SATURATED};

/// How the exchange looks for a permit among gated attempts: first at every
/// region of the attempts' class (primary, or degraded) without waiting,
/// nearest first; then, for the primary, waiting at the nearest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Scan {
    pub(super) from: usize,
    pub(super) waiting: bool,
}

impl Exchange {
    /// Asks the gate of `self.attempt`'s region for a permit at it or the
    /// attempts after it at the same region, of the same class.
    pub(super) fn acquire(&mut self, wait: bool, now_us: u64) {
        let left_ms = self.left_ms(now_us);
        let plan = self.plan_ref();
        let first = &plan.attempts[self.attempt];
        let Some(region) = first.gate.as_ref().map(|g| g.region.clone()) else {
            return self.send_now(now_us);
        };
        let degraded = first.degraded.is_some();
        let group: Vec<(usize, &AttemptGate)> = plan.attempts[self.attempt..]
            .iter()
            .enumerate()
            .map_while(|(i, a)| {
                let g = a.gate.as_ref()?;
                (g.region == region && a.degraded.is_some() == degraded)
                    .then_some((self.attempt + i, g))
            })
            .collect();
        let end = group.last().map_or(self.attempt, |(i, _)| i + 1);
        let service_ms = group.iter().map(|(_, g)| g.service_ms).max().unwrap_or(0);
        let candidates = group
            .iter()
            .map(|(i, g)| Candidate {
                attempt: *i as u32,
                target: plan.attempts[*i].region.clone(),
                // The headroom above its priority's fill is for others.
                capacity: (u64::from(g.capacity) * plan.fill_percent / 100).max(1) as u32,
            })
            .collect();
        let wait_ms = if wait {
            plan.max_wait_ms.min(left_ms)
        } else {
            0
        };
        let ask = Ask {
            id: plan.request_id.clone(),
            priority: plan.priority,
            candidates,
            wait_ms,
            lease_ms: left_ms,
            service_ms,
        };
        self.step = Step::Queued { end };
        self.asked_us = now_us;
        self.actions.push_back(Action::Acquire { region, ask });
    }

    /// The gate was full for the attempts before `end`: the next region of
    /// the class without waiting, then waiting at the nearest (the primary
    /// only), then the degraded attempts, then a 429.
    pub(super) fn gate_full(&mut self, end: usize, now_us: u64) {
        let Some(scan) = self.scan else {
            return self.saturated(now_us);
        };
        let plan = self.plan_ref();
        let degraded = plan.attempts[scan.from].degraded.is_some();
        let same_class = plan
            .attempts
            .get(end)
            .is_some_and(|a| a.degraded.is_some() == degraded);
        if !scan.waiting && same_class {
            self.attempt = end;
            return self.send(now_us);
        }
        if !scan.waiting && !degraded && plan.max_wait_ms > 0 {
            self.scan = Some(Scan {
                from: scan.from,
                waiting: true,
            });
            self.attempt = scan.from;
            return self.acquire(true, now_us);
        }
        self.saturated(now_us)
    }

    /// No permit in time: the degraded attempts, if the primary's were
    /// full and there are any, else a 429 with the gates' `Retry-After`.
    fn saturated(&mut self, now_us: u64) {
        self.scan = None;
        let from = self.attempt;
        let plan = self
            .plan
            .as_deref_mut()
            .expect("a forwarded exchange has a plan");
        let primary = plan
            .attempts
            .get(from)
            .is_some_and(|a| a.degraded.is_none());
        let degrade_from = plan.attempts.iter().position(|a| a.degraded.is_some());
        if let (true, Some(d)) = (primary, degrade_from) {
            for a in &mut plan.attempts[d..] {
                a.degraded = Some(SATURATED.to_owned());
            }
            self.attempt = d;
            return self.send(now_us);
        }
        let error = GatewayError::Saturated {
            retry_after_ms: self.retry_after_ms.max(1000),
        };
        self.fail(error, now_us);
    }
}
