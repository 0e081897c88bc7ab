//! Who is calling: API keys (by SHA-256, from config or provisioned by the
//! host's key store), JWTs, and the tenant's IP allow/deny lists.

pub mod jwt;

use crate::config::{Config, Tenant};
use crate::directory::{KeyStanding, PresentedKey, Refusal, TenantRecord};
use crate::error::GatewayError;
use crate::quota::QuotaLimits;
use crate::request::Headers;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// An API key provisioned outside the config, keyed by the key's SHA-256:
/// one created through the admin API ([`crate::directory::KeyRecord::lookup`]),
/// or a record written by hand (Workers KV). The host looks it up by
/// [`key_to_look_up`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub tenant: String,
    /// The key's id in usage records and the ledger; by default the id
    /// derived from its hash ([`derived_key_id`]).
    #[serde(default)]
    pub id: Option<String>,
    /// Required when the tenant is neither in the config nor a run-time one.
    #[serde(default)]
    pub tier: Option<String>,
    /// The user the key belongs to (its limits apply to the key's requests).
    #[serde(default)]
    pub user: Option<String>,
    /// A run-time key's standing (revoked, expiry, its hashes); its
    /// tenant's quota stores check it again on every request.
    #[serde(default)]
    pub standing: Option<KeyStanding>,
    /// The key's tenant, when it is a run-time one.
    #[serde(default)]
    pub tenant_record: Option<TenantRecord>,
    /// The models the key may use, within its tenant's.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// Where the caller's tenant is defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRef {
    /// Index into `Config::tenants`.
    Config(usize),
    /// A run-time tenant, checked against the config.
    Runtime(Box<Tenant>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ApiKey,
    Jwt,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    /// `None` for a tenant known only from a token or a hand-written key
    /// record.
    pub tenant: Option<TenantRef>,
    pub tier: usize,
    pub user: Option<String>,
    pub method: AuthMethod,
    /// The API key's id (never the key); `None` for a token.
    pub key_id: Option<String>,
    /// A run-time key, for the quota store's standing check.
    pub presented: Option<PresentedKey>,
    /// A run-time key's budget inside its tenant's.
    pub key_budget: Option<QuotaLimits>,
    /// A run-time key's model subset (names or aliases).
    pub key_models: Option<Vec<String>>,
}

impl Principal {
    pub fn tenant<'a>(&'a self, config: &'a Config) -> Option<&'a Tenant> {
        match &self.tenant {
            Some(TenantRef::Config(i)) => Some(&config.tenants[*i]),
            Some(TenantRef::Runtime(t)) => Some(t),
            None => None,
        }
    }
}

/// The credential a request presents: `Authorization: Bearer …` or `x-api-key`.
pub fn presented_credential(headers: &Headers) -> Option<&str> {
    if let Some(v) = headers.get("authorization") {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v);
        return Some(token.trim()).filter(|t| !t.is_empty());
    }
    headers
        .get("x-api-key")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The id of a key known by its hash alone (listed in the config, or a
/// provisioned record without an id): `cfg_` and the hash's first 16 hex
/// digits, which name the key without revealing it.
pub fn derived_key_id(hash: &[u8; 32]) -> String {
    format!("cfg_{}", hex::encode(&hash[..8]))
}

/// Hex SHA-256 of the presented API key (not for JWTs): what a host looks up
/// in its key store before calling `admit`.
pub fn presented_key_hash(headers: &Headers) -> Option<String> {
    presented_credential(headers)
        .filter(|c| !jwt::looks_like_jwt(c))
        .map(|c| hex::encode(key_hash(c)))
}

/// The key-store entry a host should read for this request: the presented
/// API key's hex SHA-256 when the config does not list the key (listed keys
/// and JWTs never touch the store).
pub fn key_to_look_up(config: &Config, headers: &Headers) -> Option<String> {
    let key = presented_credential(headers).filter(|c| !jwt::looks_like_jwt(c))?;
    let hash = key_hash(key);
    config
        .tenant_by_key_hash(&hash)
        .is_none()
        .then(|| hex::encode(hash))
}

pub fn authenticate(
    config: &Config,
    headers: &Headers,
    now_ms: u64,
    provisioned: Option<&ApiKeyRecord>,
) -> Result<Principal, GatewayError> {
    let credential = presented_credential(headers).ok_or_else(|| {
        GatewayError::unauthenticated(
            "no API key provided (use `Authorization: Bearer <key>` or `x-api-key`)",
        )
    })?;
    if jwt::looks_like_jwt(credential) {
        return from_token(config, credential, now_ms / 1000);
    }
    let hash = key_hash(credential);
    if let Some(t) = config.tenant_by_key_hash(&hash) {
        let tenant = &config.tenants[t];
        return Ok(Principal {
            tenant_id: tenant.id.clone(),
            tenant: Some(TenantRef::Config(t)),
            tier: tenant.tier,
            user: None,
            method: AuthMethod::ApiKey,
            key_id: Some(derived_key_id(&hash)),
            presented: None,
            key_budget: None,
            key_models: None,
        });
    }
    match provisioned {
        Some(record) => from_record(config, record, &hash, now_ms),
        None => Err(GatewayError::unauthenticated("invalid API key")),
    }
}

fn from_record(
    config: &Config,
    record: &ApiKeyRecord,
    hash: &[u8; 32],
    now_ms: u64,
) -> Result<Principal, GatewayError> {
    let unusable = || GatewayError::unauthenticated("API key record is not usable");
    // A tenant that could share another's quota store is refused.
    if !crate::names::is_valid(&record.tenant) {
        return Err(unusable());
    }
    let sha256 = hex::encode(hash);
    if let Some(refusal) = record
        .standing
        .as_ref()
        .and_then(|s| s.refusal(&sha256, now_ms))
    {
        return Err(refusal.error());
    }
    let tenant = match (config.tenant(&record.tenant), &record.tenant_record) {
        (Some(t), _) => Some(TenantRef::Config(t)),
        (None, Some(runtime)) => {
            if runtime.id != record.tenant {
                return Err(unusable());
            }
            if runtime.disabled {
                return Err(Refusal::TenantDisabled.error());
            }
            // Settings checked when they were written; a config change since
            // (a tier removed) makes them unusable, not guessed.
            let tenant = config
                .tenant_from_settings(&runtime.id, &runtime.settings)
                .map_err(|_| unusable())?;
            Some(TenantRef::Runtime(Box::new(tenant)))
        }
        (None, None) => None,
    };
    let tier = match (&record.tier, &tenant) {
        (Some(name), _) => config.tier(name),
        (None, Some(TenantRef::Config(t))) => Some(config.tenants[*t].tier),
        (None, Some(TenantRef::Runtime(t))) => Some(t.tier),
        (None, None) => None,
    }
    // A record naming an unknown tier is an operator mistake; refuse rather
    // than guess a tier.
    .ok_or_else(unusable)?;
    let key_id = record.id.clone().unwrap_or_else(|| derived_key_id(hash));
    Ok(Principal {
        tenant_id: record.tenant.clone(),
        tenant,
        tier,
        user: record.user.clone(),
        method: AuthMethod::ApiKey,
        presented: record.standing.is_some().then(|| PresentedKey {
            id: key_id.clone(),
            sha256,
        }),
        key_id: Some(key_id),
        key_budget: record.standing.as_ref().and_then(|s| s.budget.clone()),
        key_models: record.models.clone(),
    })
}

fn from_token(config: &Config, token: &str, now_s: u64) -> Result<Principal, GatewayError> {
    let (issuer, claims) = jwt::verify(&config.jwt_issuers, token, now_s)?;
    let issuer = &config.jwt_issuers[issuer];
    if !crate::names::is_valid(&claims.tenant) {
        return Err(GatewayError::unauthenticated(
            "token names an invalid tenant",
        ));
    }
    let tenant = config.tenant(&claims.tenant);
    let tier = match (&claims.tier, tenant) {
        (Some(name), _) => config
            .tier(name)
            .ok_or_else(|| GatewayError::unauthenticated("token names an unknown tier"))?,
        (None, Some(t)) => config.tenants[t].tier,
        (None, None) => issuer
            .unlisted_tenant_tier
            .ok_or_else(|| GatewayError::unauthenticated("token names an unknown tenant"))?,
    };
    if tenant.is_none() && issuer.unlisted_tenant_tier.is_none() {
        return Err(GatewayError::unauthenticated(
            "token names an unknown tenant",
        ));
    }
    Ok(Principal {
        tenant_id: claims.tenant,
        tenant: tenant.map(TenantRef::Config),
        tier,
        user: claims.user,
        method: AuthMethod::Jwt,
        key_id: None,
        presented: None,
        key_budget: None,
        key_models: None,
    })
}

/// Applies the tenant's IP deny list, then its allow list (empty = allow all).
pub fn check_ip(tenant: Option<&Tenant>, client_ip: Option<IpAddr>) -> Result<(), GatewayError> {
    let Some(tenant) = tenant else { return Ok(()) };
    if tenant.ip_allow.is_empty() && tenant.ip_deny.is_empty() {
        return Ok(());
    }
    let denied = || GatewayError::PermissionDenied {
        reason: "requests from this IP address are not allowed for this tenant".into(),
    };
    let ip = client_ip.ok_or_else(denied)?;
    if tenant.ip_deny.iter().any(|c| c.contains(ip)) {
        return Err(denied());
    }
    if !tenant.ip_allow.is_empty() && !tenant.ip_allow.iter().any(|c| c.contains(ip)) {
        return Err(denied());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
