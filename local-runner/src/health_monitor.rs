//! Region health for the local runner: active probes of every region's
//! health endpoint on an interval, plus the outcome of every upstream try
//! (a passive circuit breaker), and where a region names its metrics, each
//! replica's queue and KV-cache use read with the probe. The breaker logic is the core's, linked
//! natively (observations are the host's own, trusted data); this module
//! only feeds it and caches the statuses it answers.

use edgegate_core::geo::RegionStatus;
use edgegate_core::health::{HealthBoard, HealthPolicy, Observation, PROBE_TIMEOUT_MS};
use edgegate_core::load::BackendLoad;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Statuses change with time (open → half-open), so the cache is short-lived.
const STATUS_TTL: Duration = Duration::from_millis(200);

/// A closed breaker only records latency on success, so successes are fed
/// to it at most this often per region; failures always are.
const SUCCESS_SAMPLE: Duration = Duration::from_millis(500);

pub struct HealthMonitor {
    board: Mutex<HealthBoard>,
    statuses: Mutex<(Instant, Vec<RegionStatus>)>,
    last_success: Mutex<HashMap<String, Instant>>,
}

impl HealthMonitor {
    pub fn new(policy: HealthPolicy) -> Self {
        HealthMonitor {
            board: Mutex::new(HealthBoard::new(policy)),
            statuses: Mutex::new((Instant::now() - STATUS_TTL * 2, Vec::new())),
            last_success: Mutex::new(HashMap::new()),
        }
    }

    pub fn observe(&self, region: &str, obs: Observation) {
        {
            let mut last = self.last_success.lock().unwrap_or_else(|p| p.into_inner());
            match obs {
                Observation::Success { .. } => {
                    let recent = last
                        .get(region)
                        .is_some_and(|t| t.elapsed() < SUCCESS_SAMPLE);
                    // While every recent answer succeeded, the breaker is closed.
                    if recent && self.is_up(region) {
                        return;
                    }
                    last.insert(region.to_owned(), Instant::now());
                }
                Observation::Failure => {
                    last.remove(region);
                }
            }
        }
        let now = crate::clock::now_ms();
        // The board's lock is released before the statuses' is taken:
        // `statuses()` takes them in the other order.
        let statuses = {
            let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
            board.observe(region, now, obs);
            board.statuses(now)
        };
        *self.statuses.lock().unwrap_or_else(|p| p.into_inner()) = (Instant::now(), statuses);
    }

    /// What a probe read from `target`'s metrics.
    pub fn observe_backend(&self, target: &str, load: Option<BackendLoad>) {
        let now = crate::clock::now_ms();
        let statuses = {
            let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
            board.observe_backend(target, now, load);
            board.statuses(now)
        };
        *self.statuses.lock().unwrap_or_else(|p| p.into_inner()) = (Instant::now(), statuses);
    }

    fn is_up(&self, region: &str) -> bool {
        let cached = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .1
            .iter()
            .find(|s| s.region == region)
            .is_some_and(|s| s.health == edgegate_core::geo::Health::Up)
    }

    /// What `admit` should know about region health right now.
    pub fn statuses(&self) -> Vec<RegionStatus> {
        {
            let cached = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
            if cached.0.elapsed() <= STATUS_TTL {
                return cached.1.clone();
            }
        }
        let statuses = {
            let board = self.board.lock().unwrap_or_else(|p| p.into_inner());
            board.statuses(crate::clock::now_ms())
        };
        *self.statuses.lock().unwrap_or_else(|p| p.into_inner()) =
            (Instant::now(), statuses.clone());
        statuses
    }
}

/// One replica to probe: its target, health URL, and metrics URL if read.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub region: String,
    pub url: String,
    pub metrics_url: Option<String>,
}

/// The replica's load from its Prometheus metrics, if they could be read.
async fn read_metrics(client: &reqwest::Client, url: &str) -> Option<BackendLoad> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    BackendLoad::from_prometheus(&response.text().await.ok()?)
}

/// Probes every target each `interval` until the process ends.
pub fn spawn_probes(monitor: Arc<HealthMonitor>, targets: Vec<ProbeTarget>, interval: Duration) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(PROBE_TIMEOUT_MS))
        .connect_timeout(Duration::from_millis(PROBE_TIMEOUT_MS))
        .build()
        .expect("an HTTP client with only timeouts set builds");
    for target in targets {
        let (monitor, client) = (monitor.clone(), client.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let started = Instant::now();
                let status = client
                    .get(&target.url)
                    .send()
                    .await
                    .ok()
                    .map(|r| r.status().as_u16());
                let latency_ms = started.elapsed().as_millis() as u64;
                let obs = Observation::of_probe(status, latency_ms);
                monitor.observe(&target.region, obs);
                if let Some(url) = &target.metrics_url {
                    let load = read_metrics(&client, url).await;
                    monitor.observe_backend(&target.region, load);
                }
            }
        });
    }
}
