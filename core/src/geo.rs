//! Region choice: the nearest healthy region first, then the failover order.
//! Health is an input from the host (probes, circuit breakers); residency is
//! a hard filter, never a preference.

use crate::config::{Config, Region};
use crate::load::TargetLoad;
use crate::routing::stable_hash;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    pub latitude: f64,
    pub longitude: f64,
}

impl GeoPoint {
    /// Great-circle distance in kilometres (haversine).
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.longitude - self.longitude).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

/// Where the client is, as the host knows it (e.g. Cloudflare's `request.cf`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientGeo {
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub country: Option<String>,
    /// Two-letter continent code: AF, AN, AS, EU, NA, OC, SA.
    pub continent: Option<String>,
    pub colo: Option<String>,
}

impl ClientGeo {
    /// The location a trusted proxy in front of the gateway put in
    /// `x-edgegate-client-{latitude,longitude,country,continent}`. Only for
    /// deployments that strip these headers from clients (hosts opt in).
    pub fn from_trusted_headers(headers: &crate::request::Headers) -> Option<ClientGeo> {
        let num = |name: &str| headers.get(name).and_then(|v| v.trim().parse::<f64>().ok());
        let text = |name: &str| headers.get(name).map(|v| v.trim().to_owned());
        let geo = ClientGeo {
            latitude: num("x-edgegate-client-latitude"),
            longitude: num("x-edgegate-client-longitude"),
            country: text("x-edgegate-client-country"),
            continent: text("x-edgegate-client-continent"),
            colo: None,
        };
        (geo != ClientGeo::default()).then_some(geo)
    }

    /// The best point we have: coordinates, else the continent's rough centre.
    pub fn point(&self) -> Option<GeoPoint> {
        match (self.latitude, self.longitude) {
            (Some(latitude), Some(longitude))
                if latitude.is_finite()
                    && longitude.is_finite()
                    && latitude.abs() <= 90.0
                    && longitude.abs() <= 180.0 =>
            {
                Some(GeoPoint {
                    latitude,
                    longitude,
                })
            }
            _ => self.continent.as_deref().and_then(continent_centre),
        }
    }
}

fn continent_centre(code: &str) -> Option<GeoPoint> {
    let (latitude, longitude) = match code.to_ascii_uppercase().as_str() {
        "AF" => (2.0, 21.0),
        "AN" => (-80.0, 0.0),
        "AS" => (30.0, 100.0),
        "EU" => (50.0, 10.0),
        "NA" => (40.0, -100.0),
        "OC" => (-25.0, 140.0),
        "SA" => (-15.0, -60.0),
        _ => return None,
    };
    Some(GeoPoint {
        latitude,
        longitude,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Up,
    Degraded,
    Down,
}

/// A host's current view of one region, or of one replica of a region
/// with several (`region` is then the replica's target, `region/replica`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionStatus {
    pub region: String,
    pub health: Health,
    /// Recent probe or request latency.
    pub latency_ms: Option<u32>,
    /// What the replica's metrics said last, when they are read.
    #[serde(default)]
    pub backend: Option<crate::load::BackendLoad>,
}

/// A region's health: its own status, or the best of its replicas' (a
/// replica nobody has a status for counts as up).
pub fn region_health(statuses: &[RegionStatus], region: &Region) -> Option<Health> {
    if let [only] = region.replicas.as_slice() {
        return statuses
            .iter()
            .find(|s| s.region == only.target)
            .map(|s| s.health);
    }
    region
        .replicas
        .iter()
        .map(|r| target_health(statuses, &r.target))
        .min_by_key(|h| health_rank(*h))
}

/// A target's health; up when nothing is known.
pub fn target_health(statuses: &[RegionStatus], target: &str) -> Health {
    statuses
        .iter()
        .find(|s| s.region == target)
        .map_or(Health::Up, |s| s.health)
}

pub fn health_rank(h: Health) -> u8 {
    match h {
        Health::Up => 0,
        Health::Degraded => 1,
        Health::Down => 2,
    }
}

/// Regions whose distances differ by less than this are treated as equally
/// near, and share traffic by capacity weight.
const DISTANCE_BAND_KM: f64 = 500.0;

/// Orders the regions in `candidates` for a client: healthy before degraded
/// before down (down ones stay last, as a last resort when health data is
/// stale), then nearest first in 500 km bands; within a band, weighted
/// rendezvous hashing on `spread_key` (the request id) shares traffic in
/// proportion to capacity weight. Regions whose residency differs from the
/// tenant's are dropped.
pub fn rank_regions(
    config: &Config,
    candidates: impl IntoIterator<Item = usize>,
    client: Option<GeoPoint>,
    statuses: &[RegionStatus],
    loads: &[TargetLoad],
    residency: Option<&str>,
    spread_key: &str,
) -> Vec<usize> {
    let origin = client.or(config.default_location);
    let mut ranked: Vec<(u8, u64, f64, usize)> = candidates
        .into_iter()
        .filter(|&i| residency.is_none_or(|r| config.regions[i].residency.as_deref() == Some(r)))
        .map(|i| {
            let region = &config.regions[i];
            let health_rank = region_health(statuses, region).map_or(0, health_rank);
            let distance = origin.map_or(0.0, |o| o.distance_km(&region.location));
            let band = (distance / DISTANCE_BAND_KM) as u64;
            let u = (stable_hash(&[spread_key, &region.name]) >> 11) as f64 / (1u64 << 53) as f64;
            // -ln(u)/w: the smallest wins with probability w / Σw, where w
            // is the capacity weight over one plus the region's queue.
            let queue = crate::balance::region_queue(region, statuses, loads);
            let spread = -(u.max(f64::MIN_POSITIVE)).ln() * (1.0 + queue) / region.capacity_weight;
            (health_rank, band, spread, i)
        })
        .collect();
    ranked.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.total_cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    ranked.into_iter().map(|(.., i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_plausible() {
        let paris = GeoPoint {
            latitude: 48.8566,
            longitude: 2.3522,
        };
        let nyc = GeoPoint {
            latitude: 40.7128,
            longitude: -74.0060,
        };
        let d = paris.distance_km(&nyc);
        assert!((5800.0..5880.0).contains(&d), "{d}");
        assert_eq!(paris.distance_km(&paris), 0.0);
    }

    #[test]
    fn trusted_headers() {
        let h = crate::request::Headers::new([
            ("X-Edgegate-Client-Latitude", " 48.85"),
            ("x-edgegate-client-longitude", "2.35"),
            ("x-edgegate-client-continent", "EU"),
        ]);
        let g = ClientGeo::from_trusted_headers(&h).expect("geo");
        assert_eq!((g.latitude, g.longitude), (Some(48.85), Some(2.35)));
        assert_eq!(g.continent.as_deref(), Some("EU"));
        assert_eq!(
            ClientGeo::from_trusted_headers(&crate::request::Headers::default()),
            None
        );
    }

    #[test]
    fn continent_fallback_and_bad_coordinates() {
        let g = ClientGeo {
            latitude: Some(f64::NAN),
            longitude: Some(3.0),
            continent: Some("eu".into()),
            ..Default::default()
        };
        let p = g.point().expect("continent centre");
        assert_eq!(p.latitude, 50.0);
        assert_eq!(ClientGeo::default().point(), None);
    }

    #[test]
    fn equally_near_regions_share_traffic_by_capacity_weight_and_load() {
        let mut v = crate::testing::config_value();
        // Two regions a few km apart; the second has three times the capacity.
        v["regions"][0]["latitude"] = serde_json::json!(50.0);
        v["regions"][0]["longitude"] = serde_json::json!(8.0);
        v["regions"][0]["capacity_weight"] = serde_json::json!(1.0);
        v["regions"][1]["latitude"] = serde_json::json!(50.05);
        v["regions"][1]["longitude"] = serde_json::json!(8.05);
        v["regions"][1]["capacity_weight"] = serde_json::json!(3.0);
        let config = Config::from_json(&v.to_string(), &crate::testing::secrets()).expect("valid");
        let client = Some(GeoPoint {
            latitude: 50.0,
            longitude: 8.0,
        });
        let firsts = (0..4000)
            .filter(|i| {
                rank_regions(&config, [0, 1], client, &[], &[], None, &format!("req-{i}"))[0] == 1
            })
            .count();
        let share = firsts as f64 / 4000.0;
        assert!(
            (0.72..=0.78).contains(&share),
            "share of the 3x region: {share}"
        );
        // The same request id always gets the same order.
        let a = rank_regions(&config, [0, 1], client, &[], &[], None, "req-x");
        assert_eq!(
            a,
            rank_regions(&config, [0, 1], client, &[], &[], None, "req-x")
        );
        // The 3x region with 11 requests in flight and the other idle: the
        // shares are 1 : 3/12, so the idle one gets four fifths.
        let loads = [TargetLoad {
            target: config.regions[1].name.clone(),
            in_flight: 11,
            latency_ms: None,
            latency_age_ms: 0,
        }];
        let firsts = (0..4000)
            .filter(|i| {
                let order = rank_regions(
                    &config,
                    [0, 1],
                    client,
                    &[],
                    &loads,
                    None,
                    &format!("req-{i}"),
                );
                order[0] == 0
            })
            .count();
        let share = firsts as f64 / 4000.0;
        assert!(
            (0.77..=0.83).contains(&share),
            "share of the idle region: {share}"
        );
    }
}
