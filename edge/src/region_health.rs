//! This isolate's view of region health: what its own requests observed,
//! merged with the cron's probe results from KV (re-read every few seconds),
//! which carry each replica's metrics too; and this isolate's load counters
//! of every replica when the config offers a choice (requests in flight,
//! time to first token). Isolates do not share counters: each balances what it sends.

use crate::kv_store::EdgeKv;
use edgegate_core::Config;
use edgegate_core::geo::RegionStatus;
use edgegate_core::health::{HealthBoard, Observation};
use edgegate_core::load::{LoadBoard, TargetLoad};
use std::cell::RefCell;

/// How long the KV board is trusted before it is read again.
const KV_REFRESH_MS: u64 = 5_000;

#[derive(Default)]
struct IsolateBoard {
    board: HealthBoard,
    read_kv_ms: Option<u64>,
    loads: LoadBoard,
}

thread_local! {
    static BOARD: RefCell<IsolateBoard> = RefCell::new(IsolateBoard::default());
}

/// Region statuses for `RequestContext::regions`.
pub async fn statuses(kv: &EdgeKv, now_ms: u64) -> Vec<RegionStatus> {
    let stale = BOARD.with_borrow_mut(|b| {
        let stale = b
            .read_kv_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= KV_REFRESH_MS);
        if stale {
            // Claimed before the read, so concurrent requests don't all read.
            b.read_kv_ms = Some(now_ms);
        }
        stale
    });
    if stale && let Some(remote) = kv.health_board().await {
        BOARD.with_borrow_mut(|b| b.board.merge(&remote));
    }
    BOARD.with_borrow(|b| b.board.statuses(now_ms))
}

/// Records how a request to `region` went.
pub fn observe(region: &str, now_ms: u64, observation: Observation) {
    BOARD.with_borrow_mut(|b| b.board.observe(region, now_ms, observation));
}

/// The replicas' load counters for `RequestContext::loads`.
pub fn loads(config: &Config, now_ms: u64) -> Vec<TargetLoad> {
    let mut targets = config.balanced_targets().peekable();
    if targets.peek().is_none() {
        return Vec::new();
    }
    BOARD.with_borrow(|b| b.loads.loads(targets, now_ms))
}

/// One attempt in flight at a replica; ends when dropped.
pub struct InFlight(String);

impl Drop for InFlight {
    fn drop(&mut self) {
        BOARD.with_borrow_mut(|b| b.loads.ended(&self.0));
    }
}

/// An attempt to `target` starts (`None` for targets not balanced).
pub fn start(config: &Config, target: &str) -> Option<InFlight> {
    if !config.balanced_targets().any(|t| t == target) {
        return None;
    }
    BOARD.with_borrow_mut(|b| b.loads.started(target));
    Some(InFlight(target.to_owned()))
}

/// `target`'s time to first token.
pub fn sample(target: &str, latency_ms: u32, now_ms: u64) {
    BOARD.with_borrow_mut(|b| b.loads.sample(target, latency_ms, now_ms));
}
