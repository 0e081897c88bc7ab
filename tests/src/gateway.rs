//! The gateway config every runner gets: the same shape, pointing at that
//! runner's own simulated backends. One tenant per case family keeps quota
//! and cache state from leaking between cases.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// API keys, one per tenant (test-only values).
pub mod keys {
    pub const AUTH: &str = "sk-conf-auth";
    pub const DENIED: &str = "sk-conf-denied";
    pub const VALIDATION: &str = "sk-conf-validation";
    pub const TIGHT: &str = "sk-conf-tight";
    pub const CROWD: &str = "sk-conf-crowd";
    pub const METER: &str = "sk-conf-meter";
    pub const METER_STREAM: &str = "sk-conf-meter-stream";
    pub const ROUTING: &str = "sk-conf-routing";
    pub const GEO: &str = "sk-conf-geo";
    pub const EU: &str = "sk-conf-eu";
    pub const CACHE_A: &str = "sk-conf-cache-a";
    pub const CACHE_B: &str = "sk-conf-cache-b";
    pub const STREAMING: &str = "sk-conf-streaming";
    pub const ERRORS: &str = "sk-conf-errors";
    pub const SDK: &str = "sk-conf-sdk";
    pub const SDK_LIMITED: &str = "sk-conf-sdk-limited";
    pub const SDK_NODE: &str = "sk-conf-sdk-node";
    pub const SDK_NODE_LIMITED: &str = "sk-conf-sdk-node-limited";
    pub const INTEROP: &str = "sk-conf-interop";
    pub const METER_RELAYED: &str = "sk-conf-meter-relayed";
    pub const METER_BROKEN: &str = "sk-conf-meter-broken";
    pub const METER_PLAIN: &str = "sk-conf-meter-plain";
    pub const LLAMA: &str = "sk-conf-llama";
    pub const LLAMA_METER: &str = "sk-conf-llama-meter";
    pub const LLAMA_STREAM_METER: &str = "sk-conf-llama-stream-meter";
    pub const LIFECYCLE: &str = "sk-conf-lifecycle";
    pub const BALANCING: &str = "sk-conf-balancing";
    pub const COALESCE: &str = "sk-conf-coalesce";
    /// Tenants of priority high, normal and low at the gated replica.
    pub const GATED_HIGH: &str = "sk-conf-gated-high";
    pub const GATED_NORMAL: &str = "sk-conf-gated-normal";
    pub const GATED_LOW: &str = "sk-conf-gated-low";
    /// The usage ledger's tenant.
    pub const LEDGER: &str = "sk-conf-ledger";
    /// A tenant whose tier budgets each user.
    pub const USERS: &str = "sk-conf-users";
    /// A tenant with a monthly token budget.
    pub const MONTHLY: &str = "sk-conf-monthly";
    /// The config tenant run-time keys are made for.
    pub const DIRECTORY: &str = "sk-conf-directory";
}

/// The admin API's key, handed to each runner as the secret the config's
/// `admin.api_key_secret` names.
pub const ADMIN_SECRET_NAME: &str = "EDGEGATE_ADMIN_KEY";
pub const ADMIN_KEY: &str = "conformance-admin-key-7d2f0c41b9e8";

/// The OTLP collector the suite starts: `url_of(COLLECTOR)` is its base
/// URL; the export's headers come from the secret `OTLP_SECRET_NAME`.
pub const COLLECTOR: &str = "otlp-collector";
pub const OTLP_SECRET_NAME: &str = "EDGEGATE_OTLP_HEADERS";
pub const OTLP_HEADERS: &str = "authorization=Bearer conformance-collector-token";

/// The HS256 issuer's secret, handed to each runner as the secret the config names.
pub const HS256_SECRET_NAME: &str = "JWT_HS256_SECRET";
pub const HS256_SECRET: &str = "conformance-only-hs256-secret-0123456789";
pub const HS256_ISSUER: &str = "https://hs.conformance.test";
pub const RS256_ISSUER: &str = "https://rs.conformance.test";
pub const RS256_KID: &str = "conf-rs-1";
pub const AUDIENCE: &str = "edgegate";
/// The tenant both issuers' tokens name.
pub const JWT_TENANT: &str = "jwt-co";
pub const RSA_PRIVATE_PEM: &str = include_str!("../../core/fixtures/test-rsa-private.pem");
pub const RSA_PUBLIC_PEM: &str = include_str!("../../core/fixtures/test-rsa-public.pem");

pub const MAX_BODY_BYTES: usize = 65_536;
/// The `capped` tier's `max_tokens_cap`.
pub const TIER_CAP: u64 = 256;
/// The `tiny` model's context window.
pub const TINY_CONTEXT: u64 = 256;
pub const TIGHT_RPM: u64 = 2;
/// The `exact` tier's burst: exactly this many of 200 concurrent requests pass.
pub const EXACT_BURST: u64 = 50;
/// The `meter` tier's token burst (it refills one token a second).
pub const METER_BURST: u64 = 100_000;
/// Each user's burst in the `users-co` tenant (its tier's `per_user`),
/// inside the tenant's room for 1,000.
pub const USER_BURST: u64 = 10;
/// The `monthly` tier's tokens per calendar month.
pub const MONTHLY_TOKENS: u64 = 600;
/// The route's stream inactivity timeout.
pub const STREAM_IDLE_MS: u64 = 1_000;
/// The `tiny` route's first-byte timeout and total time: room for one
/// attempt and part of a second.
pub const TINY_FIRST_BYTE_MS: u64 = 1_500;
pub const TINY_TOTAL_MS: u64 = 2_000;
pub const PIN_HEADER: &str = "x-edgegate-version";
/// How long `lone`'s answers are fresh in the cache.
pub const LONE_TTL_SECONDS: u64 = 1;
/// The `lead` route's degraded answers are capped at this many tokens.
pub const DEGRADED_MAX_TOKENS: u64 = 5;

/// A simulated region: name, latitude, longitude, residency, models served.
pub struct Region {
    pub name: &'static str,
    pub latitude: f64,
    pub longitude: f64,
    pub residency: &'static str,
    pub models: &'static [&'static str],
}

const MAIN_MODELS: &[&str] = &["chat", "tiny", "embed"];

/// The region served by the real llama.cpp server (not a simulated backend).
pub const LLAMA_REGION: &str = "llama-local";
/// The simulated region `smollm2` fails over to when the llama.cpp server dies.
pub const LLAMA_BACKUP_REGION: &str = "llama-backup";

/// Three continents for the geo cases; `sa-east` is the nearest region of a
/// client in São Paulo and is taken down by the failover case; `solo-east`
/// alone serves `solo`, whose route falls back to `chat@v1`, and `lead` and
/// `lone` (one with a degradation policy, one without);
/// `llama-backup`, farther than the llama.cpp region, is its failover.
pub const REGIONS: [Region; 6] = [
    Region {
        name: "us-east",
        latitude: 39.0,
        longitude: -77.5,
        residency: "us",
        models: MAIN_MODELS,
    },
    Region {
        name: "eu-west",
        latitude: 53.3,
        longitude: -6.3,
        residency: "eu",
        models: MAIN_MODELS,
    },
    Region {
        name: "ap-southeast",
        latitude: 1.35,
        longitude: 103.8,
        residency: "sg",
        models: MAIN_MODELS,
    },
    Region {
        name: "sa-east",
        latitude: -23.5,
        longitude: -46.6,
        residency: "br",
        models: &["chat"],
    },
    Region {
        name: "solo-east",
        latitude: 40.7,
        longitude: -74.0,
        residency: "us",
        models: &["solo", "lead", "lone"],
    },
    Region {
        name: LLAMA_BACKUP_REGION,
        latitude: 41.9,
        longitude: -87.6,
        residency: "us",
        models: &[crate::llama::MODEL],
    },
];

/// Regions of two replicas each, `a` and `b`, one per balancing case (so
/// one case's load counters do not lean on the next); each alone serves the
/// model of its name, and its replicas' metrics are read with their health.
pub const POOLS: [&str; 3] = ["pool-slow", "pool-queue", "pool-affinity"];
pub const POOL_REPLICAS: [&str; 6] = [
    "pool-slow/a",
    "pool-slow/b",
    "pool-queue/a",
    "pool-queue/b",
    "pool-affinity/a",
    "pool-affinity/b",
];

/// A region of one replica that serves one request at a time for the
/// gateway (`capacity: 1`), alone serving `gated` (which degrades to
/// `tiny`) and `gated-strict` (which does not).
pub const GATED: &str = "gated";
/// A region whose one server wants an API key (as `vllm serve --api-key`
/// does), given to the gateway as the secret `KEYED_SECRET_NAME`; it alone
/// serves the model `keyed`.
pub const KEYED: &str = "keyed";
pub const KEYED_SECRET_NAME: &str = "KEYED_BACKEND_KEY";
pub const KEYED_SECRET: &str = "conformance-backend-key-5f1c9a";
/// How long a low-priority request waits for the gated replica.
pub const LOW_WAIT_MS: u64 = 300;

/// The tenant whose requests the ledger case sums.
pub const LEDGER_TENANT: &str = "ledger-co";
/// A config tenant the admin API makes run-time keys for.
pub const DIRECTORY_TENANT: &str = "directory-co";

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// `[vars.gateway]` for a runner whose backends listen at `url_of(region)`
/// (the llama.cpp server's too, as [`LLAMA_REGION`]).
pub fn gateway(url_of: impl Fn(&str) -> String) -> Value {
    let tenant = |id: &str, tier: &str, key: &str| json!({"id": id, "tier": tier, "api_key_sha256": [sha256_hex(key)]});
    let mut denied = tenant("denied-co", "open", keys::DENIED);
    // Every client of the suite connects from loopback.
    denied["ip_deny"] = json!(["127.0.0.0/8"]);
    let mut eu = tenant("eu-co", "open", keys::EU);
    eu["residency"] = json!("eu");
    let mut regions: Vec<Value> = REGIONS
        .iter()
        .map(|r| {
            json!({
                "name": r.name, "base_url": url_of(r.name), "latitude": r.latitude,
                "longitude": r.longitude, "residency": r.residency, "models": r.models,
            })
        })
        .collect();
    // Nearest to the default location for `smollm2`. llama-cpp-python has
    // no /health, and its model list waits for the model's lock (for the
    // whole of a generation): its OpenAPI document is the probe.
    regions.push(json!({
        "name": LLAMA_REGION, "base_url": url_of(LLAMA_REGION), "latitude": 40.7,
        "longitude": -74.0, "residency": "us", "models": [crate::llama::MODEL],
        "health_path": "/openapi.json",
    }));
    regions.push(json!({
        "name": GATED, "base_url": url_of(GATED), "capacity": 1, "latitude": 40.7,
        "longitude": -74.0, "residency": "us", "models": ["gated", "gated-strict"],
    }));
    regions.push(json!({
        "name": KEYED, "base_url": url_of(KEYED), "api_key_secret": KEYED_SECRET_NAME,
        "latitude": 40.7, "longitude": -74.0, "residency": "us", "models": [KEYED],
    }));
    for pool in POOLS {
        let replicas: Vec<Value> = ["a", "b"]
            .iter()
            .map(|r| json!({"name": r, "base_url": url_of(&format!("{pool}/{r}"))}))
            .collect();
        regions.push(json!({
            "name": pool, "replicas": replicas, "latitude": 40.7, "longitude": -74.0,
            "residency": "us", "models": [pool], "metrics_path": "/metrics",
        }));
    }
    let mut models = vec![
        json!({"name": "chat", "aliases": ["gpt-4o-mini"], "context_window": 8192,
         "input_usd_per_million": 1.0, "output_usd_per_million": 2.0,
         "versions": [{"name": "v1", "upstream_model": "chat-v1"},
                      {"name": "v2", "upstream_model": "chat-v2"}]}),
        json!({"name": "tiny", "context_window": TINY_CONTEXT,
         "input_usd_per_million": 0.1, "output_usd_per_million": 0.2}),
        json!({"name": "solo", "context_window": 8192,
         "input_usd_per_million": 1.0, "output_usd_per_million": 2.0,
         "versions": [{"name": "v1", "upstream_model": "solo-v1"}]}),
        json!({"name": "embed", "aliases": ["text-embedding-3-small"], "endpoints": ["embeddings"],
         "context_window": 8192, "input_usd_per_million": 0.02, "output_usd_per_million": 0.0}),
        json!({"name": crate::llama::MODEL, "context_window": 2048,
         "input_usd_per_million": 0.1, "output_usd_per_million": 0.2,
         "prompt_estimate_factor": crate::estimator::SMOLLM2_FACTOR}),
    ];
    let mut routes = vec![
        json!({"model": "chat",
         "split": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}],
         "pin_header": PIN_HEADER,
         "max_attempts": 4,
         "timeouts": {"connect_ms": 1000, "first_byte_ms": 5000, "stream_idle_ms": STREAM_IDLE_MS, "total_ms": 30000},
         "cache": {"enabled": true, "ttl_seconds": 300, "scope": "tenant"}}),
        json!({"model": "tiny", "max_attempts": 3,
         "timeouts": {"connect_ms": 1000, "first_byte_ms": TINY_FIRST_BYTE_MS, "total_ms": TINY_TOTAL_MS}}),
        json!({"model": "solo", "fallback": ["chat@v1"], "max_attempts": 3,
         "timeouts": {"connect_ms": 1000, "first_byte_ms": 5000},
         "cache": {"enabled": true, "ttl_seconds": 300, "scope": "tenant"}}),
        // A 135M model on 2 shared cores: seconds, not milliseconds.
        json!({"model": crate::llama::MODEL, "max_attempts": 2, "cache": {"enabled": false},
         "timeouts": {"connect_ms": 1000, "first_byte_ms": 30000, "stream_idle_ms": 30000,
                      "total_ms": 60000}}),
    ];
    // Served only by solo-east: `lead` degrades to `tiny`, `lone` has no policy.
    for name in ["lead", "lone"] {
        models.push(json!({"name": name, "context_window": 8192,
            "input_usd_per_million": 1.0, "output_usd_per_million": 2.0}));
    }
    routes.push(json!({"model": "lead", "max_attempts": 2,
        "degrade": {"model": "tiny", "max_tokens": DEGRADED_MAX_TOKENS}}));
    // Deterministic answers of `lone` are kept 1 s, and 5 minutes more for
    // when solo-east cannot answer.
    routes.push(json!({"model": "lone", "max_attempts": 2,
        "cache": {"enabled": true, "ttl_seconds": LONE_TTL_SECONDS, "stale_if_error_seconds": 300}}));
    routes.push(json!({"model": KEYED, "max_attempts": 1, "cache": {"enabled": false}}));
    for name in ["gated", "gated-strict", KEYED] {
        models.push(json!({"name": name, "context_window": 8192,
            "input_usd_per_million": 1.0, "output_usd_per_million": 2.0}));
    }
    routes.push(
        json!({"model": "gated", "max_attempts": 2, "cache": {"enabled": false},
        "degrade": {"model": "tiny", "max_tokens": DEGRADED_MAX_TOKENS}}),
    );
    routes.push(json!({"model": "gated-strict", "max_attempts": 2, "cache": {"enabled": false}}));
    for pool in POOLS {
        models.push(json!({"name": pool, "context_window": 8192,
            "input_usd_per_million": 1.0, "output_usd_per_million": 2.0}));
        routes.push(
            json!({"model": pool, "max_attempts": 2, "cache": {"enabled": false},
            "timeouts": {"connect_ms": 1000, "first_byte_ms": 30000, "total_ms": 60000}}),
        );
    }
    json!({
        "limits": {"max_body_bytes": MAX_BODY_BYTES, "reservation_ttl_seconds": 120},
        "tiers": {
            "open": {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000u64, "max_tokens_cap": 4096},
            "capped": {"requests_per_minute": 100_000, "tokens_per_minute": 100_000_000, "max_tokens_cap": TIER_CAP},
            "tight": {"requests_per_minute": TIGHT_RPM, "tokens_per_minute": 1_000_000},
            // A burst that refills one request a minute: no refill while 200 requests race.
            "exact": {"requests_per_minute": 1, "request_burst": EXACT_BURST, "tokens_per_minute": 100_000_000},
            // Refills one token a second, so a settlement shows in the headers.
            "meter": {"requests_per_minute": 100_000, "tokens_per_minute": 60, "token_burst": METER_BURST},
            "monthly": {"requests_per_minute": 100_000, "tokens_per_minute": 1_000_000, "tokens_per_month": MONTHLY_TOKENS},
            "roomy": {"requests_per_minute": 1, "request_burst": 1_000, "tokens_per_minute": 100_000_000, "per_user": "one-user"},
            "one-user": {"requests_per_minute": 1, "request_burst": USER_BURST, "tokens_per_minute": 100_000_000},
            // One request, then one more every two seconds: the SDK's retry waits.
            "sdk-limited": {"requests_per_minute": 30, "request_burst": 1, "tokens_per_minute": 10_000_000},
            "urgent": {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000u64, "priority": "high"},
            "bulk": {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000u64, "priority": "low"},
        },
        "admission": {"queue_limit": 64, "max_wait_ms": {"low": LOW_WAIT_MS, "normal": 5_000, "high": 10_000}},
        "tenants": [
            tenant("auth-co", "open", keys::AUTH),
            // Reached with tokens only.
            json!({"id": JWT_TENANT, "tier": "open"}),
            denied,
            tenant("validation-co", "capped", keys::VALIDATION),
            tenant("tight-co", "tight", keys::TIGHT),
            tenant("crowd-co", "exact", keys::CROWD),
            tenant("meter-co", "meter", keys::METER),
            tenant("meter-stream-co", "meter", keys::METER_STREAM),
            tenant("routing-co", "open", keys::ROUTING),
            tenant("geo-co", "open", keys::GEO),
            eu,
            tenant("cache-a", "open", keys::CACHE_A),
            tenant("cache-b", "open", keys::CACHE_B),
            tenant("streaming-co", "open", keys::STREAMING),
            tenant("errors-co", "open", keys::ERRORS),
            tenant("sdk-co", "open", keys::SDK),
            tenant("sdk-limited-co", "sdk-limited", keys::SDK_LIMITED),
            tenant("sdk-node-co", "open", keys::SDK_NODE),
            tenant("sdk-node-limited-co", "sdk-limited", keys::SDK_NODE_LIMITED),
            tenant("interop-co", "open", keys::INTEROP),
            tenant("meter-relayed-co", "meter", keys::METER_RELAYED),
            tenant("meter-broken-co", "meter", keys::METER_BROKEN),
            tenant("meter-plain-co", "meter", keys::METER_PLAIN),
            tenant("llama-co", "open", keys::LLAMA),
            tenant("llama-meter-co", "meter", keys::LLAMA_METER),
            tenant("llama-stream-meter-co", "meter", keys::LLAMA_STREAM_METER),
            tenant("lifecycle-co", "open", keys::LIFECYCLE),
            tenant("balancing-co", "open", keys::BALANCING),
            tenant("coalesce-co", "open", keys::COALESCE),
            tenant("gated-high-co", "urgent", keys::GATED_HIGH),
            tenant("gated-normal-co", "open", keys::GATED_NORMAL),
            tenant("gated-low-co", "bulk", keys::GATED_LOW),
            tenant(LEDGER_TENANT, "open", keys::LEDGER),
            tenant(DIRECTORY_TENANT, "open", keys::DIRECTORY),
            tenant("monthly-co", "monthly", keys::MONTHLY),
            tenant("users-co", "roomy", keys::USERS),
        ],
        "jwt_issuers": [
            {"issuer": HS256_ISSUER, "audiences": [AUDIENCE], "algorithms": ["HS256"],
             "hs256_secret": HS256_SECRET_NAME},
            {"issuer": RS256_ISSUER, "audiences": [AUDIENCE], "algorithms": ["RS256"],
             "keys": [{"kid": RS256_KID, "pem": RSA_PUBLIC_PEM}]},
        ],
        "models": models,
        "routes": routes,
        "regions": regions,
        "default_location": {"latitude": 39.0, "longitude": -77.5},
        "admin": {"api_key_secret": ADMIN_SECRET_NAME},
        "observability": {"otlp_endpoint": url_of(COLLECTOR),
                          "otlp_headers_secret": OTLP_SECRET_NAME},
    })
}
