//! This isolate's view of region health: what its own requests observed,
//! merged with the cron's probe results from KV (re-read every few seconds).

use crate::kv_store::EdgeKv;
use edgegate_core::geo::RegionStatus;
use edgegate_core::health::{HealthBoard, Observation};
use std::cell::RefCell;

/// How long the KV board is trusted before it is read again.
const KV_REFRESH_MS: u64 = 5_000;

#[derive(Default)]
struct IsolateBoard {
    board: HealthBoard,
    read_kv_ms: Option<u64>,
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
