//! Tenants and API keys created at run time through the admin API.
//!
//! They layer over the config's: ids are unique across both (a run-time
//! object cannot take a config object's id), the config's objects are
//! read-only through the API, and a key the config lists is recognised
//! before any store is read. The host keeps the records (local-runner in
//! memory and its state file; the Worker in its directory Durable Object,
//! with KV for the key lookups) and carries out the [`Change`]s each
//! operation returns ([`ops::apply`]); every rule is here.
//!
//! What must take effect on the very next request everywhere (a revoked,
//! expired or rotated-out key, a disabled tenant) is also kept as a
//! tenant's [`Standing`] with each of its quota stores, which every request
//! passes through: the reservation refuses ([`Standing::check`]).

mod limits;
pub mod ops;
pub mod views;

pub use limits::{KeyLimits, KeyLimitsInput, UNLIMITED};

use crate::auth::ApiKeyRecord;
use crate::error::GatewayError;
use crate::quota::{Budget, Level, QuotaLimits};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// What a run-time tenant is allowed, as the admin API takes it: the
/// config's tenant fields (`tier`, `models`, `ip_allow`, `ip_deny`,
/// `residency`), checked against the config by
/// [`crate::Config::tenant_from_settings`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub tier: String,
    /// Model names or aliases; absent or `["*"]`: every model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub ip_allow: Vec<String>,
    #[serde(default)]
    pub ip_deny: Vec<String>,
    #[serde(default)]
    pub residency: Option<String>,
}

/// A tenant created through the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: String,
    pub settings: TenantSettings,
    #[serde(default)]
    pub disabled: bool,
    pub created_ms: u64,
}

/// One hash an API key is known by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHash {
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// A rotated-out key works until then (its grace period).
    #[serde(default)]
    pub until_ms: Option<u64>,
}

/// Whether a key may be used: what a revocation, an expiry or a rotation
/// changes, kept with the key's lookup record and with its tenant's quota
/// stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStanding {
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// The current key's hash first, then rotated-out ones.
    pub hashes: Vec<KeyHash>,
    /// The key's budget inside its tenant's ([`KeyLimits::budget`]): its
    /// tenant's quota stores take this one over a request's.
    #[serde(default)]
    pub budget: Option<QuotaLimits>,
}

impl KeyStanding {
    /// Why the key hashing to `sha256` may not be used at `now_ms`, if so.
    pub fn refusal(&self, sha256: &str, now_ms: u64) -> Option<Refusal> {
        if self.revoked {
            return Some(Refusal::KeyRevoked);
        }
        if self.expires_ms.is_some_and(|t| now_ms >= t) {
            return Some(Refusal::KeyExpired);
        }
        match self.hashes.iter().find(|h| h.sha256 == sha256) {
            Some(h) if h.until_ms.is_none_or(|t| now_ms < t) => None,
            _ => Some(Refusal::KeyRotated),
        }
    }
}

/// An API key created through the admin API. Only its hashes are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub tenant: String,
    pub name: String,
    #[serde(default)]
    pub user: Option<String>,
    /// The key's first characters, to tell keys apart in listings.
    pub prefix: String,
    pub standing: KeyStanding,
    pub created_ms: u64,
    #[serde(default)]
    pub revoked_ms: Option<u64>,
    #[serde(default)]
    pub rotated_ms: Option<u64>,
    #[serde(default)]
    pub limits: Option<KeyLimits>,
}

impl KeyRecord {
    /// What a host's key lookup finds for any of this key's hashes:
    /// `tenant` is the key's tenant's record when it is a run-time one.
    pub fn lookup(&self, tenant: Option<&TenantRecord>) -> ApiKeyRecord {
        ApiKeyRecord {
            tenant: self.tenant.clone(),
            id: Some(self.id.clone()),
            tier: None,
            user: self.user.clone(),
            standing: Some(self.standing.clone()),
            tenant_record: tenant.cloned(),
            models: self.limits.as_ref().and_then(|l| l.models.clone()),
        }
    }
}

/// Why a run-time key or tenant is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    KeyRevoked,
    KeyExpired,
    /// The key was rotated and its grace period is over.
    KeyRotated,
    TenantDisabled,
}

impl Refusal {
    pub fn error(self) -> GatewayError {
        match self {
            Refusal::KeyRevoked => GatewayError::unauthenticated("this API key has been revoked"),
            Refusal::KeyExpired => GatewayError::unauthenticated("this API key has expired"),
            Refusal::KeyRotated => GatewayError::unauthenticated(
                "this API key has been rotated and its grace period is over",
            ),
            Refusal::TenantDisabled => GatewayError::PermissionDenied {
                reason: "the tenant is disabled".into(),
            },
        }
    }
}

/// The run-time key a request presented, for its tenant's quota store to
/// check against the tenant's [`Standing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresentedKey {
    pub id: String,
    /// Hex SHA-256 of the presented key.
    pub sha256: String,
}

/// What a tenant's quota stores hold of its run-time objects: whether it
/// is disabled and each run-time key's standing. A key it does not hold
/// (a config key, a hand-written KV record) is not its concern.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub keys: HashMap<String, KeyStanding>,
}

/// One change to a tenant's [`Standing`], sent to each of its quota stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StandingChange {
    Tenant { disabled: bool },
    Key { id: String, standing: KeyStanding },
}

impl Standing {
    pub fn apply(&mut self, change: StandingChange) {
        match change {
            StandingChange::Tenant { disabled } => self.disabled = disabled,
            StandingChange::Key { id, standing } => {
                self.keys.insert(id, standing);
            }
        }
    }

    /// Why a request of this tenant presenting `key` is refused at
    /// `now_ms`, if it is.
    pub fn check(&self, key: Option<&PresentedKey>, now_ms: u64) -> Option<Refusal> {
        if self.disabled {
            return Some(Refusal::TenantDisabled);
        }
        let key = key?;
        self.keys.get(&key.id)?.refusal(&key.sha256, now_ms)
    }

    /// A reservation's budgets with the presented run-time key's as this
    /// standing holds it: its word wins over the request's, which may come
    /// from a stale lookup (a key it does not hold keeps the request's).
    pub fn budgets(&self, key: Option<&PresentedKey>, budgets: &[Budget]) -> Vec<Budget> {
        let held = key.and_then(|k| Some((k, self.keys.get(&k.id)?)));
        let Some((key, standing)) = held else {
            return budgets.to_vec();
        };
        let level = Level::Key(key.id.clone());
        let own = standing.budget.clone().map(|limits| Budget {
            level: level.clone(),
            limits,
        });
        own.into_iter()
            .chain(budgets.iter().filter(|b| b.level != level).cloned())
            .collect()
    }
}

/// One object an operation wrote: the host persists it and carries out
/// what follows from it ([`Change::standing`], and the key lookups of
/// [`ops::lookups`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Tenant(TenantRecord),
    Key(Box<KeyRecord>),
}

impl Change {
    /// The tenant whose quota stores hear of it.
    pub fn tenant(&self) -> &str {
        match self {
            Change::Tenant(t) => &t.id,
            Change::Key(k) => &k.tenant,
        }
    }

    /// What the tenant's quota stores are told.
    pub fn standing(&self) -> StandingChange {
        match self {
            Change::Tenant(t) => StandingChange::Tenant {
                disabled: t.disabled,
            },
            Change::Key(k) => StandingChange::Key {
                id: k.id.clone(),
                standing: k.standing.clone(),
            },
        }
    }
}

/// How both hosts keep the records in SQLite: one table of tenants, one of
/// keys, each row an id and the record as JSON.
pub mod sql {
    pub const CREATE_TENANTS: &str =
        "CREATE TABLE IF NOT EXISTS directory_tenants (id TEXT PRIMARY KEY, record TEXT NOT NULL)";
    pub const CREATE_KEYS: &str =
        "CREATE TABLE IF NOT EXISTS directory_keys (id TEXT PRIMARY KEY, record TEXT NOT NULL)";
    pub const SELECT_TENANTS: &str = "SELECT record FROM directory_tenants ORDER BY id";
    pub const SELECT_KEYS: &str = "SELECT record FROM directory_keys ORDER BY id";
}

impl Change {
    /// The row that keeps it: its upsert statement (parameters: id, record),
    /// its id and the record as JSON.
    pub fn row(&self) -> Result<(&'static str, &str, String), serde_json::Error> {
        Ok(match self {
            Change::Tenant(t) => (
                "INSERT OR REPLACE INTO directory_tenants (id, record) VALUES (?, ?)",
                &t.id,
                serde_json::to_string(t)?,
            ),
            Change::Key(k) => (
                "INSERT OR REPLACE INTO directory_keys (id, record) VALUES (?, ?)",
                &k.id,
                serde_json::to_string(k)?,
            ),
        })
    }
}

/// The run-time records a host keeps, as [`ops::apply`] reads them.
pub trait DirectoryStore {
    fn tenant(&self, id: &str) -> Option<TenantRecord>;
    /// Every run-time tenant, in id order.
    fn tenants(&self) -> Vec<TenantRecord>;
    fn key(&self, id: &str) -> Option<KeyRecord>;
    /// Every run-time key, of one tenant or all, in id order.
    fn keys(&self, tenant: Option<&str>) -> Vec<KeyRecord>;
}

/// A host's run-time records in memory, with what requests look up in
/// them: each key's hashes, each tenant's standing.
#[derive(Debug, Default)]
pub struct Records {
    tenants: BTreeMap<String, TenantRecord>,
    keys: BTreeMap<String, KeyRecord>,
    /// A key's hex SHA-256 (current or rotated-out) → its id.
    by_hash: HashMap<String, String>,
    standings: HashMap<String, Standing>,
}

impl Records {
    /// Takes in one written (or loaded) record.
    pub fn add(&mut self, change: Change) {
        let standing = change.standing();
        self.standings
            .entry(change.tenant().to_owned())
            .or_default()
            .apply(standing);
        match change {
            Change::Tenant(t) => {
                self.tenants.insert(t.id.clone(), t);
            }
            Change::Key(k) => {
                for h in &k.standing.hashes {
                    self.by_hash.insert(h.sha256.clone(), k.id.clone());
                }
                self.keys.insert(k.id.clone(), *k);
            }
        }
    }

    /// The records from their stored rows ([`sql::SELECT_TENANTS`],
    /// [`sql::SELECT_KEYS`]).
    pub fn from_rows(
        tenants: impl IntoIterator<Item = String>,
        keys: impl IntoIterator<Item = String>,
    ) -> Result<Records, serde_json::Error> {
        let mut records = Records::default();
        for json in tenants {
            records.add(Change::Tenant(serde_json::from_str(&json)?));
        }
        for json in keys {
            records.add(Change::Key(Box::new(serde_json::from_str(&json)?)));
        }
        Ok(records)
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// What a key lookup finds for a presented key's hex SHA-256.
    pub fn lookup(&self, sha256: &str) -> Option<ApiKeyRecord> {
        let key = self.keys.get(self.by_hash.get(sha256)?)?;
        Some(key.lookup(self.tenants.get(&key.tenant)))
    }

    /// Why `tenant`'s standing refuses a request now, if it does.
    pub fn refusal(
        &self,
        tenant: &str,
        presented: Option<&PresentedKey>,
        now_ms: u64,
    ) -> Option<Refusal> {
        self.standings.get(tenant)?.check(presented, now_ms)
    }
}

impl DirectoryStore for Records {
    fn tenant(&self, id: &str) -> Option<TenantRecord> {
        self.tenants.get(id).cloned()
    }

    fn tenants(&self) -> Vec<TenantRecord> {
        self.tenants.values().cloned().collect()
    }

    fn key(&self, id: &str) -> Option<KeyRecord> {
        self.keys.get(id).cloned()
    }

    fn keys(&self, tenant: Option<&str>) -> Vec<KeyRecord> {
        self.keys
            .values()
            .filter(|k| tenant.is_none_or(|t| k.tenant == t))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests;
