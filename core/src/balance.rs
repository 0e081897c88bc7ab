//! Which replica of a region serves a request: power of two choices over a
//! cost that grows with the replica's queue (this host's requests in flight,
//! or what its metrics report running, plus its waiting queue) and its
//! latency estimate; and prefix affinity, which keeps a conversation on one
//! replica (so its prefix cache is reused) while that replica is not
//! saturated and stays within a band of the least loaded one. Stateless across requests and hosts:
//! the affinity replica is a rendezvous hash of the conversation, so every
//! isolate and every runner sends a conversation to the same place.

use crate::config::{Balancing, Region};
use crate::geo::{RegionStatus, health_rank, target_health};
use crate::load::TargetLoad;
use crate::routing::stable_hash;
use serde_json::{Map, Value};

/// Cache use past which a replica's cost doubles: vLLM starts preempting
/// sequences when its KV cache is full.
const KV_CACHE_FULL: f32 = 0.9;

/// Characters of a completion prompt that make its affinity key.
const PROMPT_PREFIX_CHARS: usize = 512;

/// A conversation's identity for affinity: its system prompt (every
/// leading `system` or `developer` message) and its first user message,
/// which every later turn repeats; for a completion, its prompt's first
/// 512 characters. `None` when there is nothing to share.
pub fn conversation_key(model: &str, body: &Map<String, Value>) -> Option<u64> {
    if let Some(Value::Array(messages)) = body.get("messages") {
        let mut parts: Vec<String> = vec![model.to_owned()];
        for m in messages {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            let content = m.get("content").map(Value::to_string).unwrap_or_default();
            parts.push(format!("{role}\u{0}{content}"));
            if role == "user" {
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                return Some(stable_hash(&refs));
            }
            if role != "system" && role != "developer" {
                return None;
            }
        }
        return None;
    }
    let prompt = match body.get("prompt")? {
        Value::String(s) => s.as_str(),
        Value::Array(items) => items.first()?.as_str()?,
        _ => return None,
    };
    let end = prompt
        .char_indices()
        .nth(PROMPT_PREFIX_CHARS)
        .map_or(prompt.len(), |(i, _)| i);
    (!prompt.is_empty()).then(|| stable_hash(&[model, &prompt[..end]]))
}

struct Candidate {
    index: usize,
    rank: u8,
    queue: u32,
    /// What its metrics report waiting (0 when not read).
    waiting: u32,
    latency: f64,
    cost: f64,
}

/// A replica's queue: this host's requests in flight to it, or what its
/// metrics report running if more, plus its reported waiting queue.
fn queue_of(target: &str, statuses: &[RegionStatus], loads: &[TargetLoad]) -> u32 {
    let in_flight = loads
        .iter()
        .find(|l| l.target == target)
        .map_or(0, |l| l.in_flight);
    let backend = statuses
        .iter()
        .find(|s| s.region == target)
        .and_then(|s| s.backend);
    match backend {
        Some(bk) => in_flight.max(bk.running).saturating_add(bk.waiting),
        None => in_flight,
    }
}

/// A region's load for sharing traffic with equally near regions: its
/// replicas' mean queue.
pub fn region_queue(region: &Region, statuses: &[RegionStatus], loads: &[TargetLoad]) -> f64 {
    let total: u64 = region
        .replicas
        .iter()
        .map(|r| u64::from(queue_of(&r.target, statuses, loads)))
        .sum();
    total as f64 / region.replicas.len().max(1) as f64
}

/// Orders a region's replicas for one request: the chosen one first, then
/// the others as failover (healthier, then cheaper, first).
pub fn order_replicas(
    region: &Region,
    statuses: &[RegionStatus],
    loads: &[TargetLoad],
    affinity: Option<u64>,
    spread_key: &str,
    b: &Balancing,
) -> Vec<usize> {
    if region.replicas.len() == 1 {
        return vec![0];
    }
    let load_of = |t: &str| loads.iter().find(|l| l.target == t);
    let fastest = region
        .replicas
        .iter()
        .filter_map(|r| load_of(&r.target)?.latency_ms)
        .min_by(f64::total_cmp);
    let mut candidates: Vec<Candidate> = region
        .replicas
        .iter()
        .enumerate()
        .map(|(index, r)| {
            let load = load_of(&r.target);
            let backend = statuses
                .iter()
                .find(|s| s.region == r.target)
                .and_then(|s| s.backend);
            let queue = queue_of(&r.target, statuses, loads);
            let latency = match (load.and_then(|l| l.latency_ms.map(|ms| (ms, l))), fastest) {
                (Some((ms, l)), Some(best)) => {
                    // Unrefreshed estimates drift back to the fastest.
                    let halvings = l.latency_age_ms as f64 / b.latency_half_life_ms as f64;
                    best + (ms - best) * 0.5f64.powf(halvings)
                }
                (_, Some(best)) => best,
                _ => 1.0,
            }
            .max(0.001);
            let full = backend
                .and_then(|bk| bk.kv_cache_usage)
                .is_some_and(|u| u >= KV_CACHE_FULL);
            let cost = f64::from(queue + 1) * latency * if full { 2.0 } else { 1.0 };
            Candidate {
                index,
                rank: health_rank(target_health(statuses, &r.target)),
                queue,
                waiting: backend.map_or(0, |bk| bk.waiting),
                latency,
                cost,
            }
        })
        .collect();
    let best_rank = candidates.iter().map(|c| c.rank).min().unwrap_or(0);
    let eligible: Vec<&Candidate> = candidates.iter().filter(|c| c.rank == best_rank).collect();
    let chosen = affine(region, &eligible, affinity, b).unwrap_or_else(|| {
        // Power of two choices: two replicas drawn by the request id.
        let mut drawn: Vec<(u64, &Candidate)> = eligible
            .iter()
            .map(|c| {
                (
                    stable_hash(&[spread_key, &region.replicas[c.index].name]),
                    *c,
                )
            })
            .collect();
        drawn.sort_by_key(|(h, _)| *h);
        drawn.truncate(2);
        drawn
            .into_iter()
            .map(|(_, c)| c)
            .min_by(|a, b| a.cost.total_cmp(&b.cost))
            .map_or(0, |c| c.index)
    });
    candidates.sort_by(|a, b| {
        (a.index != chosen)
            .cmp(&(b.index != chosen))
            .then(a.rank.cmp(&b.rank))
            .then(a.cost.total_cmp(&b.cost))
            .then(a.index.cmp(&b.index))
    });
    candidates.into_iter().map(|c| c.index).collect()
}

/// The conversation's replica, if it is within the band: not saturated
/// (no longer a waiting queue than the others report), at most
/// `affinity_slack_requests` more queued than the least queued, and at
/// most `affinity_latency_ratio` times slower than the fastest.
fn affine(
    region: &Region,
    eligible: &[&Candidate],
    affinity: Option<u64>,
    b: &Balancing,
) -> Option<usize> {
    let key = affinity.filter(|_| b.prefix_affinity)?.to_string();
    let home = eligible
        .iter()
        .max_by_key(|c| stable_hash(&[&key, &region.replicas[c.index].name]))?;
    let least_queue = eligible.iter().map(|c| c.queue).min()?;
    let least_waiting = eligible.iter().map(|c| c.waiting).min()?;
    let fastest = eligible.iter().map(|c| c.latency).min_by(f64::total_cmp)?;
    let within = home.waiting <= least_waiting
        && home.queue <= least_queue.saturating_add(b.affinity_slack_requests)
        && home.latency <= fastest * b.affinity_latency_ratio;
    within.then_some(home.index)
}

#[cfg(test)]
mod tests;
