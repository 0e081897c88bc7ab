//! Region health from what a host observes: active probes and the outcomes
//! of real requests feed one circuit breaker per region. Closed: up (or
//! degraded when slow). After `failure_threshold` consecutive failures it
//! opens (down) for `open_ms`; then it is half-open (degraded: tried after
//! healthy regions) until a success closes it or a failure opens it again.

use crate::geo::{Health, RegionStatus};
use crate::load::BackendLoad;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthPolicy {
    pub failure_threshold: u32,
    pub open_ms: u64,
    /// Latency above which a region counts as degraded.
    pub degraded_latency_ms: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            failure_threshold: 3,
            open_ms: 10_000,
            degraded_latency_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    Success { latency_ms: u32 },
    Failure,
}

/// An active health probe not answered within this long is a failure.
pub const PROBE_TIMEOUT_MS: u64 = 2_000;

impl Observation {
    /// What a health probe learned: any 2xx in time is a success; no
    /// answer (`None`: refused, or past [`PROBE_TIMEOUT_MS`]) is a failure.
    pub fn of_probe(status: Option<u16>, latency_ms: u64) -> Observation {
        match status {
            Some(s) if (200..300).contains(&s) && latency_ms <= PROBE_TIMEOUT_MS => {
                Observation::Success {
                    latency_ms: u32::try_from(latency_ms).unwrap_or(u32::MAX),
                }
            }
            _ => Observation::Failure,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionHealth {
    consecutive_failures: u32,
    open_until_ms: Option<u64>,
    latency_ms: Option<u32>,
    updated_ms: u64,
    /// What the replica's metrics said at the last probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backend: Option<BackendLoad>,
}

impl RegionHealth {
    pub fn observe(&mut self, now_ms: u64, obs: Observation, policy: &HealthPolicy) {
        self.updated_ms = self.updated_ms.max(now_ms);
        match obs {
            Observation::Success { latency_ms } => {
                self.consecutive_failures = 0;
                self.open_until_ms = None;
                self.latency_ms = Some(latency_ms);
            }
            Observation::Failure => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let half_open = self.circuit(now_ms) == CircuitState::HalfOpen;
                if half_open || self.consecutive_failures >= policy.failure_threshold {
                    self.open_until_ms = Some(now_ms.saturating_add(policy.open_ms));
                }
            }
        }
    }

    pub fn circuit(&self, now_ms: u64) -> CircuitState {
        match self.open_until_ms {
            None => CircuitState::Closed,
            Some(until) if now_ms < until => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        }
    }

    pub fn health(&self, now_ms: u64, policy: &HealthPolicy) -> Health {
        match self.circuit(now_ms) {
            CircuitState::Open => Health::Down,
            CircuitState::HalfOpen => Health::Degraded,
            CircuitState::Closed
                if self.consecutive_failures > 0
                    || self
                        .latency_ms
                        .is_some_and(|l| l > policy.degraded_latency_ms) =>
            {
                Health::Degraded
            }
            CircuitState::Closed => Health::Up,
        }
    }
}

/// Every region's breaker, keyed by region name; serialisable so a Worker
/// can keep the cron's probe results in KV.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthBoard {
    pub policy: HealthPolicy,
    pub regions: BTreeMap<String, RegionHealth>,
}

impl HealthBoard {
    pub fn new(policy: HealthPolicy) -> Self {
        HealthBoard {
            policy,
            regions: BTreeMap::new(),
        }
    }

    pub fn observe(&mut self, region: &str, now_ms: u64, obs: Observation) {
        let policy = self.policy;
        self.regions
            .entry(region.to_owned())
            .or_default()
            .observe(now_ms, obs, &policy);
    }

    /// What a probe read from `target`'s metrics (`None`: nothing readable).
    pub fn observe_backend(&mut self, target: &str, now_ms: u64, load: Option<BackendLoad>) {
        let r = self.regions.entry(target.to_owned()).or_default();
        r.updated_ms = r.updated_ms.max(now_ms);
        r.backend = load;
    }

    pub fn circuit(&self, region: &str, now_ms: u64) -> CircuitState {
        self.regions
            .get(region)
            .map_or(CircuitState::Closed, |r| r.circuit(now_ms))
    }

    /// The statuses `admit` takes in `RequestContext::regions`.
    pub fn statuses(&self, now_ms: u64) -> Vec<RegionStatus> {
        self.regions
            .iter()
            .map(|(name, r)| RegionStatus {
                region: name.clone(),
                health: r.health(now_ms, &self.policy),
                latency_ms: r.latency_ms,
                backend: r.backend,
            })
            .collect()
    }

    /// Folds in another board (e.g. probe results written by a cron),
    /// keeping for each region whichever view is newer.
    pub fn merge(&mut self, other: &HealthBoard) {
        for (name, theirs) in &other.regions {
            match self.regions.get(name) {
                Some(ours) if ours.updated_ms >= theirs.updated_ms => {}
                _ => {
                    self.regions.insert(name.clone(), theirs.clone());
                }
            }
        }
    }
}

/// How one upstream try ended, before any byte reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttemptFailure {
    Connect,
    /// No response headers (or, for non-streamed calls, no body) in time.
    Timeout,
    Status {
        status: u16,
    },
}

impl AttemptFailure {
    /// Whether the next target may be tried. Only failures that happen
    /// before the client saw a byte ever reach this question.
    pub fn try_next(self) -> bool {
        match self {
            AttemptFailure::Connect | AttemptFailure::Timeout => true,
            AttemptFailure::Status { status } => status == 429 || status >= 500,
        }
    }

    /// Whether it counts against the region's health (a 4xx is the client's fault).
    pub fn region_fault(self) -> bool {
        self.try_next()
    }

    pub fn label(self) -> &'static str {
        match self {
            AttemptFailure::Connect => "connect",
            AttemptFailure::Timeout => "timeout",
            AttemptFailure::Status { status } if status >= 500 => "status_5xx",
            AttemptFailure::Status { status: 429 } => "status_429",
            AttemptFailure::Status { .. } => "status_4xx",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: HealthPolicy = HealthPolicy {
        failure_threshold: 3,
        open_ms: 1_000,
        degraded_latency_ms: 500,
    };

    #[test]
    fn breaker_opens_after_threshold_and_recovers_through_half_open() {
        let mut r = RegionHealth::default();
        r.observe(0, Observation::Success { latency_ms: 20 }, &P);
        assert_eq!(r.health(0, &P), Health::Up);
        r.observe(1, Observation::Failure, &P);
        r.observe(2, Observation::Failure, &P);
        assert_eq!(r.health(2, &P), Health::Degraded);
        r.observe(3, Observation::Failure, &P);
        assert_eq!(
            (r.circuit(3), r.health(3, &P)),
            (CircuitState::Open, Health::Down)
        );
        assert_eq!(r.circuit(1_002), CircuitState::Open);
        assert_eq!(
            (r.circuit(1_003), r.health(1_003, &P)),
            (CircuitState::HalfOpen, Health::Degraded)
        );
        // A failed trial re-opens at once.
        r.observe(1_004, Observation::Failure, &P);
        assert_eq!(r.circuit(1_005), CircuitState::Open);
        // A successful trial closes it.
        r.observe(2_100, Observation::Success { latency_ms: 30 }, &P);
        assert_eq!(
            (r.circuit(2_100), r.health(2_100, &P)),
            (CircuitState::Closed, Health::Up)
        );
    }

    #[test]
    fn slow_regions_are_degraded() {
        let mut b = HealthBoard::new(P);
        b.observe("eu", 0, Observation::Success { latency_ms: 900 });
        b.observe("us", 0, Observation::Success { latency_ms: 40 });
        let s = b.statuses(0);
        assert_eq!(s[0].health, Health::Degraded);
        assert_eq!(s[1].health, Health::Up);
    }

    #[test]
    fn merge_keeps_the_newer_view() {
        let mut ours = HealthBoard::new(P);
        ours.observe("eu", 100, Observation::Success { latency_ms: 10 });
        let mut cron = HealthBoard::new(P);
        for t in 50..53 {
            cron.observe("eu", t, Observation::Failure);
        }
        cron.observe("us", 60, Observation::Failure);
        ours.merge(&cron);
        assert_eq!(
            ours.circuit("eu", 101),
            CircuitState::Closed,
            "ours is newer"
        );
        assert!(ours.regions.contains_key("us"));
        let back: HealthBoard =
            serde_json::from_str(&serde_json::to_string(&ours).expect("ser")).expect("de");
        assert_eq!(back, ours);
    }

    #[test]
    fn a_probe_succeeds_on_a_2xx_in_time() {
        assert_eq!(
            Observation::of_probe(Some(204), 12),
            Observation::Success { latency_ms: 12 }
        );
        assert_eq!(Observation::of_probe(Some(503), 12), Observation::Failure);
        assert_eq!(Observation::of_probe(None, 12), Observation::Failure);
        assert_eq!(
            Observation::of_probe(Some(200), PROBE_TIMEOUT_MS + 1),
            Observation::Failure
        );
    }

    #[test]
    fn only_server_side_failures_move_on() {
        assert!(AttemptFailure::Connect.try_next());
        assert!(AttemptFailure::Timeout.try_next());
        assert!(AttemptFailure::Status { status: 503 }.try_next());
        assert!(AttemptFailure::Status { status: 429 }.try_next());
        assert!(!AttemptFailure::Status { status: 400 }.try_next());
        assert!(!AttemptFailure::Status { status: 401 }.region_fault());
    }
}
