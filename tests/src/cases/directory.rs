//! Tenants and keys made at run time through the admin API: a new key is
//! served (on the Worker, once KV has it: at once in workerd), a revoked,
//! expired or rotated-out key and a disabled tenant are refused on the
//! very next request, and the API refuses bad input naming the field.

use crate::client::{Reply, chat_body};
use crate::gateway::{ADMIN_KEY, DIRECTORY_TENANT};
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a new key may take to reach the key lookups (Workers KV).
const NEW_KEY_DELAY: Duration = Duration::from_secs(10);

pub(crate) async fn admin(
    t: &Target,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Reply, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut call = t.request(method, path).key(ADMIN_KEY);
    if let Some(body) = body {
        call = call.json(&body);
    }
    call.send().await
}

/// A new key of `tenant`: its id and the key.
pub(crate) async fn new_key(
    t: &Target,
    tenant: &str,
    extra: Value,
) -> Result<(String, String), String> {
    let mut body = json!({"tenant": tenant, "name": "conformance"});
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    let made = admin(t, "POST", "/admin/v1/keys", Some(body))
        .await?
        .expect(201)?;
    let id = made["id"].as_str().ok_or("a new key without an id")?;
    let key = made["key"].as_str().ok_or("a new key not shown")?;
    ensure!(key.starts_with("sk-eg-"), "the key's prefix: {key}");
    Ok((id.to_owned(), key.to_owned()))
}

async fn chat_status(t: &Target, key: &str) -> Result<u16, String> {
    Ok(t.chat(key, &chat_body("directory")).await?.status)
}

/// Waits for a new key to be served, then returns its first answer.
pub(crate) async fn first_answer(t: &Target, key: &str) -> Result<Reply, String> {
    let deadline = Instant::now() + NEW_KEY_DELAY;
    loop {
        let reply = t.chat(key, &chat_body("directory: a new key")).await?;
        if reply.status != 401 || Instant::now() > deadline {
            return Ok(reply);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a new key is known (a model outside its subset is a 404,
/// not a 401: no quota is spent finding out).
async fn known(t: &Target, key: &str) -> Outcome {
    let deadline = Instant::now() + NEW_KEY_DELAY;
    let other = json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}]});
    loop {
        let reply = t.chat(key, &other).await?;
        if reply.status != 401 || Instant::now() > deadline {
            reply.expect_error(404, "invalid_request_error", "model_not_found")?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 200 concurrent requests: how many were admitted; every 429 says `whose`.
async fn crowd(t: &Target, key: &str, body: &Value, whose: &str) -> Result<u64, String> {
    let replies = futures_util::future::join_all((0..200).map(|_| t.chat(key, body))).await;
    let mut admitted = 0;
    for reply in replies {
        let reply = reply?;
        if reply.status == 200 {
            admitted += 1;
            continue;
        }
        let error = reply.expect_error(429, "rate_limit_error", "rate_limit_exceeded")?;
        ensure!(
            error.message.contains(whose),
            "the 429 names {whose:?}: {}",
            error.message
        );
    }
    Ok(admitted)
}

pub async fn a_keys_budget_admits_exactly_its_burst_inside_the_tenants(t: &Target) -> Outcome {
    let limits =
        json!({"limits": {"requests_per_minute": 1, "request_burst": 20, "models": ["chat"]}});
    let (_, key) = new_key(t, "users-co", limits).await?;
    known(t, &key).await?;
    let admitted = crowd(
        t,
        &key,
        &chat_body("a key's crowd"),
        "this API key's requests per minute",
    )
    .await?;
    ensure_eq!(
        admitted,
        20,
        "admitted of 200 concurrent requests on a key with a burst of 20"
    );
    // A user inside a roomier key: the user's 10.
    let limits =
        json!({"limits": {"requests_per_minute": 1, "request_burst": 50, "models": ["chat"]}});
    let (_, key) = new_key(t, "users-co", limits).await?;
    known(t, &key).await?;
    let mut body = chat_body("a user's crowd inside a key");
    body["user"] = json!("u-in-key");
    let admitted = crowd(t, &key, &body, "this user's requests per minute").await?;
    ensure_eq!(
        admitted,
        10,
        "admitted of one user's 200 concurrent requests"
    );
    Ok(())
}

/// A key's own usage report, once it counts `requests` (the Worker settles
/// after responding).
async fn own_usage(t: &Target, key: &str, requests: u64) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = t
            .get("/v1/usage?group_by=key,model")
            .key(key)
            .send()
            .await?
            .expect(200)?;
        if report["total"]["requests"].as_u64() == Some(requests) || Instant::now() > deadline {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn a_key_holder_reads_its_own_usage_only(t: &Target) -> Outcome {
    let started = unix_now();
    let tenant = json!({"id": "own-usage-co", "tier": "open", "models": ["chat"]});
    admin(t, "POST", "/admin/v1/tenants", Some(tenant))
        .await?
        .expect(201)?;
    let limits = json!({"limits": {"requests_per_minute": 1, "request_burst": 5, "tokens_per_day": 100_000}});
    let (a_id, a) = new_key(t, "own-usage-co", limits).await?;
    let (b_id, b) = new_key(t, "own-usage-co", json!({})).await?;
    first_answer(t, &a).await?.expect(200)?;
    t.chat(&a, &chat_body("own usage")).await?.expect(200)?;
    first_answer(t, &b).await?.expect(200)?;
    for (key, id, requests) in [(&a, &a_id, 2), (&b, &b_id, 1)] {
        let report = own_usage(t, key, requests).await?;
        ensure_eq!(
            report["total"]["requests"].as_u64(),
            Some(requests),
            "{id}'s requests"
        );
        let rows = report["data"].as_array().ok_or("no data")?;
        ensure!(
            !rows.is_empty() && rows.iter().all(|r| r["key"] == id.as_str()),
            "{id} sees rows not its own: {report}"
        );
    }
    // What is left of its budgets: the tenant's, then the key's own, whose
    // day's tokens are exactly what the ledger charged it.
    let report = own_usage(t, &a, 2).await?;
    let budgets = report["budgets"].as_array().ok_or("no budgets")?;
    ensure_eq!(budgets.len(), 2, "levels shown: {report}");
    ensure_eq!(
        budgets[0]["level"].as_str(),
        Some("tenant"),
        "the first level"
    );
    ensure_eq!(
        budgets[0]["requests_per_minute"]["limit"].as_u64(),
        Some(1_000_000),
        "the tier's rate"
    );
    let key = &budgets[1];
    ensure_eq!(key["level"].as_str(), Some("key"), "the second level");
    ensure_eq!(
        key["requests_per_minute"]["remaining"].as_u64(),
        Some(3),
        "the key's requests left of its burst of 5: {key}"
    );
    let total = &report["total"];
    let charged = total["input_tokens"]
        .as_u64()
        .zip(total["output_tokens"].as_u64());
    ensure_eq!(
        key["tokens_per_day"]["used"].as_u64(),
        charged.map(|(i, o)| i + o),
        "the key's tokens today: {report}"
    );
    ensure_eq!(
        key["tokens_per_day"]["limit"].as_u64(),
        Some(100_000),
        "its daily limit"
    );
    let plain = own_usage(t, &b, 1).await?;
    ensure_eq!(
        plain["budgets"].as_array().map(Vec::len),
        Some(1),
        "a key without limits shows its tenant's only: {plain}"
    );
    // When each key was last used (its latest request's admission, from
    // the ledger); a key never used shows null.
    let (unused, _) = new_key(t, "own-usage-co", json!({})).await?;
    let listed = admin(t, "GET", "/admin/v1/keys?tenant=own-usage-co", None)
        .await?
        .expect(200)?;
    let last_used = |id: &str| {
        listed["data"]
            .as_array()
            .and_then(|d| d.iter().find(|k| k["id"] == id))
            .map(|k| k["last_used_at"].clone())
    };
    for id in [&a_id, &b_id] {
        let at = last_used(id).and_then(|v| v.as_u64());
        ensure!(
            at.is_some_and(|s| (started..=unix_now()).contains(&s)),
            "{id}'s last use: {at:?} (started {started}): {listed}"
        );
    }
    ensure_eq!(
        last_used(&unused),
        Some(Value::Null),
        "an unused key's last use"
    );
    let one = admin(t, "GET", &format!("/admin/v1/keys/{a_id}"), None)
        .await?
        .expect(200)?;
    ensure_eq!(
        one["last_used_at"].as_u64(),
        last_used(&a_id).and_then(|v| v.as_u64()),
        "one key's last use as the list shows it"
    );
    // A revoked key reads nothing.
    admin(t, "DELETE", &format!("/admin/v1/keys/{b_id}"), None)
        .await?
        .expect(200)?;
    t.get("/v1/usage").key(&b).send().await?.expect_error(
        401,
        "authentication_error",
        "invalid_api_key",
    )?;
    t.get("/v1/usage?tenant=ledger-co")
        .key(&a)
        .send()
        .await?
        .expect_error(400, "invalid_request_error", "invalid_request")?;
    for key in [None, Some(ADMIN_KEY)] {
        let mut call = t.get("/v1/usage");
        if let Some(key) = key {
            call = call.key(key);
        }
        call.send()
            .await?
            .expect_error(401, "authentication_error", "invalid_api_key")?;
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn keys_made_at_run_time_are_served_and_refused_at_once(t: &Target) -> Outcome {
    let tenant = json!({"id": "runtime-co", "tier": "open", "models": ["chat"]});
    let made = admin(t, "POST", "/admin/v1/tenants", Some(tenant))
        .await?
        .expect(201)?;
    ensure_eq!(
        made["source"].as_str(),
        Some("admin"),
        "the new tenant's source"
    );
    let (id, key) = new_key(t, "runtime-co", json!({"user": "u-7"})).await?;
    let reply = first_answer(t, &key).await?;
    reply.expect(200)?;
    let record = t.the_record(&reply.request_id()).await?;
    ensure_eq!(
        record["tenant"].as_str(),
        Some("runtime-co"),
        "the record's tenant"
    );
    ensure_eq!(
        record["key_id"].as_str(),
        Some(id.as_str()),
        "the record's key"
    );
    // The tenant's model list holds.
    let tiny = json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}]});
    t.chat(&key, &tiny)
        .await?
        .expect_error(404, "invalid_request_error", "model_not_found")?;
    // Listed without the key or its hash; never shown again.
    let listed = admin(t, "GET", "/admin/v1/keys?tenant=runtime-co", None)
        .await?
        .expect(200)?;
    let one = admin(t, "GET", &format!("/admin/v1/keys/{id}"), None)
        .await?
        .expect(200)?;
    for shown in [&listed, &one] {
        let text = shown.to_string();
        ensure!(
            !text.contains(&key) && !text.contains(&crate::gateway::sha256_hex(&key)),
            "a listing shows the key: {text}"
        );
    }
    ensure!(
        listed["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|k| k["id"] == id.as_str())),
        "the key is not listed: {listed}"
    );

    // Revoked: refused on the very next request.
    admin(t, "DELETE", &format!("/admin/v1/keys/{id}"), None)
        .await?
        .expect(200)?;
    t.chat(&key, &chat_body("directory: revoked"))
        .await?
        .expect_error(401, "authentication_error", "invalid_api_key")?;

    // Expired: refused from its expiry on.
    let expires_at = unix_now() + 3;
    let (_, expiring) = new_key(t, "runtime-co", json!({"expires_at": expires_at})).await?;
    first_answer(t, &expiring).await?.expect(200)?;
    while unix_now() < expires_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure_eq!(
        chat_status(t, &expiring).await?,
        401,
        "an expired key's status"
    );

    // A disabled tenant: 403 on the next request; enabled: served again.
    let (_, key) = new_key(t, "runtime-co", json!({})).await?;
    first_answer(t, &key).await?.expect(200)?;
    let disabled = admin(t, "POST", "/admin/v1/tenants/runtime-co/disable", None)
        .await?
        .expect(200)?;
    ensure_eq!(
        disabled["disabled"].as_bool(),
        Some(true),
        "the tenant's flag"
    );
    t.chat(&key, &chat_body("directory: disabled"))
        .await?
        .expect_error(403, "permission_error", "permission_denied")?;
    admin(t, "POST", "/admin/v1/tenants/runtime-co/enable", None)
        .await?
        .expect(200)?;
    ensure_eq!(
        chat_status(t, &key).await?,
        200,
        "served again once enabled"
    );
    Ok(())
}

pub async fn a_rotated_key_works_beside_the_new_one_for_its_grace_period(t: &Target) -> Outcome {
    // A run-time key of a config tenant.
    let (id, old) = new_key(t, DIRECTORY_TENANT, json!({})).await?;
    first_answer(t, &old).await?.expect(200)?;
    let started = Instant::now();
    let rotated = admin(
        t,
        "POST",
        &format!("/admin/v1/keys/{id}/rotate"),
        Some(json!({"grace_seconds": 3})),
    )
    .await?
    .expect(200)?;
    ensure_eq!(
        rotated["id"].as_str(),
        Some(id.as_str()),
        "the rotated key's id"
    );
    let new = rotated["key"].as_str().ok_or("no new key")?.to_owned();
    ensure!(new != old, "the rotation made no new key");
    first_answer(t, &new).await?.expect(200)?;
    if started.elapsed() < Duration::from_millis(2_500) {
        ensure_eq!(
            chat_status(t, &old).await?,
            200,
            "the old key in its grace period"
        );
    }
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(started.elapsed())).await;
    ensure_eq!(
        chat_status(t, &old).await?,
        401,
        "the old key after its grace period"
    );
    ensure_eq!(chat_status(t, &new).await?, 200, "the new key after it");
    // Without a grace period the old key stops at once.
    let again = admin(t, "POST", &format!("/admin/v1/keys/{id}/rotate"), None)
        .await?
        .expect(200)?;
    ensure_eq!(
        chat_status(t, &new).await?,
        401,
        "a key rotated without grace"
    );
    let newest = again["key"].as_str().ok_or("no newest key")?;
    first_answer(t, newest).await?.expect(200)?;
    Ok(())
}

pub async fn the_admin_api_refuses_bad_input_naming_the_field(t: &Target) -> Outcome {
    const TENANTS: &str = "/admin/v1/tenants";
    const KEYS: &str = "/admin/v1/keys";
    let cases = [
        (TENANTS, json!({"id": "bad-co", "tier": "gold"}), "tier"),
        (
            TENANTS,
            json!({"id": "bad-co", "tier": "open", "models": ["chat", "gpt-9"]}),
            "models[1]",
        ),
        (TENANTS, json!({"id": "bad#co", "tier": "open"}), "id"),
        (
            TENANTS,
            json!({"id": "bad-co", "tier": "open", "ip_allow": ["10.0.0.0/40"]}),
            "ip_allow[0]",
        ),
        (TENANTS, json!({"id": "bad-co", "tier": 7}), "tier"),
        (KEYS, json!({"tenant": "no-such-co", "name": "k"}), "tenant"),
        (
            KEYS,
            json!({"tenant": DIRECTORY_TENANT, "name": "k", "expires_at": -5}),
            "expires_at",
        ),
        (
            KEYS,
            json!({"tenant": DIRECTORY_TENANT, "name": "k", "expires_at": "soon"}),
            "expires_at",
        ),
        (
            KEYS,
            json!({"tenant": DIRECTORY_TENANT, "name": "k", "user": "a user"}),
            "user",
        ),
        (KEYS, json!({"tenant": DIRECTORY_TENANT}), "name"),
    ];
    for (path, body, field) in cases {
        let err = admin(t, "POST", path, Some(body.clone()))
            .await?
            .expect_error(400, "invalid_request_error", "invalid_request")?;
        ensure_eq!(
            err.param.as_deref(),
            Some(field),
            "the field named for {body}"
        );
    }
    t.post("/admin/v1/tenants")
        .key(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(r#"{"id": "bad-co", "#)
        .send()
        .await?
        .expect_error(400, "invalid_request_error", "invalid_request")?;
    let huge = json!({"id": "big-co", "tier": "open", "ip_allow": vec!["10.0.0.0/8"; 8_000]});
    let reply = admin(t, "POST", "/admin/v1/tenants", Some(huge)).await?;
    reply.expect_error(413, "invalid_request_error", "request_too_large")?;
    // The config's objects are read-only here; ids are unique across both.
    let taken = json!({"id": DIRECTORY_TENANT, "tier": "open"});
    admin(t, "POST", "/admin/v1/tenants", Some(taken))
        .await?
        .expect_error(409, "invalid_request_error", "conflict")?;
    admin(
        t,
        "POST",
        &format!("/admin/v1/tenants/{DIRECTORY_TENANT}/disable"),
        None,
    )
    .await?
    .expect_error(409, "invalid_request_error", "conflict")?;
    admin(t, "DELETE", "/admin/v1/keys/key_0000000000000000", None)
        .await?
        .expect_error(404, "invalid_request_error", "not_found")?;
    // Only the admin key changes anything.
    let reply = t
        .post("/admin/v1/keys")
        .json(&json!({"tenant": DIRECTORY_TENANT, "name": "k"}))
        .send()
        .await?;
    reply.expect_error(401, "authentication_error", "invalid_api_key")?;
    Ok(())
}
