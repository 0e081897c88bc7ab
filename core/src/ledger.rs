//! The usage ledger: exact counts per tenant × key × model and version ×
//! UTC day, written by the store operation that settles or releases a
//! request's reservation (so it is never sampled and never read back from
//! logs), and the usage reports read from it.
//!
//! The exchange makes one [`LedgerEntry`] per request that held a
//! reservation, from its usage record; hosts add it to their rows
//! ([`LedgerCounts::add`]) in the same write as the quota counters. A report
//! ([`UsageQuery`] → [`UsageReport`]) sums the rows a host read for the
//! query's tenant, key and days.

mod day;
pub mod latency;
pub(crate) mod query;
pub mod sql;

pub use day::{Day, DayParseError};
pub use latency::{LatencyQuery, LatencyReport, LatencyRow, LatencySample};
pub use query::{GroupBy, UsageFormat, UsageQuery, UsageReport, UsageRow};

use crate::gateway::ForwardPlan;
use crate::telemetry::{CacheStatus, UsageRecord};
use serde::{Deserialize, Serialize};

/// One ledger row's identity. `key` is the API key's id (never the key);
/// `None` for a request that presented a token. `version` is `None` for an
/// answer no backend gave (a cache hit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LedgerKey {
    pub tenant: String,
    pub key: Option<String>,
    pub model: String,
    pub version: Option<String>,
    pub day: Day,
}

/// What a row counts. Token and cost figures are what the requests were
/// charged (cost in integer micro-dollars).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCounts {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
    /// Requests that ended with an error status (not a client that left).
    pub errors: u64,
    /// Answered from the cache: a hit, a coalesced or a stale answer.
    pub cache_hits: u64,
    /// Answered by a degradation policy, or stale.
    pub degraded: u64,
    /// When the latest request counted was admitted (Unix ms): rows
    /// combine by the later, so a key's latest row says when it was last
    /// used. Not a count, so no report column.
    pub last_ms: u64,
}

impl LedgerCounts {
    /// The counts in [`sql::COUNT_COLUMNS`]' order.
    fn values(&self) -> [u64; 7] {
        [
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.cost_micros,
            self.errors,
            self.cache_hits,
            self.degraded,
        ]
    }

    fn from_values(values: [u64; 7], last_ms: u64) -> LedgerCounts {
        let [r, i, o, c, e, h, d] = values;
        LedgerCounts {
            requests: r,
            input_tokens: i,
            output_tokens: o,
            cost_micros: c,
            errors: e,
            cache_hits: h,
            degraded: d,
            last_ms,
        }
    }

    /// The counts as SQLite integers, in [`sql::COUNT_COLUMNS`]' order.
    pub fn count_columns(&self) -> [i64; 7] {
        self.values().map(|n| i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// The row's stored columns: the counts in [`sql::COUNT_COLUMNS`]'
    /// order, then `last_ms`.
    pub fn to_columns(&self) -> [i64; 8] {
        let counts = self.count_columns();
        let last = i64::try_from(self.last_ms).unwrap_or(i64::MAX);
        std::array::from_fn(|k| counts.get(k).copied().unwrap_or(last))
    }

    pub fn from_columns(columns: [i64; 8]) -> LedgerCounts {
        let [values @ .., last] = columns.map(|n| u64::try_from(n).unwrap_or(0));
        Self::from_values(values, last)
    }

    pub fn add(&mut self, other: &LedgerCounts) {
        let (mine, theirs) = (self.values(), other.values());
        *self = Self::from_values(
            std::array::from_fn(|k| mine[k].saturating_add(theirs[k])),
            self.last_ms.max(other.last_ms),
        );
    }
}

/// One request's contribution to the ledger, and its latency by phase
/// (counted beside it, [`latency`]; `None` for a row read back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub key: LedgerKey,
    pub counts: LedgerCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySample>,
}

impl LedgerEntry {
    /// The entry of a request of `plan` that held a reservation and ended
    /// as `record` says, charged `cost_micros`; its day is the UTC day it
    /// was admitted on.
    pub fn of(plan: &ForwardPlan, record: &UsageRecord, cost_micros: u64) -> LedgerEntry {
        let cache_hit = matches!(
            record.cache,
            CacheStatus::Hit | CacheStatus::Coalesced | CacheStatus::Stale
        );
        LedgerEntry {
            key: LedgerKey {
                tenant: plan.tenant_id.clone(),
                key: plan.key_id.clone(),
                model: record.model.clone().unwrap_or_else(|| plan.model.clone()),
                version: record.version.clone().filter(|_| !cache_hit),
                day: Day::of_ms(plan.now_ms),
            },
            counts: LedgerCounts {
                requests: 1,
                input_tokens: record.input_tokens,
                output_tokens: record.output_tokens,
                cost_micros,
                errors: u64::from(record.status >= 400 && record.status != 499),
                cache_hits: u64::from(cache_hit),
                degraded: u64::from(record.degraded.is_some()),
                last_ms: plan.now_ms,
            },
            latency: Some(LatencySample::of(record, plan.now_ms)),
        }
    }
}

/// A ledger key as a host stores it in columns: `None`s as empty text (a
/// primary key must not hold NULLs), the day as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredKey<'a> {
    pub tenant: &'a str,
    pub key: &'a str,
    pub model: &'a str,
    pub version: &'a str,
    pub day: i64,
}

impl LedgerEntry {
    /// A row as a host read it: its key's columns and the rest
    /// ([`LedgerCounts::to_columns`]).
    pub fn from_stored(key: StoredKey<'_>, counts: [i64; 8]) -> LedgerEntry {
        LedgerEntry {
            key: LedgerKey::from_stored(key),
            counts: LedgerCounts::from_columns(counts),
            latency: None,
        }
    }
}

impl LedgerKey {
    pub fn stored(&self) -> StoredKey<'_> {
        StoredKey {
            tenant: &self.tenant,
            key: self.key.as_deref().unwrap_or(""),
            model: &self.model,
            version: self.version.as_deref().unwrap_or(""),
            day: i64::from(self.day.number()),
        }
    }

    pub fn from_stored(stored: StoredKey<'_>) -> LedgerKey {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        LedgerKey {
            tenant: stored.tenant.to_owned(),
            key: some(stored.key),
            model: stored.model.to_owned(),
            version: some(stored.version),
            day: Day::from_number(u32::try_from(stored.day.max(0)).unwrap_or(u32::MAX)),
        }
    }
}

#[cfg(test)]
mod tests;
