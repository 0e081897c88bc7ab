use super::*;
use crate::ledger::{LedgerCounts, LedgerEntry, LedgerKey};
use crate::telemetry::Latency;

fn day(text: &str) -> Day {
    Day::parse(text).expect("a date")
}

fn record(latency: Latency, output_tokens: u64) -> UsageRecord {
    UsageRecord {
        output_tokens,
        ..UsageRecord::answered("req_1", 200, latency)
    }
}

#[test]
fn a_value_falls_in_the_first_bucket_whose_bound_holds_it() {
    let p = Phase::Total;
    assert_eq!(p.bucket(0.0), 0);
    assert_eq!(
        p.bucket(0.00025),
        0,
        "bounds are inclusive, as Prometheus' le"
    );
    assert_eq!(p.bucket(0.0003), 1);
    assert_eq!(p.bucket(1.0), 21);
    assert_eq!(p.bucket(60.0), 31);
    assert_eq!(p.bucket(61.0), 32, "past every bound");
    assert_eq!(Phase::TimePerOutputToken.bucket(0.02), 8);
}

#[test]
fn a_sample_has_a_bucket_for_each_phase_the_request_went_through() {
    let streamed = Latency {
        gateway_us: 400,
        queue_us: 0,
        upstream_first_byte_us: Some(20_000),
        first_token_us: Some(25_000),
        after_first_token_us: Some(90_000),
        total_us: 120_000,
    };
    // Admitted at 2026-12-08T05:59:59.999Z.
    let admitted_ms = 1_796_709_599_999;
    let sample = LatencySample::of(&record(streamed, 10), admitted_ms);
    assert_eq!(sample.hour.unix_seconds(), 1_796_706_000);
    assert_eq!(
        sample.buckets,
        vec![
            (Phase::Gateway, Phase::Gateway.bucket(0.0004)),
            (Phase::Queue, 0),
            (Phase::TimeToFirstToken, Phase::Total.bucket(0.025)),
            (
                Phase::TimePerOutputToken,
                Phase::TimePerOutputToken.bucket(0.01)
            ),
            (Phase::Total, Phase::Total.bucket(0.12)),
        ]
    );
    // Answered by the gateway alone: no upstream phases.
    let alone = LatencySample::of(&record(Latency::gateway_only(300), 0), admitted_ms);
    let phases: Vec<Phase> = alone.buckets.iter().map(|(p, _)| *p).collect();
    assert_eq!(phases, vec![Phase::Gateway, Phase::Queue, Phase::Total]);
}

fn rows(hour: Hour, phase: Phase, counts: &[(u8, u64)]) -> Vec<LatencyRow> {
    counts
        .iter()
        .map(|&(bucket, count)| LatencyRow {
            hour,
            phase,
            bucket,
            count,
        })
        .collect()
}

fn query(text: &str) -> LatencyQuery {
    LatencyQuery::parse(text, day("2026-12-08")).expect("a query")
}

#[test]
fn quantiles_interpolate_within_their_bucket_as_prometheus_does() {
    let hour = Hour::first_of(day("2026-12-08"));
    // 100 requests: 50 in (0, 0.25 ms], 40 in (1, 1.5 ms], 10 past 60 s.
    let mut counted = rows(hour, Phase::Total, &[(0, 50), (4, 40)]);
    counted.extend(rows(hour, Phase::Total, &[(32, 10)]));
    let report = LatencyReport::build(query(""), counted);
    assert_eq!(report.requests(), 100);
    let q = |q| report.quantile(Phase::Total, q).expect("samples");
    assert!((q(0.5) - 0.00025).abs() < 1e-12, "{}", q(0.5));
    assert!((q(0.25) - 0.000125).abs() < 1e-12, "{}", q(0.25));
    // Rank 70 is halfway through the 40 in (1, 1.5 ms].
    assert!((q(0.7) - 0.00125).abs() < 1e-12, "{}", q(0.7));
    // Past every bound: the highest bound, as histogram_quantile says.
    assert_eq!(q(0.95), 60.0);
    assert_eq!(report.quantile(Phase::Queue, 0.5), None, "no samples");
}

#[test]
fn a_report_sums_its_hours_across_stores_and_drops_the_others() {
    let today = Hour::first_of(day("2026-12-08"));
    let later = Hour::from_number(today.number() + 5);
    let outside = Hour::from_number(Hour::first_of(day("2026-12-01")).number());
    let mut counted = rows(today, Phase::Total, &[(10, 3)]);
    counted.extend(rows(today, Phase::Total, &[(10, 2)])); // another shard
    counted.extend(rows(later, Phase::Total, &[(12, 1)]));
    counted.extend(rows(later, Phase::TimeToFirstToken, &[(9, 1)]));
    counted.extend(rows(outside, Phase::Total, &[(1, 99)]));
    let report = LatencyReport::build(query("from=2026-12-02"), counted);
    let json = report.to_json_value();
    assert_eq!(json["requests"], 6);
    let hours = json["hours"].as_array().expect("hours");
    assert_eq!(hours.len(), 2);
    assert_eq!(hours[0]["hour"], today.unix_seconds());
    assert_eq!(hours[0]["requests"], 5);
    assert_eq!(hours[1]["requests"], 1);
    assert!(hours[1]["phases"]["time_to_first_token"]["p95_ms"].is_number());
    assert!(hours[0]["phases"].get("time_to_first_token").is_none());
    let phases = json["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["phase"].as_str()).collect();
    assert_eq!(
        names,
        [
            "gateway",
            "queue",
            "time_to_first_token",
            "time_per_output_token",
            "total"
        ]
    );
    assert_eq!(phases[0]["count"], 0);
    assert!(phases[0]["p99_ms"].is_null());
    // Rank 3 of 6 is 3/5 through the 5 in (10, 15 ms].
    assert_eq!(phases[4]["count"], 6);
    assert_eq!(phases[4]["p50_ms"], 13.0);
}

#[test]
fn a_query_covers_at_most_what_stores_keep_and_names_its_bad_parameter() {
    let q = query("tenant=acme&model=chat");
    assert_eq!((q.from, q.to), (day("2026-12-02"), day("2026-12-08")));
    assert_eq!(q.tenant.as_deref(), Some("acme"));
    let (first, last) = q.hours();
    assert_eq!(last - first + 1, 7 * 24);
    let refused = |text: &str| {
        LatencyQuery::parse(text, day("2026-12-08"))
            .expect_err(text)
            .to_openai_json()["error"]["param"]
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(refused("from=2026-11-01").as_deref(), Some("from"));
    assert_eq!(refused("group_by=day").as_deref(), Some("group_by"));
    assert_eq!(refused("model=").as_deref(), Some("model"));
    assert_eq!(refused("to=2026-02-30").as_deref(), Some("to"));
}

#[test]
fn pruning_is_due_once_an_hour_and_keeps_the_retention() {
    let mut pruning = Pruning::default();
    let now = 1_796_706_000_000 + 1_000;
    let before = pruning.due(now).expect("due at first");
    assert_eq!(
        i64::from(Hour::of_ms(now).number()) - before,
        i64::from(RETENTION_HOURS)
    );
    assert_eq!(pruning.due(now + 1), None, "the same hour");
    assert!(pruning.due(now + 3_600_000).is_some(), "the next hour");
}

#[test]
fn an_entry_counts_one_in_each_phases_bucket_and_crosses_to_a_store_intact() {
    let entry = LedgerEntry {
        key: LedgerKey {
            tenant: "acme".into(),
            key: None,
            model: "chat".into(),
            version: Some("v1".into()),
            day: day("2026-12-08"),
        },
        counts: LedgerCounts::default(),
        latency: Some(LatencySample::of(
            &record(Latency::gateway_only(300), 0),
            1_796_709_599_999,
        )),
    };
    let keys: Vec<_> = entry.latency_keys().collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.tenant == "acme" && k.model == "chat"));
    let json = serde_json::to_string(&entry).expect("json");
    let back: LedgerEntry = serde_json::from_str(&json).expect("read back");
    assert_eq!(back, entry);
    // An entry from a build before latency was counted still reads.
    let mut old: serde_json::Value = serde_json::from_str(&json).expect("json");
    old.as_object_mut().expect("object").remove("latency");
    let old: LedgerEntry = serde_json::from_value(old).expect("an old entry");
    assert_eq!(old.latency, None);
}
