//! A quota object's usage ledger rows (table `usage_ledger`,
//! `edgegate_core::ledger::sql`): added in the same write as the counters,
//! read for usage reports and for when each key was last used.

use edgegate_core::ledger::{LedgerEntry, StoredKey, sql};
use serde::Deserialize;
use std::collections::HashMap;
use worker::{Result, SqlStorage, SqlStorageValue};

/// Creates the table, or adds `last_ms` to one made before it was kept.
pub fn create(sql: &SqlStorage) -> Result<()> {
    sql.exec(sql::CREATE_TABLE, None)?;
    if sql.exec(sql::PROBE_LAST_MS, None).is_err() {
        sql.exec(sql::ADD_LAST_MS, None)?;
    }
    Ok(())
}

/// Adds a request's entry to its ledger row.
pub fn add(sql: &SqlStorage, entry: &LedgerEntry) -> Result<()> {
    let k = entry.key.stored();
    let mut values: Vec<SqlStorageValue> = vec![
        k.tenant.into(),
        k.key.into(),
        k.model.into(),
        k.version.into(),
        SqlStorageValue::try_from_i64(k.day)?,
    ];
    for n in entry.counts.to_columns() {
        values.push(SqlStorageValue::try_from_i64(n)?);
    }
    sql.exec(sql::UPSERT, values)?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Row {
    tenant: String,
    key_id: String,
    model: String,
    version: String,
    day: i64,
    requests: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
    errors: i64,
    cache_hits: i64,
    degraded: i64,
    last_ms: i64,
}

/// The ledger rows of days `from..=to`, of key `key` or every key.
pub fn read(sql: &SqlStorage, from: u32, to: u32, key: Option<String>) -> Result<Vec<LedgerEntry>> {
    let (from, to) = (i64::from(from), i64::from(to));
    let rows: Vec<Row> = sql
        .exec(
            sql::SELECT,
            vec![from.into(), to.into(), SqlStorageValue::Null, key.into()],
        )?
        .to_array()?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let key = StoredKey {
                tenant: &r.tenant,
                key: &r.key_id,
                model: &r.model,
                version: &r.version,
                day: r.day,
            };
            let columns = [
                r.requests,
                r.input_tokens,
                r.output_tokens,
                r.cost_micros,
                r.errors,
                r.cache_hits,
                r.degraded,
                r.last_ms,
            ];
            LedgerEntry::from_stored(key, columns)
        })
        .collect())
}

#[derive(Debug, Deserialize)]
struct LastUsedRow {
    key_id: String,
    last_ms: i64,
}

/// When each key with rows here was last used (Unix ms), by key id; keys
/// whose rows were written before `last_ms` was kept are left out.
pub fn last_used(sql: &SqlStorage) -> Result<HashMap<String, u64>> {
    let rows: Vec<LastUsedRow> = sql
        .exec(sql::LAST_USED, vec![SqlStorageValue::Null])?
        .to_array()?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some((
                r.key_id,
                u64::try_from(r.last_ms).ok().filter(|ms| *ms > 0)?,
            ))
        })
        .collect())
}
