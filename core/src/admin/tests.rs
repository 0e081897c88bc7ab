use super::*;
use crate::config::Secrets;
use crate::directory::ops::DirectoryOp;
use crate::quota::QuotaKey;
use crate::testing::{config_value, secrets};
use serde_json::json;

const ADMIN_KEY: &str = "admin-key-for-the-unit-tests-0001";

fn with_admin() -> Config {
    let mut v = config_value();
    v["admin"] = json!({"api_key_secret": "EDGEGATE_ADMIN_KEY"});
    let mut s: Secrets = secrets();
    s.insert("EDGEGATE_ADMIN_KEY".into(), ADMIN_KEY.into());
    Config::from_json(&v.to_string(), &s).expect("valid")
}

fn call<'a>(method: &'a str, path: &'a str, query: &'a str, headers: &'a Headers) -> AdminCall<'a> {
    AdminCall {
        method,
        path,
        query,
        headers,
        body: b"",
        today: Day::from_number(20_000),
    }
}

fn ask(
    config: &Config,
    method: &str,
    path: &str,
    key: Option<&str>,
) -> Result<AdminRequest, GatewayError> {
    let headers = Headers::new(key.map(|k| ("authorization", format!("Bearer {k}"))));
    parse(config, &call(method, path, "group_by=model", &headers))
}

fn answered(config: &Config, path: &str) -> Result<serde_json::Value, GatewayError> {
    let headers = Headers::new([("authorization", format!("Bearer {ADMIN_KEY}"))]);
    match parse(config, &call("GET", path, "", &headers))? {
        AdminRequest::Directory(op) => {
            let store = crate::directory::Records::default();
            ops::apply(config, &op, &store, 0, &[0; 32]).map(|a| a.body)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_an_admin_key_secret_the_api_does_not_exist() {
    let config = Config::from_json(&config_value().to_string(), &secrets()).expect("valid");
    let err = ask(&config, "GET", "/admin/v1/usage", Some(ADMIN_KEY)).expect_err("off");
    assert_eq!(err.status(), 404);
}

#[test]
fn a_missing_or_wrong_admin_key_is_401_before_the_path_is_judged() {
    let config = with_admin();
    for key in [None, Some("sk-acme-test-key-1"), Some("")] {
        for path in ["/admin/v1/usage", "/admin/v1/nothing-here"] {
            let err = ask(&config, "GET", path, key).expect_err("refused");
            assert_eq!(err.status(), 401, "{key:?} {path}");
            assert!(!err.to_openai_json().to_string().contains(ADMIN_KEY));
        }
    }
}

#[test]
fn the_admin_key_reads_usage_and_nothing_unknown() {
    let config = with_admin();
    let asked = ask(&config, "GET", "/admin/v1/usage", Some(ADMIN_KEY)).expect("usage");
    let AdminRequest::Usage { query, format, .. } = asked else {
        panic!("{asked:?}")
    };
    assert_eq!(query.group_by, [crate::ledger::GroupBy::Model]);
    assert_eq!(format, UsageFormat::Json);
    let err = ask(&config, "GET", "/admin/v1/nothing-here", Some(ADMIN_KEY)).expect_err("404");
    assert_eq!(err.status(), 404);
    let err = ask(&config, "POST", "/admin/v1/usage", Some(ADMIN_KEY)).expect_err("405");
    assert_eq!(err.status(), 405);
}

#[test]
fn csv_is_chosen_by_accept() {
    let config = with_admin();
    let headers = Headers::new([
        ("authorization", format!("Bearer {ADMIN_KEY}")),
        ("accept", "text/csv".to_owned()),
    ]);
    let asked = parse(&config, &call("GET", "/admin/v1/usage", "", &headers)).expect("usage");
    let AdminRequest::Usage { format, .. } = asked else {
        panic!("{asked:?}")
    };
    assert_eq!(format, UsageFormat::Csv);
}

#[test]
fn a_short_or_missing_admin_secret_stops_start_up_naming_its_field() {
    let mut v = config_value();
    v["admin"] = json!({"api_key_secret": "EDGEGATE_ADMIN_KEY"});
    let err = Config::from_json(&v.to_string(), &secrets()).expect_err("missing");
    assert_eq!(err.path, "admin.api_key_secret");
    let mut s = secrets();
    s.insert("EDGEGATE_ADMIN_KEY".into(), "short-admin-key".into());
    let err = Config::from_json(&v.to_string(), &s).expect_err("short");
    assert_eq!(err.path, "admin.api_key_secret");
    assert!(!err.message.contains("short-admin-key"), "{}", err.message);
    assert!(format!("{:?}", with_admin().admin).contains('…'));
}

#[test]
fn config_tenants_are_listed_and_read_one_by_one() {
    let config = with_admin();
    let body = answered(&config, "/admin/v1/tenants").expect("listed");
    let acme = &body["data"][0];
    assert_eq!(
        (acme["id"].as_str(), acme["tier"].as_str()),
        (Some("acme"), Some("pro"))
    );
    assert_eq!(acme["source"], "config");
    assert_eq!(acme["disabled"], false);
    // Never a key or its hash.
    assert!(!body.to_string().contains("730ce978b7434386"), "{body}");
    let one = answered(&config, "/admin/v1/tenants/acme").expect("one");
    assert_eq!(one["id"], "acme");
    let err = answered(&config, "/admin/v1/tenants/ghost").expect_err("404");
    assert_eq!((err.status(), err.code()), (404, Some("not_found")));
    let err = ask(&config, "DELETE", "/admin/v1/tenants", Some(ADMIN_KEY)).expect_err("405");
    assert_eq!(err.status(), 405);
}

#[test]
fn a_usage_report_reads_every_shard_of_every_tenant_it_covers() {
    let config = with_admin();
    let query = |q: &str| UsageQuery::parse(q, Day::from_number(20_000)).expect("query");
    let names = |keys: Vec<QuotaKey>| keys.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        names(usage_stores(
            &config,
            query("tenant=restricted").tenant.as_deref(),
            &[]
        )),
        [
            "restricted#0",
            "restricted#1",
            "restricted#2",
            "restricted#3"
        ]
    );
    // A tenant known only from its rows is read too, once.
    let registered = ["kv-only".to_owned(), "acme".to_owned()];
    let all = names(usage_stores(
        &config,
        query("").tenant.as_deref(),
        &registered,
    ));
    assert_eq!(all.iter().filter(|n| *n == "acme").count(), 1, "{all:?}");
    assert!(all.contains(&"kv-only".to_owned()), "{all:?}");
    assert!(all.contains(&"restricted#3".to_owned()), "{all:?}");
}

#[test]
fn a_key_holder_reads_its_own_usage_and_a_token_none() {
    let config = with_admin();
    let now = crate::testing::NOW_MS;
    let own = |key: &str, query: &str| {
        let headers = Headers::new([("authorization", format!("Bearer {key}"))]);
        let mut call = call("GET", OWN_USAGE_PATH, query, &headers);
        call.today = Day::of_ms(now);
        own_usage(&config, &call, now, None)
    };
    let Ok(AdminRequest::Usage {
        query,
        format,
        peeks,
    }) = own("sk-acme-test-key-1", "group_by=model")
    else {
        panic!("own usage");
    };
    assert_eq!(query.tenant.as_deref(), Some("acme"));
    assert!(query.key.as_deref().is_some_and(|k| k.starts_with("cfg_")));
    assert_eq!(format, UsageFormat::Json);
    // Its remaining budgets: each of the tenant's stores, a config key
    // without budgets of its own.
    let stores: Vec<String> = peeks.iter().map(|p| p.key.to_string()).collect();
    let all: Vec<String> = QuotaKey::all("acme", config.quota_shards("acme"))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(stores, all);
    assert!(
        peeks
            .iter()
            .all(|p| p.budgets.is_empty() && p.presented.is_none())
    );
    let err = own("sk-acme-test-key-1", "tenant=eu-corp").expect_err("not its own");
    assert_eq!((err.status(), err.param()), (400, Some("tenant")));
    assert_eq!(own("sk-nobody", "").expect_err("unknown").status(), 401);
    let token = crate::testing::sign_hs256(&crate::testing::hs_claims());
    assert_eq!(own(&token, "").expect_err("a token").status(), 403);
}

#[test]
fn the_latency_report_is_asked_with_get_and_its_parameters_are_checked() {
    let config = with_admin();
    let headers = Headers::new([("authorization", format!("Bearer {ADMIN_KEY}"))]);
    let asked = parse(
        &config,
        &call(
            "GET",
            "/admin/v1/latency",
            "tenant=acme&model=chat",
            &headers,
        ),
    );
    match asked {
        Ok(AdminRequest::Latency { query }) => {
            assert_eq!(query.tenant.as_deref(), Some("acme"));
            assert_eq!(query.model.as_deref(), Some("chat"));
            assert_eq!(query.to.number() - query.from.number(), 6);
        }
        other => panic!("{other:?}"),
    }
    let post = parse(&config, &call("POST", "/admin/v1/latency", "", &headers));
    assert_eq!(post.map_err(|e| e.status()).err(), Some(405));
    let bad = parse(
        &config,
        &call("GET", "/admin/v1/latency", "key=x", &headers),
    );
    assert_eq!(bad.map_err(|e| e.status()).err(), Some(400));
    let anonymous = Headers::default();
    let refused = parse(&config, &call("GET", "/admin/v1/latency", "", &anonymous));
    assert_eq!(refused.map_err(|e| e.status()).err(), Some(401));
}

#[test]
fn the_budgets_report_needs_one_tenant_and_is_planned_by_the_directory() {
    let config = with_admin();
    let headers = Headers::new([("authorization", format!("Bearer {ADMIN_KEY}"))]);
    let ask = |method: &str, query: &str| {
        parse(&config, &call(method, "/admin/v1/budgets", query, &headers))
    };
    match ask("GET", "tenant=acme") {
        Ok(AdminRequest::Budgets {
            plan: DirectoryOp::BudgetPlan { tenant },
        }) => assert_eq!(tenant, "acme"),
        other => panic!("{other:?}"),
    }
    for (query, param) in [
        ("", "tenant"),
        ("tenant=", "tenant"),
        ("tenant=a&tenant=b", "tenant"),
        ("tenant=a&key=k", "key"),
    ] {
        let refused = ask("GET", query).expect_err(query);
        assert_eq!(refused.status(), 400, "{query}");
        assert_eq!(refused.to_openai_json()["error"]["param"], param, "{query}");
    }
    assert_eq!(
        ask("POST", "tenant=acme").map_err(|e| e.status()).err(),
        Some(405)
    );
}

#[test]
fn the_regions_show_each_replicas_health_and_load() {
    use crate::geo::{Health, RegionStatus};
    use crate::load::{BackendLoad, TargetLoad};
    let config = with_admin();
    let statuses = [RegionStatus {
        region: "eu-west".into(),
        health: Health::Down,
        latency_ms: Some(40),
        backend: Some(BackendLoad {
            running: 3,
            waiting: 2,
            kv_cache_usage: Some(0.5),
        }),
    }];
    let loads = [TargetLoad {
        target: "us-east".into(),
        in_flight: 4,
        latency_ms: Some(21.5),
        latency_age_ms: 10,
    }];
    let view = regions_view(&config, &statuses, &loads);
    let regions = view["data"].as_array().expect("regions");
    assert_eq!(regions.len(), config.regions.len());
    let find = |name: &str| {
        regions
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let eu = find("eu-west");
    assert_eq!(eu["health"], "down");
    let replica = &eu["replicas"][0];
    assert_eq!(
        (
            &replica["running"],
            &replica["waiting"],
            &replica["kv_cache_usage"]
        ),
        (&json!(3), &json!(2), &json!(0.5))
    );
    assert!(replica["in_flight"].is_null(), "not balanced, not tracked");
    let us = &find("us-east")["replicas"][0];
    assert_eq!((&us["health"], &us["in_flight"]), (&json!("up"), &json!(4)));
    assert_eq!(us["ttft_ewma_ms"], 21.5);
    // A config's secrets never show: no replica's URL or credential.
    assert!(!view.to_string().contains("http"), "{view}");
}
