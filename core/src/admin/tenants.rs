//! Tenants as the admin API shows them. Tenants the config lists are read
//! here; tenants created at run time will layer over them.

use crate::config::{Config, Tenant};
use crate::error::GatewayError;
use serde_json::{Value, json};

/// One tenant as JSON: its settings, where it is defined, and whether it
/// is served.
fn view(config: &Config, t: &Tenant) -> Value {
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
    })
}

/// `GET /admin/v1/tenants`.
pub fn list(config: &Config) -> Value {
    let data: Vec<Value> = config.tenants.iter().map(|t| view(config, t)).collect();
    json!({"object": "list", "data": data})
}

/// `GET /admin/v1/tenants/{id}`: 404 for a tenant the gateway does not know.
pub fn get(config: &Config, id: &str) -> Result<Value, GatewayError> {
    config
        .tenant(id)
        .map(|i| view(config, &config.tenants[i]))
        .ok_or_else(|| GatewayError::NotFound {
            what: format!("tenant `{}`", id.chars().take(128).collect::<String>()),
        })
}
