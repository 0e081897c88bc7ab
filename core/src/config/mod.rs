//! Validated, runtime configuration. [`Config::from_json`] parses the
//! user-edited `[vars.gateway]` table and validates it into these types; every
//! error names the field path it is about (`routes[2].split[1].weight: ...`).

pub mod observability;
pub(crate) mod raw;
mod region;
mod route;

use crate::admin::AdminAccess;
use crate::admission::Priority;
use crate::auth::jwt::JwtIssuer;
use crate::geo::GeoPoint;
use crate::net::Cidr;
use crate::quota::QuotaLimits;
use crate::request::Endpoint;
use raw::*;
pub use region::{Admission, Balancing, Credential, Region, Replica};
use region::{validate_admission, validate_balancing, validate_location, validate_region};
pub use route::{CachePolicy, CacheScope, Degrade, Route, RouteSettings, SafetyPolicy, Timeouts};
use route::{validate_route, validate_settings};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Secrets by name (wrangler secrets, `.dev.vars`, or the process environment).
pub type Secrets = BTreeMap<String, String>;

/// The names of the secrets a `[vars.gateway]` document refers to (each JWT
/// issuer's `hs256_secret`, each region's and replica's `api_key_secret`,
/// `admin.api_key_secret`, `observability.otlp_headers_secret`),
/// for a host to look up before parsing it; a missing one is reported by
/// `Config::from_json`, naming its field.
pub fn secret_names(gateway: &serde_json::Value) -> Vec<&str> {
    use serde_json::Value;
    fn items(v: Option<&Value>) -> impl Iterator<Item = &Value> {
        v.and_then(Value::as_array).into_iter().flatten()
    }
    fn name<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
        v.get(key).and_then(Value::as_str)
    }
    let mut names: Vec<&str> = Vec::new();
    if let Some(admin) = gateway.get("admin") {
        names.extend(name(admin, "api_key_secret"));
    }
    if let Some(observability) = gateway.get("observability") {
        names.extend(name(observability, "otlp_headers_secret"));
    }
    for issuer in items(gateway.get("jwt_issuers")) {
        names.extend(name(issuer, "hs256_secret"));
    }
    for region in items(gateway.get("regions")) {
        names.extend(name(region, "api_key_secret"));
        for replica in items(region.get("replicas")) {
            names.extend(name(replica, "api_key_secret"));
        }
    }
    names
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

type Result<T> = std::result::Result<T, ConfigError>;

#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    /// All request header names and values together.
    pub max_header_bytes: usize,
    pub max_messages: usize,
    pub max_json_depth: usize,
    pub reservation_ttl_ms: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body_bytes: 1 << 20,
            max_header_bytes: 32 << 10,
            max_messages: 512,
            max_json_depth: 32,
            reservation_ttl_ms: 600_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub limits: QuotaLimits,
    pub max_tokens_cap: Option<u32>,
    pub priority: Priority,
    /// The tier whose limits bind each user inside the tenant's.
    pub per_user: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub tier: usize,
    /// `None` means every model.
    pub models: Option<Vec<usize>>,
    pub ip_allow: Vec<Cidr>,
    pub ip_deny: Vec<Cidr>,
    pub residency: Option<String>,
    pub quota_shards: u32,
}

#[derive(Debug, Clone)]
pub struct ModelVersion {
    pub name: String,
    pub upstream_model: String,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub aliases: Vec<String>,
    pub endpoints: Vec<Endpoint>,
    pub context_window: u32,
    /// Micro-USD per million tokens, so cost in micro-USD is exact integer math.
    pub input_micros_per_million: u64,
    pub output_micros_per_million: u64,
    /// The prompt estimate (fitted to OpenAI's tokenizers) is multiplied by
    /// this for a model whose tokenizer spends more tokens on the same text.
    pub prompt_estimate_factor: f64,
    pub versions: Vec<ModelVersion>,
}

impl Model {
    /// Cost in micro-USD (rounded up) of the given token counts.
    pub fn cost_micros(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        let total = u128::from(input_tokens) * u128::from(self.input_micros_per_million)
            + u128::from(output_tokens) * u128::from(self.output_micros_per_million);
        u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// A model version: indexes into `Config::models` and its `versions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRef {
    pub model: usize,
    pub version: usize,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub limits: RequestLimits,
    pub tiers: Vec<Tier>,
    pub tenants: Vec<Tenant>,
    pub jwt_issuers: Vec<JwtIssuer>,
    pub models: Vec<Model>,
    pub routes: Vec<Route>,
    pub regions: Vec<Region>,
    pub default_location: Option<GeoPoint>,
    pub defaults: RouteSettings,
    pub balancing: Balancing,
    pub admission: Admission,
    /// Who may call the admin API; `None`: it is off.
    pub admin: Option<AdminAccess>,
    pub observability: observability::Observability,
    tier_index: HashMap<String, usize>,
    tenant_index: HashMap<String, usize>,
    key_index: HashMap<[u8; 32], usize>,
    model_index: HashMap<String, usize>,
}

impl Config {
    /// The targets whose load the host reports in
    /// `RequestContext::loads`: every replica, when there is a choice (more
    /// than one region or replica); none otherwise.
    pub fn balanced_targets(&self) -> impl Iterator<Item = &str> {
        let choice = self.regions.len() > 1 || self.regions.iter().any(|r| r.replicas.len() > 1);
        self.regions
            .iter()
            .filter(move |_| choice)
            .flat_map(|r| r.replicas.iter().map(|x| x.target.as_str()))
    }

    /// Parses and validates the gateway config (the JSON form of `[vars.gateway]`).
    pub fn from_json(json: &str, secrets: &Secrets) -> Result<Config> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            ConfigError::new(path, e.into_inner().to_string())
        })?;
        Self::validate(raw, secrets)
    }

    pub fn tier(&self, name: &str) -> Option<usize> {
        self.tier_index.get(name).copied()
    }

    pub fn tenant(&self, id: &str) -> Option<usize> {
        self.tenant_index.get(id).copied()
    }

    pub fn tenant_by_key_hash(&self, hash: &[u8; 32]) -> Option<usize> {
        self.key_index.get(hash).copied()
    }

    /// How many quota stores hold `tenant`'s quota: its `quota_shards`, or
    /// 1 for a tenant the config does not list.
    pub fn quota_shards(&self, tenant: &str) -> u32 {
        self.tenant(tenant)
            .map_or(1, |i| self.tenants[i].quota_shards)
    }

    /// Every API key the config lists: its SHA-256 and its tenant's index.
    pub fn api_key_hashes(&self) -> impl Iterator<Item = (&[u8; 32], usize)> {
        self.key_index.iter().map(|(hash, &t)| (hash, t))
    }

    /// A run-time tenant's settings checked against this config, as a
    /// tenant (one quota shard); an error's path names the settings' field
    /// (`models[1]`).
    pub fn tenant_from_settings(
        &self,
        id: &str,
        settings: &crate::directory::TenantSettings,
    ) -> Result<Tenant> {
        let secrets = Secrets::new();
        let lookup = Lookup {
            secrets: &secrets,
            models: &self.models,
            model_index: &self.model_index,
            tier_index: &self.tier_index,
        };
        let raw = RawTenant {
            id: id.to_owned(),
            tier: settings.tier.clone(),
            api_key_sha256: Vec::new(),
            models: settings.models.clone(),
            ip_allow: settings.ip_allow.clone(),
            ip_deny: settings.ip_deny.clone(),
            residency: settings.residency.clone(),
            quota_shards: None,
        };
        validate_tenant("", &raw, &lookup).map_err(|e| ConfigError {
            path: e.path.trim_start_matches('.').to_owned(),
            message: e.message,
        })
    }

    /// Resolves a model name or alias.
    pub fn model(&self, name: &str) -> Option<usize> {
        self.model_index.get(name).copied()
    }

    pub fn version(&self, v: VersionRef) -> &ModelVersion {
        &self.models[v.model].versions[v.version]
    }

    /// The route for a model and endpoint: the first matching one, else an
    /// implicit route to the model's first version with the defaults.
    pub fn route_for(&self, model: usize, endpoint: Endpoint) -> std::borrow::Cow<'_, Route> {
        self.routes
            .iter()
            .find(|r| {
                r.model == model && r.endpoints.as_ref().is_none_or(|e| e.contains(&endpoint))
            })
            .map(std::borrow::Cow::Borrowed)
            .unwrap_or_else(|| {
                std::borrow::Cow::Owned(Route {
                    model,
                    endpoints: None,
                    split: vec![(0, 1.0)],
                    pin_header: None,
                    fallback: Vec::new(),
                    degrade: None,
                    settings: self.defaults,
                })
            })
    }

    fn validate(raw: RawConfig, secrets: &Secrets) -> Result<Config> {
        let limits = validate_limits(&raw.limits)?;

        let mut tiers = Vec::new();
        let mut tier_index = HashMap::new();
        for (name, t) in &raw.tiers {
            tier_index.insert(name.clone(), tiers.len());
            tiers.push(validate_tier(&format!("tiers.{name}"), name, t)?);
        }
        if tiers.is_empty() {
            return Err(ConfigError::new("tiers", "at least one tier is required"));
        }
        for (name, t) in &raw.tiers {
            if let Some(per_user) = &t.per_user {
                let path = format!("tiers.{name}.per_user");
                let user_tier = *tier_index
                    .get(per_user)
                    .ok_or_else(|| ConfigError::new(&path, format!("unknown tier `{per_user}`")))?;
                tiers[tier_index[name]].per_user = Some(user_tier);
            }
        }

        let mut models = Vec::new();
        let mut model_index = HashMap::new();
        for (i, m) in raw.models.iter().enumerate() {
            let path = format!("models[{i}]");
            let model = validate_model(&path, m)?;
            for (j, name) in std::iter::once(&model.name)
                .chain(&model.aliases)
                .enumerate()
            {
                if model_index.insert(name.clone(), i).is_some() {
                    let field = if j == 0 {
                        format!("{path}.name")
                    } else {
                        format!("{path}.aliases[{}]", j - 1)
                    };
                    return Err(ConfigError::new(
                        field,
                        format!("`{name}` is already a model name or alias"),
                    ));
                }
            }
            models.push(model);
        }
        if models.is_empty() {
            return Err(ConfigError::new("models", "at least one model is required"));
        }
        let lookup = Lookup {
            secrets,
            models: &models,
            model_index: &model_index,
            tier_index: &tier_index,
        };

        let mut tenants = Vec::new();
        let mut tenant_index = HashMap::new();
        let mut key_index = HashMap::new();
        for (i, t) in raw.tenants.iter().enumerate() {
            let path = format!("tenants[{i}]");
            if !crate::names::is_valid(&t.id) {
                return Err(ConfigError::new(
                    format!("{path}.id"),
                    crate::names::NAME_RULE,
                ));
            }
            if tenant_index.insert(t.id.clone(), i).is_some() {
                return Err(ConfigError::new(
                    format!("{path}.id"),
                    format!("duplicate tenant `{}`", t.id),
                ));
            }
            for (k, hex_hash) in t.api_key_sha256.iter().enumerate() {
                let hash = parse_sha256(hex_hash).ok_or_else(|| {
                    ConfigError::new(
                        format!("{path}.api_key_sha256[{k}]"),
                        "must be 64 hex characters (the SHA-256 of the key, not the key)",
                    )
                })?;
                if key_index.insert(hash, i).is_some() {
                    return Err(ConfigError::new(
                        format!("{path}.api_key_sha256[{k}]"),
                        "this key hash is already assigned",
                    ));
                }
            }
            tenants.push(validate_tenant(&path, t, &lookup)?);
        }

        let jwt_issuers = raw
            .jwt_issuers
            .iter()
            .enumerate()
            .map(|(i, j)| JwtIssuer::from_raw(&format!("jwt_issuers[{i}]"), j, secrets, &lookup))
            .collect::<Result<Vec<_>>>()?;

        let defaults = validate_settings(
            "defaults",
            &RouteSettings::default(),
            raw.defaults.timeouts.as_ref(),
            raw.defaults.cache.as_ref(),
            raw.defaults.safety.as_ref(),
            raw.defaults.max_attempts,
        )?;

        let routes = raw
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| validate_route(&format!("routes[{i}]"), r, &defaults, &lookup))
            .collect::<Result<Vec<_>>>()?;

        let mut regions: Vec<Region> = Vec::new();
        for (i, r) in raw.regions.iter().enumerate() {
            let path = format!("regions[{i}]");
            if regions.iter().any(|x| x.name == r.name) {
                return Err(ConfigError::new(
                    format!("{path}.name"),
                    format!("duplicate region `{}`", r.name),
                ));
            }
            regions.push(validate_region(&path, r, &lookup)?);
        }
        if regions.is_empty() {
            return Err(ConfigError::new(
                "regions",
                "at least one region is required",
            ));
        }

        let default_location = raw
            .default_location
            .as_ref()
            .map(|l| validate_location("default_location", l.latitude, l.longitude))
            .transpose()?;

        let admin = raw
            .admin
            .as_ref()
            .map(|a| validate_admin(a, &lookup))
            .transpose()?;
        let observability = observability::validate(raw.observability.as_ref(), &lookup)?;
        Ok(Config {
            limits,
            tiers,
            tenants,
            jwt_issuers,
            models,
            routes,
            regions,
            default_location,
            defaults,
            balancing: validate_balancing(raw.balancing.as_ref())?,
            admission: validate_admission(raw.admission.as_ref())?,
            admin,
            observability,
            tier_index,
            tenant_index,
            key_index,
            model_index,
        })
    }
}

/// An admin key shorter than this is refused: it guards every tenant.
const MIN_ADMIN_KEY_CHARS: usize = 24;

fn validate_admin(raw: &RawAdmin, lookup: &Lookup) -> Result<AdminAccess> {
    let path = "admin.api_key_secret";
    let key = lookup.secret(path, &raw.api_key_secret)?;
    if key.chars().count() < MIN_ADMIN_KEY_CHARS {
        return Err(ConfigError::new(
            path,
            format!(
                "the secret `{}` must be at least {MIN_ADMIN_KEY_CHARS} characters",
                raw.api_key_secret
            ),
        ));
    }
    Ok(AdminAccess::new(&key))
}

/// Name lookups available while validating later sections.
pub(crate) struct Lookup<'a> {
    secrets: &'a Secrets,
    models: &'a [Model],
    model_index: &'a HashMap<String, usize>,
    tier_index: &'a HashMap<String, usize>,
}

#[cfg(test)]
impl<'a> Lookup<'a> {
    /// A lookup of `secrets` alone (no models or tiers), for a section's tests.
    pub(crate) fn secrets_only(secrets: &'a Secrets) -> Self {
        Lookup {
            secrets,
            models: &[],
            model_index: Box::leak(Box::default()),
            tier_index: Box::leak(Box::default()),
        }
    }
}

impl Lookup<'_> {
    /// The value of the secret `name` names (at `path`).
    pub(crate) fn secret(&self, path: &str, name: &str) -> Result<String> {
        match self.secrets.get(name) {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ => Err(ConfigError::new(
                path,
                format!(
                    "the secret `{name}` is not set (wrangler secret put, .dev.vars or the environment)"
                ),
            )),
        }
    }

    pub(crate) fn tier(&self, path: &str, name: &str) -> Result<usize> {
        self.tier_index
            .get(name)
            .copied()
            .ok_or_else(|| ConfigError::new(path, format!("unknown tier `{name}`")))
    }

    fn model(&self, path: &str, name: &str) -> Result<usize> {
        self.model_index
            .get(name)
            .copied()
            .ok_or_else(|| ConfigError::new(path, format!("unknown model `{name}`")))
    }

    fn version(&self, path: &str, model: usize, name: &str) -> Result<usize> {
        self.models[model]
            .versions
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| {
                ConfigError::new(
                    path,
                    format!(
                        "model `{}` has no version `{name}`",
                        self.models[model].name
                    ),
                )
            })
    }

    /// "model" or "model@version".
    pub(crate) fn model_spec(&self, path: &str, spec: &str) -> Result<(usize, Option<usize>)> {
        match spec.split_once('@') {
            Some((m, v)) => {
                let model = self.model(path, m)?;
                Ok((model, Some(self.version(path, model, v)?)))
            }
            None => Ok((self.model(path, spec)?, None)),
        }
    }
}

pub(crate) fn config_error(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(path, message)
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(s.trim()).ok()?;
    bytes.try_into().ok()
}

pub(crate) fn positive(path: &str, v: u64) -> Result<u64> {
    if v == 0 {
        Err(ConfigError::new(path, "must be > 0"))
    } else {
        Ok(v)
    }
}

pub(crate) fn to_u32(path: &str, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| ConfigError::new(path, format!("must be at most {}", u32::MAX)))
}

fn validate_limits(raw: &RawLimits) -> Result<RequestLimits> {
    let d = RequestLimits::default();
    let field = |name: &str, v: Option<u64>, default: usize| -> Result<usize> {
        match v {
            None => Ok(default),
            Some(v) => Ok(positive(&format!("limits.{name}"), v)? as usize),
        }
    };
    Ok(RequestLimits {
        max_body_bytes: field("max_body_bytes", raw.max_body_bytes, d.max_body_bytes)?,
        max_header_bytes: field("max_header_bytes", raw.max_header_bytes, d.max_header_bytes)?,
        max_messages: field("max_messages", raw.max_messages, d.max_messages)?,
        max_json_depth: match field("max_json_depth", raw.max_json_depth, d.max_json_depth)? {
            // serde_json refuses deeper input before the check could run.
            depth if depth > 128 => {
                return Err(ConfigError::new(
                    "limits.max_json_depth",
                    "must be at most 128",
                ));
            }
            depth => depth,
        },
        reservation_ttl_ms: match raw.reservation_ttl_seconds {
            None => d.reservation_ttl_ms,
            Some(s) => positive("limits.reservation_ttl_seconds", s)?.saturating_mul(1000),
        },
    })
}

fn validate_tier(path: &str, name: &str, t: &RawTier) -> Result<Tier> {
    let rpm = positive(
        &format!("{path}.requests_per_minute"),
        t.requests_per_minute,
    )?;
    let tpm = positive(&format!("{path}.tokens_per_minute"), t.tokens_per_minute)?;
    let opt = |field: &str, v: Option<u64>| -> Result<Option<u64>> {
        v.map(|v| positive(&format!("{path}.{field}"), v))
            .transpose()
    };
    let usd = |field: &str, v: Option<f64>| -> Result<Option<u64>> {
        match v {
            None => Ok(None),
            Some(usd) if usd.is_finite() && usd > 0.0 => Ok(Some((usd * 1e6).round() as u64)),
            Some(_) => Err(ConfigError::new(
                format!("{path}.{field}"),
                "must be a finite number > 0",
            )),
        }
    };
    let max_tokens_cap = opt("max_tokens_cap", t.max_tokens_cap)?
        .map(|v| to_u32(&format!("{path}.max_tokens_cap"), v))
        .transpose()?;
    let token_burst = opt("token_burst", t.token_burst)?.unwrap_or(tpm);
    if let Some(cap) = max_tokens_cap
        && u64::from(cap) > token_burst
    {
        return Err(ConfigError::new(
            format!("{path}.max_tokens_cap"),
            format!(
                "{cap} exceeds the token bucket size {token_burst}: no request could ever be admitted"
            ),
        ));
    }
    Ok(Tier {
        name: name.to_owned(),
        limits: QuotaLimits {
            requests_per_minute: rpm,
            request_burst: opt("request_burst", t.request_burst)?.unwrap_or(rpm),
            tokens_per_minute: tpm,
            token_burst,
            tokens_per_day: opt("tokens_per_day", t.tokens_per_day)?,
            cost_per_day_micros: usd("cost_per_day_usd", t.cost_per_day_usd)?,
            tokens_per_month: opt("tokens_per_month", t.tokens_per_month)?,
            cost_per_month_micros: usd("cost_per_month_usd", t.cost_per_month_usd)?,
            max_concurrent: opt("max_concurrent", t.max_concurrent)?,
        },
        max_tokens_cap,
        priority: match &t.priority {
            None => Priority::default(),
            Some(p) => Priority::parse(p).ok_or_else(|| {
                ConfigError::new(
                    format!("{path}.priority"),
                    "must be \"high\", \"normal\" or \"low\"",
                )
            })?,
        },
        per_user: None,
    })
}

pub(crate) fn parse_endpoints(path: &str, names: &[String]) -> Result<Vec<Endpoint>> {
    if names.is_empty() {
        return Err(ConfigError::new(path, "must not be empty"));
    }
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            Endpoint::from_config_name(n).ok_or_else(|| {
                ConfigError::new(
                    format!("{path}[{i}]"),
                    format!("unknown endpoint `{n}` (expected chat, completions or embeddings)"),
                )
            })
        })
        .collect()
}

fn price_micros(path: &str, usd: f64) -> Result<u64> {
    if usd.is_finite() && usd >= 0.0 {
        Ok((usd * 1e6).round() as u64)
    } else {
        Err(ConfigError::new(path, "must be a finite number >= 0"))
    }
}

fn validate_model(path: &str, m: &RawModel) -> Result<Model> {
    if m.name.is_empty() || m.name.contains('@') {
        return Err(ConfigError::new(
            format!("{path}.name"),
            "must be non-empty and must not contain `@`",
        ));
    }
    let endpoints = match &m.endpoints {
        None => vec![Endpoint::ChatCompletions, Endpoint::Completions],
        Some(e) => parse_endpoints(&format!("{path}.endpoints"), e)?,
    };
    let context_window = to_u32(
        &format!("{path}.context_window"),
        positive(&format!("{path}.context_window"), m.context_window)?,
    )?;
    let mut versions: Vec<ModelVersion> = Vec::new();
    for (i, v) in m.versions.iter().enumerate() {
        if v.name.is_empty() || versions.iter().any(|x| x.name == v.name) {
            return Err(ConfigError::new(
                format!("{path}.versions[{i}].name"),
                "must be non-empty and unique within the model",
            ));
        }
        versions.push(ModelVersion {
            name: v.name.clone(),
            upstream_model: v
                .upstream_model
                .clone()
                .unwrap_or_else(|| format!("{}-{}", m.name, v.name)),
        });
    }
    if versions.is_empty() {
        versions.push(ModelVersion {
            name: "default".into(),
            upstream_model: m.name.clone(),
        });
    }
    Ok(Model {
        name: m.name.clone(),
        aliases: m.aliases.clone(),
        endpoints,
        context_window,
        input_micros_per_million: price_micros(
            &format!("{path}.input_usd_per_million"),
            m.input_usd_per_million,
        )?,
        output_micros_per_million: price_micros(
            &format!("{path}.output_usd_per_million"),
            m.output_usd_per_million,
        )?,
        prompt_estimate_factor: match m.prompt_estimate_factor {
            None => 1.0,
            Some(f) if f.is_finite() && (0.25..=8.0).contains(&f) => f,
            Some(_) => {
                return Err(ConfigError::new(
                    format!("{path}.prompt_estimate_factor"),
                    "must be a number from 0.25 to 8",
                ));
            }
        },
        versions,
    })
}

fn parse_cidrs(path: &str, list: &[String]) -> Result<Vec<Cidr>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<Cidr>()
                .map_err(|e| ConfigError::new(format!("{path}[{i}]"), e))
        })
        .collect()
}

fn validate_tenant(path: &str, t: &RawTenant, lookup: &Lookup) -> Result<Tenant> {
    let models = match &t.models {
        None => None,
        Some(list) if list.iter().any(|m| m == "*") => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, m)| lookup.model(&format!("{path}.models[{i}]"), m))
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    let quota_shards = match t.quota_shards {
        None => 1,
        Some(n) if (1..=64).contains(&n) => n as u32,
        Some(_) => {
            return Err(ConfigError::new(
                format!("{path}.quota_shards"),
                "must be between 1 and 64",
            ));
        }
    };
    Ok(Tenant {
        id: t.id.clone(),
        tier: lookup.tier(&format!("{path}.tier"), &t.tier)?,
        models,
        ip_allow: parse_cidrs(&format!("{path}.ip_allow"), &t.ip_allow)?,
        ip_deny: parse_cidrs(&format!("{path}.ip_deny"), &t.ip_deny)?,
        residency: t.residency.clone(),
        quota_shards,
    })
}

#[cfg(test)]
mod tests;
