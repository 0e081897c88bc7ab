use super::ops::{self, DirectoryOp};
use super::*;
use crate::gateway::Decision;
use crate::testing::{NOW_MS, chat_body, ctx, gateway, headers_with_key, post};
use crate::{Config, Gateway};
use serde_json::{Value, json};

struct Admin {
    gateway: Gateway,
    store: Records,
    now_ms: u64,
    draws: u8,
}

impl Admin {
    fn new() -> Admin {
        Admin {
            gateway: gateway(),
            store: Records::default(),
            now_ms: NOW_MS,
            draws: 0,
        }
    }

    fn config(&self) -> &Config {
        self.gateway.config()
    }

    /// One call through the parser and `apply`, its changes persisted.
    fn call(&mut self, method: &str, route: &str, body: Value) -> Result<Value, GatewayError> {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let op = ops::parse(method, route, "", &bytes).expect("a directory route")?;
        self.draws += 1;
        let applied = ops::apply(
            self.config(),
            &op,
            &self.store,
            self.now_ms,
            &[self.draws; 32],
        )?;
        for change in &applied.changes {
            self.store.add(change.clone());
        }
        Ok(applied.body)
    }

    fn ok(&mut self, method: &str, route: &str, body: Value) -> Value {
        self.call(method, route, body).expect("answered")
    }

    /// What a host's lookup finds for `secret`, then `admit`'s verdict.
    fn serve(&self, secret: &str) -> Result<Box<crate::ForwardPlan>, GatewayError> {
        let found = self
            .store
            .lookup(&hex::encode(crate::auth::key_hash(secret)));
        let mut context = ctx();
        context.now_ms = self.now_ms;
        context.provisioned_key = found;
        let req = post(
            "/v1/chat/completions",
            headers_with_key(secret),
            &chat_body("hi"),
        );
        match self.gateway.admit(&req, &context)? {
            Decision::Forward(plan) => Ok(plan),
            Decision::Respond(r) => panic!("{r:?}"),
        }
    }
}

fn param(err: &GatewayError) -> Option<&str> {
    err.param()
}

#[test]
fn a_created_tenant_and_key_are_served_and_the_key_is_shown_once() {
    let mut admin = Admin::new();
    let tenant = admin.ok(
        "POST",
        "/admin/v1/tenants",
        json!({"id": "newco", "tier": "free", "models": ["llama-3.1-8b"]}),
    );
    assert_eq!(
        (tenant["source"].as_str(), tenant["disabled"].as_bool()),
        (Some("admin"), Some(false))
    );
    let made = admin.ok(
        "POST",
        "/admin/v1/keys",
        json!({"tenant": "newco", "name": "ci", "user": "u-1"}),
    );
    let secret = made["key"].as_str().expect("the key, once").to_owned();
    assert!(
        secret.starts_with(ops::KEY_PREFIX) && secret.len() > 40,
        "{secret}"
    );
    let id = made["id"].as_str().expect("id").to_owned();
    assert!(secret.starts_with(made["prefix"].as_str().expect("prefix")));
    let listed = admin.ok("GET", "/admin/v1/keys", Value::Null);
    let read = admin.ok("GET", &format!("/admin/v1/keys/{id}"), Value::Null);
    let hash = hex::encode(crate::auth::key_hash(&secret));
    for shown in [&listed, &read] {
        assert!(!shown.to_string().contains(&secret), "{shown}");
        assert!(!shown.to_string().contains(&hash), "{shown}");
    }
    assert!(
        listed["data"]
            .as_array()
            .expect("list")
            .iter()
            .any(|k| k["id"] == id)
    );

    // The run-time tenant's settings apply: its tier, its model list.
    let plan = admin.serve(&secret).expect("served");
    assert_eq!(plan.tenant_id, "newco");
    assert_eq!(plan.tier, "free");
    assert_eq!(plan.key_id.as_deref(), Some(id.as_str()));
    assert_eq!(plan.user.as_deref(), Some("u-1"));
    assert_eq!(
        plan.quota.presented.as_ref().map(|p| p.id.as_str()),
        Some(id.as_str())
    );
    assert!(plan.quota.key.shard.is_none());
    let mut context = ctx();
    context.provisioned_key = Some(admin.store.keys[&id].lookup(admin.store.tenants.get("newco")));
    let req = post(
        "/v1/chat/completions",
        headers_with_key(&secret),
        &json!({"model": "small", "messages": [{"role": "user", "content": "x"}]}),
    );
    let err = admin
        .gateway
        .admit(&req, &context)
        .expect_err("not its model");
    assert_eq!(err.status(), 404);
}

#[test]
fn a_revoked_expired_or_disabled_key_is_refused_at_once() {
    let mut admin = Admin::new();
    admin.ok(
        "POST",
        "/admin/v1/tenants",
        json!({"id": "co", "tier": "pro"}),
    );
    let make = |admin: &mut Admin, extra: Value| {
        let mut body = json!({"tenant": "co", "name": "k"});
        if let Value::Object(m) = extra {
            body.as_object_mut().expect("object").extend(m);
        }
        let made = admin.ok("POST", "/admin/v1/keys", body);
        (
            made["id"].as_str().expect("id").to_owned(),
            made["key"].as_str().expect("key").to_owned(),
        )
    };
    let (revoked, revoked_key) = make(&mut admin, json!({}));
    let gone = admin.ok("DELETE", &format!("/admin/v1/keys/{revoked}"), Value::Null);
    assert_eq!(gone["deleted"], true);
    let err = admin.serve(&revoked_key).expect_err("revoked");
    assert_eq!((err.status(), err.code()), (401, Some("invalid_api_key")));

    let expires_at = NOW_MS / 1000 + 60;
    let (_, expiring_key) = make(&mut admin, json!({"expires_at": expires_at}));
    admin.serve(&expiring_key).expect("before its expiry");
    admin.now_ms = expires_at * 1000;
    assert_eq!(
        admin.serve(&expiring_key).expect_err("expired").status(),
        401
    );
    admin.now_ms = NOW_MS;

    let (_, key) = make(&mut admin, json!({}));
    admin.ok("POST", "/admin/v1/tenants/co/disable", Value::Null);
    let err = admin.serve(&key).expect_err("disabled");
    assert_eq!(err.status(), 403);
    admin.ok("POST", "/admin/v1/tenants/co/enable", Value::Null);
    admin.serve(&key).expect("enabled again");
}

#[test]
fn a_rotated_key_keeps_the_old_one_for_its_grace_period_only() {
    let mut admin = Admin::new();
    let made = admin.ok(
        "POST",
        "/admin/v1/keys",
        json!({"tenant": "acme", "name": "k"}),
    );
    let (id, old) = (
        made["id"].as_str().expect("id"),
        made["key"].as_str().expect("key"),
    );
    let (id, old) = (id.to_owned(), old.to_owned());
    let rotated = admin.ok(
        "POST",
        &format!("/admin/v1/keys/{id}/rotate"),
        json!({"grace_seconds": 30}),
    );
    let new = rotated["key"].as_str().expect("a new key").to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated["id"].as_str(), Some(id.as_str()), "the same key id");
    admin.serve(&old).expect("old, in its grace");
    admin.serve(&new).expect("new");
    admin.now_ms += 30_000;
    assert_eq!(admin.serve(&old).expect_err("grace over").status(), 401);
    admin.serve(&new).expect("new, after");
    // Without a grace period the old key stops at once.
    let again = admin.ok("POST", &format!("/admin/v1/keys/{id}/rotate"), Value::Null);
    assert_eq!(admin.serve(&new).expect_err("no grace").status(), 401);
    admin
        .serve(again["key"].as_str().expect("key"))
        .expect("newest");
}

#[test]
fn the_standing_refuses_what_the_records_refuse() {
    let mut admin = Admin::new();
    admin.ok(
        "POST",
        "/admin/v1/tenants",
        json!({"id": "co", "tier": "pro"}),
    );
    let made = admin.ok(
        "POST",
        "/admin/v1/keys",
        json!({"tenant": "co", "name": "k"}),
    );
    let id = made["id"].as_str().expect("id").to_owned();
    let presented = PresentedKey {
        id: id.clone(),
        sha256: hex::encode(crate::auth::key_hash(made["key"].as_str().expect("key"))),
    };
    let mut standing = Standing::default();
    for record in admin.store.keys.values() {
        standing.apply(Change::Key(Box::new(record.clone())).standing());
    }
    assert_eq!(standing.check(Some(&presented), NOW_MS), None);
    let applied = ops::apply(
        admin.config(),
        &DirectoryOp::RevokeKey { id: id.clone() },
        &admin.store,
        NOW_MS,
        &[9; 32],
    )
    .expect("revoked");
    standing.apply(applied.changes[0].standing());
    assert_eq!(
        standing.check(Some(&presented), NOW_MS),
        Some(Refusal::KeyRevoked)
    );
    let disabled = TenantRecord {
        disabled: true,
        ..admin.store.tenants["co"].clone()
    };
    standing.apply(Change::Tenant(disabled).standing());
    // A disabled tenant refuses every caller, token or key.
    assert_eq!(standing.check(None, NOW_MS), Some(Refusal::TenantDisabled));
    // Each hash of each of the tenant's keys is looked up again.
    let lookups = ops::lookups(
        &Change::Tenant(admin.store.tenants["co"].clone()),
        &admin.store,
    );
    assert_eq!(lookups.len(), 1);
    assert_eq!(
        lookups[0].1.tenant_record.as_ref().map(|t| t.id.as_str()),
        Some("co")
    );
}

#[test]
fn bad_fields_are_400_naming_them() {
    let mut admin = Admin::new();
    let cases: &[(&str, &str, Value, Option<&str>)] = &[
        (
            "POST",
            "/admin/v1/tenants",
            json!({"id": "x", "tier": "gold"}),
            Some("tier"),
        ),
        (
            "POST",
            "/admin/v1/tenants",
            json!({"id": "a#1", "tier": "free"}),
            Some("id"),
        ),
        (
            "POST",
            "/admin/v1/tenants",
            json!({"id": "x", "tier": "free", "models": ["small", "gpt-9"]}),
            Some("models[1]"),
        ),
        (
            "POST",
            "/admin/v1/tenants",
            json!({"id": "x", "tier": "free", "ip_allow": ["10.0.0.0/99"]}),
            Some("ip_allow[0]"),
        ),
        (
            "POST",
            "/admin/v1/tenants",
            json!({"id": "x", "tier": "free", "color": 1}),
            Some("color"),
        ),
        (
            "POST",
            "/admin/v1/tenants",
            json!({"tier": "free"}),
            Some("id"),
        ),
        (
            "POST",
            "/admin/v1/keys",
            json!({"tenant": "ghost", "name": "k"}),
            Some("tenant"),
        ),
        (
            "POST",
            "/admin/v1/keys",
            json!({"tenant": "acme", "name": ""}),
            Some("name"),
        ),
        (
            "POST",
            "/admin/v1/keys",
            json!({"tenant": "acme", "name": "k", "expires_at": -5}),
            Some("expires_at"),
        ),
        (
            "POST",
            "/admin/v1/keys",
            json!({"tenant": "acme", "name": "k", "expires_at": "soon"}),
            Some("expires_at"),
        ),
        (
            "POST",
            "/admin/v1/keys",
            json!({"tenant": "acme", "name": "k", "expires_at": 1}),
            Some("expires_at"),
        ),
        (
            "POST",
            "/admin/v1/keys",
            json!({"tenant": "acme", "name": "k", "user": "a b"}),
            Some("user"),
        ),
    ];
    for (method, route, body, want) in cases {
        let err = admin
            .call(method, route, body.clone())
            .expect_err("refused");
        assert_eq!(err.status(), 400, "{body}: {err:?}");
        assert_eq!(param(&err), *want, "{body}: {err:?}");
    }
    let err = ops::parse("POST", "/admin/v1/tenants", "", b"{\"id\": ")
        .expect("route")
        .expect_err("malformed");
    assert_eq!(err.status(), 400);
    assert!(
        err.message().contains("not valid JSON"),
        "{}",
        err.message()
    );
    let err = admin
        .call("POST", "/admin/v1/tenants", Value::Null)
        .expect_err("empty");
    assert_eq!(err.status(), 400);
}

#[test]
fn the_configs_objects_are_read_only_and_ids_are_unique() {
    let mut admin = Admin::new();
    let taken = admin
        .call(
            "POST",
            "/admin/v1/tenants",
            json!({"id": "acme", "tier": "free"}),
        )
        .expect_err("taken");
    assert_eq!((taken.status(), taken.code()), (409, Some("conflict")));
    let err = admin
        .call("PATCH", "/admin/v1/tenants/acme", json!({"tier": "free"}))
        .expect_err("config");
    assert_eq!(err.status(), 409);
    let keys = admin.ok("GET", "/admin/v1/keys", Value::Null);
    let config_key = keys["data"]
        .as_array()
        .expect("list")
        .iter()
        .find(|k| k["source"] == "config")
        .expect("the config's keys are listed")
        .clone();
    let id = config_key["id"].as_str().expect("id");
    assert!(id.starts_with("cfg_"), "{id}");
    let err = admin
        .call("DELETE", &format!("/admin/v1/keys/{id}"), Value::Null)
        .expect_err("config");
    assert_eq!(err.status(), 409);
    let err = admin
        .call("GET", "/admin/v1/keys/key_0000", Value::Null)
        .expect_err("none");
    assert_eq!(err.status(), 404);
    assert_eq!(
        ops::parse("PUT", "/admin/v1/keys", "", b"").map(|r| r.map(drop).map_err(|e| e.status())),
        Some(Err(405))
    );
    assert!(ops::parse("GET", "/admin/v1/usage", "", b"").is_none());
}

#[test]
fn a_patch_changes_only_what_it_names() {
    let mut admin = Admin::new();
    admin.ok(
        "POST",
        "/admin/v1/tenants",
        json!({"id": "co", "tier": "free", "residency": "eu", "models": ["small"]}),
    );
    let patched = admin.ok(
        "PATCH",
        "/admin/v1/tenants/co",
        json!({"tier": "pro", "models": null}),
    );
    assert_eq!(patched["tier"], "pro");
    assert_eq!(patched["models"], "*");
    assert_eq!(patched["residency"], "eu");
    let made = admin.ok(
        "POST",
        "/admin/v1/keys",
        json!({"tenant": "co", "name": "k", "user": "u-1", "expires_at": NOW_MS / 1000 + 10}),
    );
    let id = made["id"].as_str().expect("id");
    let patched = admin.ok(
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        json!({"expires_at": null, "name": "renamed"}),
    );
    assert_eq!(patched["expires_at"], Value::Null);
    assert_eq!(patched["name"], "renamed");
    assert_eq!(patched["user"], "u-1");
    assert!(patched.get("key").is_none());
}

#[test]
fn a_keys_limits_become_its_budget_and_model_subset() {
    let mut admin = Admin::new();
    let made = admin.ok(
        "POST",
        "/admin/v1/keys",
        json!({"tenant": "acme", "name": "k", "limits": {
            "requests_per_minute": 1, "request_burst": 20, "cost_per_month_usd": 2.5,
            "models": ["gpt-4o-mini"]}}),
    );
    assert_eq!(made["limits"]["request_burst"], 20);
    assert_eq!(made["limits"]["cost_per_month_usd"], 2.5);
    let (id, key) = (
        made["id"].as_str().expect("id"),
        made["key"].as_str().expect("key"),
    );
    let plan = admin.serve(key).expect("served");
    let budget = &plan.quota.budgets[0];
    assert_eq!(budget.level, crate::quota::Level::Key(id.to_owned()));
    assert_eq!(
        (
            budget.limits.request_burst,
            budget.limits.cost_per_month_micros
        ),
        (20, Some(2_500_000))
    );
    // Unset per-minute limits do not bind the key.
    assert_eq!(budget.limits.tokens_per_minute, super::limits::UNLIMITED);
    let mut context = ctx();
    context.provisioned_key = admin.store.lookup(&hex::encode(crate::auth::key_hash(key)));
    let other = post(
        "/v1/chat/completions",
        headers_with_key(key),
        &json!({"model": "small", "messages": [{"role": "user", "content": "x"}]}),
    );
    let err = admin
        .gateway
        .admit(&other, &context)
        .expect_err("not its model");
    assert_eq!(err.status(), 404);
    // A patch replaces them; null removes them.
    admin.ok(
        "PATCH",
        &format!("/admin/v1/keys/{id}"),
        json!({"limits": null}),
    );
    assert!(admin.serve(key).expect("served").quota.budgets.is_empty());
    for (limits, field) in [
        (
            json!({"requests_per_minute": -1}),
            "limits.requests_per_minute",
        ),
        (json!({"request_burst": "many"}), "limits.request_burst"),
        (json!({"max_concurrent": 0}), "limits.max_concurrent"),
        (json!({"cost_per_day_usd": 0.0}), "limits.cost_per_day_usd"),
        (json!({"models": ["chat-9"]}), "limits.models[0]"),
        (json!({"speed": 1}), "limits.speed"),
    ] {
        let err = admin
            .call(
                "PATCH",
                &format!("/admin/v1/keys/{id}"),
                json!({"limits": limits}),
            )
            .expect_err("refused");
        assert_eq!((err.status(), err.param()), (400, Some(field)), "{limits}");
    }
}
