use super::*;
use proptest::prelude::*;

fn limits() -> QuotaLimits {
    QuotaLimits {
        requests_per_minute: 60,
        request_burst: 5,
        tokens_per_minute: 6_000,
        token_burst: 3_000,
        tokens_per_day: Some(40_000),
        cost_per_day_micros: Some(500_000),
        tokens_per_month: None,
        cost_per_month_micros: None,
        max_concurrent: Some(4),
    }
}

fn amounts(tokens: u64) -> Amounts {
    Amounts {
        requests: 1,
        tokens,
        cost_micros: tokens * 10,
    }
}

const T0: u64 = 1_795_305_600_000;

fn admitted(o: &ReserveOutcome) -> bool {
    matches!(o, ReserveOutcome::Admit { .. })
}

#[test]
fn burst_then_refill_at_the_configured_rate() {
    let l = QuotaLimits {
        max_concurrent: None,
        ..limits()
    };
    let mut s = QuotaState::new(&l, T0);
    for i in 0..5 {
        assert!(admitted(&s.reserve(
            T0,
            &l,
            &format!("r{i}"),
            amounts(1),
            60_000
        )));
    }
    match s.reserve(T0, &l, "r5", amounts(1), 60_000) {
        ReserveOutcome::Deny {
            limit,
            retry_after_ms,
            snapshot,
            ..
        } => {
            assert_eq!(limit, LimitKind::Requests);
            assert_eq!(retry_after_ms, Some(1_000), "one request per second");
            assert_eq!(snapshot.remaining_requests, 0);
            assert_eq!(snapshot.reset_requests_ms, 5_000);
        }
        other => panic!("{other:?}"),
    }
    assert!(!admitted(&s.reserve(
        T0 + 999,
        &l,
        "r5",
        amounts(1),
        60_000
    )));
    assert!(admitted(&s.reserve(
        T0 + 1_000,
        &l,
        "r5",
        amounts(1),
        60_000
    )));
}

#[test]
fn settle_refunds_unused_tokens_and_is_idempotent() {
    let l = limits();
    let mut s = QuotaState::new(&l, T0);
    assert!(admitted(&s.reserve(T0, &l, "a", amounts(2_000), 60_000)));
    assert_eq!(s.snapshot(&l).remaining_tokens, 1_000);
    assert!(!admitted(&s.reserve(T0, &l, "b", amounts(1_500), 60_000)));
    assert!(s.settle(T0, &l, "a", amounts(500)));
    assert_eq!(s.snapshot(&l).remaining_tokens, 2_500);
    assert_eq!(s.day_usage(), (500, 5_000));
    assert!(
        !s.settle(T0, &l, "a", amounts(0)),
        "second settle is a no-op"
    );
    assert_eq!(s.snapshot(&l).remaining_tokens, 2_500);
    assert!(admitted(&s.reserve(T0, &l, "b", amounts(1_500), 60_000)));
}

#[test]
fn reserving_the_same_id_twice_takes_once() {
    let l = limits();
    let mut s = QuotaState::new(&l, T0);
    assert!(admitted(&s.reserve(T0, &l, "a", amounts(1_000), 60_000)));
    assert!(admitted(&s.reserve(T0, &l, "a", amounts(1_000), 60_000)));
    assert_eq!(s.snapshot(&l).remaining_tokens, 2_000);
    assert_eq!(s.open_count(), 1);
}

#[test]
fn release_gives_everything_back() {
    let l = limits();
    let mut s = QuotaState::new(&l, T0);
    assert!(admitted(&s.reserve(T0, &l, "a", amounts(1_000), 60_000)));
    assert!(s.release(T0, &l, "a"));
    let snap = s.snapshot(&l);
    assert_eq!((snap.remaining_requests, snap.remaining_tokens), (5, 3_000));
    assert_eq!(s.day_usage(), (0, 0));
}

#[test]
fn overrun_is_charged_as_debt() {
    let l = limits();
    let mut s = QuotaState::new(&l, T0);
    assert!(admitted(&s.reserve(T0, &l, "a", amounts(1_000), 60_000)));
    assert!(s.settle(T0, &l, "a", amounts(4_000)));
    assert_eq!(s.snapshot(&l).remaining_tokens, 0);
    // 1000 tokens of debt at 100 tokens/s: 11 s until 100 tokens are free.
    match s.reserve(T0, &l, "b", amounts(100), 60_000) {
        ReserveOutcome::Deny {
            limit: LimitKind::Tokens,
            retry_after_ms,
            ..
        } => {
            assert_eq!(retry_after_ms, Some(11_000))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrency_cap_and_expiry_of_abandoned_reservations() {
    let l = limits();
    let mut s = QuotaState::new(&l, T0);
    for i in 0..4 {
        assert!(admitted(&s.reserve(
            T0,
            &l,
            &format!("r{i}"),
            amounts(10),
            5_000
        )));
    }
    match s.reserve(T0, &l, "r4", amounts(10), 5_000) {
        ReserveOutcome::Deny {
            limit: LimitKind::Concurrency,
            retry_after_ms: Some(_),
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(s.next_expiry_ms(), Some(T0 + 5_000));
    // The holders died: at expiry their slots free up and they stay charged.
    assert!(admitted(&s.reserve(
        T0 + 5_000,
        &l,
        "r4",
        amounts(10),
        5_000
    )));
    assert_eq!(s.open_count(), 1);
    assert_eq!(s.day_usage().0, 50);
}

#[test]
fn daily_limits_reset_at_utc_midnight() {
    let l = QuotaLimits {
        tokens_per_day: Some(2_500),
        token_burst: 3_000,
        ..limits()
    };
    let mut s = QuotaState::new(&l, T0);
    assert!(admitted(&s.reserve(T0, &l, "a", amounts(2_000), 60_000)));
    assert!(s.settle(T0, &l, "a", amounts(2_000)));
    let later = T0 + 3_600_000;
    match s.reserve(later, &l, "b", amounts(1_000), 60_000) {
        ReserveOutcome::Deny {
            limit: LimitKind::TokensPerDay,
            retry_after_ms,
            ..
        } => {
            assert_eq!(retry_after_ms, Some(MS_PER_DAY - 3_600_000))
        }
        other => panic!("{other:?}"),
    }
    assert!(admitted(&s.reserve(
        T0 + MS_PER_DAY,
        &l,
        "b",
        amounts(1_000),
        60_000
    )));
    // A settle of yesterday's reservation leaves today's counter alone.
    let mut s = QuotaState::new(&l, T0);
    assert!(admitted(&s.reserve(
        T0 + MS_PER_DAY - 1,
        &l,
        "y",
        amounts(1_000),
        60_000
    )));
    assert!(s.settle(T0 + MS_PER_DAY + 1, &l, "y", amounts(10)));
    assert_eq!(s.day_usage(), (0, 0));
}

#[test]
fn cost_budget_is_insufficient_quota_and_oversized_requests_never_fit() {
    let l = QuotaLimits {
        cost_per_day_micros: Some(15_000),
        ..limits()
    };
    let mut s = QuotaState::new(&l, T0);
    assert!(admitted(&s.reserve(T0, &l, "a", amounts(1_000), 60_000)));
    match s.reserve(T0, &l, "b", amounts(1_000), 60_000) {
        ReserveOutcome::Deny {
            limit: LimitKind::Cost,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    match s.reserve(T0, &l, "c", amounts(3_001), 60_000) {
        ReserveOutcome::Deny {
            retry_after_ms: None,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn monthly_budgets_hold_across_days_and_renew_with_the_calendar_month() {
    let l = QuotaLimits {
        tokens_per_day: None,
        cost_per_day_micros: None,
        tokens_per_month: Some(5_000),
        cost_per_month_micros: Some(1_000_000),
        max_concurrent: None,
        ..limits()
    };
    // T0 is 2026-11-22; December starts 9 days later.
    // Reservations that outlive the days they span.
    const TTL: u64 = 30 * MS_PER_DAY;
    let mut s = QuotaState::new(&l, T0);
    assert!(admitted(&s.reserve(T0, &l, "a", amounts(2_500), TTL)));
    let next_day = T0 + MS_PER_DAY;
    assert!(admitted(&s.reserve(next_day, &l, "b", amounts(2_500), TTL)));
    match s.reserve(next_day, &l, "c", amounts(100), TTL) {
        ReserveOutcome::Deny {
            limit: LimitKind::TokensPerMonth,
            retry_after_ms: Some(ms),
            ..
        } => assert_eq!(ms, 8 * MS_PER_DAY),
        other => panic!("{other:?}"),
    }
    // Settling for less makes room in the month.
    assert!(s.settle(next_day, &l, "a", amounts(1_000)));
    assert_eq!(s.month_usage().0, 3_500);
    assert!(admitted(&s.reserve(next_day, &l, "c", amounts(1_500), TTL)));
    // December: a fresh budget; November's reservation settled in it
    // changes nothing of December's.
    let december = T0 + 9 * MS_PER_DAY;
    assert!(s.settle(december, &l, "b", amounts(10)));
    assert_eq!(s.month_usage(), (0, 0));
    assert!(admitted(&s.reserve(december, &l, "d", amounts(2_500), TTL)));
    assert_eq!(s.month_usage().0, 2_500);
    // A cost budget per month is insufficient_quota, like the daily one.
    let err = crate::error::GatewayError::RateLimited {
        limit: LimitKind::CostPerMonth,
        retry_after_ms: Some(1),
        level: LevelKind::Key,
    };
    assert!(
        err.message().contains("this API key's monthly cost budget"),
        "{}",
        err.message()
    );
    assert_eq!(err.code(), Some("insufficient_quota"));
}

#[test]
fn a_clock_stepping_back_does_not_refill() {
    let l = limits();
    let mut s = QuotaState::new(&l, T0);
    assert!(admitted(&s.reserve(T0, &l, "a", amounts(3_000), 60_000)));
    assert!(!admitted(&s.reserve(
        T0 - 50_000,
        &l,
        "b",
        amounts(100),
        60_000
    )));
    assert!(!admitted(&s.reserve(T0, &l, "b", amounts(100), 60_000)));
}

#[test]
fn sharding_splits_limits() {
    let l = limits().shard(4);
    assert_eq!(l.requests_per_minute, 15);
    assert_eq!(l.request_burst, 1);
    assert_eq!(l.max_concurrent, Some(1));
    assert_eq!(limits().shard(0), limits());
}

#[test]
fn headers_and_durations() {
    assert_eq!(format_duration_ms(20), "20ms");
    assert_eq!(format_duration_ms(1_000), "1s");
    assert_eq!(format_duration_ms(1_001), "2s");
    assert_eq!(format_duration_ms(360_000), "6m0s");
    assert_eq!(format_duration_ms(3_723_000), "1h2m3s");
    let l = limits();
    let h = rate_limit_headers(&QuotaState::new(&l, T0).snapshot(&l));
    assert!(h.contains(&("x-ratelimit-remaining-tokens".into(), "3000".into())));
    assert!(h.contains(&("x-ratelimit-reset-requests".into(), "0ms".into())));
}

#[derive(Debug, Clone)]
enum Op {
    Reserve {
        dt: u64,
        tokens: u64,
    },
    Settle {
        dt: u64,
        pick: usize,
        used_permille: u64,
    },
    Release {
        dt: u64,
        pick: usize,
    },
    Expire {
        dt: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let dt = prop_oneof![4 => 0u64..200, 2 => 0u64..5_000, 1 => Just(MS_PER_DAY / 3)];
    prop_oneof![
        6 => (dt.clone(), 1u64..1_500).prop_map(|(dt, tokens)| Op::Reserve { dt, tokens }),
        3 => (dt.clone(), any::<usize>(), 0u64..=1000)
            .prop_map(|(dt, pick, used_permille)| Op::Settle { dt, pick, used_permille }),
        1 => (dt.clone(), any::<usize>()).prop_map(|(dt, pick)| Op::Release { dt, pick }),
        1 => dt.prop_map(|dt| Op::Expire { dt }),
    ]
}

/// Net take (+) or give-back (−) of one bucket at a time.
type Ledger = Vec<(u64, i64)>;

/// In every window [a, b] the net amount taken is at most burst + rate × (b − a).
fn check_window(ledger: &Ledger, burst: u64, per_minute: u64) -> Result<(), TestCaseError> {
    for i in 0..ledger.len() {
        let mut net: i128 = 0;
        for e in &ledger[i..] {
            net += i128::from(e.1);
            let allowed =
                i128::from(burst) * 60_000 + i128::from(per_minute) * i128::from(e.0 - ledger[i].0);
            prop_assert!(
                net * 60_000 <= allowed,
                "window from {} to {}: net {} > {}",
                ledger[i].0,
                e.0,
                net,
                allowed / 60_000
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_admits_more_than_the_limits(ops in prop::collection::vec(op(), 1..120)) {
        let l = limits();
        let mut now = T0;
        let mut s = QuotaState::new(&l, now);
        let mut next_id = 0u32;
        let mut requests: Ledger = Vec::new();
        let mut tokens: Ledger = Vec::new();
        // Per UTC day: tokens and cost charged by reservations taken that day.
        let mut day_charged: std::collections::BTreeMap<u64, (i128, i128)> = Default::default();
        let mut open: Vec<(String, Amounts, u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Reserve { dt, tokens: t } => {
                    now += dt;
                    let id = format!("r{next_id}");
                    next_id += 1;
                    let a = amounts(t);
                    if admitted(&s.reserve(now, &l, &id, a, 30_000)) {
                        requests.push((now, 1));
                        tokens.push((now, t as i64));
                        let d = day_charged.entry(now / MS_PER_DAY).or_default();
                        d.0 += i128::from(t);
                        d.1 += i128::from(a.cost_micros);
                        open.push((id, a, now / MS_PER_DAY));
                    }
                }
                Op::Settle { dt, pick, used_permille } if !open.is_empty() => {
                    now += dt;
                    let (id, a, day) = open.swap_remove(pick % open.len());
                    let used = Amounts {
                        requests: 1,
                        tokens: a.tokens * used_permille / 1000,
                        cost_micros: a.cost_micros * used_permille / 1000,
                    };
                    if s.settle(now, &l, &id, used) {
                        tokens.push((now, -((a.tokens - used.tokens) as i64)));
                        let d = day_charged.entry(day).or_default();
                        d.0 -= i128::from(a.tokens - used.tokens);
                        d.1 -= i128::from(a.cost_micros - used.cost_micros);
                    }
                }
                Op::Release { dt, pick } if !open.is_empty() => {
                    now += dt;
                    let (id, a, day) = open.swap_remove(pick % open.len());
                    if s.release(now, &l, &id) {
                        requests.push((now, -1));
                        tokens.push((now, -(a.tokens as i64)));
                        let d = day_charged.entry(day).or_default();
                        d.0 -= i128::from(a.tokens);
                        d.1 -= i128::from(a.cost_micros);
                    }
                }
                Op::Expire { dt } => {
                    now += dt;
                    s.expire(now, &l);
                }
                _ => {}
            }
            prop_assert!(s.open_count() as u64 <= l.max_concurrent.unwrap());
            // The state survives a round trip through storage unchanged.
            let restored = QuotaState::from_stored_json(&s.to_stored_json()).unwrap();
            prop_assert_eq!(&restored, &s);
            // Reservations the state expired on its own are no longer ours to settle.
            open.retain(|(id, ..)| s.reservation(id).is_some());
        }
        check_window(&requests, l.request_burst, l.requests_per_minute)?;
        check_window(&tokens, l.token_burst, l.tokens_per_minute)?;
        for (day, (t, c)) in day_charged {
            prop_assert!(t <= i128::from(l.tokens_per_day.unwrap()), "day {day}: {t} tokens");
            prop_assert!(c <= i128::from(l.cost_per_day_micros.unwrap()), "day {day}: {c} micro-USD");
        }
    }

    #[test]
    fn retry_after_is_exact_for_rate_limits(burst in 1u64..20, rpm in 1u64..600, extra in 0u64..5) {
        let l = QuotaLimits {
            requests_per_minute: rpm,
            request_burst: burst,
            tokens_per_minute: 1_000_000,
            token_burst: 1_000_000,
            tokens_per_day: None,
            cost_per_day_micros: None,
            tokens_per_month: None,
            cost_per_month_micros: None,
            max_concurrent: None,
        };
        let mut s = QuotaState::new(&l, T0);
        for i in 0..burst + extra {
            s.reserve(T0, &l, &format!("r{i}"), amounts(1), 60_000);
        }
        match s.reserve(T0, &l, "late", amounts(1), 60_000) {
            ReserveOutcome::Deny { retry_after_ms: Some(r), .. } => {
                prop_assert!(!admitted(&s.clone().reserve(T0 + r - 1, &l, "late", amounts(1), 60_000)));
                prop_assert!(admitted(&s.reserve(T0 + r, &l, "late", amounts(1), 60_000)));
            }
            other => prop_assert!(false, "expected a deny, got {:?}", other),
        }
    }
}

/// The rows a persisting host keeps, rebuilt from the changes the state
/// hands out: after every operation they must restore to the same state.
#[derive(Default)]
struct Rows(std::collections::HashMap<String, Outstanding>);

impl Rows {
    fn apply(&mut self, changes: Vec<QuotaChange>) {
        for change in changes {
            match change {
                QuotaChange::Opened { id, reservation } => {
                    self.0.insert(id, reservation);
                }
                QuotaChange::Closed { id } => {
                    self.0.remove(&id);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum BigOp {
    Reserve { dt: u64, tokens: u64 },
    Settle { dt: u64, pick: usize },
    Release { dt: u64, pick: usize },
    Expire { dt: u64 },
}

fn big_op() -> impl Strategy<Value = BigOp> {
    prop_oneof![
        8 => (0u64..20, 1u64..50).prop_map(|(dt, tokens)| BigOp::Reserve { dt, tokens }),
        1 => (0u64..20, any::<usize>()).prop_map(|(dt, pick)| BigOp::Settle { dt, pick }),
        1 => (0u64..20, any::<usize>()).prop_map(|(dt, pick)| BigOp::Release { dt, pick }),
        1 => (0u64..2_000).prop_map(|dt| BigOp::Expire { dt }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Thousands of reservations open at once: the concurrency cap, the
    /// buckets and the rows a host persists all stay exact.
    #[test]
    fn thousands_open_never_over_admit_and_rows_restore(
        ops in prop::collection::vec(big_op(), 3_000..4_000)
    ) {
        let l = QuotaLimits {
            requests_per_minute: 60_000,
            request_burst: 2_500,
            tokens_per_minute: 6_000_000,
            token_burst: 100_000,
            tokens_per_day: None,
            cost_per_day_micros: None,
            tokens_per_month: None,
            cost_per_month_micros: None,
            max_concurrent: Some(2_000),
        };
        let mut now = T0;
        let mut s = QuotaState::new(&l, now);
        let mut rows = Rows::default();
        let mut open: Vec<String> = Vec::new();
        let mut requests: Ledger = Vec::new();
        let mut peak = 0;
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                BigOp::Reserve { dt, tokens } => {
                    now += dt;
                    let id = format!("r{n}");
                    if admitted(&s.reserve(now, &l, &id, amounts(tokens), 600_000)) {
                        requests.push((now, 1));
                        open.push(id);
                    }
                }
                BigOp::Settle { dt, pick } if !open.is_empty() => {
                    now += dt;
                    let id = open.swap_remove(pick % open.len());
                    s.settle(now, &l, &id, amounts(1));
                }
                BigOp::Release { dt, pick } if !open.is_empty() => {
                    now += dt;
                    let id = open.swap_remove(pick % open.len());
                    if s.release(now, &l, &id) {
                        requests.push((now, -1));
                    }
                }
                BigOp::Expire { dt } => {
                    now += dt;
                    s.expire(now, &l);
                }
                _ => {}
            }
            rows.apply(s.take_changes());
            prop_assert!(s.open_count() as u64 <= l.max_concurrent.unwrap());
            prop_assert_eq!(rows.0.len(), s.open_count());
            peak = peak.max(s.open_count());
            open.retain(|id| s.reservation(id).is_some());
        }
        prop_assert!(peak >= 1_000, "only {} open at the peak", peak);
        let restored = QuotaState::restore(s.counters(), rows.0.clone());
        prop_assert_eq!(&restored, &s);
        prop_assert_eq!(restored.next_expiry_ms(), s.next_expiry_ms());
        check_window(&requests, l.request_burst, l.requests_per_minute)?;
    }
}

#[test]
fn expiry_pops_only_what_is_due_in_order() {
    let l = limits();
    let mut s = QuotaState::new(&l, T0);
    for (i, ttl) in [3_000u64, 1_000, 2_000].iter().enumerate() {
        assert!(admitted(&s.reserve(
            T0,
            &l,
            &format!("r{i}"),
            amounts(1),
            *ttl
        )));
    }
    s.take_changes();
    assert_eq!(s.next_expiry_ms(), Some(T0 + 1_000));
    assert_eq!(s.expire(T0 + 2_000, &l), 2);
    assert_eq!(
        s.take_changes(),
        vec![
            QuotaChange::Closed { id: "r1".into() },
            QuotaChange::Closed { id: "r2".into() }
        ]
    );
    assert_eq!(s.next_expiry_ms(), Some(T0 + 3_000));
    assert!(s.reservation("r0").is_some());
}

mod headroom_plan {
    use crate::directory::{KeyHash, KeyRecord, KeyStanding};
    use crate::quota::headroom::plan;
    use crate::quota::{Level, QuotaLimits};
    use crate::testing::{NOW_MS, gateway};

    fn key(
        id: &str,
        budget: Option<QuotaLimits>,
        revoked: bool,
        expires_ms: Option<u64>,
    ) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            tenant: "restricted".into(),
            name: id.into(),
            user: None,
            prefix: "sk-eg-x".into(),
            standing: KeyStanding {
                revoked,
                expires_ms,
                hashes: vec![KeyHash {
                    sha256: "00".repeat(32),
                    until_ms: None,
                }],
                budget,
            },
            created_ms: NOW_MS,
            revoked_ms: revoked.then_some(NOW_MS),
            rotated_ms: None,
            limits: None,
        }
    }

    #[test]
    fn a_peek_per_shard_with_the_usable_keys_budgets_where_they_are_kept() {
        let gateway = gateway();
        let config = gateway.config();
        let tenant = &config.tenants[config.tenant("restricted").expect("a tenant")];
        let limits = config.tiers[tenant.tier].limits.clone();
        let keys = [
            key("key_a", Some(limits.clone()), false, None),
            key("key_b", None, false, None),
            key("key_revoked", Some(limits.clone()), true, None),
            key("key_expired", Some(limits.clone()), false, Some(NOW_MS - 1)),
            key("key_later", Some(limits.clone()), false, Some(NOW_MS + 1)),
        ];
        let planned = plan(config, tenant, &keys, NOW_MS);
        assert_eq!(planned.tenant, "restricted");
        assert_eq!(planned.peeks.len(), 4, "one per shard");
        assert!(planned.peeks.iter().all(|p| p.presented.is_none()));
        let mut kept: Vec<&Level> = planned
            .peeks
            .iter()
            .flat_map(|p| p.budgets.iter().map(|b| &b.level))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [&Level::Key("key_a".into()), &Level::Key("key_later".into())]
        );
        let shard_limits = limits.shard(4);
        assert!(planned.peeks.iter().all(|p| p.limits == shard_limits));
    }
}
