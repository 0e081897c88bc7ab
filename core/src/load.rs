//! How loaded each replica is, as a host sees it: its own requests in
//! flight and a latency estimate per target ([`LoadBoard`], kept by the
//! host, never shared), and what the replica's Prometheus `/metrics` says
//! about its queue and KV cache ([`BackendLoad`], read with the health
//! probe). [`crate::balance`] turns these into a choice.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A replica's own account of its load (vLLM's or SGLang's gauges).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BackendLoad {
    /// Sequences being generated.
    pub running: u32,
    /// Requests queued behind them.
    pub waiting: u32,
    /// KV-cache blocks in use, 0 to 1.
    pub kv_cache_usage: Option<f32>,
}

impl BackendLoad {
    /// Reads the gauges from a Prometheus text exposition: vLLM's
    /// `vllm:num_requests_running`, `vllm:num_requests_waiting` and
    /// `vllm:kv_cache_usage_perc` (or the older `vllm:gpu_cache_usage_perc`),
    /// or SGLang's `sglang:num_running_reqs`, `sglang:num_queue_reqs` and
    /// `sglang:token_usage`; series of one name (one per engine or model)
    /// are summed, cache use is their maximum. `None` when neither the
    /// running nor the waiting gauge is there. (Three gauges out of a text
    /// format: hand-read here rather than a parser crate in the Worker bundle.)
    pub fn from_prometheus(text: &str) -> Option<BackendLoad> {
        // Running, waiting, cache use.
        let mut gauges = [None::<f64>; 3];
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let gauge = match &line[..name_end] {
                "vllm:num_requests_running" | "sglang:num_running_reqs" => 0,
                "vllm:num_requests_waiting" | "sglang:num_queue_reqs" => 1,
                "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" | "sglang:token_usage" => {
                    2
                }
                _ => continue,
            };
            // The value follows the labels (which may hold spaces in quotes).
            let rest = match line[name_end..].strip_prefix('{') {
                Some(labels) => labels.rfind('}').map_or("", |end| &labels[end + 1..]),
                None => &line[name_end..],
            };
            let Some(value) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
            else {
                continue;
            };
            gauges[gauge] = Some(match gauges[gauge] {
                Some(old) if gauge == 2 => old.max(value),
                Some(old) => old + value,
                None => value,
            });
        }
        let [running, waiting, usage] = gauges;
        if running.is_none() && waiting.is_none() {
            return None;
        }
        let count = |v: Option<f64>| v.map_or(0, |v| v.round().min(f64::from(u32::MAX)) as u32);
        Some(BackendLoad {
            running: count(running),
            waiting: count(waiting),
            kv_cache_usage: usage.map(|u| u.min(1.0) as f32),
        })
    }
}

/// One target's counters, as [`crate::gateway::RequestContext::loads`] takes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetLoad {
    pub target: String,
    /// This host's requests to it that have not ended.
    pub in_flight: u32,
    /// Smoothed time to first token (a whole answer's time when not streamed).
    pub latency_ms: Option<f64>,
    /// How long ago `latency_ms` last changed.
    pub latency_age_ms: u64,
}

/// How much a new sample moves the latency estimate.
const EWMA_WEIGHT: f64 = 0.3;

#[derive(Debug, Clone, Default, PartialEq)]
struct Counters {
    in_flight: u32,
    latency_ms: Option<f64>,
    sampled_ms: u64,
}

/// A host's counters per target: requests in flight, and an exponentially
/// weighted moving average of their latency. In memory, per process (or per
/// isolate on the Worker).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadBoard {
    targets: BTreeMap<String, Counters>,
}

impl LoadBoard {
    /// An attempt to `target` was sent.
    pub fn started(&mut self, target: &str) {
        let c = self.entry(target);
        c.in_flight = c.in_flight.saturating_add(1);
    }

    /// An attempt to `target` ended (answered, failed or cancelled).
    pub fn ended(&mut self, target: &str) {
        let c = self.entry(target);
        c.in_flight = c.in_flight.saturating_sub(1);
    }

    /// How long `target` took to its first token.
    pub fn sample(&mut self, target: &str, latency_ms: u32, now_ms: u64) {
        let c = self.entry(target);
        let x = f64::from(latency_ms);
        c.latency_ms = Some(c.latency_ms.map_or(x, |old| old + EWMA_WEIGHT * (x - old)));
        c.sampled_ms = now_ms;
    }

    fn entry(&mut self, target: &str) -> &mut Counters {
        if !self.targets.contains_key(target) {
            self.targets.insert(target.to_owned(), Counters::default());
        }
        self.targets.get_mut(target).expect("inserted above")
    }

    /// The counters of the targets in `wanted` (zero for one not seen yet).
    pub fn loads<'a>(
        &self,
        wanted: impl IntoIterator<Item = &'a str>,
        now_ms: u64,
    ) -> Vec<TargetLoad> {
        wanted
            .into_iter()
            .map(|t| {
                let c = self.targets.get(t).cloned().unwrap_or_default();
                TargetLoad {
                    target: t.to_owned(),
                    in_flight: c.in_flight,
                    latency_ms: c.latency_ms,
                    latency_age_ms: now_ms.saturating_sub(c.sampled_ms),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vllm_and_sglang_gauges() {
        let vllm = "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
            # TYPE vllm:num_requests_running gauge\n\
            vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0\n\
            vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 2.0\n\
            vllm:num_requests_waiting{engine=\"0\",model_name=\"a b}\"} 7\n\
            vllm:kv_cache_usage_perc{engine=\"0\"} 0.25\n\
            vllm:kv_cache_usage_perc{engine=\"1\"} 0.5\n\
            vllm:num_requests_running_total 99\n";
        assert_eq!(
            BackendLoad::from_prometheus(vllm),
            Some(BackendLoad {
                running: 5,
                waiting: 7,
                kv_cache_usage: Some(0.5)
            })
        );
        let sglang = "sglang:num_running_reqs 4\nsglang:num_queue_reqs{tp_rank=\"0\"} 1\n";
        assert_eq!(
            BackendLoad::from_prometheus(sglang),
            Some(BackendLoad {
                running: 4,
                waiting: 1,
                kv_cache_usage: None
            })
        );
        assert_eq!(BackendLoad::from_prometheus("up 1\n"), None);
        assert_eq!(
            BackendLoad::from_prometheus("vllm:num_requests_waiting NaN\n"),
            None
        );
    }

    #[test]
    fn counts_in_flight_and_smooths_latency() {
        let mut b = LoadBoard::default();
        b.started("a");
        b.started("a");
        b.ended("a");
        b.ended("b");
        b.sample("a", 100, 10);
        b.sample("a", 200, 20);
        let loads = b.loads(["a", "b", "c"], 25);
        assert_eq!(loads.len(), 3);
        assert_eq!(loads[0].in_flight, 1);
        assert_eq!(loads[0].latency_ms, Some(130.0));
        assert_eq!(loads[0].latency_age_ms, 5);
        assert_eq!((loads[1].in_flight, loads[1].latency_ms), (0, None));
        assert_eq!((loads[2].target.as_str(), loads[2].in_flight), ("c", 0));
    }
}
