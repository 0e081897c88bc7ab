//! The attempts of a plan: each version of the chain at its regions (geo,
//! health, residency) and, within a region with several, its replicas
//! (load, affinity); reachable ones before those known to be down; at most
//! `max_attempts`. Then, when the route has a degradation policy, the same
//! for its smaller model, with its answer capped and marked.

use super::{Attempt, AttemptGate, Gateway, RequestContext};
use crate::admission::GateKey;
use crate::balance;
use crate::config::{Degrade, Region, Replica, Route, VersionRef};
use crate::error::GatewayError;
use crate::geo::{self, ClientGeo, GeoPoint};
use crate::request::ParsedBody;
use crate::routing::stable_hash;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Why a degraded attempt answers: the route's model could not.
pub const PRIMARY_UNAVAILABLE: &str = "primary_unavailable";
/// Or its replicas were full for longer than the request could wait.
pub const SATURATED: &str = "saturated";
/// Or every attempt failed, and a cached answer past its TTL answered.
pub const STALE: &str = "stale";

/// (version, region, replica) tries, reachable ones and those known down.
type Targets = (
    Vec<(VersionRef, usize, usize)>,
    Vec<(VersionRef, usize, usize)>,
);

struct Placer<'a> {
    gateway: &'a Gateway,
    route: &'a Route,
    parsed: &'a ParsedBody,
    ctx: &'a RequestContext,
    residency: Option<&'a str>,
    client: Option<GeoPoint>,
    /// Computed once, when a region has replicas to choose among.
    affinity: Option<Option<u64>>,
}

impl Placer<'_> {
    fn targets(&mut self, chain: &[VersionRef]) -> Targets {
        let config = self.gateway.config();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for v in chain {
            let serving = (0..config.regions.len()).filter(|&r| config.regions[r].serves(*v));
            let ctx = self.ctx;
            for r in geo::rank_regions(
                config,
                serving,
                self.client,
                &ctx.regions,
                &ctx.loads,
                self.residency,
                &ctx.request_id,
            ) {
                let region = &config.regions[r];
                let order = if region.replicas.len() == 1 {
                    vec![0]
                } else {
                    let (model, body) = (&config.models[self.route.model].name, &self.parsed.body);
                    let key = *self
                        .affinity
                        .get_or_insert_with(|| balance::conversation_key(model, body));
                    balance::order_replicas(
                        region,
                        &ctx.regions,
                        &ctx.loads,
                        key,
                        &ctx.request_id,
                        &config.balancing,
                    )
                };
                for replica in order {
                    let target = &region.replicas[replica].target;
                    let is_down = geo::target_health(&ctx.regions, target) == geo::Health::Down;
                    if is_down { &mut down } else { &mut up }.push((*v, r, replica));
                }
            }
        }
        (up, down)
    }
}

/// The attempts and their bodies, one body per (version, degraded).
#[derive(Default)]
struct Planned {
    attempts: Vec<Attempt>,
    bodies: Vec<String>,
    body_of: Vec<(VersionRef, bool)>,
}

impl Planned {
    fn add(
        &mut self,
        placer: &Placer,
        targets: Targets,
        max: usize,
        base: &str,
        degraded: Option<&str>,
    ) {
        let (parsed, ctx) = (placer.parsed, placer.ctx);
        let config = placer.gateway.config();
        let (up, down) = targets;
        for (v, r, replica) in up.into_iter().chain(down).take(max) {
            let key = (v, degraded.is_some());
            let body = match self.body_of.iter().position(|b| *b == key) {
                Some(i) => i,
                None => {
                    self.bodies
                        .push(with_model(&config.version(v).upstream_model, base));
                    self.body_of.push(key);
                    self.bodies.len() - 1
                }
            };
            let region = &config.regions[r];
            let replica = &region.replicas[replica];
            let gate = replica
                .capacity
                .map(|capacity| gate(ctx, region, replica, capacity));
            self.attempts.push(Attempt {
                region: replica.target.clone(),
                url: format!("{}{}", replica.base_url, parsed.endpoint.path()),
                model: config.models[v.model].name.clone(),
                version: config.version(v).name.clone(),
                body,
                degraded: degraded.map(str::to_owned),
                gate,
                // Named once the trace is known (`Gateway::admit`).
                span_id: String::new(),
                traceparent: String::new(),
                authorization: replica.authorization.clone(),
            });
        }
    }
}

impl Gateway {
    pub(super) fn plan_attempts(
        &self,
        route: &Route,
        chain: &[VersionRef],
        parsed: &ParsedBody,
        ctx: &RequestContext,
        residency: Option<&str>,
    ) -> Result<(Vec<Attempt>, Vec<String>), GatewayError> {
        let mut placer = Placer {
            gateway: self,
            route,
            parsed,
            ctx,
            residency,
            client: ctx.client_geo.as_ref().and_then(ClientGeo::point),
            affinity: None,
        };
        let max = route.settings.max_attempts as usize;
        let mut planned = Planned::default();
        let base = serde_json::to_string(&WithoutModel(&parsed.body)).unwrap_or_default();
        let targets = placer.targets(chain);
        planned.add(&placer, targets, max, &base, None);
        if let Some(degrade) = route.degrade {
            let targets = placer.targets(&[degrade.version]);
            let capped = capped(&parsed.body, degrade);
            let base = serde_json::to_string(&WithoutModel(&capped)).unwrap_or_default();
            let reason = Some(PRIMARY_UNAVAILABLE);
            planned.add(&placer, targets, max, &base, reason);
        }
        if planned.attempts.is_empty() {
            return Err(GatewayError::NoUpstream {
                model: self.config().models[route.model].name.clone(),
            });
        }
        Ok((planned.attempts, planned.bodies))
    }
}

/// A replica's gate: its region's (or, for a region whose gate is
/// sharded, the request's shard of it, `region#k`, with its share of the
/// capacity), its capacity lowered by the queue its metrics report (work it
/// already cannot start), and its latency estimate.
fn gate(ctx: &RequestContext, region: &Region, replica: &Replica, capacity: u32) -> AttemptGate {
    let (name, capacity) = match region.gate_shards {
        0 | 1 => (GateKey::whole(&region.name), capacity),
        n => {
            let shard = (stable_hash(&[&ctx.request_id, &region.name]) % u64::from(n)) as u32;
            // Shard k of n gets cap / n, and one more for k < cap % n.
            let share = capacity / n + u32::from(shard < capacity % n);
            (GateKey::shard(&region.name, shard, n), share)
        }
    };
    let waiting = ctx
        .regions
        .iter()
        .find(|s| s.region == replica.target)
        .and_then(|s| s.backend)
        .map_or(0, |b| b.waiting);
    let service_ms = ctx
        .loads
        .iter()
        .find(|l| l.target == replica.target)
        .and_then(|l| l.latency_ms)
        .map_or(1_000, |ms| ms.clamp(1.0, 600_000.0) as u64);
    AttemptGate {
        region: name,
        capacity: capacity
            .saturating_sub(waiting / region.gate_shards.max(1))
            .max(1),
        service_ms,
    }
}

/// The body with its answer capped at the policy's `max_tokens` (never raised).
fn capped(body: &Map<String, Value>, degrade: Degrade) -> Map<String, Value> {
    let mut body = body.clone();
    if let Some(cap) = degrade.max_tokens {
        for field in ["max_tokens", "max_completion_tokens"] {
            if let Some(v) = body.get_mut(field) {
                let n = v.as_u64().map_or(cap, |n| n.min(cap));
                *v = json!(n);
            }
        }
    }
    body
}

/// A request body without its `model`, serialised once for every version.
struct WithoutModel<'a>(&'a Map<String, Value>);

impl Serialize for WithoutModel<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.0.iter().filter(|(k, _)| *k != "model") {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `base` (a JSON object without `model`) with the backend's model name first.
pub(super) fn with_model(upstream_model: &str, base: &str) -> String {
    let name = Value::from(upstream_model).to_string();
    let rest = base.strip_prefix('{').unwrap_or("}");
    let sep = if rest == "}" { "" } else { "," };
    format!("{{\"model\":{name}{sep}{rest}")
}
