use super::*;

fn limits() -> QuotaLimits {
    QuotaLimits {
        requests_per_minute: 10,
        request_burst: 10,
        tokens_per_minute: 1000,
        token_burst: 1000,
        tokens_per_day: None,
        cost_per_day_micros: None,
        tokens_per_month: None,
        cost_per_month_micros: None,
        max_concurrent: None,
    }
}

#[tokio::test]
async fn one_runner_owns_a_state_and_reservations_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.sqlite");
    let store = QuotaStore::open(&path).expect("first open");
    let second = QuotaStore::open(&path).err().expect("a second open fails");
    assert!(
        second
            .to_string()
            .contains("in use by another local-runner"),
        "{second:#}"
    );

    let request = QuotaRequest {
        key: QuotaKey::shard("t", 1, 2),
        limits: limits(),
        amounts: Amounts {
            requests: 1,
            tokens: 100,
            cost_micros: 0,
        },
        ttl_ms: 60_000,
        presented: None,
        budgets: vec![Budget {
            level: Level::User("u-1".into()),
            limits: QuotaLimits {
                request_burst: 1,
                ..limits()
            },
        }],
    };
    let outcome = store.reserve(&request, "r1", 1_000).await.expect("reserve");
    assert!(
        matches!(outcome, ReserveOutcome::Admit { .. }),
        "{outcome:?}"
    );
    drop(store);
    // The lock went with the store; the committed reservation did not,
    // nor the user's budget.
    let reopened = QuotaStore::open(&path).expect("reopen");
    let state = reopened
        .state(&QuotaKey::shard("t", 1, 2), &limits(), 1_000)
        .1;
    assert!(lock(&state).state.reservation("r1").is_some());
    let outcome = reopened
        .reserve(&request, "r2", 1_000)
        .await
        .expect("reserve");
    assert!(
        matches!(
            outcome,
            ReserveOutcome::Deny {
                level: edgegate_core::quota::LevelKind::User,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn settlements_of_one_ledger_row_sum_exactly_however_they_batch() {
    use edgegate_core::ledger::{Day, LedgerCounts, LedgerKey};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = QuotaStore::open(&dir.path().join("state.sqlite")).expect("open");
    let request = QuotaRequest {
        key: QuotaKey::whole("t"),
        limits: limits(),
        amounts: Amounts::default(),
        ttl_ms: 60_000,
        presented: None,
        budgets: Vec::new(),
    };
    let entry = |cost| LedgerEntry {
        key: LedgerKey {
            tenant: "t".into(),
            key: Some("k1".into()),
            model: "m".into(),
            version: Some("v1".into()),
            day: Day::of_ms(1_000),
        },
        counts: LedgerCounts {
            requests: 1,
            input_tokens: 10,
            output_tokens: 5,
            cost_micros: cost,
            ..LedgerCounts::default()
        },
        latency: None,
    };
    // Queued back to back: the writer takes several in one batch.
    for (i, cost) in [3, 5, 7, 11].into_iter().enumerate() {
        let id = format!("r{i}");
        store.settle(&request, &id, Amounts::default(), Some(entry(cost)), 1_000);
    }
    let query = UsageQuery::parse("tenant=t", Day::of_ms(1_000)).expect("query");
    let rows = store.usage(&query).await.expect("usage");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].counts.requests, 4);
    assert_eq!(rows[0].counts.cost_micros, 26);
    assert_eq!(rows[0].counts.input_tokens, 40);
}
