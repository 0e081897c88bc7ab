use super::*;
use proptest::prelude::*;

fn ask(id: &str, priority: Priority, targets: &[(&str, u32)], wait_ms: u64) -> Ask {
    Ask {
        id: id.into(),
        priority,
        candidates: targets
            .iter()
            .enumerate()
            .map(|(i, (t, c))| Candidate {
                attempt: i as u32,
                target: (*t).into(),
                capacity: *c,
            })
            .collect(),
        wait_ms,
        lease_ms: 60_000,
        service_ms: 2_000,
    }
}

fn permit(a: Answer) -> u64 {
    match a {
        Answer::Granted { permit, .. } => permit,
        other => panic!("not granted: {other:?}"),
    }
}

#[test]
fn grants_the_first_replica_with_room_then_the_next() {
    let mut g = Gate::new(8);
    let both = [("a", 1), ("b", 1)];
    let (first, _) = g.acquire(ask("1", Priority::Normal, &both, 0), 0);
    assert!(matches!(first, Answer::Granted { attempt: 0, .. }));
    let (second, _) = g.acquire(ask("2", Priority::Normal, &both, 0), 0);
    assert!(matches!(second, Answer::Granted { attempt: 1, .. }));
    let (third, _) = g.acquire(ask("3", Priority::Normal, &both, 0), 0);
    assert_eq!(
        third,
        Answer::Full {
            retry_after_ms: 2_000
        }
    );
    assert_eq!((g.in_use("a"), g.in_use("b")), (1, 1));
}

#[test]
fn a_freed_permit_goes_to_the_most_important_waiter_then_the_oldest() {
    let mut g = Gate::new(8);
    let one = [("a", 1)];
    let held = permit(g.acquire(ask("0", Priority::Low, &one, 0), 0).0);
    for (id, p) in [
        ("low", Priority::Low),
        ("normal", Priority::Normal),
        ("high-1", Priority::High),
        ("high-2", Priority::High),
    ] {
        assert_eq!(g.acquire(ask(id, p, &one, 1_000), 0).0, Answer::Queued);
    }
    let mut order = Vec::new();
    let mut next = held;
    for _ in 0..4 {
        let decided = g.release(next, 1);
        assert_eq!(decided.len(), 1);
        order.push(decided[0].0.clone());
        next = permit(decided[0].1);
    }
    assert_eq!(order, ["high-1", "high-2", "normal", "low"]);
}

#[test]
fn a_full_queue_turns_away_the_least_important_for_a_more_important_one() {
    let mut g = Gate::new(2);
    let one = [("a", 1)];
    g.acquire(ask("0", Priority::High, &one, 0), 0);
    g.acquire(ask("low", Priority::Low, &one, 1_000), 0);
    g.acquire(ask("normal", Priority::Normal, &one, 1_000), 0);
    // As important as the least important waiter: no room.
    let (same, _) = g.acquire(ask("low-2", Priority::Low, &one, 1_000), 0);
    assert!(matches!(same, Answer::Full { .. }));
    let (high, decided) = g.acquire(ask("high", Priority::High, &one, 1_000), 0);
    assert_eq!(high, Answer::Queued);
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0].0, "low");
    assert!(matches!(decided[0].1, Answer::Full { .. }));
    assert_eq!(g.waiting(), 2);
}

#[test]
fn waiters_past_their_deadline_are_turned_away_and_cancel_answers_once() {
    let mut g = Gate::new(8);
    let one = [("a", 1)];
    g.acquire(ask("0", Priority::Normal, &one, 0), 0);
    g.acquire(ask("short", Priority::Normal, &one, 100), 0);
    g.acquire(ask("long", Priority::Normal, &one, 5_000), 0);
    assert_eq!(g.next_deadline_ms(), Some(100));
    let decided = g.expire(100);
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0].0, "short");
    assert!(matches!(g.cancel("long"), Some(Answer::Full { .. })));
    assert_eq!(g.cancel("long"), None);
    assert_eq!(g.waiting(), 0);
}

#[test]
fn a_lease_nobody_gives_back_ends_and_lets_a_waiter_in() {
    let mut g = Gate::new(8);
    let one = [("a", 1)];
    let mut lost = ask("lost", Priority::Normal, &one, 0);
    lost.lease_ms = 500;
    g.acquire(lost, 0);
    g.acquire(ask("next", Priority::Normal, &one, 5_000), 10);
    assert_eq!(g.next_deadline_ms(), Some(500));
    let decided = g.expire(500);
    assert_eq!(decided.len(), 1);
    assert!(matches!(decided[0].1, Answer::Granted { attempt: 0, .. }));
    assert_eq!(g.in_use("a"), 1);
    // Releasing twice frees once.
    let p = permit(decided[0].1);
    g.release(p, 600);
    g.release(p, 600);
    assert_eq!(g.in_use("a"), 0);
}

#[test]
fn retry_after_grows_with_the_work_queued_ahead() {
    let mut g = Gate::new(8);
    let two = [("a", 2)];
    g.acquire(ask("0", Priority::Normal, &two, 0), 0);
    g.acquire(ask("1", Priority::Normal, &two, 0), 0);
    for i in 0..4 {
        g.acquire(ask(&format!("w{i}"), Priority::High, &two, 1_000), 0);
    }
    // Four ahead and itself, two at a time: three rounds of 2 s.
    let (full, _) = g.acquire(ask("late", Priority::Normal, &two, 0), 0);
    assert_eq!(
        full,
        Answer::Full {
            retry_after_ms: 6_000
        }
    );
}

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        priority: u8,
        targets: u8,
        wait: u16,
    },
    Release(usize),
    Cancel(usize),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 1u8..4, 0u16..500).prop_map(|(priority, targets, wait)| Op::Acquire { priority, targets, wait }),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => (0u16..300).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Whatever happens, no replica serves more than its capacity, every
    /// ask is answered exactly once, and a waiter is only passed over for a
    /// less important one when that one fits a replica it cannot use.
    #[test]
    fn never_over_capacity_and_every_ask_answered_once(ops in prop::collection::vec(op(), 1..300)) {
        let caps = [("a", 2u32), ("b", 1), ("c", 3)];
        let mut g = Gate::new(6);
        let mut now = 0u64;
        let mut held: Vec<u64> = Vec::new();
        let mut waiting: Vec<String> = Vec::new();
        let mut answered: HashMap<String, u32> = HashMap::new();
        let mut n = 0;
        let settle = |decided: Vec<Decided>, held: &mut Vec<u64>, waiting: &mut Vec<String>, answered: &mut HashMap<String, u32>| {
            for (id, answer) in decided {
                prop_assert!(waiting.contains(&id), "answered a request that was not waiting: {}", id);
                waiting.retain(|w| *w != id);
                *answered.entry(id).or_default() += 1;
                if let Answer::Granted { permit, .. } = answer {
                    held.push(permit);
                }
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Acquire { priority, targets, wait } => {
                    n += 1;
                    let id = format!("r{n}");
                    let p = [Priority::Low, Priority::Normal, Priority::High][priority as usize];
                    let mut a = ask(&id, p, &caps[..targets as usize], u64::from(wait));
                    a.lease_ms = 2_000;
                    let (answer, decided) = g.acquire(a, now);
                    settle(decided, &mut held, &mut waiting, &mut answered)?;
                    match answer {
                        Answer::Granted { permit, .. } => { held.push(permit); answered.insert(id, 1); }
                        Answer::Queued => waiting.push(id),
                        Answer::Full { retry_after_ms } => {
                            prop_assert!((MIN_RETRY_MS..=MAX_RETRY_MS).contains(&retry_after_ms));
                            answered.insert(id, 1);
                        }
                    }
                }
                Op::Release(i) if !held.is_empty() => {
                    let permit = held.swap_remove(i % held.len());
                    let decided = g.release(permit, now);
                    settle(decided, &mut held, &mut waiting, &mut answered)?;
                }
                Op::Cancel(i) if !waiting.is_empty() => {
                    let id = waiting[i % waiting.len()].clone();
                    prop_assert!(g.cancel(&id).is_some());
                    waiting.retain(|w| *w != id);
                    *answered.entry(id).or_default() += 1;
                }
                Op::Advance(ms) => {
                    now += u64::from(ms);
                    let decided = g.expire(now);
                    settle(decided, &mut held, &mut waiting, &mut answered)?;
                }
                _ => {}
            }
            for (t, cap) in caps {
                prop_assert!(g.in_use(t) <= cap, "{} holds {} of {}", t, g.in_use(t), cap);
            }
            prop_assert!(g.waiting() <= 6);
            prop_assert_eq!(g.waiting(), waiting.len());
            // Nobody waits while a replica it may use has room.
            for w in g.queue.values() {
                prop_assert!(w.ask.candidates.iter().all(|c| g.in_use(&c.target) >= c.capacity));
            }
        }
        prop_assert!(answered.values().all(|&n| n == 1));
    }
}
