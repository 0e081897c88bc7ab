use super::*;
use crate::testing::{config_value, secrets};
use serde_json::{Value, json};

fn load(v: &Value) -> std::result::Result<Config, ConfigError> {
    Config::from_json(&v.to_string(), &secrets())
}

/// Applies `edit` to the fixture and returns the error's path and message.
fn error_of(edit: impl FnOnce(&mut Value)) -> (String, String) {
    let mut v = config_value();
    edit(&mut v);
    let err = load(&v).expect_err("config should be rejected");
    (err.path, err.message)
}

#[test]
fn fixture_is_valid() {
    let c = load(&config_value()).expect("valid");
    assert_eq!(c.models.len(), 3);
    assert_eq!(c.model("gpt-4o-mini"), c.model("llama-3.1-8b"));
    assert_eq!(
        c.regions[1].replicas[0].base_url, "http://127.0.0.1:9102",
        "trailing slash trimmed"
    );
    let pro = &c.tiers[c.tier("pro").expect("pro")];
    assert_eq!(pro.limits.cost_per_day_micros, Some(50_000_000));
    assert_eq!(pro.limits.request_burst, 100);
    assert_eq!(pro.limits.tokens_per_month, None);
    let mut v = config_value();
    v["tiers"]["pro"]["tokens_per_month"] = json!(9_000_000);
    v["tiers"]["pro"]["cost_per_month_usd"] = json!(1500.5);
    let monthly = load(&v).expect("valid");
    let pro = &monthly.tiers[monthly.tier("pro").expect("pro")].limits;
    assert_eq!(pro.tokens_per_month, Some(9_000_000));
    assert_eq!(pro.cost_per_month_micros, Some(1_500_500_000));
    let free = &c.tiers[c.tier("free").expect("free")];
    assert_eq!(
        free.limits.request_burst, 5,
        "burst defaults to the per-minute rate"
    );
}

#[test]
fn split_weight_error_names_its_path() {
    let (path, msg) = error_of(|v| v["routes"][0]["split"][1]["weight"] = json!(0));
    assert_eq!(path, "routes[0].split[1].weight");
    assert_eq!(msg, "must be > 0");
}

#[test]
fn wrong_types_name_their_path() {
    let (path, msg) = error_of(|v| v["tiers"]["pro"]["tokens_per_minute"] = json!("lots"));
    assert_eq!(path, "tiers.pro.tokens_per_minute");
    assert!(msg.contains("invalid type"), "{msg}");
    let (path, _) = error_of(|v| v["regions"][2]["latitude"] = json!([1]));
    assert_eq!(path, "regions[2].latitude");
}

#[test]
fn unknown_fields_are_rejected() {
    let (path, msg) = error_of(|v| v["routes"][0]["wieght"] = json!(1));
    assert_eq!(path, "routes[0].wieght");
    assert!(msg.contains("unknown field"), "{msg}");
}

#[test]
fn missing_sections_are_named() {
    let (path, msg) = error_of(|v| {
        v.as_object_mut().expect("object").remove("models");
    });
    assert_eq!(path, "");
    assert!(msg.contains("missing field `models`"), "{msg}");
}

#[test]
fn semantic_errors_name_their_field() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["tenants"][1]["tier"] = json!("gold")),
            "tenants[1].tier",
        ),
        // `acme#1` would share a quota store with shard 1 of `acme`.
        (
            Box::new(|v| v["tenants"][1]["id"] = json!("acme#1")),
            "tenants[1].id",
        ),
        (
            Box::new(|v| v["regions"][0]["name"] = json!("us-east#0")),
            "regions[0].name",
        ),
        (
            Box::new(|v| v["tenants"][0]["api_key_sha256"][0] = json!("sk-plaintext")),
            "tenants[0].api_key_sha256[0]",
        ),
        (
            Box::new(|v| v["tenants"][3]["ip_allow"][0] = json!("10.0.0.0/40")),
            "tenants[3].ip_allow[0]",
        ),
        (
            Box::new(|v| v["tenants"][3]["models"][0] = json!("nope")),
            "tenants[3].models[0]",
        ),
        (
            Box::new(|v| v["routes"][0]["split"][0]["version"] = json!("v9")),
            "routes[0].split[0].version",
        ),
        (
            Box::new(|v| v["routes"][0]["fallback"][0] = json!("small@v3")),
            "routes[0].fallback[0]",
        ),
        (
            Box::new(|v| v["routes"][0]["model"] = json!("ghost")),
            "routes[0].model",
        ),
        (
            Box::new(|v| v["routes"][0]["degrade"] = json!({"model": "ghost"})),
            "routes[0].degrade.model",
        ),
        (
            Box::new(|v| {
                let model = v["models"][1]["name"].clone();
                v["routes"][0]["degrade"] = json!({"model": model, "max_tokens": 0});
            }),
            "routes[0].degrade.max_tokens",
        ),
        (
            Box::new(|v| v["routes"][0]["cache"]["scope"] = json!("world")),
            "routes[0].cache.scope",
        ),
        (
            Box::new(|v| v["routes"][0]["safety"]["injection"] = json!("maybe")),
            "routes[0].safety.injection",
        ),
        (
            Box::new(|v| v["routes"][0]["timeouts"]["connect_ms"] = json!(0)),
            "routes[0].timeouts.connect_ms",
        ),
        (
            Box::new(|v| v["regions"][0]["base_url"] = json!("ftp://x")),
            "regions[0].base_url",
        ),
        (
            Box::new(|v| v["regions"][0]["latitude"] = json!(91.0)),
            "regions[0].latitude",
        ),
        (
            Box::new(|v| {
                v["regions"][0]["replicas"] = json!([{"name": "a", "base_url": "http://x"}])
            }),
            "regions[0].replicas",
        ),
        (
            Box::new(|v| {
                v["regions"][0]
                    .as_object_mut()
                    .map(|r| r.remove("base_url"));
            }),
            "regions[0].base_url",
        ),
        (
            Box::new(|v| {
                v["regions"][0]
                    .as_object_mut()
                    .map(|r| r.remove("base_url"));
                v["regions"][0]["replicas"] = json!([
                    {"name": "a", "base_url": "http://x"},
                    {"name": "a", "base_url": "http://y"},
                ]);
            }),
            "regions[0].replicas[1].name",
        ),
        (
            Box::new(|v| {
                v["regions"][0]
                    .as_object_mut()
                    .map(|r| r.remove("base_url"));
                v["regions"][0]["replicas"] = json!([{"name": "a", "base_url": "gopher://x"}]);
            }),
            "regions[0].replicas[0].base_url",
        ),
        (
            Box::new(|v| {
                v["regions"][0]
                    .as_object_mut()
                    .map(|r| r.remove("base_url"));
                v["regions"][0]["replicas"] = json!([]);
            }),
            "regions[0].replicas",
        ),
        (
            Box::new(|v| v["regions"][0]["name"] = json!("eu/west")),
            "regions[0].name",
        ),
        (
            Box::new(|v| v["regions"][0]["metrics_path"] = json!("metrics")),
            "regions[0].metrics_path",
        ),
        (
            Box::new(|v| v["balancing"] = json!({"affinity_latency_ratio": 0.5})),
            "balancing.affinity_latency_ratio",
        ),
        (
            Box::new(|v| v["balancing"] = json!({"latency_half_life_seconds": 0})),
            "balancing.latency_half_life_seconds",
        ),
        (
            Box::new(|v| v["regions"][3]["capacity_weight"] = json!(-1.0)),
            "regions[3].capacity_weight",
        ),
        (
            Box::new(|v| v["regions"][3]["capacity"] = json!(0)),
            "regions[3].capacity",
        ),
        (
            Box::new(|v| v["regions"][2]["api_key_secret"] = json!("NOT_SET")),
            "regions[2].api_key_secret",
        ),
        (
            Box::new(|v| v["tiers"]["free"]["priority"] = json!("urgent")),
            "tiers.free.priority",
        ),
        (
            Box::new(|v| v["admission"] = json!({"fill_percent": {"low": 0}})),
            "admission.fill_percent.low",
        ),
        (
            Box::new(|v| v["admission"] = json!({"max_wait_ms": {"high": 700_000}})),
            "admission.max_wait_ms.high",
        ),
        (
            Box::new(|v| v["admission"] = json!({"queue_limit": 0})),
            "admission.queue_limit",
        ),
        (
            Box::new(|v| v["regions"][1]["models"][0] = json!("llama-3.1-8b@v7")),
            "regions[1].models[0]",
        ),
        (
            Box::new(|v| v["regions"][1]["name"] = json!("us-east")),
            "regions[1].name",
        ),
        (
            Box::new(|v| v["models"][1]["aliases"] = json!(["gpt-4o-mini"])),
            "models[1].aliases[0]",
        ),
        (
            Box::new(|v| v["models"][0]["context_window"] = json!(0)),
            "models[0].context_window",
        ),
        (
            Box::new(|v| v["models"][1]["prompt_estimate_factor"] = json!(0.1)),
            "models[1].prompt_estimate_factor",
        ),
        (
            Box::new(|v| v["models"][2]["endpoints"][0] = json!("images")),
            "models[2].endpoints[0]",
        ),
        (
            Box::new(|v| v["models"][0]["input_usd_per_million"] = json!(-0.5)),
            "models[0].input_usd_per_million",
        ),
        (
            Box::new(|v| v["tiers"]["free"]["max_tokens_cap"] = json!(50000)),
            "tiers.free.max_tokens_cap",
        ),
        (
            Box::new(|v| v["tiers"]["pro"]["cost_per_day_usd"] = json!(0.0)),
            "tiers.pro.cost_per_day_usd",
        ),
        (
            Box::new(|v| v["tiers"]["pro"]["cost_per_month_usd"] = json!(-3.0)),
            "tiers.pro.cost_per_month_usd",
        ),
        (
            Box::new(|v| v["tiers"]["pro"]["tokens_per_month"] = json!(0)),
            "tiers.pro.tokens_per_month",
        ),
        (
            Box::new(|v| v["tiers"]["pro"]["per_user"] = json!("platinum")),
            "tiers.pro.per_user",
        ),
        (
            Box::new(|v| v["jwt_issuers"][0]["algorithms"][0] = json!("none")),
            "jwt_issuers[0].algorithms[0]",
        ),
        (
            Box::new(|v| v["jwt_issuers"][0]["hs256_secret"] = json!("MISSING")),
            "jwt_issuers[0].hs256_secret",
        ),
        (
            Box::new(|v| v["jwt_issuers"][1]["keys"][0]["pem"] = json!("not a key")),
            "jwt_issuers[1].keys[0].pem",
        ),
        (
            Box::new(|v| v["jwt_issuers"][1]["keys"] = json!([])),
            "jwt_issuers[1].keys",
        ),
        (
            Box::new(|v| v["jwt_issuers"][0]["unlisted_tenant_tier"] = json!("gold")),
            "jwt_issuers[0].unlisted_tenant_tier",
        ),
        (
            Box::new(|v| v["limits"]["max_body_bytes"] = json!(0)),
            "limits.max_body_bytes",
        ),
        (
            Box::new(|v| v["limits"]["max_header_bytes"] = json!(0)),
            "limits.max_header_bytes",
        ),
        (
            Box::new(|v| v["default_location"]["longitude"] = json!(200.0)),
            "default_location.longitude",
        ),
    ];
    for (edit, expected) in cases {
        let (path, msg) = error_of(edit);
        assert_eq!(path, expected, "message was: {msg}");
        assert!(!msg.is_empty());
    }
}

#[test]
fn short_hmac_secrets_are_refused_without_echoing_them() {
    let mut v = config_value();
    let weak = Secrets::from([("JWT_HS256_SECRET".to_owned(), "hunter2".to_owned())]);
    let err = Config::from_json(&v.to_string(), &weak).expect_err("weak secret");
    assert_eq!(err.path, "jwt_issuers[0].hs256_secret");
    assert!(!err.to_string().contains("hunter2"));
    v["jwt_issuers"] = json!([]);
    assert!(Config::from_json(&v.to_string(), &weak).is_ok());
}

#[test]
fn models_without_versions_get_a_default_one() {
    let c = load(&config_value()).expect("valid");
    let small = &c.models[c.model("small").expect("small")];
    assert_eq!(small.versions.len(), 1);
    assert_eq!(small.versions[0].upstream_model, "small");
}

#[test]
fn the_prompt_estimate_scales_per_model() {
    let mut v = config_value();
    v["models"][0]["prompt_estimate_factor"] = json!(2.0);
    let c = load(&v).expect("valid");
    assert_eq!(c.models[0].prompt_estimate_factor, 2.0);
    assert_eq!(c.models[1].prompt_estimate_factor, 1.0, "the default");
    assert_eq!(crate::tokens::scaled(101, 2.0), 202);
    assert_eq!(crate::tokens::scaled(3, 1.5), 5, "rounded up");
    assert_eq!(crate::tokens::scaled(u32::MAX, 8.0), u32::MAX);
    assert_eq!(crate::tokens::scaled(7, 1.0), 7);
}

#[test]
fn cost_is_exact_micro_usd_rounded_up() {
    let c = load(&config_value()).expect("valid");
    let m = &c.models[0];
    // $0.10 and $0.20 per million tokens.
    assert_eq!(m.cost_micros(1_000_000, 0), 100_000);
    assert_eq!(m.cost_micros(10, 10), 3);
    assert_eq!(m.cost_micros(0, 0), 0);
}
