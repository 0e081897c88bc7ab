//! Tenants and keys as the admin API shows them: the config's and the
//! run-time ones alike, told apart by `source`. A key is shown once, when
//! it is made; never its hash.

use super::{KeyLimits, KeyRecord, TenantRecord};
use crate::auth::derived_key_id;
use crate::config::{Config, Tenant};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};

fn seconds(ms: Option<u64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::from(ms / 1000))
}

/// A config tenant.
pub fn config_tenant(config: &Config, t: &Tenant) -> Value {
    let models: Value = match &t.models {
        None => json!("*"),
        Some(list) => list
            .iter()
            .map(|&m| Value::from(config.models[m].name.as_str()))
            .collect(),
    };
    let cidrs = |list: &[crate::net::Cidr]| -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    };
    json!({
        "object": "tenant",
        "id": t.id,
        "tier": config.tiers[t.tier].name,
        "models": models,
        "ip_allow": cidrs(&t.ip_allow),
        "ip_deny": cidrs(&t.ip_deny),
        "residency": t.residency,
        "quota_shards": t.quota_shards,
        "disabled": false,
        "source": "config",
        "created_at": null,
    })
}

/// A run-time tenant.
pub fn tenant(t: &TenantRecord) -> Value {
    let s = &t.settings;
    let models = match &s.models {
        Some(list) if !list.iter().any(|m| m == "*") => json!(list),
        _ => json!("*"),
    };
    json!({
        "object": "tenant",
        "id": t.id,
        "tier": s.tier,
        "models": models,
        "ip_allow": s.ip_allow,
        "ip_deny": s.ip_deny,
        "residency": s.residency,
        "quota_shards": 1,
        "disabled": t.disabled,
        "source": "admin",
        "created_at": seconds(Some(t.created_ms)),
    })
}

/// Every tenant: the config's, then the run-time ones.
pub fn tenants(config: &Config, runtime: &[TenantRecord]) -> Value {
    let data: Vec<Value> = config
        .tenants
        .iter()
        .map(|t| config_tenant(config, t))
        .chain(runtime.iter().map(tenant))
        .collect();
    json!({"object": "list", "data": data})
}

/// A run-time key; `secret` only in the answer that made it.
pub fn key(k: &KeyRecord, secret: Option<&str>) -> Value {
    let mut v = json!({
        "object": "api_key",
        "id": k.id,
        "tenant": k.tenant,
        "name": k.name,
        "user": k.user,
        "prefix": k.prefix,
        "created_at": seconds(Some(k.created_ms)),
        "expires_at": seconds(k.standing.expires_ms),
        "rotated_at": seconds(k.rotated_ms),
        "revoked_at": seconds(k.revoked_ms),
        "last_used_at": null,
        "limits": k.limits.as_ref().map(KeyLimits::view),
        "source": "admin",
    });
    if let Some(secret) = secret {
        v["key"] = json!(secret);
    }
    v
}

/// The keys the config lists, by id (derived from the hash), of one
/// tenant or all.
fn config_keys<'c>(
    config: &'c Config,
    tenant: Option<&'c str>,
) -> impl Iterator<Item = (String, &'c Tenant)> {
    config
        .api_key_hashes()
        .map(|(hash, t)| (derived_key_id(hash), &config.tenants[t]))
        .filter(move |(_, t)| tenant.is_none_or(|want| t.id == want))
}

fn config_key_view(id: String, t: &Tenant) -> Value {
    json!({
        "object": "api_key",
        "id": id,
        "tenant": t.id,
        "name": null,
        "user": null,
        "prefix": null,
        "created_at": null,
        "expires_at": null,
        "rotated_at": null,
        "revoked_at": null,
        "last_used_at": null,
        "limits": null,
        "source": "config",
    })
}

/// A key the config lists, by its id.
pub fn config_key(config: &Config, id: &str) -> Option<Value> {
    config_keys(config, None)
        .find(|(k, _)| k == id)
        .map(|(k, t)| config_key_view(k, t))
}

/// Every key of one tenant or all: the config's (by id), then the run-time ones.
pub fn keys(config: &Config, tenant: Option<&str>, runtime: &[KeyRecord]) -> Value {
    let mut listed: Vec<(String, &Tenant)> = config_keys(config, tenant).collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let data: Vec<Value> = listed
        .into_iter()
        .map(|(id, t)| config_key_view(id, t))
        .chain(runtime.iter().map(|k| key(k, None)))
        .collect();
    json!({"object": "list", "data": data})
}

/// The key objects of an answer: itself if it is one, or a list's.
fn shown_keys(body: &mut Value) -> impl Iterator<Item = &mut Value> {
    let all = if body["object"] == "list" {
        match body.get_mut("data") {
            Some(Value::Array(items)) => items.as_mut_slice(),
            _ => &mut [],
        }
    } else {
        std::slice::from_mut(body)
    };
    all.iter_mut().filter(|v| v["object"] == "api_key")
}

/// The tenants of the keys an answer shows: whose ledgers say when each
/// was last used (empty when it shows none).
pub fn key_tenants(body: &Value) -> BTreeSet<String> {
    let all = match body.get("data") {
        Some(Value::Array(items)) if body["object"] == "list" => items.as_slice(),
        _ => std::slice::from_ref(body),
    };
    all.iter()
        .filter(|v| v["object"] == "api_key")
        .filter_map(|k| k["tenant"].as_str().map(str::to_owned))
        .collect()
}

/// Sets each shown key's `last_used_at` (seconds) from `last_used` (Unix
/// ms by key id, its tenant's ledger's latest admission); a key never used
/// keeps null.
pub fn show_last_used(body: &mut Value, last_used: &HashMap<String, u64>) {
    for key in shown_keys(body) {
        let at = key["id"].as_str().and_then(|id| last_used.get(id)).copied();
        if let Some(ms) = at {
            key["last_used_at"] = seconds(Some(ms));
        }
    }
}
