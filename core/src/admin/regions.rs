//! `GET /admin/v1/regions`: each region the config names and each of its
//! replicas, with what this host knows of them now — health (the probes'
//! and requests' verdict), recent latency, what the replica's own
//! `/metrics` last said of its queue and KV cache, and this host's
//! requests in flight to it with their smoothed time to first token.

use crate::config::Config;
use crate::geo::{Health, RegionStatus, region_health};
use crate::load::TargetLoad;
use serde_json::{Value, json};

fn health_name(health: Option<Health>) -> &'static str {
    match health {
        Some(Health::Up) | None => "up",
        Some(Health::Degraded) => "degraded",
        Some(Health::Down) => "down",
    }
}

/// The regions and replicas as the admin API shows them.
pub fn regions_view(config: &Config, statuses: &[RegionStatus], loads: &[TargetLoad]) -> Value {
    let data: Vec<Value> = config
        .regions
        .iter()
        .map(|region| {
            let replicas: Vec<Value> = region
                .replicas
                .iter()
                .map(|replica| {
                    let status = statuses.iter().find(|s| s.region == replica.target);
                    let load = loads.iter().find(|l| l.target == replica.target);
                    let backend = status.and_then(|s| s.backend);
                    json!({
                        "name": replica.name,
                        "target": replica.target,
                        "health": health_name(status.map(|s| s.health)),
                        "latency_ms": status.and_then(|s| s.latency_ms),
                        "capacity": replica.capacity,
                        "running": backend.map(|b| b.running),
                        "waiting": backend.map(|b| b.waiting),
                        "kv_cache_usage": backend.and_then(|b| b.kv_cache_usage),
                        "in_flight": load.map(|l| l.in_flight),
                        "ttft_ewma_ms": load.and_then(|l| l.latency_ms).map(|ms| (ms * 10.0).round() / 10.0),
                    })
                })
                .collect();
            json!({
                "name": region.name,
                "health": health_name(region_health(statuses, region)),
                "residency": region.residency,
                "location": {"latitude": region.location.latitude, "longitude": region.location.longitude},
                "replicas": replicas,
            })
        })
        .collect();
    json!({"object": "list", "data": data})
}
