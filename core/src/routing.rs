//! Model version choice: a weighted split (canary / A-B) with sticky
//! assignment per tenant and user, a per-route pin header, and the fallback
//! chain of versions to try when the chosen one fails.

use crate::config::{Config, Route, VersionRef};
use crate::error::GatewayError;
use crate::request::Headers;

/// A stable 64-bit hash (FNV-1a plus a final mix): the same on every host and
/// every run, so a user keeps their version everywhere.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.as_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separator so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finaliser: FNV's low bits alone are poorly spread.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Picks the version index for this caller.
pub fn choose_version(
    config: &Config,
    route: &Route,
    headers: &Headers,
    tenant_id: &str,
    user: Option<&str>,
) -> Result<usize, GatewayError> {
    let model = &config.models[route.model];
    if let Some(header) = &route.pin_header
        && let Some(pinned) = headers.get(header)
    {
        let pinned = pinned.trim();
        return model
            .versions
            .iter()
            .position(|v| v.name == pinned)
            .ok_or_else(|| {
                GatewayError::invalid(
                    format!(
                        "Header `{header}` pins version `{}`, which model `{}` does not have.",
                        pinned.chars().take(60).collect::<String>(),
                        model.name
                    ),
                    None,
                )
            });
    }
    if route.split.len() == 1 {
        return Ok(route.split[0].0);
    }
    let total: f64 = route.split.iter().map(|(_, w)| w).sum();
    // Uniform in [0, 1) from the top 53 bits of the sticky hash.
    let h = stable_hash(&[tenant_id, user.unwrap_or(""), &model.name]);
    let point = (h >> 11) as f64 / (1u64 << 53) as f64 * total;
    let mut acc = 0.0;
    for &(version, weight) in &route.split {
        acc += weight;
        if point < acc {
            return Ok(version);
        }
    }
    Ok(route.split[route.split.len() - 1].0)
}

/// The chosen version followed by the route's fallbacks, without repeats.
pub fn version_chain(route: &Route, chosen: usize) -> Vec<VersionRef> {
    let mut chain = vec![VersionRef {
        model: route.model,
        version: chosen,
    }];
    for v in &route.fallback {
        if !chain.contains(v) {
            chain.push(*v);
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: u64 = 3_845_239_290_359_986_625;

    #[test]
    fn stable_hash_is_stable_and_separated() {
        assert_eq!(stable_hash(&["a", "b"]), stable_hash(&["a", "b"]));
        assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
        // A fixed value: changing the hash would move users between versions.
        assert_eq!(stable_hash(&["tenant", "user"]), PINNED);
    }
}
