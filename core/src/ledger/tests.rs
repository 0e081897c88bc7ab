use super::*;
use proptest::prelude::*;

fn day(text: &str) -> Day {
    Day::parse(text).expect("a date")
}

fn entry(tenant: &str, key: Option<&str>, model: &str, d: &str, requests: u64) -> LedgerEntry {
    LedgerEntry {
        key: LedgerKey {
            tenant: tenant.into(),
            key: key.map(str::to_owned),
            model: model.into(),
            version: Some("v1".into()),
            day: day(d),
        },
        counts: LedgerCounts {
            requests,
            input_tokens: 10 * requests,
            output_tokens: 3 * requests,
            cost_micros: 7 * requests,
            errors: 0,
            cache_hits: 1,
            degraded: 0,
            last_ms: 1_000 * requests,
        },
        latency: None,
    }
}

#[test]
fn days_read_and_write_as_utc_dates() {
    assert_eq!(Day::of_ms(0).to_string(), "1970-01-01");
    // 2026-11-22T00:00:00Z and the last ms before it.
    assert_eq!(Day::of_ms(1_795_305_600_000).to_string(), "2026-11-22");
    assert_eq!(Day::of_ms(1_795_305_599_999).to_string(), "2026-11-21");
    assert_eq!(day("2024-02-29").to_string(), "2024-02-29");
    assert_eq!(day("2000-03-01").number() - day("2000-02-28").number(), 2);
    for bad in [
        "2023-02-29",
        "2026-13-01",
        "2026-00-10",
        "2026-1-01",
        "1969-12-31",
        "26-01-01",
        "2026-01-01x",
        "",
    ] {
        assert!(Day::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_day_knows_its_month_and_the_next_ones_first_day() {
    assert_eq!(day("1970-01-31").month(), 0);
    assert_eq!(day("2026-12-07").month(), 56 * 12 + 11);
    assert_eq!(day("2026-12-07").next_month(), day("2027-01-01"));
    assert_eq!(day("2024-02-29").next_month(), day("2024-03-01"));
    assert_eq!(day("2024-01-31").next_month(), day("2024-02-01"));
}

proptest! {
    #[test]
    fn every_day_round_trips_through_its_date(n in 0u32..200_000) {
        let d = Day::from_number(n);
        prop_assert_eq!(Day::parse(&d.to_string()), Ok(d));
    }

    #[test]
    fn the_next_month_starts_a_new_month_on_its_first(n in 0u32..200_000) {
        let d = Day::from_number(n);
        let next = d.next_month();
        prop_assert_eq!(next.month(), d.month() + 1);
        prop_assert!(next.to_string().ends_with("-01"));
        prop_assert_eq!(next.minus(1).month(), d.month());
    }
}

#[test]
fn a_query_defaults_to_every_dimension_over_31_days() {
    let today = day("2026-12-07");
    let q = UsageQuery::parse("", today).expect("parses");
    assert_eq!((q.from, q.to), (day("2026-11-07"), today));
    assert_eq!(
        q.group_by,
        [GroupBy::Tenant, GroupBy::Key, GroupBy::Model, GroupBy::Day]
    );
    let q = UsageQuery::parse(
        "tenant=acme&key=cfg_1&from=2026-12-01&to=2026-12-02&group_by=day,model,day",
        today,
    )
    .expect("parses");
    assert_eq!(q.tenant.as_deref(), Some("acme"));
    assert_eq!(q.key.as_deref(), Some("cfg_1"));
    assert_eq!(q.group_by, [GroupBy::Model, GroupBy::Day]);
}

#[test]
fn a_bad_query_is_a_400_naming_its_parameter() {
    let today = day("2026-12-07");
    for (query, param) in [
        ("from=yesterday", "from"),
        ("to=2026-02-30", "to"),
        ("from=2026-12-08&to=2026-12-01", "from"),
        ("from=2020-01-01", "from"),
        ("group_by=region", "group_by"),
        ("group_by=", "group_by"),
        ("tenant=", "tenant"),
        ("tenant=a&tenant=b", "tenant"),
        ("limit=5", "limit"),
    ] {
        let err = UsageQuery::parse(query, today).expect_err(query);
        assert_eq!(err.status(), 400, "{query}");
        assert_eq!(err.param(), Some(param), "{query}");
    }
}

#[test]
fn a_report_sums_the_selected_rows_by_its_groups() {
    let q = UsageQuery::parse(
        "tenant=acme&from=2026-12-01&to=2026-12-02&group_by=model",
        day("2026-12-07"),
    )
    .expect("parses");
    let rows = vec![
        entry("acme", Some("k1"), "chat", "2026-12-01", 2),
        entry("acme", Some("k2"), "chat", "2026-12-02", 3),
        entry("acme", None, "small", "2026-12-02", 1),
        // Another tenant, and a day outside the range.
        entry("other", Some("k3"), "chat", "2026-12-01", 5),
        entry("acme", Some("k1"), "chat", "2026-12-03", 7),
    ];
    let report = UsageReport::build(q, rows);
    assert_eq!(report.rows.len(), 2);
    assert_eq!(report.rows[0].counts.requests, 5);
    assert_eq!(report.rows[1].counts.requests, 1);
    assert_eq!(report.total.requests, 6);
    assert_eq!(report.total.cost_micros, 42);
    assert_eq!(report.total.cache_hits, 3);

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
    assert_eq!(json["data"][0]["model"], "chat");
    assert_eq!(json["data"][0]["version"], "v1");
    assert_eq!(json["data"][0]["requests"], 5);
    assert!(json["data"][0].get("tenant").is_none());
    assert_eq!(json["total"]["input_tokens"], 60);
    assert_eq!(json["from"], "2026-12-01");

    let csv = report.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        [
            "model,version,requests,input_tokens,output_tokens,cost_micros,errors,cache_hits,degraded",
            "chat,v1,5,50,15,35,0,2,0",
            "small,v1,1,10,3,7,0,1,0",
        ]
    );
}

#[test]
fn a_tokens_key_is_empty_in_csv_and_null_in_json_and_odd_names_are_quoted() {
    let q = UsageQuery::parse("group_by=tenant,key", day("2026-12-07")).expect("parses");
    let rows = vec![
        entry("a,\"b\"", None, "chat", "2026-12-01", 1),
        entry("a,\"b\"", Some("k1"), "chat", "2026-12-01", 1),
    ];
    let report = UsageReport::build(q, rows);
    let csv = report.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[1], "\"a,\"\"b\"\"\",,1,10,3,7,0,1,0");
    assert_eq!(lines[2], "\"a,\"\"b\"\"\",k1,1,10,3,7,0,1,0");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
    assert_eq!(json["data"][0]["key"], serde_json::Value::Null);
    assert_eq!(json["data"][1]["key"], "k1");
}

#[test]
fn a_stored_key_reads_back_as_it_was() {
    let e = entry("acme", None, "chat", "2026-12-01", 1);
    let mut cache_hit = e.key.clone();
    cache_hit.version = None;
    for key in [e.key, cache_hit] {
        assert_eq!(LedgerKey::from_stored(key.stored()), key);
    }
}

#[test]
fn rows_combine_by_sum_and_by_the_latest_use_and_store_both() {
    let mut row = entry("t", Some("key_1"), "m", "2026-12-07", 3).counts;
    row.add(&entry("t", Some("key_1"), "m", "2026-12-07", 1).counts);
    assert_eq!(
        (row.requests, row.input_tokens, row.last_ms),
        (4, 40, 3_000)
    );
    let columns = row.to_columns();
    assert_eq!(columns[..7], row.count_columns());
    assert_eq!(columns[7], 3_000);
    assert_eq!(LedgerCounts::from_columns(columns), row);
}
