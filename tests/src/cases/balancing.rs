//! Load-aware balancing among a region's replicas (each case has its own
//! two-replica region, `a` and `b`): a replica 4× slower than its sibling
//! gets at most a quarter of the traffic; one whose metrics report a long
//! waiting queue gets none until the queue drains; the turns of 20
//! concurrent conversations stay on their first replica, and spill over to
//! the other when it is saturated.

use crate::client::{CHAT, answered_by};
use crate::gateway::keys;
use crate::suite::Outcome;
use crate::target::{Runner, Target};
use crate::{ensure, ensure_eq};
use futures_util::future::join_all;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The replica (`pool/x`) that answered `messages` for model `pool`.
async fn replica_for(t: &Target, pool: &str, messages: Value) -> Result<String, String> {
    let body = json!({"model": pool, "messages": messages, "max_tokens": 8});
    let answer = t
        .post(CHAT)
        .key(keys::BALANCING)
        .json(&body)
        .send()
        .await?
        .expect(200)?;
    Ok(answered_by(&answer))
}

fn ask(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// Until the runner balances on what the probes just read: local-runner
/// probes every 500 ms; the Worker's isolate re-reads the cron's results
/// from KV every 5 s, in the first request after that (requests at the
/// same time use what it had), so one request goes first.
async fn let_probes_land(t: &Target) -> Result<(), String> {
    t.probe_regions().await?;
    if t.runner == Runner::Workerd {
        tokio::time::sleep(Duration::from_millis(5_200)).await;
        t.get("/v1/models")
            .key(keys::BALANCING)
            .send()
            .await?
            .expect(200)?;
    }
    t.probe_regions().await
}

/// `count` streams straight to a replica (past the gateway), held open
/// until the set is dropped (which closes them: the replica drops them from
/// its batch and queue); returns once the replica has them all.
async fn load_directly(t: &Target, replica: &str, count: usize) -> Result<JoinSet<()>, String> {
    let url = format!("{}/v1/chat/completions", t.backend_url(replica));
    let mut held = JoinSet::new();
    for i in 0..count {
        let (http, url) = (t.http.clone(), url.clone());
        held.spawn(async move {
            let body = json!({"model": "direct", "messages": ask(&format!("direct {i}")),
                              "stream": true});
            let _open = http.post(&url).json(&body).send().await;
            std::future::pending::<()>().await;
        });
    }
    let held_all = |(running, waiting): (usize, usize)| running + waiting >= count;
    batch_becomes(t, replica, held_all, "holds all direct requests").await?;
    Ok(held)
}

/// Waits until `replica` runs and queues nothing.
async fn drained(t: &Target, replica: &str) -> Outcome {
    batch_becomes(
        t,
        replica,
        |batch| batch == (0, 0),
        "runs and queues nothing",
    )
    .await
}

/// Waits up to 10 s until `replica`'s (running, waiting) satisfies `done`.
async fn batch_becomes(
    t: &Target,
    replica: &str,
    done: impl Fn((usize, usize)) -> bool,
    what: &str,
) -> Outcome {
    let controls = t.backend(replica);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(controls.batch()) {
        ensure!(
            Instant::now() < deadline,
            "{replica} never {what} in 10 s (running, waiting: {:?})",
            controls.batch()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub async fn a_slow_replica_gets_a_quarter_or_less(t: &Target) -> Outcome {
    t.backend("pool-slow/a").set_latency(10, 0);
    t.backend("pool-slow/b").set_latency(40, 0);
    // 160 requests, four at a time.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for round in 0..40 {
        let calls = (0..4).map(|i| {
            let messages = ask(&format!("slow case, round {round}, call {i}"));
            replica_for(t, "pool-slow", messages)
        });
        for replica in join_all(calls).await {
            *counts.entry(replica?).or_default() += 1;
        }
    }
    let fast = counts.get("pool-slow/a").copied().unwrap_or(0);
    ensure!(
        fast * 4 >= 160 * 3,
        "the fast replica served {fast} of 160 (want at least 120): {counts:?}"
    );
    Ok(())
}

pub async fn a_queued_replica_gets_no_traffic_until_it_drains(t: &Target) -> Outcome {
    let b = t.backend("pool-queue/b");
    b.set_max_running(Some(1));
    b.set_latency(10_000, 0);
    let held = load_directly(t, "pool-queue/b", 6).await?;
    ensure_eq!(b.batch(), (1, 5), "pool-queue/b: running, waiting");
    let_probes_land(t).await?;
    if t.runner == Runner::LocalRunner {
        // What the balancing saw, in the runner's own metrics.
        let metrics = t.metrics().await?;
        let line = "edgegate_replica_reported_waiting{target=\"pool-queue/b\"} 5";
        ensure!(
            metrics.contains(line),
            "no `{line}` in /metrics:\n{metrics}"
        );
    }
    for i in 0..20 {
        let replica = replica_for(t, "pool-queue", ask(&format!("while queued {i}"))).await?;
        ensure_eq!(replica, "pool-queue/a", "request {i} while b queues 5");
    }
    drop(held);
    b.set_max_running(None);
    b.set_latency(0, 0);
    drained(t, "pool-queue/b").await?;
    let_probes_land(t).await?;
    t.reported_up("pool-queue/b").await?;
    // Drained, b takes traffic again: at least 8 of the next requests, up to
    // 120 of them (its breaker may need a few good probes after the queued
    // phase before its rank is a's again, so the first ones can all go to a).
    let (mut to_b, mut sent) = (0, 0);
    while to_b < 8 && sent < 120 {
        if replica_for(t, "pool-queue", ask(&format!("drained {sent}"))).await? == "pool-queue/b" {
            to_b += 1;
        }
        sent += 1;
    }
    ensure!(
        to_b >= 8,
        "pool-queue/b served {to_b} of {sent} once drained (want at least 8 of up to 120)"
    );
    Ok(())
}

/// Conversation `c`'s messages up to turn `turn` (0-based).
fn conversation(c: usize, turn: usize) -> Value {
    let mut messages =
        vec![json!({"role": "system", "content": format!("You are assistant {c}.")})];
    for k in 0..=turn {
        messages.push(json!({"role": "user", "content": format!("conversation {c}, turn {k}")}));
        if k < turn {
            messages.push(json!({"role": "assistant", "content": format!("answer {k}")}));
        }
    }
    Value::Array(messages)
}

/// 20 conversations at once, `turns` each: for each, the replicas of its turns.
async fn converse(t: &Target, first_turn: usize, turns: usize) -> Result<Vec<Vec<String>>, String> {
    let conversations = (0..20).map(|c| async move {
        let mut replicas = Vec::new();
        for turn in first_turn..first_turn + turns {
            replicas.push(replica_for(t, "pool-affinity", conversation(c, turn)).await?);
        }
        Ok::<_, String>(replicas)
    });
    join_all(conversations).await.into_iter().collect()
}

pub async fn conversations_stay_on_their_replica_and_spill_when_it_is_full(t: &Target) -> Outcome {
    // Latencies well above scheduling noise, the same on both.
    t.backend("pool-affinity/a").set_latency(30, 0);
    t.backend("pool-affinity/b").set_latency(30, 0);
    let turns = converse(t, 0, 4).await?;
    let (mut stayed, mut later) = (0, 0);
    for replicas in &turns {
        later += replicas.len() - 1;
        stayed += replicas[1..].iter().filter(|r| **r == replicas[0]).count();
    }
    ensure!(
        stayed * 10 >= later * 9,
        "{stayed} of {later} later turns stayed on their first replica: {turns:?}"
    );
    let homes: Vec<&String> = turns.iter().map(|r| &r[0]).collect();
    let on_a = homes.iter().filter(|h| **h == "pool-affinity/a").count();
    ensure!(
        (3..=17).contains(&on_a),
        "conversations are not spread: {on_a} of 20 start on a"
    );
    // a queues past the affinity slack (8): its conversations move to b.
    let a = t.backend("pool-affinity/a");
    a.set_max_running(Some(1));
    a.set_latency(10_000, 0);
    let held = load_directly(t, "pool-affinity/a", 12).await?;
    let_probes_land(t).await?;
    let next = converse(t, 4, 1).await?;
    for (c, replicas) in next.iter().enumerate() {
        ensure_eq!(
            replicas[0].as_str(),
            "pool-affinity/b",
            "conversation {c} (first on {}) with a queueing 11",
            homes[c]
        );
    }
    drop(held);
    a.set_max_running(None);
    a.set_latency(0, 0);
    drained(t, "pool-affinity/a").await
}
