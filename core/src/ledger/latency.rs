//! Latency by phase, kept beside the usage ledger: for each request that
//! reaches the ledger, one bucket per phase it went through, counted per
//! tenant × model × UTC hour in the same store write as its ledger entry
//! (so the dashboard's percentiles hold on the Worker too, where no
//! process sees every request). Histograms, not samples: a report sums the
//! buckets of the hours asked and interpolates each quantile within its
//! bucket, as Prometheus' `histogram_quantile` does.
//!
//! Rows are kept [`RETENTION_HOURS`]; a store prunes older ones once an
//! hour ([`Pruning`]).

use super::Day;
use crate::telemetry::{LATENCY_BUCKETS_S, TOKEN_BUCKETS_S, UsageRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// How long a store keeps latency rows: 31 days of hours.
pub const RETENTION_HOURS: u32 = 31 * 24;

/// A stage of a request's life, as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// The gateway's own work.
    Gateway,
    /// Waiting: a sandbox instance, the quota store, a replica's gate.
    Queue,
    /// From sending upstream to the first token the client could be sent.
    TimeToFirstToken,
    /// A stream's time per output token after the first.
    TimePerOutputToken,
    /// The whole request, as the client saw it.
    Total,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Gateway,
        Phase::Queue,
        Phase::TimeToFirstToken,
        Phase::TimePerOutputToken,
        Phase::Total,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Gateway => "gateway",
            Phase::Queue => "queue",
            Phase::TimeToFirstToken => "time_to_first_token",
            Phase::TimePerOutputToken => "time_per_output_token",
            Phase::Total => "total",
        }
    }

    /// Its bucket bounds, in seconds (upper, inclusive); past the last is
    /// one more bucket.
    pub fn bounds(self) -> &'static [f64] {
        match self {
            Phase::TimePerOutputToken => &TOKEN_BUCKETS_S,
            _ => &LATENCY_BUCKETS_S,
        }
    }

    /// The phase a stored number names.
    pub fn from_number(n: i64) -> Option<Phase> {
        usize::try_from(n)
            .ok()
            .and_then(|i| Phase::ALL.get(i).copied())
    }

    pub fn number(self) -> i64 {
        self as i64
    }

    /// The bucket `seconds` falls in.
    pub fn bucket(self, seconds: f64) -> u8 {
        let bounds = self.bounds();
        let k = bounds.partition_point(|b| *b < seconds);
        u8::try_from(k).unwrap_or(u8::MAX)
    }
}

/// An hour since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hour(u32);

impl Hour {
    pub fn of_ms(ms: u64) -> Hour {
        Hour(u32::try_from(ms / 3_600_000).unwrap_or(u32::MAX))
    }

    pub fn number(self) -> u32 {
        self.0
    }

    pub fn from_number(n: u32) -> Hour {
        Hour(n)
    }

    /// The first hour of `day`.
    pub fn first_of(day: Day) -> Hour {
        Hour(day.number().saturating_mul(24))
    }

    /// The last hour of `day`.
    pub fn last_of(day: Day) -> Hour {
        Hour(day.number().saturating_mul(24).saturating_add(23))
    }

    pub fn unix_seconds(self) -> u64 {
        u64::from(self.0) * 3600
    }
}

/// One request's latency as the store counts it: its hour and the bucket
/// of each phase it went through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySample {
    pub hour: Hour,
    pub buckets: Vec<(Phase, u8)>,
}

impl LatencySample {
    /// The sample of a request admitted at `admitted_ms` that ended as
    /// `record` says.
    pub fn of(record: &UsageRecord, admitted_ms: u64) -> LatencySample {
        let l = &record.latency;
        let s = |us: u64| us as f64 / 1e6;
        let phases = [
            (Phase::Gateway, Some(s(l.gateway_us))),
            (Phase::Queue, Some(s(l.queue_us))),
            (Phase::TimeToFirstToken, l.first_token_us.map(s)),
            (Phase::TimePerOutputToken, record.time_per_output_token_s()),
            (Phase::Total, Some(s(l.total_us))),
        ];
        LatencySample {
            hour: Hour::of_ms(admitted_ms),
            buckets: phases
                .into_iter()
                .filter_map(|(phase, v)| Some((phase, phase.bucket(v?))))
                .collect(),
        }
    }
}

/// One latency count's identity: a bucket of a phase, in an hour, of a
/// tenant's requests answered by a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LatencyKey<'a> {
    pub tenant: &'a str,
    pub model: &'a str,
    pub hour: Hour,
    pub phase: Phase,
    pub bucket: u8,
}

impl LatencyKey<'_> {
    /// The key's numbers as stored: hour, phase, bucket.
    pub fn numbers(&self) -> [i64; 3] {
        [
            i64::from(self.hour.number()),
            self.phase.number(),
            i64::from(self.bucket),
        ]
    }
}

impl super::LedgerEntry {
    /// The latency counts this entry adds one to.
    pub fn latency_keys(&self) -> impl Iterator<Item = LatencyKey<'_>> {
        self.latency.iter().flat_map(move |sample| {
            sample
                .buckets
                .iter()
                .map(move |&(phase, bucket)| LatencyKey {
                    tenant: &self.key.tenant,
                    model: &self.key.model,
                    hour: sample.hour,
                    phase,
                    bucket,
                })
        })
    }
}

/// One stored count: how many requests of an hour fell in one bucket of
/// one phase (summed over the tenants and models a host read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyRow {
    pub hour: Hour,
    pub phase: Phase,
    pub bucket: u8,
    pub count: u64,
}

impl LatencyRow {
    /// A row as a host read it ([`super::sql::SELECT_LATENCY`]'s columns);
    /// `None` for a phase this build does not know.
    pub fn from_stored(hour: i64, phase: i64, bucket: i64, count: i64) -> Option<LatencyRow> {
        Some(LatencyRow {
            hour: Hour(u32::try_from(hour).ok()?),
            phase: Phase::from_number(phase)?,
            bucket: u8::try_from(bucket).ok()?,
            count: u64::try_from(count).ok()?,
        })
    }
}

/// The longest range a latency report covers, in days: what stores keep.
const MAX_DAYS: u32 = RETENTION_HOURS / 24;
/// Without `from`, a report covers this many days up to `to`.
const DEFAULT_DAYS: u32 = 7;

/// A latency report's parameters: whose requests (a tenant or all; a
/// model or all) and which UTC days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyQuery {
    pub tenant: Option<String>,
    pub model: Option<String>,
    pub from: Day,
    pub to: Day,
}

impl LatencyQuery {
    /// Parses `tenant`, `model`, `from` and `to` (`YYYY-MM-DD`, UTC; `to`
    /// defaults to `today`, `from` to 7 days ending at `to`; at most 31).
    pub fn parse(query: &str, today: Day) -> Result<LatencyQuery, crate::GatewayError> {
        let params = super::query::Params::parse(query, &["tenant", "model", "from", "to"])?;
        let (from, to) = params.days(today, DEFAULT_DAYS, MAX_DAYS)?;
        Ok(LatencyQuery {
            tenant: params.text("tenant")?,
            model: params.text("model")?,
            from,
            to,
        })
    }

    /// The hours the report covers, as the stores' numbers (inclusive).
    pub fn hours(&self) -> (i64, i64) {
        (
            i64::from(Hour::first_of(self.from).number()),
            i64::from(Hour::last_of(self.to).number()),
        )
    }
}

/// Bucket counts of one phase, the last past every bound.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Histogram {
    phase: Phase,
    counts: Vec<u64>,
}

impl Histogram {
    fn new(phase: Phase) -> Histogram {
        Histogram {
            phase,
            counts: vec![0; phase.bounds().len() + 1],
        }
    }

    fn add(&mut self, bucket: u8, count: u64) {
        let last = self.counts.len() - 1;
        let slot = &mut self.counts[usize::from(bucket).min(last)];
        *slot = slot.saturating_add(count);
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile in seconds, interpolated linearly within its
    /// bucket from the bucket below's bound (0 for the first), as
    /// Prometheus' `histogram_quantile`; in the bucket past every bound,
    /// the highest bound. `None` without samples.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let bounds = self.phase.bounds();
        let rank = q * total as f64;
        let mut below = 0u64;
        for (k, &n) in self.counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = bounds.get(k) else {
                    return bounds.last().copied();
                };
                let lower = if k == 0 { 0.0 } else { bounds[k - 1] };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * within);
            }
            below += n;
        }
        bounds.last().copied()
    }

    /// `{count, p50_ms, p90_ms, p95_ms, p99_ms}` (nulls without samples).
    fn summary(&self, quantiles: &[(&str, f64)]) -> Value {
        let mut out = Map::new();
        out.insert("count".into(), json!(self.count()));
        for (name, q) in quantiles {
            let ms = self.quantile(*q).map(|s| (s * 1e6).round() / 1e3);
            out.insert((*name).into(), json!(ms));
        }
        Value::Object(out)
    }
}

const SUMMARY: [(&str, f64); 4] = [
    ("p50_ms", 0.5),
    ("p90_ms", 0.9),
    ("p95_ms", 0.95),
    ("p99_ms", 0.99),
];
const HOURLY: [(&str, f64); 3] = [("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)];

/// A latency report: each phase's percentiles over the query's days, and
/// per hour with requests, the requests and each phase's percentiles.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyReport {
    pub query: LatencyQuery,
    phases: Vec<Histogram>,
    hours: BTreeMap<Hour, Vec<Histogram>>,
}

fn histograms() -> Vec<Histogram> {
    Phase::ALL.iter().map(|p| Histogram::new(*p)).collect()
}

impl LatencyReport {
    /// Sums the rows of the query's hours.
    pub fn build(query: LatencyQuery, rows: impl IntoIterator<Item = LatencyRow>) -> Self {
        let (first, last) = query.hours();
        let mut phases = histograms();
        let mut hours: BTreeMap<Hour, Vec<Histogram>> = BTreeMap::new();
        for row in rows {
            if !(first..=last).contains(&i64::from(row.hour.number())) {
                continue;
            }
            let k = row.phase as usize;
            phases[k].add(row.bucket, row.count);
            hours.entry(row.hour).or_insert_with(histograms)[k].add(row.bucket, row.count);
        }
        LatencyReport {
            query,
            phases,
            hours,
        }
    }

    /// The requests counted (each has a `total`).
    pub fn requests(&self) -> u64 {
        self.phases[Phase::Total as usize].count()
    }

    /// The `q` quantile of `phase` over the report's days, in seconds.
    pub fn quantile(&self, phase: Phase, q: f64) -> Option<f64> {
        self.phases[phase as usize].quantile(q)
    }

    pub fn to_json_value(&self) -> Value {
        let phases: Vec<Value> = self
            .phases
            .iter()
            .map(|h| {
                let mut v = h.summary(&SUMMARY);
                v["phase"] = json!(h.phase.name());
                v
            })
            .collect();
        let hours: Vec<Value> = self
            .hours
            .iter()
            .map(|(hour, hs)| {
                let mut by_phase = Map::new();
                for h in hs.iter().filter(|h| h.count() > 0) {
                    by_phase.insert(h.phase.name().into(), h.summary(&HOURLY));
                }
                json!({
                    "hour": hour.unix_seconds(),
                    "requests": hs[Phase::Total as usize].count(),
                    "phases": by_phase,
                })
            })
            .collect();
        json!({
            "object": "latency_report",
            "from": self.query.from,
            "to": self.query.to,
            "tenant": self.query.tenant,
            "model": self.query.model,
            "requests": self.requests(),
            "phases": phases,
            "hours": hours,
        })
    }
}

/// When a store last pruned its latency rows: it prunes once per hour,
/// dropping rows past [`RETENTION_HOURS`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Pruning {
    last: Option<Hour>,
}

impl Pruning {
    /// At `now_ms`, the hour below which rows are to be deleted now, if a
    /// prune is due (the first call, then each new hour).
    pub fn due(&mut self, now_ms: u64) -> Option<i64> {
        let hour = Hour::of_ms(now_ms);
        if self.last == Some(hour) {
            return None;
        }
        self.last = Some(hour);
        Some(i64::from(hour.number().saturating_sub(RETENTION_HOURS)))
    }
}

#[cfg(test)]
mod tests;
