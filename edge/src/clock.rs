//! The Worker's clock. Workers freeze `Date.now()` while code runs and
//! advance it at I/O, which is all the precision the gateway needs.

use std::time::Duration;
use worker::{Date, Delay};

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// A timer for `ms` milliseconds (for racing against I/O).
pub fn sleep_ms(ms: u64) -> Delay {
    Delay::from(Duration::from_millis(ms))
}
