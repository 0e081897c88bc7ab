//! Prometheus metrics, rendered in the text exposition format at `/metrics`.
//! Labels are low-cardinality: endpoints, status classes, models, regions and
//! the core's error labels; never tenants' keys or request data.

use crate::gates::GateSnapshot;
use edgegate_core::geo::{Health, RegionStatus};
use edgegate_core::load::{BackendLoad, TargetLoad};
use edgegate_core::telemetry::{CacheStatus, UsageRecord};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Latency buckets in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String), u64>,
    errors: BTreeMap<String, u64>,
    latency: BTreeMap<String, Histogram>,
    upstream_first_byte: BTreeMap<String, Histogram>,
    tokens: BTreeMap<(String, &'static str), u64>,
    cost_usd: BTreeMap<String, f64>,
    cache: BTreeMap<&'static str, u64>,
    upstream_failures: BTreeMap<(String, String), u64>,
    degraded: BTreeMap<String, u64>,
    region_health: BTreeMap<String, u8>,
    sandbox_traps: u64,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn record(&self, r: &UsageRecord) {
        self.with(|m| {
            let endpoint = r.endpoint.clone().unwrap_or_else(|| "none".into());
            let class = format!("{}xx", r.status / 100);
            *m.requests.entry((endpoint.clone(), class)).or_default() += 1;
            if let Some(e) = &r.error {
                *m.errors.entry(e.clone()).or_default() += 1;
            }
            if let Some(reason) = &r.degraded {
                *m.degraded.entry(reason.clone()).or_default() += 1;
            }
            m.latency
                .entry(endpoint)
                .or_default()
                .observe(r.latency.total_us as f64 / 1e6);
            if let (Some(region), Some(us)) = (&r.region, r.latency.upstream_first_byte_us) {
                m.upstream_first_byte
                    .entry(region.clone())
                    .or_default()
                    .observe(us as f64 / 1e6);
            }
            if let Some(model) = &r.model {
                *m.tokens.entry((model.clone(), "input")).or_default() += r.input_tokens;
                *m.tokens.entry((model.clone(), "output")).or_default() += r.output_tokens;
                *m.cost_usd.entry(model.clone()).or_default() += r.cost_usd;
            }
            let cache = match r.cache {
                CacheStatus::Hit => "hit",
                CacheStatus::Coalesced => "coalesced",
                CacheStatus::Stale => "stale",
                CacheStatus::Miss => "miss",
                CacheStatus::Bypass => "bypass",
                CacheStatus::Off => return,
            };
            *m.cache.entry(cache).or_default() += 1;
        });
    }

    pub fn upstream_failure(&self, region: &str, kind: &str) {
        self.with(|m| {
            *m.upstream_failures
                .entry((region.to_owned(), kind.to_owned()))
                .or_default() += 1
        });
    }

    pub fn set_region_health(&self, statuses: &[RegionStatus]) {
        self.with(|m| {
            for s in statuses {
                let v = match s.health {
                    Health::Up => 0,
                    Health::Degraded => 1,
                    Health::Down => 2,
                };
                m.region_health.insert(s.region.clone(), v);
            }
        });
    }

    pub fn set_sandbox_traps(&self, traps: u64) {
        self.with(|m| m.sandbox_traps = traps);
    }

    pub fn render(&self) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let mut lines = Vec::new();
        let n = family(
            &mut out,
            "edgegate_requests_total",
            "counter",
            "Requests by endpoint and status class.",
        );
        for ((e, c), v) in &m.requests {
            lines.push(format!("{n}{{endpoint=\"{e}\",status=\"{c}\"}} {v}"));
        }
        flush(&mut out, &mut lines);
        let n = family(
            &mut out,
            "edgegate_errors_total",
            "counter",
            "Failed requests by error kind.",
        );
        for (e, v) in &m.errors {
            lines.push(format!("{n}{{kind=\"{e}\"}} {v}"));
        }
        flush(&mut out, &mut lines);
        let n = family(
            &mut out,
            "edgegate_request_duration_seconds",
            "histogram",
            "Total request latency.",
        );
        histogram_lines(&mut lines, &n, "endpoint", &m.latency);
        flush(&mut out, &mut lines);
        let n = family(
            &mut out,
            "edgegate_upstream_first_byte_seconds",
            "histogram",
            "Time to the upstream's first byte.",
        );
        histogram_lines(&mut lines, &n, "region", &m.upstream_first_byte);
        flush(&mut out, &mut lines);
        let n = family(
            &mut out,
            "edgegate_tokens_total",
            "counter",
            "Tokens settled, by model and direction.",
        );
        for ((model, dir), v) in &m.tokens {
            lines.push(format!("{n}{{model=\"{model}\",direction=\"{dir}\"}} {v}"));
        }
        flush(&mut out, &mut lines);
        let n = family(
            &mut out,
            "edgegate_cost_usd_total",
            "counter",
            "Cost accounted, by model.",
        );
        for (model, v) in &m.cost_usd {
            lines.push(format!("{n}{{model=\"{model}\"}} {v}"));
        }
        flush(&mut out, &mut lines);
        let n = family(
            &mut out,
            "edgegate_cache_requests_total",
            "counter",
            "Cache lookups by result.",
        );
        for (status, v) in &m.cache {
            lines.push(format!("{n}{{result=\"{status}\"}} {v}"));
        }
        flush(&mut out, &mut lines);
        let n = family(
            &mut out,
            "edgegate_upstream_failures_total",
            "counter",
            "Upstream tries that failed, by region and kind.",
        );
        for ((region, kind), v) in &m.upstream_failures {
            lines.push(format!("{n}{{region=\"{region}\",kind=\"{kind}\"}} {v}"));
        }
        flush(&mut out, &mut lines);
        let n = family(
            &mut out,
            "edgegate_degraded_total",
            "counter",
            "Answers given by a route's degradation policy, by reason.",
        );
        for (reason, v) in &m.degraded {
            lines.push(format!("{n}{{reason=\"{reason}\"}} {v}"));
        }
        flush(&mut out, &mut lines);
        let n = family(
            &mut out,
            "edgegate_region_circuit_state",
            "gauge",
            "Region health: 0 up (closed), 1 degraded (half-open or slow), 2 down (open).",
        );
        for (region, v) in &m.region_health {
            lines.push(format!("{n}{{region=\"{region}\"}} {v}"));
        }
        flush(&mut out, &mut lines);
        let n = family(
            &mut out,
            "edgegate_sandbox_traps_total",
            "counter",
            "Sandbox instances replaced after a trap.",
        );
        lines.push(format!("{n} {}", m.sandbox_traps));
        flush(&mut out, &mut lines);
        out
    }
}

/// The replicas' load as the balancing sees it: this runner's requests in
/// flight and time-to-first-token estimate per replica, and what each
/// replica's metrics last reported (regions with several replicas only).
pub fn render_replicas(loads: &[TargetLoad], statuses: &[RegionStatus]) -> String {
    let mut out = String::new();
    if loads.is_empty() {
        return out;
    }
    let mut lines = Vec::new();
    let n = family(
        &mut out,
        "edgegate_replica_in_flight",
        "gauge",
        "This runner's attempts in flight, by replica.",
    );
    for l in loads {
        lines.push(format!("{n}{{target=\"{}\"}} {}", l.target, l.in_flight));
    }
    flush(&mut out, &mut lines);
    let n = family(
        &mut out,
        "edgegate_replica_first_token_seconds",
        "gauge",
        "Moving average of the time to first token, by replica.",
    );
    for l in loads {
        if let Some(ms) = l.latency_ms {
            lines.push(format!("{n}{{target=\"{}\"}} {}", l.target, ms / 1e3));
        }
    }
    flush(&mut out, &mut lines);
    let backends: Vec<(&str, BackendLoad)> = statuses
        .iter()
        .filter(|s| loads.iter().any(|l| l.target == s.region))
        .filter_map(|s| Some((s.region.as_str(), s.backend?)))
        .collect();
    for (name, help, value) in [
        (
            "edgegate_replica_reported_running",
            "Sequences running, as the replica's metrics last said.",
            (|b: &BackendLoad| b.running) as fn(&BackendLoad) -> u32,
        ),
        (
            "edgegate_replica_reported_waiting",
            "Requests waiting, as the replica's metrics last said.",
            |b: &BackendLoad| b.waiting,
        ),
    ] {
        let n = family(&mut out, name, "gauge", help);
        for (target, b) in &backends {
            lines.push(format!("{n}{{target=\"{target}\"}} {}", value(b)));
        }
        flush(&mut out, &mut lines);
    }
    out
}

/// The gates of regions whose replicas have a capacity: requests waiting
/// by region, permits held by replica (only gates that were used).
pub fn render_gates(gates: &GateSnapshot) -> String {
    let mut out = String::new();
    if gates.waiting.is_empty() {
        return out;
    }
    let mut lines = Vec::new();
    let n = family(
        &mut out,
        "edgegate_gate_waiting",
        "gauge",
        "Requests waiting for a replica with room, by region.",
    );
    for (region, w) in &gates.waiting {
        lines.push(format!("{n}{{region=\"{region}\"}} {w}"));
    }
    flush(&mut out, &mut lines);
    let n = family(
        &mut out,
        "edgegate_gate_permits",
        "gauge",
        "Requests a replica with a capacity is serving for this runner.",
    );
    for (target, p) in &gates.permits {
        lines.push(format!("{n}{{target=\"{target}\"}} {p}"));
    }
    flush(&mut out, &mut lines);
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) -> String {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    name.to_owned()
}

fn flush(out: &mut String, lines: &mut Vec<String>) {
    for l in lines.drain(..) {
        out.push_str(&l);
        out.push('\n');
    }
}

fn histogram_lines(
    lines: &mut Vec<String>,
    name: &str,
    label: &str,
    hists: &BTreeMap<String, Histogram>,
) {
    for (key, h) in hists {
        for (b, c) in BUCKETS.iter().zip(h.counts) {
            lines.push(format!("{name}_bucket{{{label}=\"{key}\",le=\"{b}\"}} {c}"));
        }
        lines.push(format!(
            "{name}_bucket{{{label}=\"{key}\",le=\"+Inf\"}} {}",
            h.count
        ));
        lines.push(format!("{name}_sum{{{label}=\"{key}\"}} {}", h.sum));
        lines.push(format!("{name}_count{{{label}=\"{key}\"}} {}", h.count));
    }
}
