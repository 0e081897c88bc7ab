//! Quota math as pure functions over state a Durable Object or a local
//! database keeps: estimate, reserve, then settle with real usage (or release
//! a failed call).
//!
//! The state is a small fixed-size record ([`QuotaCounters`]) plus one entry
//! per open reservation, keyed by request id and indexed by expiry, so every
//! operation costs O(log n) in the reservations open, never O(n). A host that
//! persists the state writes the counters record and the reservation rows
//! each operation opened or closed ([`QuotaState::take_changes`]).
//!
//! - requests and tokens per minute: token buckets (GCRA-equivalent) with a
//!   burst size; levels are scaled by 60 000 (ms per minute) so a refill of
//!   `limit` units per minute is exact integer math;
//! - tokens and cost per UTC day and per UTC calendar month: fixed windows;
//! - concurrency: outstanding reservations, which also make settle and
//!   release idempotent and let stale reservations expire.

pub mod budgets;
pub mod headroom;
pub mod placement;
pub mod remaining;

use crate::error::LimitKind;
use crate::ledger::Day;
pub use budgets::{Budget, Level, LevelKind, Levels};
pub use remaining::Remaining;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_DAY: u64 = 86_400_000;
/// Retry hint when only the concurrency cap is full (no clock tells when a slot frees).
const CONCURRENCY_RETRY_MS: u64 = 1_000;

/// Where a quota state lives (and its ledger rows): a tenant's, or one of
/// its `quota_shards` (each its own Durable Object, `tenant#k`).
pub type QuotaKey = crate::names::ShardedName;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimits {
    pub requests_per_minute: u64,
    pub request_burst: u64,
    pub tokens_per_minute: u64,
    pub token_burst: u64,
    pub tokens_per_day: Option<u64>,
    pub cost_per_day_micros: Option<u64>,
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
    #[serde(default)]
    pub cost_per_month_micros: Option<u64>,
    pub max_concurrent: Option<u64>,
}

impl QuotaLimits {
    /// The share of these limits one of `shards` quota objects enforces.
    pub fn shard(&self, shards: u32) -> QuotaLimits {
        let n = u64::from(shards.max(1));
        let part = |v: u64| (v / n).max(1);
        QuotaLimits {
            requests_per_minute: part(self.requests_per_minute),
            request_burst: part(self.request_burst),
            tokens_per_minute: part(self.tokens_per_minute),
            token_burst: part(self.token_burst),
            tokens_per_day: self.tokens_per_day.map(part),
            cost_per_day_micros: self.cost_per_day_micros.map(part),
            tokens_per_month: self.tokens_per_month.map(part),
            cost_per_month_micros: self.cost_per_month_micros.map(part),
            max_concurrent: self.max_concurrent.map(part),
        }
    }
}

/// What one request takes from a quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amounts {
    pub requests: u64,
    pub tokens: u64,
    pub cost_micros: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Bucket {
    /// Units × 60 000; negative when real usage overran a reservation.
    level: i64,
    updated_ms: u64,
}

impl Bucket {
    fn full(capacity: u64, now_ms: u64) -> Self {
        Bucket {
            level: scaled(capacity),
            updated_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64, per_minute: u64, capacity: u64) {
        // A clock that steps back never refills and never moves `updated_ms` back.
        if now_ms > self.updated_ms {
            let gained = i128::from(now_ms - self.updated_ms) * i128::from(per_minute);
            let level = (i128::from(self.level) + gained).min(i128::from(scaled(capacity)));
            self.level = level as i64;
            self.updated_ms = now_ms;
        }
        self.level = self.level.min(scaled(capacity));
    }

    /// Milliseconds until `amount` fits, or `None` if it never can.
    fn wait_for(&self, amount: u64, per_minute: u64, capacity: u64) -> Option<u64> {
        if amount > capacity {
            return None;
        }
        let deficit = scaled(amount) - self.level;
        if deficit <= 0 {
            Some(0)
        } else {
            Some((deficit as u64).div_ceil(per_minute))
        }
    }

    fn take(&mut self, amount: u64) {
        self.level = self.level.saturating_sub(scaled(amount));
    }

    fn give_back(&mut self, amount: u64, capacity: u64) {
        self.level = self
            .level
            .saturating_add(scaled(amount))
            .min(scaled(capacity));
    }

    fn remaining(&self) -> u64 {
        (self.level.max(0) / MS_PER_MINUTE) as u64
    }

    /// Milliseconds until the bucket is full again.
    fn until_full(&self, per_minute: u64, capacity: u64) -> u64 {
        let missing = scaled(capacity) - self.level;
        if missing <= 0 {
            0
        } else {
            (missing as u64).div_ceil(per_minute)
        }
    }
}

fn scaled(units: u64) -> i64 {
    i64::try_from(i128::from(units) * i128::from(MS_PER_MINUTE)).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outstanding {
    pub amounts: Amounts,
    /// UTC day the daily counters were charged in.
    pub day: u64,
    pub expires_ms: u64,
}

/// The fixed-size part of a quota state: both buckets and the day's and
/// the month's counters. Hosts store it as one record per quota key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaCounters {
    requests: Bucket,
    tokens: Bucket,
    day: u64,
    day_tokens: u64,
    day_cost_micros: u64,
    /// Months since 1970-01 (records stored before months were kept read
    /// as month 0, which the next operation replaces).
    #[serde(default)]
    month: u32,
    #[serde(default)]
    month_tokens: u64,
    #[serde(default)]
    month_cost_micros: u64,
}

/// A reservation row an operation opened or closed, in the order they
/// happened; with the counters record, all a host writes to persist a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaChange {
    Opened {
        id: String,
        reservation: Outstanding,
    },
    Closed {
        id: String,
    },
}

/// One tenant's (or one shard's) quota state.
#[derive(Debug, Clone, Default)]
pub struct QuotaState {
    counters: QuotaCounters,
    open: HashMap<String, Outstanding>,
    /// (expiry, id) of every open reservation: expiry pops from the front.
    by_expiry: BTreeSet<(u64, String)>,
    /// Row changes since the host last took them.
    changes: Vec<QuotaChange>,
}

impl Default for QuotaCounters {
    fn default() -> Self {
        let empty = Bucket {
            level: 0,
            updated_ms: 0,
        };
        QuotaCounters {
            requests: empty,
            tokens: empty,
            day: 0,
            day_tokens: 0,
            day_cost_micros: 0,
            month: 0,
            month_tokens: 0,
            month_cost_micros: 0,
        }
    }
}

/// Two states are equal when their counters and open reservations are;
/// changes not yet taken by a host do not count.
impl PartialEq for QuotaState {
    fn eq(&self, other: &Self) -> bool {
        self.counters == other.counters && self.open == other.open
    }
}

impl Eq for QuotaState {}

/// The whole state as one JSON document, the form earlier versions stored.
#[derive(Serialize, Deserialize)]
struct StoredWhole {
    #[serde(flatten)]
    counters: QuotaCounters,
    outstanding: BTreeMap<String, Outstanding>,
}

/// Numbers for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaSnapshot {
    pub limit_requests: u64,
    pub limit_tokens: u64,
    pub remaining_requests: u64,
    pub remaining_tokens: u64,
    pub reset_requests_ms: u64,
    pub reset_tokens_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReserveOutcome {
    Admit {
        snapshot: QuotaSnapshot,
    },
    Deny {
        /// Whose limit ran out.
        #[serde(default)]
        level: LevelKind,
        limit: LimitKind,
        /// `None`: the request alone exceeds the limit; waiting cannot help.
        retry_after_ms: Option<u64>,
        snapshot: QuotaSnapshot,
    },
    /// The tenant's standing refuses the caller (a revoked, expired or
    /// rotated-out key, a disabled tenant); nothing was reserved.
    Refused {
        refusal: crate::directory::Refusal,
    },
}

impl QuotaState {
    pub fn new(limits: &QuotaLimits, now_ms: u64) -> Self {
        QuotaState {
            counters: QuotaCounters {
                requests: Bucket::full(limits.request_burst, now_ms),
                tokens: Bucket::full(limits.token_burst, now_ms),
                day: now_ms / MS_PER_DAY,
                day_tokens: 0,
                day_cost_micros: 0,
                month: month_of(now_ms / MS_PER_DAY),
                month_tokens: 0,
                month_cost_micros: 0,
            },
            ..QuotaState::default()
        }
    }

    /// The state a host stored as rows: its counters record and the
    /// reservations still open.
    pub fn restore(
        counters: QuotaCounters,
        reservations: impl IntoIterator<Item = (String, Outstanding)>,
    ) -> Self {
        let mut state = QuotaState {
            counters,
            ..QuotaState::default()
        };
        for (id, reservation) in reservations {
            state.open_reservation(id, reservation);
        }
        state.changes.clear();
        state
    }

    /// A state stored whole as JSON, as earlier versions did.
    pub fn from_stored_json(json: &str) -> Result<Self, serde_json::Error> {
        let whole: StoredWhole = serde_json::from_str(json)?;
        Ok(QuotaState::restore(whole.counters, whole.outstanding))
    }

    /// The whole state as one JSON document (O(n) in the open reservations:
    /// for hosts that store it whole, not on a hot path).
    pub fn to_stored_json(&self) -> String {
        let whole = StoredWhole {
            counters: self.counters,
            outstanding: self.open.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        };
        serde_json::to_string(&whole).unwrap_or_default()
    }

    pub fn counters(&self) -> QuotaCounters {
        self.counters
    }

    /// The reservation rows opened and closed since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<QuotaChange> {
        std::mem::take(&mut self.changes)
    }

    /// How many reservations are open (each holds a concurrency slot).
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    pub fn reservation(&self, id: &str) -> Option<&Outstanding> {
        self.open.get(id)
    }

    pub fn reservations(&self) -> impl Iterator<Item = (&String, &Outstanding)> {
        self.open.iter()
    }

    /// Tokens and cost charged in the current UTC day.
    pub fn day_usage(&self) -> (u64, u64) {
        (self.counters.day_tokens, self.counters.day_cost_micros)
    }

    /// Tokens and cost charged in the current UTC month.
    pub fn month_usage(&self) -> (u64, u64) {
        (self.counters.month_tokens, self.counters.month_cost_micros)
    }

    /// The earliest expiry among outstanding reservations (for an alarm).
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.by_expiry.first().map(|(at, _)| *at)
    }

    fn open_reservation(&mut self, id: String, reservation: Outstanding) {
        if let Some(old) = self.open.insert(id.clone(), reservation) {
            self.by_expiry.remove(&(old.expires_ms, id.clone()));
        }
        self.by_expiry.insert((reservation.expires_ms, id.clone()));
        self.changes.push(QuotaChange::Opened { id, reservation });
    }

    fn close_reservation(&mut self, id: &str) -> Option<Outstanding> {
        let reservation = self.open.remove(id)?;
        self.by_expiry
            .remove(&(reservation.expires_ms, id.to_owned()));
        self.changes.push(QuotaChange::Closed { id: id.to_owned() });
        Some(reservation)
    }

    pub(crate) fn advance(&mut self, now_ms: u64, limits: &QuotaLimits) {
        let c = &mut self.counters;
        c.requests
            .refill(now_ms, limits.requests_per_minute, limits.request_burst);
        c.tokens
            .refill(now_ms, limits.tokens_per_minute, limits.token_burst);
        let today = now_ms / MS_PER_DAY;
        if today > c.day {
            c.day = today;
            c.day_tokens = 0;
            c.day_cost_micros = 0;
        }
        let month = month_of(today);
        if month > c.month {
            c.month = month;
            c.month_tokens = 0;
            c.month_cost_micros = 0;
        }
        self.expire(now_ms, limits);
    }

    /// Reservations whose holder never settled (it crashed, or its isolate
    /// died mid-stream) are charged as reserved and free their slot.
    pub fn expire(&mut self, now_ms: u64, limits: &QuotaLimits) -> usize {
        let mut expired = 0;
        while self.by_expiry.first().is_some_and(|(at, _)| *at <= now_ms) {
            let Some((_, id)) = self.by_expiry.pop_first() else {
                break;
            };
            if let Some(o) = self.open.remove(&id) {
                self.changes.push(QuotaChange::Closed { id });
                self.reconcile(&o, o.amounts, limits);
                expired += 1;
            }
        }
        expired
    }

    pub fn snapshot(&self, limits: &QuotaLimits) -> QuotaSnapshot {
        let c = &self.counters;
        QuotaSnapshot {
            limit_requests: limits.requests_per_minute,
            limit_tokens: limits.tokens_per_minute,
            remaining_requests: c.requests.remaining(),
            remaining_tokens: c.tokens.remaining(),
            reset_requests_ms: c
                .requests
                .until_full(limits.requests_per_minute, limits.request_burst),
            reset_tokens_ms: c
                .tokens
                .until_full(limits.tokens_per_minute, limits.token_burst),
        }
    }

    /// Takes `amounts` atomically if every limit allows it. Reserving an id
    /// that is already outstanding admits again without taking twice.
    pub fn reserve(
        &mut self,
        now_ms: u64,
        limits: &QuotaLimits,
        id: &str,
        amounts: Amounts,
        ttl_ms: u64,
    ) -> ReserveOutcome {
        self.advance(now_ms, limits);
        if self.open.contains_key(id) {
            return ReserveOutcome::Admit {
                snapshot: self.snapshot(limits),
            };
        }
        if let Some((limit, retry_after_ms)) = self.first_denial(now_ms, limits, amounts) {
            return ReserveOutcome::Deny {
                level: LevelKind::Tenant,
                limit,
                retry_after_ms,
                snapshot: self.snapshot(limits),
            };
        }
        let c = &mut self.counters;
        c.requests.take(amounts.requests);
        c.tokens.take(amounts.tokens);
        c.day_tokens = c.day_tokens.saturating_add(amounts.tokens);
        c.day_cost_micros = c.day_cost_micros.saturating_add(amounts.cost_micros);
        c.month_tokens = c.month_tokens.saturating_add(amounts.tokens);
        c.month_cost_micros = c.month_cost_micros.saturating_add(amounts.cost_micros);
        let reservation = Outstanding {
            amounts,
            day: c.day,
            expires_ms: now_ms.saturating_add(ttl_ms),
        };
        self.open_reservation(id.to_owned(), reservation);
        ReserveOutcome::Admit {
            snapshot: self.snapshot(limits),
        }
    }

    /// The limit that refuses `amounts` with the longest wait, if any does.
    pub(crate) fn first_denial(
        &self,
        now_ms: u64,
        limits: &QuotaLimits,
        amounts: Amounts,
    ) -> Option<(LimitKind, Option<u64>)> {
        let until_tomorrow = MS_PER_DAY - now_ms % MS_PER_DAY;
        let next_month = Day::of_ms(now_ms).next_month();
        let until_next_month = (u64::from(next_month.number()) * MS_PER_DAY).saturating_sub(now_ms);
        let window = |used: u64, amount: u64, limit: Option<u64>, until_next: u64| match limit {
            None => Some(0),
            Some(l) if amount > l => None,
            Some(l) if used.saturating_add(amount) > l => Some(until_next),
            Some(_) => Some(0),
        };
        let daily = |used, amount, limit| window(used, amount, limit, until_tomorrow);
        let monthly = |used, amount, limit| window(used, amount, limit, until_next_month);
        let concurrency = match limits.max_concurrent {
            Some(max) if self.open.len() as u64 >= max => Some(CONCURRENCY_RETRY_MS),
            _ => Some(0),
        };
        let c = &self.counters;
        let waits = [
            (LimitKind::Concurrency, concurrency),
            (
                LimitKind::Requests,
                c.requests.wait_for(
                    amounts.requests,
                    limits.requests_per_minute,
                    limits.request_burst,
                ),
            ),
            (
                LimitKind::Tokens,
                c.tokens
                    .wait_for(amounts.tokens, limits.tokens_per_minute, limits.token_burst),
            ),
            (
                LimitKind::TokensPerDay,
                daily(c.day_tokens, amounts.tokens, limits.tokens_per_day),
            ),
            (
                LimitKind::Cost,
                daily(
                    c.day_cost_micros,
                    amounts.cost_micros,
                    limits.cost_per_day_micros,
                ),
            ),
            (
                LimitKind::TokensPerMonth,
                monthly(c.month_tokens, amounts.tokens, limits.tokens_per_month),
            ),
            (
                LimitKind::CostPerMonth,
                monthly(
                    c.month_cost_micros,
                    amounts.cost_micros,
                    limits.cost_per_month_micros,
                ),
            ),
        ];
        // A limit that can never be met wins; otherwise the longest wait.
        if let Some((kind, _)) = waits.iter().find(|(_, w)| w.is_none()) {
            return Some((*kind, None));
        }
        waits
            .iter()
            .filter_map(|(k, w)| w.filter(|ms| *ms > 0).map(|ms| (*k, ms)))
            .max_by_key(|(_, ms)| *ms)
            .map(|(k, ms)| (k, Some(ms)))
    }

    /// Replaces the reservation's charge with the real usage: gives back what
    /// was not used, takes what was used beyond it. Returns false (and changes
    /// nothing) if `id` is not outstanding, so a repeated settle is harmless.
    pub fn settle(&mut self, now_ms: u64, limits: &QuotaLimits, id: &str, actual: Amounts) -> bool {
        self.advance(now_ms, limits);
        match self.close_reservation(id) {
            Some(o) => {
                self.reconcile(&o, actual, limits);
                true
            }
            None => false,
        }
    }

    /// A call that failed before the backend did any work: give everything back.
    pub fn release(&mut self, now_ms: u64, limits: &QuotaLimits, id: &str) -> bool {
        self.settle(now_ms, limits, id, Amounts::default())
    }

    fn reconcile(&mut self, o: &Outstanding, actual: Amounts, limits: &QuotaLimits) {
        let reserved = o.amounts;
        let c = &mut self.counters;
        adjust_bucket(
            &mut c.requests,
            reserved.requests,
            actual.requests,
            limits.request_burst,
        );
        adjust_bucket(
            &mut c.tokens,
            reserved.tokens,
            actual.tokens,
            limits.token_burst,
        );
        // A window's counters only change if the reservation was charged in it.
        if o.day == c.day {
            c.day_tokens = adjust(c.day_tokens, reserved.tokens, actual.tokens);
            c.day_cost_micros = adjust(c.day_cost_micros, reserved.cost_micros, actual.cost_micros);
        }
        if month_of(o.day) == c.month {
            c.month_tokens = adjust(c.month_tokens, reserved.tokens, actual.tokens);
            c.month_cost_micros = adjust(
                c.month_cost_micros,
                reserved.cost_micros,
                actual.cost_micros,
            );
        }
    }
}

/// The UTC month (months since 1970-01) of a day number.
fn month_of(day: u64) -> u32 {
    Day::from_number(u32::try_from(day).unwrap_or(u32::MAX)).month()
}

fn adjust_bucket(bucket: &mut Bucket, reserved: u64, actual: u64, capacity: u64) {
    if actual < reserved {
        bucket.give_back(reserved - actual, capacity);
    } else {
        bucket.take(actual - reserved);
    }
}

fn adjust(counter: u64, reserved: u64, actual: u64) -> u64 {
    if actual < reserved {
        counter.saturating_sub(reserved - actual)
    } else {
        counter.saturating_add(actual - reserved)
    }
}

/// OpenAI's duration format for reset headers: `1s`, `6m0s`, `20ms`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let secs = ms.div_ceil(1_000);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// The `x-ratelimit-*` headers OpenAI clients read.
pub fn rate_limit_headers(s: &QuotaSnapshot) -> Vec<(String, String)> {
    vec![
        (
            "x-ratelimit-limit-requests".into(),
            s.limit_requests.to_string(),
        ),
        (
            "x-ratelimit-limit-tokens".into(),
            s.limit_tokens.to_string(),
        ),
        (
            "x-ratelimit-remaining-requests".into(),
            s.remaining_requests.to_string(),
        ),
        (
            "x-ratelimit-remaining-tokens".into(),
            s.remaining_tokens.to_string(),
        ),
        (
            "x-ratelimit-reset-requests".into(),
            format_duration_ms(s.reset_requests_ms),
        ),
        (
            "x-ratelimit-reset-tokens".into(),
            format_duration_ms(s.reset_tokens_ms),
        ),
    ]
}

#[cfg(test)]
mod tests;
