//! The configuration as users write it (the `[vars.gateway]` table of
//! `wrangler.toml`, which wrangler hands to the Worker as JSON). Deserialised
//! by serde, then validated into the runtime types in [`super`].
//! Unknown fields are rejected so a typo fails at start-up, not silently.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub limits: RawLimits,
    pub tiers: BTreeMap<String, RawTier>,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    #[serde(default)]
    pub jwt_issuers: Vec<RawJwtIssuer>,
    pub models: Vec<RawModel>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub regions: Vec<RawRegion>,
    /// Where clients without a known location are assumed to be.
    #[serde(default)]
    pub default_location: Option<RawLocation>,
    /// Defaults for models that no route matches.
    #[serde(default)]
    pub defaults: RawRouteDefaults,
    #[serde(default)]
    pub balancing: Option<RawBalancing>,
    #[serde(default)]
    pub admission: Option<RawAdmission>,
    /// The admin API (`/admin/v1/…`); off without it.
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub observability: Option<RawObservability>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawObservability {
    /// Tenants with metric series of their own.
    #[serde(default)]
    pub metrics_tenants: Vec<String>,
    /// An OTLP/HTTP collector's base URL (spans go to `/v1/traces`).
    pub otlp_endpoint: Option<String>,
    /// The secret holding the export's headers (`name=value,...`).
    pub otlp_headers_secret: Option<String>,
    pub otlp_queue_spans: Option<u64>,
    pub otlp_sample_ratio: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// The name of the secret holding the admin key.
    pub api_key_secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmission {
    pub queue_limit: Option<u64>,
    pub max_wait_ms: Option<RawPerPriority>,
    pub fill_percent: Option<RawPerPriority>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPerPriority {
    pub high: Option<u64>,
    pub normal: Option<u64>,
    pub low: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body_bytes: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub max_messages: Option<u64>,
    pub max_json_depth: Option<u64>,
    /// Quota reservations not settled within this many seconds are expired.
    pub reservation_ttl_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub requests_per_minute: u64,
    /// Requests that may arrive at once (bucket size); defaults to `requests_per_minute`.
    pub request_burst: Option<u64>,
    pub tokens_per_minute: u64,
    /// Tokens that may be taken at once; defaults to `tokens_per_minute`.
    pub token_burst: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub cost_per_day_usd: Option<f64>,
    /// Per UTC calendar month.
    pub tokens_per_month: Option<u64>,
    pub cost_per_month_usd: Option<f64>,
    pub max_concurrent: Option<u64>,
    pub max_tokens_cap: Option<u64>,
    /// "high", "normal" (default) or "low": who is served first when
    /// replicas are full.
    pub priority: Option<String>,
    /// A tier whose limits each user of this tier's tenants gets, inside
    /// the tenant's.
    pub per_user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub id: String,
    pub tier: String,
    /// Hex SHA-256 of each API key (never the key itself).
    #[serde(default)]
    pub api_key_sha256: Vec<String>,
    /// Model names or aliases the tenant may use; absent or `["*"]` means all.
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub ip_allow: Vec<String>,
    #[serde(default)]
    pub ip_deny: Vec<String>,
    /// Data-residency tag (e.g. "eu"): only regions with the same tag serve this tenant.
    pub residency: Option<String>,
    /// Durable Object shards holding this tenant's quota (edge); defaults to 1.
    pub quota_shards: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtIssuer {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    /// Name of the secret (wrangler secret / .dev.vars / env) holding the HS256 key.
    pub hs256_secret: Option<String>,
    #[serde(default)]
    pub keys: Vec<RawJwtKey>,
    pub leeway_seconds: Option<u64>,
    pub tenant_claim: Option<String>,
    pub tier_claim: Option<String>,
    pub user_claim: Option<String>,
    /// Accept tenants named by the token but absent from `tenants`, with this tier.
    pub unlisted_tenant_tier: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtKey {
    pub kid: Option<String>,
    /// A PEM public key (RSA or EC).
    pub pem: Option<String>,
    /// A JWK object.
    pub jwk: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Endpoints this model serves: "chat", "completions", "embeddings".
    pub endpoints: Option<Vec<String>>,
    pub context_window: u64,
    pub input_usd_per_million: f64,
    pub output_usd_per_million: f64,
    /// How many of the model's tokens one estimated token is (1.0).
    pub prompt_estimate_factor: Option<f64>,
    #[serde(default)]
    pub versions: Vec<RawModelVersion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelVersion {
    pub name: String,
    /// The model name the backend expects; defaults to `<model>-<version>`.
    pub upstream_model: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub model: String,
    /// Endpoints this route applies to; absent means all the model serves.
    pub endpoints: Option<Vec<String>>,
    #[serde(default)]
    pub split: Vec<RawSplit>,
    /// Header whose value pins a version (e.g. "x-edgegate-version").
    pub pin_header: Option<String>,
    /// Model versions ("model@version") to try when the chosen one fails.
    #[serde(default)]
    pub fallback: Vec<String>,
    pub timeouts: Option<RawTimeouts>,
    pub cache: Option<RawCache>,
    pub safety: Option<RawSafety>,
    pub max_attempts: Option<u64>,
    pub degrade: Option<RawDegrade>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDegrade {
    /// "model" or "model@version".
    pub model: String,
    pub max_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    pub version: String,
    pub weight: f64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRouteDefaults {
    pub timeouts: Option<RawTimeouts>,
    pub cache: Option<RawCache>,
    pub safety: Option<RawSafety>,
    pub max_attempts: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect_ms: Option<u64>,
    pub first_byte_ms: Option<u64>,
    pub stream_idle_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub enabled: Option<bool>,
    pub ttl_seconds: Option<u64>,
    /// "tenant" (default) or "global".
    pub scope: Option<String>,
    pub coalesce: Option<bool>,
    pub stale_if_error_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSafety {
    /// "off", "flag" or "block".
    pub injection: Option<String>,
    pub redact_pii: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    pub name: String,
    /// One endpoint; or `replicas`.
    pub base_url: Option<String>,
    pub replicas: Option<Vec<RawReplica>>,
    pub metrics_path: Option<String>,
    pub latitude: f64,
    pub longitude: f64,
    pub residency: Option<String>,
    pub capacity_weight: Option<f64>,
    /// Requests its one endpoint serves at once (with `base_url`).
    pub capacity: Option<u32>,
    /// Gates its capacity is split among (one Durable Object each at the edge).
    pub gate_shards: Option<u32>,
    /// The name of the secret sent to its servers as `Authorization: Bearer …`.
    pub api_key_secret: Option<String>,
    /// "model" (every version) or "model@version".
    pub models: Vec<String>,
    pub health_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplica {
    pub name: String,
    pub base_url: String,
    /// Requests it serves at once; absent: no limit.
    pub capacity: Option<u32>,
    /// Its own key's secret name, in place of the region's.
    pub api_key_secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalancing {
    pub prefix_affinity: Option<bool>,
    pub affinity_slack_requests: Option<u32>,
    pub affinity_latency_ratio: Option<f64>,
    pub latency_half_life_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocation {
    pub latitude: f64,
    pub longitude: f64,
}
