//! The runner's load counters per replica (the core's `LoadBoard`, linked
//! natively: these are the host's own, trusted observations): requests in
//! flight, counted from an attempt's send to its end, and each replica's
//! time to first token. Every replica is tracked when the config offers a
//! choice (`Config::balanced_targets`); with one region of one replica,
//! this costs nothing per request.

use edgegate_core::Config;
use edgegate_core::load::{LoadBoard, TargetLoad};
use std::sync::{Arc, Mutex, MutexGuard};

pub struct LoadTracker {
    board: Mutex<LoadBoard>,
    targets: Vec<String>,
}

/// One attempt in flight at a target; ends when dropped.
pub struct InFlight {
    tracker: Arc<LoadTracker>,
    target: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.tracker.board().ended(&self.target);
    }
}

impl LoadTracker {
    pub fn new(config: &Config) -> Arc<LoadTracker> {
        Arc::new(LoadTracker {
            board: Mutex::default(),
            targets: config.balanced_targets().map(str::to_owned).collect(),
        })
    }

    fn board(&self) -> MutexGuard<'_, LoadBoard> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tracks(&self, target: &str) -> bool {
        self.targets.iter().any(|t| t == target)
    }

    /// What `admit` should know about the replicas' load right now.
    pub fn loads(&self) -> Vec<TargetLoad> {
        if self.targets.is_empty() {
            return Vec::new();
        }
        let now = crate::clock::now_ms();
        self.board()
            .loads(self.targets.iter().map(String::as_str), now)
    }

    /// An attempt to `target` starts (`None` for targets not tracked).
    pub fn start(self: &Arc<Self>, target: &str) -> Option<InFlight> {
        if !self.tracks(target) {
            return None;
        }
        self.board().started(target);
        Some(InFlight {
            tracker: self.clone(),
            target: target.to_owned(),
        })
    }

    /// `target`'s time to first token.
    pub fn sample(&self, target: &str, latency_ms: u32) {
        if self.tracks(target) {
            let now = crate::clock::now_ms();
            self.board().sample(target, latency_ms, now);
        }
    }
}
