//! Regions and their replicas, and how load is balanced among replicas.

use super::raw::{RawAdmission, RawBalancing, RawPerPriority, RawRegion};
use super::{ConfigError, Lookup, Result, VersionRef};
use crate::admission::Priority;
use crate::geo::GeoPoint;

/// One endpoint serving a region's models (a vLLM or SGLang server, say).
#[derive(Debug, Clone)]
pub struct Replica {
    /// Unique within its region.
    pub name: String,
    /// Without a trailing slash.
    pub base_url: String,
    /// What its health and load are known by, in statuses, metrics and
    /// usage records: the region's name for a region given by `base_url`
    /// alone, `region/replica` otherwise.
    pub target: String,
    /// Requests it serves at once; `None`: no limit (not gated).
    pub capacity: Option<u32>,
    /// What it is sent as `Authorization`, from its `api_key_secret`.
    pub authorization: Option<Credential>,
}

/// A backend's `Authorization` value (`Bearer …`), made from a secret. It
/// never shows in `Debug` output, so no log or error can carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(String);

impl Credential {
    pub fn bearer(key: &str) -> Credential {
        Credential(format!("Bearer {key}"))
    }

    /// A header value kept as it is (an OTLP collector's token, say).
    pub fn verbatim(value: &str) -> Credential {
        Credential(value.to_owned())
    }

    pub fn header_value(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(…)")
    }
}

#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    /// Never empty.
    pub replicas: Vec<Replica>,
    pub location: GeoPoint,
    pub residency: Option<String>,
    pub capacity_weight: f64,
    /// (model, `None` = every version).
    pub serves: Vec<(usize, Option<usize>)>,
    pub health_path: String,
    /// Where each replica's Prometheus metrics are read with its health
    /// (vLLM's or SGLang's queue depth and KV-cache use); `None`: not read.
    pub metrics_path: Option<String>,
    /// How many gates share its replicas' capacities (a hot region's gate
    /// split, each request to one by its id); 1 unless configured.
    pub gate_shards: u32,
}

impl Region {
    pub fn serves(&self, v: VersionRef) -> bool {
        self.serves
            .iter()
            .any(|&(m, ver)| m == v.model && ver.is_none_or(|ver| ver == v.version))
    }
}

/// `regions[].gate_shards` at most.
const MAX_GATE_SHARDS: u32 = 64;

/// Priority admission to replicas with a `capacity` (`admission` in config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Requests that may wait in one region's queue.
    pub queue_limit: usize,
    /// How long a request of each priority may wait for a replica: low,
    /// normal, high.
    pub max_wait_ms: [u64; 3],
    /// How full (in % of its capacity) a replica may be for a request of
    /// each priority to be let in: the rest is headroom kept for the more
    /// important ones.
    pub fill_percent: [u64; 3],
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            queue_limit: 1024,
            max_wait_ms: [250, 2_000, 10_000],
            fill_percent: [70, 90, 100],
        }
    }
}

impl Admission {
    pub fn max_wait_ms(&self, p: Priority) -> u64 {
        self.max_wait_ms[p as usize]
    }

    pub fn fill_percent(&self, p: Priority) -> u64 {
        self.fill_percent[p as usize]
    }
}

/// Fills `values` (low, normal, high) from `raw`, each within `range`.
fn per_priority(
    path: &str,
    raw: Option<&RawPerPriority>,
    values: &mut [u64; 3],
    range: std::ops::RangeInclusive<u64>,
) -> Result<()> {
    let Some(w) = raw else {
        return Ok(());
    };
    for (i, (name, v)) in [("low", w.low), ("normal", w.normal), ("high", w.high)]
        .into_iter()
        .enumerate()
    {
        match v {
            None => {}
            Some(v) if range.contains(&v) => values[i] = v,
            Some(_) => {
                return Err(ConfigError::new(
                    format!("{path}.{name}"),
                    format!("must be from {} to {}", range.start(), range.end()),
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn validate_admission(raw: Option<&RawAdmission>) -> Result<Admission> {
    let d = Admission::default();
    let Some(raw) = raw else {
        return Ok(d);
    };
    let queue_limit = match raw.queue_limit {
        None => d.queue_limit,
        Some(n @ 1..=100_000) => n as usize,
        Some(_) => {
            return Err(ConfigError::new(
                "admission.queue_limit",
                "must be between 1 and 100000",
            ));
        }
    };
    let mut max_wait_ms = d.max_wait_ms;
    let waits = raw.max_wait_ms.as_ref();
    per_priority(
        "admission.max_wait_ms",
        waits,
        &mut max_wait_ms,
        0..=600_000,
    )?;
    let mut fill_percent = d.fill_percent;
    let fills = raw.fill_percent.as_ref();
    per_priority("admission.fill_percent", fills, &mut fill_percent, 1..=100)?;
    Ok(Admission {
        queue_limit,
        max_wait_ms,
        fill_percent,
    })
}

/// Load balancing among a region's replicas (`balancing` in config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balancing {
    /// Conversations stay on one replica (its prefix cache) while it is
    /// within the band below.
    pub prefix_affinity: bool,
    /// Requests a replica may have queued beyond the least loaded one and
    /// keep its conversations.
    pub affinity_slack_requests: u32,
    /// How many times slower than the fastest a replica may be and keep
    /// its conversations.
    pub affinity_latency_ratio: f64,
    /// A replica's latency estimate not refreshed for this long moves
    /// halfway to the region's fastest, so it is tried again.
    pub latency_half_life_ms: u64,
}

impl Default for Balancing {
    fn default() -> Self {
        Balancing {
            prefix_affinity: true,
            affinity_slack_requests: 8,
            affinity_latency_ratio: 2.0,
            latency_half_life_ms: 10_000,
        }
    }
}

pub(crate) fn validate_balancing(raw: Option<&RawBalancing>) -> Result<Balancing> {
    let d = Balancing::default();
    let Some(raw) = raw else {
        return Ok(d);
    };
    let ratio = raw
        .affinity_latency_ratio
        .unwrap_or(d.affinity_latency_ratio);
    if !(ratio.is_finite() && ratio >= 1.0) {
        return Err(ConfigError::new(
            "balancing.affinity_latency_ratio",
            "must be at least 1",
        ));
    }
    let half_life_s = raw
        .latency_half_life_seconds
        .unwrap_or(d.latency_half_life_ms / 1000);
    if half_life_s == 0 {
        return Err(ConfigError::new(
            "balancing.latency_half_life_seconds",
            "must be at least 1",
        ));
    }
    Ok(Balancing {
        prefix_affinity: raw.prefix_affinity.unwrap_or(d.prefix_affinity),
        affinity_slack_requests: raw
            .affinity_slack_requests
            .unwrap_or(d.affinity_slack_requests),
        affinity_latency_ratio: ratio,
        latency_half_life_ms: half_life_s.saturating_mul(1000),
    })
}

pub(crate) fn validate_location(path: &str, lat: f64, lon: f64) -> Result<GeoPoint> {
    if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
        return Err(ConfigError::new(
            format!("{path}.latitude"),
            "must be between -90 and 90",
        ));
    }
    if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
        return Err(ConfigError::new(
            format!("{path}.longitude"),
            "must be between -180 and 180",
        ));
    }
    Ok(GeoPoint {
        latitude: lat,
        longitude: lon,
    })
}

pub(super) fn validate_base_url(path: &str, url: &str) -> Result<String> {
    let base_url = url.trim_end_matches('/').to_owned();
    let valid_url = ["http://", "https://"].iter().any(|scheme| {
        base_url
            .strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
    });
    if !valid_url {
        return Err(ConfigError::new(path, "must be an http:// or https:// URL"));
    }
    Ok(base_url)
}

fn validate_path(path: &str, value: &str) -> Result<()> {
    if value.starts_with('/') {
        Ok(())
    } else {
        Err(ConfigError::new(path, "must start with `/`"))
    }
}

fn validate_capacity(path: &str, capacity: Option<u32>) -> Result<Option<u32>> {
    match capacity {
        Some(0) => Err(ConfigError::new(path, "must be at least 1")),
        c => Ok(c),
    }
}

/// The credential `secret` names, if it names one.
fn credential(path: &str, secret: Option<&String>, lookup: &Lookup) -> Result<Option<Credential>> {
    secret
        .map(|name| Ok(Credential::bearer(&lookup.secret(path, name)?)))
        .transpose()
}

fn validate_replicas(path: &str, r: &RawRegion, lookup: &Lookup) -> Result<Vec<Replica>> {
    let region_key = credential(
        &format!("{path}.api_key_secret"),
        r.api_key_secret.as_ref(),
        lookup,
    )?;
    if r.replicas.is_some() && r.capacity.is_some() {
        return Err(ConfigError::new(
            format!("{path}.capacity"),
            "with `replicas`, give each replica its `capacity`",
        ));
    }
    match (&r.base_url, &r.replicas) {
        (Some(url), None) => Ok(vec![Replica {
            name: r.name.clone(),
            base_url: validate_base_url(&format!("{path}.base_url"), url)?,
            target: r.name.clone(),
            capacity: validate_capacity(&format!("{path}.capacity"), r.capacity)?,
            authorization: region_key,
        }]),
        (None, Some(raw)) if !raw.is_empty() => {
            let mut replicas: Vec<Replica> = Vec::new();
            for (i, rep) in raw.iter().enumerate() {
                let p = format!("{path}.replicas[{i}]");
                let word = !rep.name.is_empty()
                    && rep
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !word {
                    return Err(ConfigError::new(
                        format!("{p}.name"),
                        "must be letters, digits, `-`, `_` or `.`",
                    ));
                }
                if replicas.iter().any(|x| x.name == rep.name) {
                    return Err(ConfigError::new(
                        format!("{p}.name"),
                        format!("duplicate replica `{}`", rep.name),
                    ));
                }
                replicas.push(Replica {
                    name: rep.name.clone(),
                    base_url: validate_base_url(&format!("{p}.base_url"), &rep.base_url)?,
                    target: format!("{}/{}", r.name, rep.name),
                    capacity: validate_capacity(&format!("{p}.capacity"), rep.capacity)?,
                    authorization: match &rep.api_key_secret {
                        Some(_) => credential(
                            &format!("{p}.api_key_secret"),
                            rep.api_key_secret.as_ref(),
                            lookup,
                        )?,
                        None => region_key.clone(),
                    },
                });
            }
            Ok(replicas)
        }
        (None, Some(_)) => Err(ConfigError::new(
            format!("{path}.replicas"),
            "must list at least one replica",
        )),

        (Some(_), Some(_)) => Err(ConfigError::new(
            format!("{path}.replicas"),
            "give `base_url` or `replicas`, not both",
        )),
        (None, None) => Err(ConfigError::new(
            format!("{path}.base_url"),
            "a region needs `base_url` or `replicas`",
        )),
    }
}

pub(crate) fn validate_region(path: &str, r: &RawRegion, lookup: &Lookup) -> Result<Region> {
    if !crate::names::is_valid(&r.name) {
        return Err(ConfigError::new(
            format!("{path}.name"),
            crate::names::NAME_RULE,
        ));
    }
    let replicas = validate_replicas(path, r, lookup)?;
    let capacity_weight = r.capacity_weight.unwrap_or(1.0);
    if !(capacity_weight.is_finite() && capacity_weight > 0.0) {
        return Err(ConfigError::new(
            format!("{path}.capacity_weight"),
            "must be > 0",
        ));
    }
    if r.models.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.models"),
            "must list at least one model",
        ));
    }
    let serves = r
        .models
        .iter()
        .enumerate()
        .map(|(i, spec)| lookup.model_spec(&format!("{path}.models[{i}]"), spec))
        .collect::<Result<Vec<_>>>()?;
    let gate_shards = r.gate_shards.unwrap_or(1);
    let smallest = replicas.iter().filter_map(|x| x.capacity).min();
    if !(1..=MAX_GATE_SHARDS).contains(&gate_shards) || smallest.is_some_and(|c| c < gate_shards) {
        return Err(ConfigError::new(
            format!("{path}.gate_shards"),
            format!(
                "must be from 1 to {MAX_GATE_SHARDS}, and at most the smallest replica capacity"
            ),
        ));
    }
    let health_path = r.health_path.clone().unwrap_or_else(|| "/health".into());
    validate_path(&format!("{path}.health_path"), &health_path)?;
    if let Some(m) = &r.metrics_path {
        validate_path(&format!("{path}.metrics_path"), m)?;
    }
    Ok(Region {
        name: r.name.clone(),
        replicas,
        location: validate_location(path, r.latitude, r.longitude)?,
        residency: r.residency.clone(),
        capacity_weight,
        serves,
        health_path,
        metrics_path: r.metrics_path.clone(),
        gate_shards,
    })
}
