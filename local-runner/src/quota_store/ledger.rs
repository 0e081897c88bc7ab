//! The usage ledger's rows and the latency counts beside them in the state
//! file (`edgegate_core::ledger::sql`): written in the quota writer's
//! transactions, read by its thread after what was queued before the read
//! is committed.

use edgegate_core::ledger::latency::LatencyKey;
use edgegate_core::ledger::{
    LatencyQuery, LatencyRow, LedgerCounts, LedgerEntry, LedgerKey, StoredKey, UsageQuery, sql,
};
use rusqlite::{Connection, params};
use std::collections::HashMap;

/// Creates the tables, or adds `last_ms` to a ledger made before it was kept.
pub fn create(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(sql::CREATE_TABLE)?;
    conn.execute_batch(sql::CREATE_LATENCY_TABLE)?;
    if conn.prepare(sql::PROBE_LAST_MS).is_err() {
        conn.execute_batch(sql::ADD_LAST_MS)?;
    }
    Ok(())
}

/// Adds counts to a ledger row.
pub fn add(conn: &Connection, key: &LedgerKey, counts: &LedgerCounts) -> rusqlite::Result<()> {
    let k = key.stored();
    let c = counts.to_columns();
    conn.prepare_cached(sql::UPSERT)?.execute(params![
        k.tenant, k.key, k.model, k.version, k.day, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    ])?;
    Ok(())
}

/// The ledger rows a query selects.
pub fn read(conn: &Connection, q: &UsageQuery) -> rusqlite::Result<Vec<LedgerEntry>> {
    let mut select = conn.prepare_cached(sql::SELECT)?;
    let from = i64::from(q.from.number());
    let to = i64::from(q.to.number());
    let rows = select.query_map(params![from, to, q.tenant, q.key], |r| {
        let stored = StoredKey {
            tenant: &r.get::<_, String>(0)?,
            key: &r.get::<_, String>(1)?,
            model: &r.get::<_, String>(2)?,
            version: &r.get::<_, String>(3)?,
            day: r.get(4)?,
        };
        let mut columns = [0i64; 8];
        for (i, c) in columns.iter_mut().enumerate() {
            *c = r.get(5 + i)?;
        }
        Ok(LedgerEntry::from_stored(stored, columns))
    })?;
    rows.collect()
}

/// Adds `count` requests to a latency count.
pub fn add_latency(conn: &Connection, key: &LatencyKey<'_>, count: u64) -> rusqlite::Result<()> {
    let [hour, phase, bucket] = key.numbers();
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    conn.prepare_cached(sql::UPSERT_LATENCY)?
        .execute(params![key.tenant, key.model, hour, phase, bucket, count])?;
    Ok(())
}

/// Deletes the latency counts of the hours before `hour`.
pub fn prune_latency(conn: &Connection, hour: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(sql::PRUNE_LATENCY)?
        .execute(params![hour])?;
    Ok(())
}

/// The latency counts a query selects, summed per hour, phase and bucket.
pub fn read_latency(conn: &Connection, q: &LatencyQuery) -> rusqlite::Result<Vec<LatencyRow>> {
    let (first, last) = q.hours();
    let mut select = conn.prepare_cached(sql::SELECT_LATENCY)?;
    let rows = select.query_map(params![first, last, q.tenant, q.model], |r| {
        Ok(LatencyRow::from_stored(
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
        ))
    })?;
    rows.filter_map(Result::transpose).collect()
}

/// When each key of `tenant` (or of all) was last used, by key id (Unix
/// ms); keys of rows written before `last_ms` was kept are left out.
pub fn last_used(
    conn: &Connection,
    tenant: Option<&str>,
) -> rusqlite::Result<HashMap<String, u64>> {
    let mut select = conn.prepare_cached(sql::LAST_USED)?;
    let rows = select.query_map(params![tenant], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut last = HashMap::new();
    for row in rows {
        let (key, ms) = row?;
        if let Ok(ms @ 1..) = u64::try_from(ms) {
            last.insert(key, ms);
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgegate_core::ledger::Day;

    #[test]
    fn a_table_made_before_last_use_was_kept_gains_it_and_keeps_its_rows() {
        let conn = Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(
            "CREATE TABLE usage_ledger (tenant TEXT NOT NULL, key_id TEXT NOT NULL,
                model TEXT NOT NULL, version TEXT NOT NULL, day INTEGER NOT NULL,
                requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
                output_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL,
                errors INTEGER NOT NULL, cache_hits INTEGER NOT NULL, degraded INTEGER NOT NULL,
                PRIMARY KEY (tenant, key_id, model, version, day));
             INSERT INTO usage_ledger VALUES ('t', 'key_old', 'm', 'v', 20000, 2, 20, 10, 5, 0, 0, 0);",
        )
        .expect("an old table");
        create(&conn).expect("migrated");
        create(&conn).expect("a second start changes nothing");
        let key = |id: &str| LedgerKey {
            tenant: "t".into(),
            key: Some(id.into()),
            model: "m".into(),
            version: Some("v".into()),
            day: Day::from_number(20000),
        };
        let counts = |last_ms| LedgerCounts {
            requests: 1,
            last_ms,
            ..LedgerCounts::default()
        };
        add(&conn, &key("key_old"), &counts(7_000)).expect("added");
        add(&conn, &key("key_new"), &counts(9_000)).expect("added");
        add(&conn, &key("key_new"), &counts(8_000)).expect("added");
        let query = UsageQuery::parse(
            "tenant=t&from=2024-10-01&to=2024-10-31",
            Day::from_number(20000),
        )
        .expect("query");
        let rows = read(&conn, &query).expect("read");
        let old = rows
            .iter()
            .find(|r| r.key.key.as_deref() == Some("key_old"));
        assert_eq!(
            old.map(|r| (r.counts.requests, r.counts.last_ms)),
            Some((3, 7_000))
        );
        let last = last_used(&conn, Some("t")).expect("last used");
        assert_eq!(last.get("key_new"), Some(&9_000));
        assert_eq!(last.get("key_old"), Some(&7_000));
        assert!(last_used(&conn, Some("other")).expect("none").is_empty());
    }
}
