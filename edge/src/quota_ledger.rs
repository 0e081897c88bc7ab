//! A quota object's usage ledger rows (table `usage_ledger`,
//! `edgegate_core::ledger::sql`) and the latency counts beside them
//! (`usage_latency`): added in the same write as the counters, read for
//! usage and latency reports and for when each key was last used.

use edgegate_core::ledger::{LatencyRow, LedgerEntry, StoredKey, sql};
use serde::Deserialize;
use std::collections::HashMap;
use worker::{Result, SqlStorage, SqlStorageValue};

/// Creates the tables, or adds `last_ms` to a ledger made before it was kept.
pub fn create(sql: &SqlStorage) -> Result<()> {
    sql.exec(sql::CREATE_TABLE, None)?;
    sql.exec(sql::CREATE_LATENCY_TABLE, None)?;
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
    for key in entry.latency_keys() {
        let mut values: Vec<SqlStorageValue> = vec![key.tenant.into(), key.model.into()];
        for n in key.numbers() {
            values.push(SqlStorageValue::try_from_i64(n)?);
        }
        values.push(SqlStorageValue::try_from_i64(1)?);
        sql.exec(sql::UPSERT_LATENCY, values)?;
    }
    Ok(())
}

/// Deletes the latency counts of the hours before `hour`.
pub fn prune_latency(sql: &SqlStorage, hour: i64) -> Result<()> {
    sql.exec(
        sql::PRUNE_LATENCY,
        vec![SqlStorageValue::try_from_i64(hour)?],
    )?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct LatencyColumns {
    hour: i64,
    phase: i64,
    bucket: i64,
    count: i64,
}

/// The latency counts of hours `first..=last`, of one model or all, summed
/// per hour, phase and bucket.
pub fn read_latency(
    sql: &SqlStorage,
    first: i64,
    last: i64,
    model: Option<String>,
) -> Result<Vec<LatencyRow>> {
    let values = vec![
        SqlStorageValue::try_from_i64(first)?,
        SqlStorageValue::try_from_i64(last)?,
        SqlStorageValue::Null,
        model.into(),
    ];
    let rows: Vec<LatencyColumns> = sql.exec(sql::SELECT_LATENCY, values)?.to_array()?;
    Ok(rows
        .into_iter()
        .filter_map(|r| LatencyRow::from_stored(r.hour, r.phase, r.bucket, r.count))
        .collect())
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
