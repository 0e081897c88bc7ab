//! The admin API's tenant and key operations: parsed from the request
//! (every bad field a 400 naming it), then applied to the host's records
//! ([`apply`]), which answers and says what changed.
//!
//! | call | operation |
//! | --- | --- |
//! | `GET /admin/v1/tenants`, `POST` `{id, tier, models?, ip_allow?, ip_deny?, residency?}` | list, create (201) |
//! | `GET`, `PATCH /admin/v1/tenants/{id}` | read, change settings |
//! | `POST /admin/v1/tenants/{id}/disable`, `/enable` | refuse (403) or serve its requests again |
//! | `GET /admin/v1/keys?tenant=`, `POST` `{tenant, name, user?, expires_at?, limits?}` | list, create (201, the key shown once) |
//! | `GET`, `PATCH`, `DELETE /admin/v1/keys/{id}` | read, change `name`/`user`/`expires_at`/`limits`, revoke |
//! | `POST /admin/v1/keys/{id}/rotate` `{grace_seconds?}` | a new key; the old one works for the grace period (default 0) |

use super::views;
use super::{
    Change, DirectoryStore, KeyHash, KeyLimitsInput, KeyRecord, KeyStanding, TenantRecord,
    TenantSettings,
};
use crate::auth::{ApiKeyRecord, key_hash};
use crate::config::Config;
use crate::error::GatewayError;
use crate::quota::headroom;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Every key this gateway issues starts so, to be recognised (by people
/// and by secret scanners).
pub const KEY_PREFIX: &str = "sk-eg-";
/// How many of a key's characters listings show.
const SHOWN_CHARS: usize = KEY_PREFIX.len() + 6;
/// The longest grace period a rotation may give the old key: 30 days.
const MAX_GRACE_SECONDS: u64 = 30 * 86_400;

/// One tenant or key operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryOp {
    ListTenants,
    GetTenant {
        id: String,
    },
    CreateTenant {
        id: String,
        settings: TenantSettings,
    },
    PatchTenant {
        id: String,
        patch: TenantPatch,
    },
    SetTenantDisabled {
        id: String,
        disabled: bool,
    },
    ListKeys {
        tenant: Option<String>,
    },
    GetKey {
        id: String,
    },
    CreateKey(NewKey),
    PatchKey {
        id: String,
        patch: KeyPatch,
    },
    RotateKey {
        id: String,
        grace_seconds: u64,
    },
    RevokeKey {
        id: String,
    },
    /// What a budgets report of `tenant` asks its quota stores
    /// ([`crate::quota::headroom::plan`], as the body).
    BudgetPlan {
        tenant: String,
    },
}

/// `PATCH /admin/v1/tenants/{id}`: the fields given replace the tenant's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    #[serde(default)]
    pub tier: Option<String>,
    /// `null` or `["*"]`: every model.
    #[serde(default, deserialize_with = "given")]
    pub models: Option<Option<Vec<String>>>,
    #[serde(default)]
    pub ip_allow: Option<Vec<String>>,
    #[serde(default)]
    pub ip_deny: Option<Vec<String>>,
    #[serde(default, deserialize_with = "given")]
    pub residency: Option<Option<String>>,
}

/// `POST /admin/v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub tenant: String,
    pub name: String,
    #[serde(default)]
    pub user: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub limits: Option<KeyLimitsInput>,
}

/// `PATCH /admin/v1/keys/{id}`: the fields given replace the key's; `null`
/// clears `user` or `expires_at`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "given")]
    pub user: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    pub expires_at: Option<Option<u64>>,
    /// Replaces the key's limits whole; `null` removes them.
    #[serde(default, deserialize_with = "given")]
    pub limits: Option<Option<KeyLimitsInput>>,
}

/// A field that is present, even as `null` (absent stays `None`).
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    id: String,
    tier: String,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    ip_allow: Vec<String>,
    #[serde(default)]
    ip_deny: Vec<String>,
    #[serde(default)]
    residency: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotation {
    #[serde(default)]
    grace_seconds: u64,
}

fn bad(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, Some(param).filter(|p| !p.is_empty()))
}

/// A JSON body, every error naming its field; `empty` stands for no body.
fn body<T: DeserializeOwned>(body: &[u8], empty: Option<T>) -> Result<T, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return empty.ok_or_else(|| bad("", "The request needs a JSON object body."));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // A missing field's error is about its object: name the field (an
        // unknown field's path already ends with it).
        let param = match message.strip_prefix("missing field `") {
            Some(rest) => {
                let field = rest.split('`').next().unwrap_or_default();
                if path == "." {
                    field.to_owned()
                } else {
                    format!("{path}.{field}")
                }
            }
            None if path == "." => String::new(),
            None => path,
        };
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("The body is not valid JSON: {message}.")
        } else if param.is_empty() {
            format!("Invalid body: {message}.")
        } else {
            format!("Invalid `{param}`: {message}.")
        };
        bad(&param, message)
    })
}

/// The operation a tenant or key call asks for; `None` when `route` is not
/// one of theirs. `route` has no trailing `/`.
pub fn parse(
    method: &str,
    route: &str,
    query: &str,
    bytes: &[u8],
) -> Option<Result<DirectoryOp, GatewayError>> {
    let rest = route.strip_prefix("/admin/v1/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let op = match (parts.as_slice(), method) {
        (["tenants"], "GET") => Ok(DirectoryOp::ListTenants),
        (["tenants"], "POST") => {
            body::<NewTenant>(bytes, None).map(|t| DirectoryOp::CreateTenant {
                id: t.id,
                settings: TenantSettings {
                    tier: t.tier,
                    models: t.models,
                    ip_allow: t.ip_allow,
                    ip_deny: t.ip_deny,
                    residency: t.residency,
                },
            })
        }
        (["tenants", id], "GET") => Ok(DirectoryOp::GetTenant { id: id.to_string() }),
        (["tenants", id], "PATCH") => body(bytes, None).map(|patch| DirectoryOp::PatchTenant {
            id: id.to_string(),
            patch,
        }),
        (["tenants", id, action @ ("disable" | "enable")], "POST") => {
            Ok(DirectoryOp::SetTenantDisabled {
                id: id.to_string(),
                disabled: *action == "disable",
            })
        }
        (["keys"], "GET") => list_keys(query),
        (["keys"], "POST") => body(bytes, None).map(DirectoryOp::CreateKey),
        (["keys", id], "GET") => Ok(DirectoryOp::GetKey { id: id.to_string() }),
        (["keys", id], "PATCH") => body(bytes, None).map(|patch| DirectoryOp::PatchKey {
            id: id.to_string(),
            patch,
        }),
        (["keys", id], "DELETE") => Ok(DirectoryOp::RevokeKey { id: id.to_string() }),
        (["keys", id, "rotate"], "POST") => body(bytes, Some(Rotation::default())).and_then(|r| {
            if r.grace_seconds > MAX_GRACE_SECONDS {
                return Err(bad(
                    "grace_seconds",
                    format!("`grace_seconds` is at most {MAX_GRACE_SECONDS} (30 days)."),
                ));
            }
            Ok(DirectoryOp::RotateKey {
                id: id.to_string(),
                grace_seconds: r.grace_seconds,
            })
        }),
        (
            ["tenants"]
            | ["tenants", _]
            | ["tenants", _, "disable" | "enable"]
            | ["keys"]
            | ["keys", _]
            | ["keys", _, "rotate"],
            _,
        ) => Err(GatewayError::MethodNotAllowed {
            method: method.chars().take(16).collect(),
            path: route.chars().take(200).collect(),
        }),
        _ => return None,
    };
    Some(op)
}

fn list_keys(query: &str) -> Result<DirectoryOp, GatewayError> {
    let mut tenant = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name != "tenant" {
            let name: String = name.chars().take(64).collect();
            return Err(bad(&name, format!("Unknown query parameter `{name}`.")));
        }
        tenant = Some(value.into_owned());
    }
    Ok(DirectoryOp::ListKeys { tenant })
}

/// What an operation answered, and the records it wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub status: u16,
    pub body: Value,
    /// In order; the host persists them before it answers.
    pub changes: Vec<Change>,
}

impl Applied {
    fn read(body: Value) -> Applied {
        Applied {
            status: 200,
            body,
            changes: Vec::new(),
        }
    }
}

fn not_found(what: &str, id: &str) -> GatewayError {
    GatewayError::NotFound {
        what: format!("{what} `{}`", id.chars().take(128).collect::<String>()),
    }
}

fn read_only(what: &str, id: &str) -> GatewayError {
    GatewayError::Conflict {
        message: format!(
            "The {what} `{}` is defined in the config; change it there.",
            id.chars().take(128).collect::<String>()
        ),
    }
}

/// Applies `op` to the host's records at `now_ms`. `entropy` is 32 fresh
/// random bytes from the host (a new key is made of them).
pub fn apply(
    config: &Config,
    op: &DirectoryOp,
    store: &impl DirectoryStore,
    now_ms: u64,
    entropy: &[u8; 32],
) -> Result<Applied, GatewayError> {
    match op {
        DirectoryOp::ListTenants => Ok(Applied::read(views::tenants(config, &store.tenants()))),
        DirectoryOp::GetTenant { id } => tenant_view(config, store, id).map(Applied::read),
        DirectoryOp::CreateTenant { id, settings } => {
            if !crate::names::is_valid(id) {
                return Err(bad("id", format!("`id` {}.", crate::names::NAME_RULE)));
            }
            if config.tenant(id).is_some() || store.tenant(id).is_some() {
                return Err(GatewayError::Conflict {
                    message: format!("A tenant `{id}` already exists."),
                });
            }
            check_settings(config, id, settings)?;
            let record = TenantRecord {
                id: id.clone(),
                settings: settings.clone(),
                disabled: false,
                created_ms: now_ms,
            };
            Ok(written(201, views::tenant(&record), Change::Tenant(record)))
        }
        DirectoryOp::PatchTenant { id, patch } => {
            let mut record = runtime_tenant(config, store, id)?;
            let s = &mut record.settings;
            if let Some(tier) = &patch.tier {
                s.tier.clone_from(tier);
            }
            if let Some(models) = &patch.models {
                s.models.clone_from(models);
            }
            if let Some(list) = &patch.ip_allow {
                s.ip_allow.clone_from(list);
            }
            if let Some(list) = &patch.ip_deny {
                s.ip_deny.clone_from(list);
            }
            if let Some(residency) = &patch.residency {
                s.residency.clone_from(residency);
            }
            check_settings(config, id, &record.settings)?;
            Ok(written(200, views::tenant(&record), Change::Tenant(record)))
        }
        DirectoryOp::SetTenantDisabled { id, disabled } => {
            let mut record = runtime_tenant(config, store, id)?;
            record.disabled = *disabled;
            Ok(written(200, views::tenant(&record), Change::Tenant(record)))
        }
        DirectoryOp::ListKeys { tenant } => {
            if let Some(t) = tenant {
                tenant_view(config, store, t)?;
            }
            let keys = store.keys(tenant.as_deref());
            Ok(Applied::read(views::keys(config, tenant.as_deref(), &keys)))
        }
        DirectoryOp::BudgetPlan { tenant } => {
            let settings = match config.tenant(tenant) {
                Some(i) => config.tenants[i].clone(),
                None => {
                    let record = store
                        .tenant(tenant)
                        .ok_or_else(|| not_found("tenant", tenant))?;
                    config
                        .tenant_from_settings(&record.id, &record.settings)
                        .map_err(|e| GatewayError::Internal {
                            message: format!("tenant `{tenant}`'s settings: {e}"),
                        })?
                }
            };
            let plan = headroom::plan(config, &settings, &store.keys(Some(tenant)), now_ms);
            let body = serde_json::to_value(plan).map_err(|e| GatewayError::Internal {
                message: format!("a budget plan: {e}"),
            })?;
            Ok(Applied::read(body))
        }
        DirectoryOp::GetKey { id } => match store.key(id) {
            Some(k) => Ok(Applied::read(views::key(&k, None))),
            None => views::config_key(config, id)
                .map(Applied::read)
                .ok_or_else(|| not_found("API key", id)),
        },
        DirectoryOp::CreateKey(new) => create_key(config, store, new, now_ms, entropy),
        DirectoryOp::PatchKey { id, patch } => {
            let mut record = runtime_key(config, store, id)?;
            if let Some(name) = &patch.name {
                check_key_name(name)?;
                record.name.clone_from(name);
            }
            if let Some(user) = &patch.user {
                check_user(user.as_deref())?;
                record.user.clone_from(user);
            }
            if let Some(expires_at) = patch.expires_at {
                record.standing.expires_ms = expires_at.map(|s| s.saturating_mul(1000));
            }
            if let Some(limits) = &patch.limits {
                record.limits = limits.as_ref().map(|l| l.validate(config)).transpose()?;
                record.standing.budget = record.limits.as_ref().and_then(|l| l.budget());
            }
            Ok(written(
                200,
                views::key(&record, None),
                Change::Key(Box::new(record)),
            ))
        }
        DirectoryOp::RotateKey { id, grace_seconds } => {
            let mut record = runtime_key(config, store, id)?;
            if record.standing.revoked {
                return Err(GatewayError::Conflict {
                    message: format!("The API key `{id}` is revoked; create a new one."),
                });
            }
            let secret = secret(entropy);
            let until = now_ms.saturating_add(grace_seconds.saturating_mul(1000));
            let mut hashes = vec![KeyHash {
                sha256: hex::encode(key_hash(&secret)),
                until_ms: None,
            }];
            hashes.extend(
                record
                    .standing
                    .hashes
                    .iter()
                    .filter(|h| h.until_ms.is_none_or(|t| t > now_ms))
                    .map(|h| KeyHash {
                        sha256: h.sha256.clone(),
                        until_ms: Some(h.until_ms.map_or(until, |t| t.min(until))),
                    }),
            );
            record.standing.hashes = hashes;
            record.prefix = shown(&secret);
            record.rotated_ms = Some(now_ms);
            Ok(written(
                200,
                views::key(&record, Some(&secret)),
                Change::Key(Box::new(record)),
            ))
        }
        DirectoryOp::RevokeKey { id } => {
            let mut record = runtime_key(config, store, id)?;
            if !record.standing.revoked {
                record.standing.revoked = true;
                record.revoked_ms = Some(now_ms);
            }
            let body = json!({"object": "api_key", "id": record.id, "deleted": true});
            Ok(written(200, body, Change::Key(Box::new(record))))
        }
    }
}

fn written(status: u16, body: Value, change: Change) -> Applied {
    Applied {
        status,
        body,
        changes: vec![change],
    }
}

fn tenant_view(
    config: &Config,
    store: &impl DirectoryStore,
    id: &str,
) -> Result<Value, GatewayError> {
    if let Some(t) = config.tenant(id) {
        return Ok(views::config_tenant(config, &config.tenants[t]));
    }
    store
        .tenant(id)
        .map(|t| views::tenant(&t))
        .ok_or_else(|| not_found("tenant", id))
}

fn runtime_tenant(
    config: &Config,
    store: &impl DirectoryStore,
    id: &str,
) -> Result<TenantRecord, GatewayError> {
    if config.tenant(id).is_some() {
        return Err(read_only("tenant", id));
    }
    store.tenant(id).ok_or_else(|| not_found("tenant", id))
}

fn runtime_key(
    config: &Config,
    store: &impl DirectoryStore,
    id: &str,
) -> Result<KeyRecord, GatewayError> {
    if let Some(k) = store.key(id) {
        return Ok(k);
    }
    if views::config_key(config, id).is_some() {
        return Err(read_only("API key", id));
    }
    Err(not_found("API key", id))
}

fn check_settings(
    config: &Config,
    id: &str,
    settings: &TenantSettings,
) -> Result<(), GatewayError> {
    config
        .tenant_from_settings(id, settings)
        .map(drop)
        .map_err(|e| bad(&e.path, format!("Invalid `{}`: {}.", e.path, e.message)))
}

fn check_key_name(name: &str) -> Result<(), GatewayError> {
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(bad(
            "name",
            "`name` must be 1 to 128 characters, without control characters.",
        ));
    }
    Ok(())
}

fn check_user(user: Option<&str>) -> Result<(), GatewayError> {
    match user {
        Some(u) if !crate::names::is_valid(u) => {
            Err(bad("user", format!("`user` {}.", crate::names::NAME_RULE)))
        }
        _ => Ok(()),
    }
}

fn create_key(
    config: &Config,
    store: &impl DirectoryStore,
    new: &NewKey,
    now_ms: u64,
    entropy: &[u8; 32],
) -> Result<Applied, GatewayError> {
    if config.tenant(&new.tenant).is_none() && store.tenant(&new.tenant).is_none() {
        return Err(bad(
            "tenant",
            format!(
                "Unknown tenant `{}`.",
                new.tenant.chars().take(128).collect::<String>()
            ),
        ));
    }
    check_key_name(&new.name)?;
    check_user(new.user.as_deref())?;
    let expires_ms = new.expires_at.map(|s| s.saturating_mul(1000));
    if expires_ms.is_some_and(|t| t <= now_ms) {
        return Err(bad("expires_at", "`expires_at` must be in the future."));
    }
    let limits = new
        .limits
        .as_ref()
        .map(|l| l.validate(config))
        .transpose()?;
    let secret = secret(entropy);
    let hash = key_hash(&secret);
    let id = format!(
        "key_{}",
        hex::encode(&Sha256::digest([b"edgegate key id:".as_slice(), &hash].concat())[..8])
    );
    if store.key(&id).is_some() {
        return Err(GatewayError::Internal {
            message: "a new key's id is taken; try again".into(),
        });
    }
    let record = KeyRecord {
        id,
        tenant: new.tenant.clone(),
        name: new.name.clone(),
        user: new.user.clone(),
        prefix: shown(&secret),
        standing: KeyStanding {
            revoked: false,
            expires_ms,
            hashes: vec![KeyHash {
                sha256: hex::encode(hash),
                until_ms: None,
            }],
            budget: limits.as_ref().and_then(|l| l.budget()),
        },
        created_ms: now_ms,
        revoked_ms: None,
        rotated_ms: None,
        limits,
    };
    Ok(written(
        201,
        views::key(&record, Some(&secret)),
        Change::Key(Box::new(record)),
    ))
}

/// A key: the prefix and 256 random bits, base64url.
fn secret(entropy: &[u8; 32]) -> String {
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(entropy)
    )
}

fn shown(secret: &str) -> String {
    secret.chars().take(SHOWN_CHARS).collect()
}

/// The key lookups a change leaves to write (hash → record), read from
/// `store` once the change is persisted: each hash of a changed key, or of
/// every key of a changed tenant (its record rides along).
pub fn lookups(change: &Change, store: &impl DirectoryStore) -> Vec<(String, ApiKeyRecord)> {
    let keys = match change {
        Change::Key(k) => vec![(**k).clone()],
        Change::Tenant(t) => store.keys(Some(&t.id)),
    };
    keys.iter()
        .flat_map(|k| {
            let record = k.lookup(store.tenant(&k.tenant).as_ref());
            k.standing
                .hashes
                .iter()
                .map(move |h| (h.sha256.clone(), record.clone()))
        })
        .collect()
}
