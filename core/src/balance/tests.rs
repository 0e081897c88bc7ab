use super::*;
use crate::config::Config;
use crate::geo::Health;
use crate::load::{BackendLoad, LoadBoard};
use serde_json::json;

/// The fixture with its first region split into replicas `a`, `b` (and `c`).
fn config(replicas: &[&str]) -> Config {
    let mut v = crate::testing::config_value();
    let region = &mut v["regions"][0];
    region.as_object_mut().expect("object").remove("base_url");
    region["replicas"] = json!(
        replicas
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"name": n, "base_url": format!("http://127.0.0.1:{}", 9200 + i)}))
            .collect::<Vec<_>>()
    );
    Config::from_json(&v.to_string(), &crate::testing::secrets()).expect("valid")
}

/// The targets of the first region's replicas.
fn targets(c: &Config) -> Vec<String> {
    c.regions[0]
        .replicas
        .iter()
        .map(|r| r.target.clone())
        .collect()
}

fn status(target: &str, health: Health, backend: Option<BackendLoad>) -> RegionStatus {
    RegionStatus {
        region: target.into(),
        health,
        latency_ms: None,
        backend,
    }
}

fn first(c: &Config, statuses: &[RegionStatus], loads: &[TargetLoad], id: &str) -> usize {
    order_replicas(
        &c.regions[0],
        statuses,
        loads,
        None,
        id,
        &Balancing::default(),
    )[0]
}

#[test]
fn targets_name_region_and_replica() {
    let c = config(&["a", "b"]);
    let r = &c.regions[0];
    assert_eq!(r.replicas[1].target, format!("{}/b", r.name));
    assert_eq!(c.regions[1].replicas[0].target, c.regions[1].name);
}

#[test]
fn unknown_replicas_share_traffic_evenly() {
    let c = config(&["a", "b", "c"]);
    let mut counts = [0; 3];
    for i in 0..3000 {
        counts[first(&c, &[], &[], &format!("req-{i}"))] += 1;
    }
    for n in counts {
        assert!((850..=1150).contains(&n), "{counts:?}");
    }
}

#[test]
fn a_slower_replica_gets_less_traffic() {
    let c = config(&["a", "b"]);
    let t = targets(&c);
    let (ta, tb) = (&t[0], &t[1]);
    let mut board = LoadBoard::default();
    board.sample(ta, 20, 0);
    board.sample(tb, 80, 0);
    // Up to two requests in flight at the fast one still beat the idle slow one.
    for in_flight in 0..5u32 {
        if in_flight > 0 {
            board.started(ta);
        }
        if in_flight == 3 {
            continue; // equal costs: either
        }
        let loads = board.loads([ta.as_str(), tb.as_str()], 0);
        let fast = (0..200)
            .filter(|i| first(&c, &[], &loads, &format!("r{i}")) == 0)
            .count();
        let expected = if in_flight < 3 { 200 } else { 0 };
        assert_eq!(fast, expected, "{in_flight} in flight at the fast replica");
    }
}

#[test]
fn a_waiting_queue_and_a_full_cache_repel() {
    let c = config(&["a", "b"]);
    let tb = c.regions[0].replicas[1].target.clone();
    let queued = [status(
        &tb,
        Health::Up,
        Some(BackendLoad {
            running: 4,
            waiting: 12,
            kv_cache_usage: Some(0.5),
        }),
    )];
    assert!((0..100).all(|i| first(&c, &queued, &[], &format!("r{i}")) == 0));
    // Drained: back to sharing.
    let drained = [status(
        &tb,
        Health::Up,
        Some(BackendLoad {
            running: 0,
            waiting: 0,
            kv_cache_usage: Some(0.0),
        }),
    )];
    let b = (0..200)
        .filter(|i| first(&c, &drained, &[], &format!("r{i}")) == 1)
        .count();
    assert!((60..=140).contains(&b), "{b}");
    let full = [status(
        &tb,
        Health::Up,
        Some(BackendLoad {
            running: 0,
            waiting: 0,
            kv_cache_usage: Some(0.97),
        }),
    )];
    assert!((0..100).all(|i| first(&c, &full, &[], &format!("r{i}")) == 0));
}

#[test]
fn unhealthy_replicas_come_last() {
    let c = config(&["a", "b", "c"]);
    let targets = targets(&c);
    let statuses = [
        status(&targets[0], Health::Down, None),
        status(&targets[1], Health::Degraded, None),
    ];
    for i in 0..50 {
        let order = order_replicas(
            &c.regions[0],
            &statuses,
            &[],
            None,
            &format!("r{i}"),
            &Balancing::default(),
        );
        assert_eq!(order, vec![2, 1, 0]);
    }
}

#[test]
fn stale_latency_drifts_back_to_the_fastest() {
    let c = config(&["a", "b"]);
    let t = targets(&c);
    let (ta, tb) = (&t[0], &t[1]);
    let mut board = LoadBoard::default();
    board.sample(tb, 400, 0);
    board.sample(ta, 20, 100_000);
    board.started(ta);
    // Fresh, b's 400 ms loses to a's 20 ms with one request in flight.
    let fresh = board.loads([ta.as_str(), tb.as_str()], 0);
    assert!((0..50).all(|i| first(&c, &[], &fresh, &format!("r{i}")) == 0));
    // Last heard of 100 s (ten half-lives) ago, b is nearly as fast as a
    // and is tried again.
    let stale = board.loads([ta.as_str(), tb.as_str()], 100_000);
    assert!((0..50).all(|i| first(&c, &[], &stale, &format!("r{i}")) == 1));
}

fn conversation(system: &str, turns: usize) -> Map<String, Value> {
    let mut messages = vec![json!({"role": "system", "content": system})];
    for t in 0..turns {
        messages.push(json!({"role": "user", "content": format!("question {t} of {system}")}));
        messages.push(json!({"role": "assistant", "content": format!("answer {t}")}));
    }
    messages.pop();
    json!({"model": "m", "messages": messages})
        .as_object()
        .cloned()
        .expect("object")
}

#[test]
fn a_conversation_keeps_its_key_across_turns() {
    let one = conversation_key("m", &conversation("be brief", 1));
    assert!(one.is_some());
    assert_eq!(one, conversation_key("m", &conversation("be brief", 4)));
    assert_ne!(one, conversation_key("m", &conversation("be long", 1)));
    assert_ne!(one, conversation_key("other", &conversation("be brief", 1)));
    let assistant_first = json!({"messages": [{"role": "assistant", "content": "hi"}]});
    assert_eq!(
        conversation_key("m", assistant_first.as_object().expect("object")),
        None
    );
    let prompt = json!({"prompt": "x".repeat(600)});
    let longer = json!({"prompt": format!("{}tail", "x".repeat(600))});
    assert_eq!(
        conversation_key("m", prompt.as_object().expect("object")),
        conversation_key("m", longer.as_object().expect("object"))
    );
}

#[test]
fn affinity_holds_within_the_band_and_spills_past_it() {
    let c = config(&["a", "b", "c"]);
    let targets = targets(&c);
    let b = Balancing::default();
    let home = |loads: &[TargetLoad], key: u64, id: &str| {
        order_replicas(&c.regions[0], &[], loads, Some(key), id, &b)[0]
    };
    // Every request id of one conversation lands on one replica; keys spread.
    let mut homes = [0; 3];
    for key in 0..300u64 {
        let h = home(&[], key, "r0");
        assert!((1..20).all(|i| home(&[], key, &format!("r{i}")) == h));
        homes[h] += 1;
    }
    assert!(homes.iter().all(|&n| n > 60), "{homes:?}");
    // Its replica queued past the slack: the request goes elsewhere.
    let key = 7;
    let h = home(&[], key, "r0");
    let mut board = LoadBoard::default();
    for _ in 0..b.affinity_slack_requests {
        board.started(&targets[h]);
    }
    let loads = board.loads(targets.iter().map(String::as_str), 0);
    assert_eq!(home(&loads, key, "r0"), h, "at the slack");
    board.started(&targets[h]);
    let loads = board.loads(targets.iter().map(String::as_str), 0);
    assert!((0..20).all(|i| home(&loads, key, &format!("r{i}")) != h));
    // Saturated (a waiting queue the others do not have): elsewhere too.
    let waiting = [status(
        &targets[h],
        Health::Up,
        Some(BackendLoad {
            running: 2,
            waiting: 1,
            kv_cache_usage: None,
        }),
    )];
    let at_home = |id: &str| order_replicas(&c.regions[0], &waiting, &[], Some(key), id, &b)[0];
    assert!((0..20).all(|i| at_home(&format!("r{i}")) != h));
}

proptest::proptest! {
    /// Whatever the loads, metrics and health: every replica appears once,
    /// and one that is down never comes before one that is up.
    #[test]
    fn the_order_is_a_permutation_healthiest_first(
        in_flight in proptest::collection::vec(0u32..50, 3),
        latency in proptest::collection::vec(proptest::option::of(1u32..2_000), 3),
        waiting in proptest::collection::vec(proptest::option::of(0u32..40), 3),
        health in proptest::collection::vec(0u8..3, 3),
        affinity in proptest::option::of(proptest::prelude::any::<u64>()),
        id in "[a-z0-9]{1,12}",
    ) {
        let c = config(&["a", "b", "c"]);
        let targets = targets(&c);
        let mut board = LoadBoard::default();
        for (i, t) in targets.iter().enumerate() {
            for _ in 0..in_flight[i] {
                board.started(t);
            }
            if let Some(ms) = latency[i] {
                board.sample(t, ms, 0);
            }
        }
        let statuses: Vec<RegionStatus> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let h = [Health::Up, Health::Degraded, Health::Down][usize::from(health[i])];
                let backend = waiting[i].map(|w| BackendLoad {
                    running: 1,
                    waiting: w,
                    kv_cache_usage: None,
                });
                status(t, h, backend)
            })
            .collect();
        let loads = board.loads(targets.iter().map(String::as_str), 1_000);
        let order =
            order_replicas(&c.regions[0], &statuses, &loads, affinity, &id, &Balancing::default());
        let mut sorted = order.clone();
        sorted.sort_unstable();
        proptest::prop_assert_eq!(sorted, vec![0, 1, 2]);
        let ranks: Vec<u8> = order.iter().map(|&i| health[i]).collect();
        proptest::prop_assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{:?}", ranks);
    }
}
