//! A quota object's budgets inside its tenant's (its users'): each a quota
//! state of its own, in table `quota_budgets` as whole JSON, loaded when a
//! request first names it and written in the same write as the tenant's.

use edgegate_core::quota::{Level, QuotaState};
use serde::Deserialize;
use worker::{Result, SqlStorage};

#[derive(Deserialize)]
struct Row {
    state: String,
}

pub fn create(sql: &SqlStorage) -> Result<()> {
    sql.exec(
        "CREATE TABLE IF NOT EXISTS quota_budgets (
            level TEXT NOT NULL,
            id TEXT NOT NULL,
            state TEXT NOT NULL,
            PRIMARY KEY (level, id)
        )",
        None,
    )
    .map(drop)
}

/// The stored state of one budget, if it has one.
pub fn load(sql: &SqlStorage, level: &Level) -> Result<Option<QuotaState>> {
    let rows: Vec<Row> = sql
        .exec(
            "SELECT state FROM quota_budgets WHERE level = ? AND id = ?",
            vec![level.kind().name().into(), level.id().into()],
        )?
        .to_array()?;
    rows.into_iter()
        .next()
        .map(|r| QuotaState::from_stored_json(&r.state).map_err(worker::Error::from))
        .transpose()
}

pub fn save(sql: &SqlStorage, level: &Level, state: &QuotaState) -> Result<()> {
    sql.exec(
        "INSERT OR REPLACE INTO quota_budgets (level, id, state) VALUES (?, ?, ?)",
        vec![
            level.kind().name().into(),
            level.id().into(),
            state.to_stored_json().into(),
        ],
    )?;
    Ok(())
}
