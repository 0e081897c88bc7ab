//! The dashboard (`/dashboard`) in a real headless Chromium
//! (`tests/sdk/dashboard.mjs`, puppeteer-core; scripts/setup.sh installs
//! Debian's `chromium`): after known requests on a fresh tenant, signed in
//! with the admin key, the page shows the ledger's totals and a revoked key
//! as revoked, with no console error. A screenshot of it is left at
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
    let (kept_id, kept) = new_key(t, &tenant, json!({})).await?;
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
    let total: Value = loop {
        let json = t.get(&report).key(ADMIN_KEY).send().await?.expect(200)?;
        if json["total"]["requests"].as_u64() == Some(REQUESTS) || Instant::now() > deadline {
            break json["total"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure_eq!(
        total["requests"].as_u64(),
        Some(REQUESTS),
        "the ledger's requests"
    );

    let shot = repo_dir().join(format!("target/dashboard-{}.png", t.name()));
    let (url, expect, shot) = (t.url(""), total.to_string(), shot.display().to_string());
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
