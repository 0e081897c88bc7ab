//! The host's clock: the core never reads one, it is handed `now`.

use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Monotonic microseconds (since the first call), for an exchange's timings.
pub fn now_us() -> u64 {
    STARTED.elapsed().as_micros() as u64
}
