//! What `/metrics` reads from the live state at each scrape: the regions'
//! health, the replicas' load as the balancing sees it, the gates and the
//! sandbox's traps. Nothing here is kept for metrics.

use super::label::Text;
use crate::gates::Gates;
use crate::health_monitor::HealthMonitor;
use crate::load_tracker::LoadTracker;
use crate::sandbox::Sandbox;
use edgegate_core::geo::Health;
use edgegate_core::load::BackendLoad;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::fmt::{self, Debug};
use std::sync::Arc;

/// The state the collector reads.
pub struct Live {
    pub health: Arc<HealthMonitor>,
    pub loads: Arc<LoadTracker>,
    pub gates: Arc<Gates>,
    pub sandbox: Arc<Sandbox>,
}

impl Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Live")
    }
}

/// One gauge family: its samples, each a label and a value.
fn gauges<V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (String, V)>,
) -> fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    // A family without samples is left out (some parsers refuse one).
    let samples: Vec<(String, V)> = samples.into_iter().collect();
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value_of_label, value) in samples {
        let labels = [(label, Text(value_of_label))];
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let statuses = self.health.statuses();
        gauges(
            &mut encoder,
            "edgegate_region_circuit_state",
            "Region health: 0 up (closed), 1 degraded (half-open or slow), 2 down (open)",
            "region",
            statuses.iter().map(|s| {
                let state: i64 = match s.health {
                    Health::Up => 0,
                    Health::Degraded => 1,
                    Health::Down => 2,
                };
                (s.region.clone(), state)
            }),
        )?;
        let traps = encoder.encode_descriptor(
            "edgegate_sandbox_traps",
            "Sandbox instances replaced after a trap",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.sandbox.traps()).encode(traps)?;

        let loads = self.loads.loads();
        if !loads.is_empty() {
            gauges(
                &mut encoder,
                "edgegate_replica_in_flight",
                "This runner's attempts in flight, by replica",
                "target",
                loads
                    .iter()
                    .map(|l| (l.target.clone(), i64::from(l.in_flight))),
            )?;
            gauges(
                &mut encoder,
                "edgegate_replica_first_token_seconds",
                "Moving average of the time to first token, by replica",
                "target",
                loads
                    .iter()
                    .filter_map(|l| Some((l.target.clone(), l.latency_ms? / 1e3))),
            )?;
            let reported: Vec<(String, BackendLoad)> = statuses
                .iter()
                .filter(|s| loads.iter().any(|l| l.target == s.region))
                .filter_map(|s| Some((s.region.clone(), s.backend?)))
                .collect();
            gauges(
                &mut encoder,
                "edgegate_replica_reported_running",
                "Sequences running, as the replica's metrics last said",
                "target",
                reported
                    .iter()
                    .map(|(t, b)| (t.clone(), i64::from(b.running))),
            )?;
            gauges(
                &mut encoder,
                "edgegate_replica_reported_waiting",
                "Requests waiting, as the replica's metrics last said",
                "target",
                reported
                    .iter()
                    .map(|(t, b)| (t.clone(), i64::from(b.waiting))),
            )?;
        }

        let gates = self.gates.snapshot();
        if !gates.waiting.is_empty() {
            gauges(
                &mut encoder,
                "edgegate_gate_waiting",
                "Requests waiting for a replica with room, by region",
                "region",
                gates
                    .waiting
                    .iter()
                    .map(|(r, w)| (r.clone(), i64::try_from(*w).unwrap_or(i64::MAX))),
            )?;
            gauges(
                &mut encoder,
                "edgegate_gate_permits",
                "Requests a replica with a capacity is serving for this runner",
                "target",
                gates
                    .permits
                    .iter()
                    .map(|(t, p)| (t.clone(), i64::from(*p))),
            )?;
        }
        Ok(())
    }
}
