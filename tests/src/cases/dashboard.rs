//! The dashboard (`/dashboard`) in a real headless Chromium
//! (`tests/sdk/dashboard.mjs`, puppeteer-core; scripts/setup.sh installs
//! Debian's `chromium`): after known requests on a fresh tenant, signed in
//! with the admin key, the page shows the ledger's totals, the latency
//! report's phases, the tenant's budget headroom, the replicas' health and
//! a revoked key as revoked, with no console error. A screenshot of it is left at
//! `target/dashboard-<runner>.png`.

use crate::cases::directory::{admin, first_answer, new_key};
use crate::cases::sdk::run_browser_script;
use crate::client::chat_body;
use crate::gateway::ADMIN_KEY;
use crate::suite::Outcome;
use crate::target::{Target, repo_dir};
use crate::{ensure, ensure_eq};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Requests the case makes that reach the ledger.
const REQUESTS: u64 = 4;

pub async fn the_dashboard_shows_what_the_ledger_says(t: &Target) -> Outcome {
    // The page and its bundle, built in; off the admin key's path.
    let page = t.get("/dashboard").send().await?;
    ensure_eq!(page.status, 200, "/dashboard");
    ensure!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("script-src 'self'")),
        "the page's CSP: {:?}",
        page.header("content-security-policy")
    );
    let script = t.get("/dashboard/app.js").send().await?;
    ensure_eq!(script.status, 200, "/dashboard/app.js");
    let etag = script.header("etag").ok_or("no ETag on the bundle")?;
    let again = t
        .get("/dashboard/app.js")
        .header("if-none-match", etag)
        .send()
        .await?;
    ensure_eq!(again.status, 304, "the bundle asked again with its ETag");

    // A fresh tenant: two keys, four requests, then one key revoked.
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis();
    let tenant = format!("dash-{}-{stamp}", t.name());
    admin(
        t,
        "POST",
        "/admin/v1/tenants",
        Some(json!({"id": tenant, "tier": "open"})),
    )
    .await?
    .expect(201)?;
    // A key with its own budget: a burst of 50 that refills one a minute.
    let limits = json!({"limits": {"requests_per_minute": 1, "request_burst": 50}});
    let (kept_id, kept) = new_key(t, &tenant, limits).await?;
    let (revoked_id, revoked) = new_key(t, &tenant, json!({})).await?;
    first_answer(t, &kept).await?.expect(200)?;
    first_answer(t, &revoked).await?.expect(200)?;
    for n in 0..REQUESTS - 2 {
        t.chat(&kept, &chat_body(&format!("dashboard {n}")))
            .await?
            .expect(200)?;
    }
    admin(t, "DELETE", &format!("/admin/v1/keys/{revoked_id}"), None)
        .await?
        .expect(200)?;

    // The ledger once every settlement is in (the Worker settles after it answers).
    let report = format!("/admin/v1/usage?tenant={tenant}&group_by=day");
    let deadline = Instant::now() + Duration::from_secs(10);
    let usage: Value = loop {
        let json = t.get(&report).key(ADMIN_KEY).send().await?.expect(200)?;
        if json["total"]["requests"].as_u64() == Some(REQUESTS) || Instant::now() > deadline {
            break json["total"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure_eq!(
        usage["requests"].as_u64(),
        Some(REQUESTS),
        "the ledger's requests"
    );

    // Latency by phase: every request in the total, the gateway's and the
    // queue's phases, and (each went upstream) the time to first token;
    // none streamed, so no time per output token.
    let latency = t
        .get(&format!("/admin/v1/latency?tenant={tenant}"))
        .key(ADMIN_KEY)
        .send()
        .await?
        .expect(200)?;
    ensure_eq!(
        latency["requests"].as_u64(),
        Some(REQUESTS),
        "the latency report's requests"
    );
    let counts: Vec<(String, u64)> = latency["phases"]
        .as_array()
        .ok_or("no phases")?
        .iter()
        .map(|p| {
            (
                p["phase"].as_str().unwrap_or("?").to_owned(),
                p["count"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = [
        ("gateway", REQUESTS),
        ("queue", REQUESTS),
        ("time_to_first_token", REQUESTS),
        ("time_per_output_token", 0),
        ("total", REQUESTS),
    ]
    .into_iter()
    .map(|(p, n)| (p.to_owned(), n))
    .collect();
    ensure_eq!(counts, want, "each phase's requests");
    let total = &latency["phases"][4];
    let (p50, p99) = (total["p50_ms"].as_f64(), total["p99_ms"].as_f64());
    ensure!(
        p50.zip(p99)
            .is_some_and(|(p50, p99)| p50 > 0.0 && p50 <= p99),
        "the total's p50 and p99: {p50:?} {p99:?}"
    );

    // Budget headroom: the tenant's level, then the kept key's, 3 of its 50 spent.
    let budgets = admin(
        t,
        "GET",
        &format!("/admin/v1/budgets?tenant={tenant}"),
        None,
    )
    .await?
    .expect(200)?;
    let levels = budgets["levels"].as_array().ok_or("no levels")?;
    let shown: Vec<(&str, Option<&str>)> = levels
        .iter()
        .map(|l| (l["level"].as_str().unwrap_or("?"), l["id"].as_str()))
        .collect();
    ensure_eq!(
        shown,
        vec![("tenant", None), ("key", Some(kept_id.as_str()))],
        "the budget levels"
    );
    let key_rate = &levels[1]["requests_per_minute"];
    ensure_eq!(
        (key_rate["burst"].as_u64(), key_rate["remaining"].as_u64()),
        (Some(50), Some(50 - (REQUESTS - 1))),
        "the kept key's requests left"
    );
    let regions = admin(t, "GET", "/admin/v1/regions", None)
        .await?
        .expect(200)?;
    ensure!(
        regions["data"].as_array().is_some_and(|r| !r.is_empty()),
        "no regions listed: {regions}"
    );

    let shot = repo_dir().join(format!("target/dashboard-{}.png", t.name()));
    let (url, shot) = (t.url(""), shot.display().to_string());
    let expect =
        json!({"usage": usage, "latency": latency, "budgets": budgets, "regions": regions})
            .to_string();
    let args = [
        "--url",
        url.trim_end_matches('/'),
        "--admin-key",
        ADMIN_KEY,
        "--tenant",
        &tenant,
        "--expect",
        &expect,
        "--revoked",
        &revoked_id,
        "--active",
        &kept_id,
        "--screenshot",
        &shot,
    ];
    run_browser_script("dashboard.mjs", &args).await
}
