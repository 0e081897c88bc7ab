//! The local runner end to end: the real binary, real sockets, simulated
//! regional backends. What only this runner has (SQLite quotas across a
//! kill -9, the wasm sandbox, probes and breakers, metrics) is tested here;
//! behaviour shared with the Worker is in the conformance suite (`tests/`).

#[path = "support/prometheus.rs"]
mod prometheus;
mod support;

use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_checked_and_errors_are_openai_shaped() {
    let backends = Backends::start(0).await;
    let runner = Runner::start(&config(&backends), &[]);
    let c = client();
    let ok = post(&c, &runner, "/v1/chat/completions", ACME_KEY, &chat("hi")).await;
    assert_eq!(ok.status(), 200);
    assert!(header(&ok, "x-request-id").is_some_and(|id| id.starts_with("req_")));
    let body: Value = ok.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");

    let bad = post(&c, &runner, "/v1/chat/completions", "sk-nope", &chat("hi")).await;
    assert_eq!(bad.status(), 401);
    let err: Value = bad.json().await.expect("json");
    assert_eq!(err["error"]["type"], "authentication_error");

    let denied = post(
        &c,
        &runner,
        "/v1/chat/completions",
        BLOCKED_KEY,
        &chat("hi"),
    )
    .await;
    assert_eq!(
        denied.status(),
        403,
        "127.0.0.0/8 is on this tenant's deny list"
    );

    // Secrets never reach the access log.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = runner.access_log();
    assert!(log.contains("\"status\":401"), "{log}");
    assert!(!log.contains(ACME_KEY) && !log.contains("sk-nope"));
    assert!(!log.contains("\"hi\""), "no prompt text in logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_tier_gets_429_with_headers() {
    let backends = Backends::start(0).await;
    let runner = Runner::start(&config(&backends), &[]);
    let c = client();
    for _ in 0..3 {
        let r = post(&c, &runner, "/v1/chat/completions", FREE_KEY, &chat("hi")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), Some("3"));
    }
    let r = post(&c, &runner, "/v1/chat/completions", FREE_KEY, &chat("hi")).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after")
        .expect("retry-after")
        .parse()
        .expect("secs");
    assert!((1..=20).contains(&retry), "one request per 20 s: {retry}");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), Some("0"));
    let err: Value = r.json().await.expect("json");
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_admission_under_200_concurrent_requests() {
    let backends = Backends::start(0).await;
    let mut cfg = config(&backends);
    cfg["tiers"]["free"]["requests_per_minute"] = json!(50);
    let runner = Runner::start(&cfg, &[]);
    let c = client();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (c, url) = (c.clone(), runner.url("/v1/chat/completions"));
            tokio::spawn(async move {
                c.post(url)
                    .bearer_auth(FREE_KEY)
                    .json(&chat(&format!("request {i}")))
                    .send()
                    .await
                    .expect("request")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((admitted, limited), (50, 150), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_the_nearest_region_is_down() {
    let backends = Backends::start(0).await;
    let runner = Runner::start(&config(&backends), &[]);
    let c = client();
    let from_paris = |key: &'static str| {
        c.post(runner.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-edgegate-client-latitude", "48.85")
            .header("x-edgegate-client-longitude", "2.35")
            .json(&chat("where am I served?"))
    };
    let body: Value = from_paris(ACME_KEY)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(content.contains("eu-west"), "nearest first: {content}");

    // eu-west starts failing every request: no client sees an error.
    backends.controls("eu-west").set_down(true);
    for _ in 0..5 {
        let r = from_paris(ACME_KEY).send().await.expect("req");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.expect("json");
        let content = body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(!content.contains("eu-west"), "{content}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_opens_and_recovers() {
    let backends = Backends::start(0).await;
    let runner = Runner::start(&config(&backends), &["--breaker-open-ms", "800"]);
    let c = client();
    let state = || async {
        let text = c
            .get(runner.url("/metrics"))
            .send()
            .await
            .expect("req")
            .text()
            .await
            .expect("text");
        text.lines()
            .find(|l| l.starts_with("edgegate_region_circuit_state{region=\"ap-south\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    let wait_for = |want: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if state().await.as_deref() == Some(want) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(wait_for("0").await, "probes see ap-south up");
    backends.controls("ap-south").set_down(true);
    assert!(wait_for("2").await, "three failed probes open the breaker");
    backends.controls("ap-south").set_down(false);
    assert!(
        wait_for("0").await,
        "after the open period a good probe closes it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pass_through_with_the_backends_pacing() {
    let backends = Backends::start(60).await;
    let runner = Runner::start(&config(&backends), &[]);
    let c = client();
    let mut body = chat("stream please");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(10);
    let started = Instant::now();
    let r = post(&c, &runner, "/v1/chat/completions", ACME_KEY, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), Some("text/event-stream"));
    let mut arrivals = Vec::new();
    let mut text = String::new();
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        arrivals.push(started.elapsed());
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        !text.contains("\"usage\":{"),
        "the usage chunk the gateway asked for is stripped: {text}"
    );
    assert!(
        arrivals.len() >= 8,
        "chunks arrive separately: {}",
        arrivals.len()
    );
    let spread = *arrivals.last().expect("last") - arrivals[0];
    assert!(
        spread >= Duration::from_millis(60 * 6),
        "not buffered: spread {spread:?}"
    );
    // The backend saw the gateway ask for usage on the client's behalf.
    let sent = backends
        .controls("us-east")
        .last_request_body()
        .expect("a request reached us-east");
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_ends_with_an_error_event() {
    let backends = Backends::start(20).await;
    backends.controls("us-east").stall_after_chunks(Some(2));
    let runner = Runner::start(&config(&backends), &[]);
    let c = client();
    let mut body = chat("stall");
    body["stream"] = json!(true);
    let text = post(&c, &runner, "/v1/chat/completions", ACME_KEY, &body)
        .await
        .text()
        .await
        .expect("text");
    assert!(text.contains("upstream_timeout"), "{text}");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_the_upstream_stream() {
    let backends = Backends::start(100).await;
    let runner = Runner::start(&config(&backends), &[]);
    let c = client();
    let mut body = chat("a long story");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(200);
    let r = post(&c, &runner, "/v1/chat/completions", ACME_KEY, &body).await;
    let mut stream = r.bytes_stream();
    stream.next().await.expect("first chunk").expect("ok");
    drop(stream);
    let controls = backends.controls("us-east");
    let deadline = Instant::now() + Duration::from_secs(5);
    while controls.streams_cancelled() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        controls.streams_cancelled(),
        1,
        "the backend saw the cancellation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_after_a_miss_and_never_across_tenants() {
    let backends = Backends::start(0).await;
    let runner = Runner::start(&config(&backends), &[]);
    let c = client();
    let mut body = chat("What is the capital of France?");
    body["temperature"] = json!(0);
    let first = post(&c, &runner, "/v1/chat/completions", ACME_KEY, &body).await;
    assert_eq!(header(&first, "x-edgegate-cache"), Some("MISS"));
    let first: Value = first.json().await.expect("json");
    let second = post(&c, &runner, "/v1/chat/completions", ACME_KEY, &body).await;
    assert_eq!(header(&second, "x-edgegate-cache"), Some("HIT"));
    assert_eq!(second.json::<Value>().await.expect("json"), first);
    let other = post(&c, &runner, "/v1/chat/completions", OTHER_KEY, &body).await;
    assert_eq!(
        header(&other, "x-edgegate-cache"),
        Some("MISS"),
        "tenant-scoped"
    );
    // A streamed request is answered from the cache as a replayed stream.
    body["stream"] = json!(true);
    let replay = post(&c, &runner, "/v1/chat/completions", ACME_KEY, &body).await;
    assert_eq!(header(&replay, "x-edgegate-cache"), Some("HIT"));
    assert!(replay.text().await.expect("text").contains("data: [DONE]"));
    body["temperature"] = json!(0.9);
    body["stream"] = json!(false);
    let sampled = post(&c, &runner, "/v1/chat/completions", ACME_KEY, &body).await;
    assert_eq!(header(&sampled, "x-edgegate-cache"), Some("BYPASS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_the_sandbox_is_a_500_and_the_next_request_succeeds() {
    let backends = Backends::start(0).await;
    let mut cfg = config(&backends);
    cfg["limits"]["max_body_bytes"] = json!(8 << 20);
    let runner = Runner::start(&cfg, &["--guest-memory-mb", "12"]);
    let c = client();
    // A body the core accepts but that cannot fit in 12 MiB once parsed.
    let huge = "word ".repeat(1_500_000);
    let r = post(&c, &runner, "/v1/chat/completions", ACME_KEY, &chat(&huge)).await;
    assert_eq!(r.status(), 500);
    let err: Value = r.json().await.expect("json");
    assert_eq!(err["error"]["type"], "server_error");
    let r = post(&c, &runner, "/v1/chat/completions", ACME_KEY, &chat("hi")).await;
    assert_eq!(r.status(), 200, "the instance was replaced");
    let metrics = c
        .get(runner.url("/metrics"))
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("edgegate_sandbox_traps_total 1"),
        "{metrics}"
    );
}

/// One request with the backend fast again: the requests left in the
/// restarted runner's budget.
async fn remaining_after_restart(backends: &Backends, c: &reqwest::Client, runner: &Runner) -> u64 {
    backends.controls("us-east").set_latency(0, 0);
    let r = post(
        c,
        runner,
        "/v1/chat/completions",
        FREE_KEY,
        &chat("after restart"),
    )
    .await;
    assert_eq!(r.status(), 200);
    header(&r, "x-ratelimit-remaining-requests")
        .and_then(|v| v.parse().ok())
        .expect("remaining")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_usage_survives_kill_9_under_load() {
    let backends = Backends::start(0).await;
    let mut cfg = config(&backends);
    // 20 requests per minute: a reset budget would show 20 again.
    cfg["tiers"]["free"]["requests_per_minute"] = json!(20);
    let mut runner = Runner::start(&cfg, &[]);
    let c = client();
    let mut remaining = 0;
    for _ in 0..10 {
        let r = post(
            &c,
            &runner,
            "/v1/chat/completions",
            FREE_KEY,
            &chat("count me"),
        )
        .await;
        assert_eq!(r.status(), 200);
        remaining = header(&r, "x-ratelimit-remaining-requests")
            .and_then(|v| v.parse::<u64>().ok())
            .expect("remaining");
    }
    // Five more are in flight (the backend is slow) when the runner is killed:
    // their reservations are committed, so they stay charged.
    backends.controls("us-east").set_latency(2_000, 0);
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let (c, url) = (c.clone(), runner.url("/v1/chat/completions"));
            tokio::spawn(async move {
                let _ = c
                    .post(url)
                    .bearer_auth(FREE_KEY)
                    .json(&chat("in flight"))
                    .send()
                    .await;
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    runner.kill_and_restart();
    for t in in_flight {
        let _ = t.await;
    }
    let after = remaining_after_restart(&backends, &c, &runner).await;
    // 10 + 5 + 1 taken of 20; at most a few refilled during the restart.
    assert!(
        after + 6 <= remaining + 3,
        "usage lost or budget reset: {remaining} left before the kill, {after} after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_group_commits_loses_no_admitted_reservation() {
    let backends = Backends::start(0).await;
    let mut cfg = config(&backends);
    // A burst of 400 refilling at one a second: what a restart refills is small.
    cfg["tiers"]["free"]["requests_per_minute"] = json!(60);
    cfg["tiers"]["free"]["request_burst"] = json!(400);
    cfg["tiers"]["free"]["tokens_per_minute"] = json!(100_000_000);
    let mut runner = Runner::start(&cfg, &[]);
    let c = client();
    // Every forwarded request stays in flight, so none is settled: each one
    // the backend saw holds a reservation that must survive the kill.
    backends.controls("us-east").set_latency(5_000, 0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..64)
        .map(|_| {
            let (c, url, stop) = (c.clone(), runner.url("/v1/chat/completions"), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = c.post(&url).bearer_auth(FREE_KEY).json(&chat("load"));
                    let _ = tokio::time::timeout(Duration::from_millis(300), sent.send()).await;
                }
            })
        })
        .collect();
    // Kill while reservations are being admitted and committed in batches.
    tokio::time::sleep(Duration::from_millis(700)).await;
    runner.kill_and_restart();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in senders {
        let _ = t.await;
    }
    let forwarded = backends.controls("us-east").requests_received();
    assert!(
        forwarded >= 20,
        "only {forwarded} forwarded before the kill"
    );
    let remaining = remaining_after_restart(&backends, &c, &runner).await;
    // Charged after the restart: every forwarded request, then this one,
    // less at most ~10 s of refill at one a second.
    let charged = 400 - remaining;
    assert!(
        charged + 10 > forwarded,
        "{forwarded} forwarded before the kill, only {charged} charged after the restart"
    );
}

/// The usage report of tenant `acme`, by model (read after every
/// settlement before it is committed).
async fn acme_usage(c: &reqwest::Client, runner: &Runner) -> serde_json::Value {
    let r = c
        .get(runner.url("/admin/v1/usage?tenant=acme&group_by=model"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("usage");
    assert_eq!(r.status(), 200);
    r.json().await.expect("JSON")
}

/// A runner with the admin API on, after `requests` answered requests of
/// tenant `acme` (its backends must outlive it).
async fn runner_with_usage(backends: &Backends, requests: usize) -> (Runner, reqwest::Client) {
    let mut cfg = config(backends);
    cfg["admin"] = json!({"api_key_secret": "EDGEGATE_ADMIN_KEY"});
    let runner = Runner::start(&cfg, &[]);
    let c = client();
    for i in 0..requests {
        let body = chat(&format!("usage {i}"));
        let r = post(&c, &runner, "/v1/chat/completions", ACME_KEY, &body).await;
        assert_eq!(r.status(), 200);
    }
    (runner, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_rows_survive_kill_9() {
    let backends = Backends::start(0).await;
    let (mut runner, c) = runner_with_usage(&backends, 3).await;
    let before = acme_usage(&c, &runner).await;
    assert_eq!(before["total"]["requests"], 3, "{before}");
    assert!(
        before["total"]["cost_micros"].as_u64() > Some(0),
        "{before}"
    );
    runner.kill_and_restart();
    let after = acme_usage(&c, &runner).await;
    assert_eq!(after["data"], before["data"]);
    assert_eq!(after["total"], before["total"]);
}

/// Tenants and keys made through the admin API, a revocation among them,
/// are in the state file the moment the API answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_keys_survive_kill_9() {
    let backends = Backends::start(0).await;
    let (mut runner, c) = runner_with_usage(&backends, 0).await;
    let admin = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut call = c.request(method, runner.url(path)).bearer_auth(ADMIN_KEY);
        if let Some(body) = body {
            call = call.json(&body);
        }
        call.send()
    };
    let made = admin(
        reqwest::Method::POST,
        "/admin/v1/tenants",
        Some(json!({"id": "kept-co", "tier": "free"})),
    )
    .await
    .expect("tenant");
    assert_eq!(made.status(), 201);
    let mut keys = Vec::new();
    for name in ["kept", "revoked"] {
        let made = admin(
            reqwest::Method::POST,
            "/admin/v1/keys",
            Some(json!({"tenant": "kept-co", "name": name})),
        )
        .await
        .expect("key");
        assert_eq!(made.status(), 201);
        let made: serde_json::Value = made.json().await.expect("JSON");
        keys.push((
            made["id"].as_str().expect("id").to_owned(),
            made["key"].as_str().expect("key").to_owned(),
        ));
    }
    let revoked = admin(
        reqwest::Method::DELETE,
        &format!("/admin/v1/keys/{}", keys[1].0),
        None,
    )
    .await
    .expect("revoke");
    assert_eq!(revoked.status(), 200);
    runner.kill_and_restart();
    let served = post(
        &c,
        &runner,
        "/v1/chat/completions",
        &keys[0].1,
        &chat("after"),
    )
    .await;
    assert_eq!(served.status(), 200);
    let refused = post(
        &c,
        &runner,
        "/v1/chat/completions",
        &keys[1].1,
        &chat("after"),
    )
    .await;
    assert_eq!(refused.status(), 401);
    let listed: serde_json::Value = c
        .get(runner.url("/admin/v1/keys?tenant=kept-co"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
}

/// `local-runner admin usage …` against a running runner, as a table, as
/// JSON, and refused with a wrong key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_prints_usage() {
    let backends = Backends::start(0).await;
    let (runner, _) = runner_with_usage(&backends, 2).await;
    let cli = |extra: &[&str], key: &str| {
        let mut args = vec!["admin", "usage", "--url", &runner.base, "--tenant", "acme"];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_local-runner"))
            .args(&args)
            .env("EDGEGATE_ADMIN_KEY", key)
            .env_remove("EDGEGATE_URL")
            .output()
            .expect("the CLI runs")
    };
    let table = cli(&["--group-by", "model"], ADMIN_KEY);
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8_lossy(&table.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("model"), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("chat-model")), "{text}");
    assert!(
        lines.last().is_some_and(|l| l.starts_with("total")),
        "{text}"
    );
    let json = cli(&["--json"], ADMIN_KEY);
    assert!(json.status.success(), "{json:?}");
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(report["total"]["requests"], 2);
    let refused = cli(&[], "not-the-admin-key");
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("401"), "{why}");
    assert!(!why.contains("not-the-admin-key"), "{why}");
}

/// `local-runner admin tenants|keys …`: a tenant and a key made, listed,
/// used and revoked from the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_manages_tenants_and_keys() {
    let backends = Backends::start(0).await;
    let (runner, c) = runner_with_usage(&backends, 0).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_local-runner"))
            .args(["admin", "--url", &runner.base])
            .args(args)
            .env("EDGEGATE_ADMIN_KEY", ADMIN_KEY)
            .output()
            .expect("the CLI runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.success(),
            text,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, text, why) = cli(&[
        "tenants",
        "create",
        "cli-co",
        "--tier",
        "free",
        "--models",
        "chat-model",
    ]);
    assert!(ok, "{text}{why}");
    assert!(text.contains("cli-co"), "{text}");
    let (ok, text, why) = cli(&[
        "--json",
        "keys",
        "create",
        "--tenant",
        "cli-co",
        "--name",
        "ci",
        "--limits",
        r#"{"requests_per_minute": 100, "models": ["chat-model"]}"#,
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text)
            .map(|v| v["limits"]["requests_per_minute"].clone())
            .ok(),
        Some(json!(100)),
        "{text}{why}"
    );
    assert!(ok, "{text}{why}");
    let made: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let (id, key) = (
        made["id"].as_str().expect("id"),
        made["key"].as_str().expect("key"),
    );
    let served = post(&c, &runner, "/v1/chat/completions", key, &chat("cli")).await;
    assert_eq!(served.status(), 200);
    let (ok, table, _) = cli(&["keys", "list", "--tenant", "cli-co"]);
    assert!(ok);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("id "), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(id) && l.contains("cli-co")),
        "{table}"
    );
    assert!(!table.contains(key), "{table}");
    let (ok, tenants, _) = cli(&["tenants", "list"]);
    assert!(
        ok && tenants.lines().any(|l| l.starts_with("cli-co")),
        "{tenants}"
    );
    let (ok, _, why) = cli(&["keys", "revoke", id]);
    assert!(ok, "{why}");
    let refused = post(&c, &runner, "/v1/chat/completions", key, &chat("cli")).await;
    assert_eq!(refused.status(), 401);
    // A refusal is one line naming the status and the field.
    let (ok, _, why) = cli(&["tenants", "create", "bad-co", "--tier", "gold"]);
    assert!(!ok);
    assert!(why.contains("400") && why.contains("tier"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_healthz() {
    let backends = Backends::start(0).await;
    let runner = Runner::start(&config(&backends), &[]);
    let c = client();
    post(&c, &runner, "/v1/chat/completions", ACME_KEY, &chat("hi")).await;
    let health = c.get(runner.url("/healthz")).send().await.expect("req");
    assert_eq!(health.status(), 200);
    let m = c
        .get(runner.url("/metrics"))
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("text");
    assert!(
        m.contains("edgegate_requests_total{endpoint=\"chat\",status=\"2xx\"} 1"),
        "{m}"
    );
    assert!(m.contains("edgegate_tokens_total{model=\"chat-model\",direction=\"output\"}"));
    assert!(m.contains("edgegate_request_duration_seconds_bucket"));
    assert!(m.ends_with("# EOF\n"), "{m}");
    assert!(m.contains("edgegate_region_circuit_state{"), "{m}");
    assert!(m.contains("edgegate_sandbox_traps_total 0"), "{m}");
    // A tenant listed in observability.metrics_tenants has its own series.
    assert!(
        m.contains("edgegate_tenant_requests_total{tenant=\"acme\",status=\"2xx\"} 1"),
        "{m}"
    );
    // The whole exposition, live families included, as Prometheus's own
    // client library parses it.
    let families = prometheus::parse(&m);
    for (name, kind) in [
        ("edgegate_requests", "counter"),
        ("edgegate_request_duration_seconds", "histogram"),
        ("edgegate_region_circuit_state", "gauge"),
        ("edgegate_sandbox_traps", "counter"),
    ] {
        assert_eq!(prometheus::family_type(&families, name), kind, "{name}");
    }
    let acme = prometheus::sample(
        &families,
        "edgegate_tenant_requests",
        "edgegate_tenant_requests_total",
        &[("tenant", "acme"), ("status", "2xx")],
    );
    assert_eq!(acme, Some(1.0), "{families}");
}
