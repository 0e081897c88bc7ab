//! The usage ledger and the admin API's usage report: what the ledger
//! holds is exactly what the requests were charged, under the model that
//! answered; the JSON and CSV forms agree; only the admin key reads it.

use crate::client::{CHAT, chat_body};
use crate::gateway::{ADMIN_KEY, LEDGER_TENANT, keys};
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// (model, version) → [requests, input tokens, output tokens, micro-dollars,
/// errors, cache hits].
type Sums = BTreeMap<(String, String), [u64; 6]>;

const REPORT: &str = "/admin/v1/usage?tenant=ledger-co&group_by=model";

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// What one usage record adds to the ledger.
fn add_record(sums: &mut Sums, r: &Value) {
    let hit = matches!(r["cache"].as_str(), Some("hit" | "coalesced" | "stale"));
    let version = if hit {
        String::new()
    } else {
        text(&r["version"])
    };
    let status = r["status"].as_u64().unwrap_or_default();
    let row = sums.entry((text(&r["model"]), version)).or_default();
    let micros = (r["cost_usd"].as_f64().unwrap_or_default() * 1e6).round() as u64;
    let add = [
        1,
        r["input_tokens"].as_u64().unwrap_or_default(),
        r["output_tokens"].as_u64().unwrap_or_default(),
        micros,
        u64::from(status >= 400 && status != 499),
        u64::from(hit),
    ];
    for (sum, n) in row.iter_mut().zip(add) {
        *sum += n;
    }
}

/// The report's JSON rows as sums.
fn json_sums(report: &Value) -> Result<Sums, String> {
    let rows = report["data"].as_array().ok_or("a report without data")?;
    let mut sums = Sums::new();
    for row in rows {
        let n = |name: &str| row[name].as_u64().unwrap_or(u64::MAX);
        let version = row["version"].as_str().unwrap_or_default().to_owned();
        sums.insert(
            (text(&row["model"]), version),
            [
                n("requests"),
                n("input_tokens"),
                n("output_tokens"),
                n("cost_micros"),
                n("errors"),
                n("cache_hits"),
            ],
        );
    }
    Ok(sums)
}

/// The report's CSV lines as sums.
fn csv_sums(csv: &str) -> Result<Sums, String> {
    let mut lines = csv.lines();
    ensure_eq!(
        lines.next(),
        Some(
            "model,version,requests,input_tokens,output_tokens,cost_micros,errors,cache_hits,degraded"
        ),
        "the CSV header"
    );
    let mut sums = Sums::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        ensure!(
            cells.len() == 9,
            "a CSV line of {} cells: {line}",
            cells.len()
        );
        let n = |i: usize| cells[i].parse::<u64>().unwrap_or(u64::MAX);
        sums.insert(
            (cells[0].to_owned(), cells[1].to_owned()),
            [n(2), n(3), n(4), n(5), n(6), n(7)],
        );
    }
    Ok(sums)
}

async fn report(t: &Target, accept: &str) -> Result<crate::client::Reply, String> {
    t.get(REPORT)
        .key(ADMIN_KEY)
        .header("accept", accept)
        .send()
        .await
}

pub async fn the_ledger_equals_what_was_charged(t: &Target) -> Outcome {
    let empty = report(t, "application/json").await?.expect(200)?;
    ensure_eq!(
        empty["total"]["requests"].as_u64(),
        Some(0),
        "the fresh tenant's ledger"
    );
    let mut ids = Vec::new();
    // A miss, then the same request answered from the cache.
    let mut cached = chat_body("ledger: once, then from the cache");
    cached["temperature"] = json!(0);
    for _ in 0..2 {
        let reply = t.chat(keys::LEDGER, &cached).await?;
        reply.expect(200)?;
        ids.push(reply.request_id());
    }
    // A stream, charged the usage it reports.
    let mut streamed = chat_body("ledger: a stream");
    streamed["stream"] = json!(true);
    let stream = t
        .post(CHAT)
        .key(keys::LEDGER)
        .json(&streamed)
        .stream()
        .await?;
    ensure!(
        stream.ends_with_done(),
        "the stream does not end with [DONE]"
    );
    ids.push(stream.request_id()?);
    // `solo`'s only region fails once: chat@v1 answers, and is ledgered so.
    t.backend("solo-east").fail_next(1, 503);
    let solo = json!({"model": "solo", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "ledger: a fallback"}]});
    let reply = t.chat(keys::LEDGER, &solo).await?;
    let answer = reply.expect(200)?;
    ensure_eq!(
        answer["model"].as_str(),
        Some("chat-v1"),
        "the fallback's answer"
    );
    ids.push(reply.request_id());
    // The backend refuses the request: an error that cost nothing.
    t.backend("solo-east").fail_next(1, 400);
    let lone = json!({"model": "lone", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "ledger: refused"}]});
    let reply = t.chat(keys::LEDGER, &lone).await?;
    ensure_eq!(reply.status, 400, "the refused request's status");
    ids.push(reply.request_id());

    let mut charged = Sums::new();
    for id in &ids {
        add_record(&mut charged, &t.the_record(id).await?);
    }
    ensure!(
        charged.contains_key(&("chat".to_owned(), "v1".to_owned())),
        "no record names the fallback's model: {charged:?}"
    );
    // The Worker settles after it responds: wait for the last settlement.
    let deadline = Instant::now() + Duration::from_secs(10);
    let json = loop {
        let json = report(t, "application/json").await?.expect(200)?;
        if json["total"]["requests"].as_u64() == Some(ids.len() as u64) || Instant::now() > deadline
        {
            break json;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure_eq!(
        json_sums(&json)?,
        charged,
        "the ledger (JSON) against the records"
    );
    let csv = report(t, "text/csv").await?;
    ensure_eq!(csv.status, 200, "the CSV report's status");
    ensure!(
        csv.header("content-type")
            .is_some_and(|c| c.starts_with("text/csv")),
        "the CSV report's content type: {:?}",
        csv.header("content-type")
    );
    ensure_eq!(
        csv_sums(&csv.text)?,
        charged,
        "the ledger (CSV) against the records"
    );
    let total = &json["total"];
    ensure_eq!(
        total["cost_micros"].as_u64(),
        Some(charged.values().map(|s| s[3]).sum()),
        "the total cost"
    );
    Ok(())
}

pub async fn only_the_admin_key_reads_usage(t: &Target) -> Outcome {
    for key in [
        None,
        Some(keys::LEDGER),
        Some("conformance-admin-key-wrong"),
    ] {
        let mut call = t.get(REPORT);
        if let Some(key) = key {
            call = call.key(key);
        }
        let reply = call.send().await?;
        reply.expect_error(401, "authentication_error", "invalid_api_key")?;
        ensure!(
            !reply.text.contains(ADMIN_KEY),
            "the admin key is in a refusal"
        );
    }
    let bad = t
        .get("/admin/v1/usage?from=2026-02-30")
        .key(ADMIN_KEY)
        .send()
        .await?
        .expect_error(400, "invalid_request_error", "invalid_request")?;
    ensure_eq!(bad.param.as_deref(), Some("from"), "the bad parameter");
    let unknown = t.get("/admin/v1/nothing").key(ADMIN_KEY).send().await?;
    unknown.expect_error(404, "invalid_request_error", "unknown_url")?;
    Ok(())
}

pub async fn the_configs_tenants_are_listed(t: &Target) -> Outcome {
    let list = t.get("/admin/v1/tenants").key(ADMIN_KEY).send().await?;
    let list = list.expect(200)?;
    let tenants = list["data"].as_array().ok_or("no data")?;
    let ledger = tenants
        .iter()
        .find(|x| x["id"] == LEDGER_TENANT)
        .ok_or("the ledger's tenant is not listed")?;
    ensure_eq!(ledger["tier"].as_str(), Some("open"), "its tier");
    ensure_eq!(ledger["source"].as_str(), Some("config"), "its source");
    ensure!(
        !list
            .to_string()
            .contains(&crate::gateway::sha256_hex(keys::LEDGER)),
        "a key's hash is listed"
    );
    let one = t
        .get(&format!("/admin/v1/tenants/{LEDGER_TENANT}"))
        .key(ADMIN_KEY)
        .send()
        .await?
        .expect(200)?;
    ensure_eq!(one["id"].as_str(), Some(LEDGER_TENANT), "the one read");
    t.get("/admin/v1/tenants/no-such-co")
        .key(ADMIN_KEY)
        .send()
        .await?
        .expect_error(404, "invalid_request_error", "not_found")?;
    t.get("/admin/v1/tenants").send().await?.expect_error(
        401,
        "authentication_error",
        "invalid_api_key",
    )?;
    Ok(())
}
