//! A quota object's copy of its tenant's standing (table `quota_standing`):
//! one row for the tenant's flag and one per run-time key, each the latest
//! change the directory object pushed.

use edgegate_core::directory::{Standing, StandingChange};
use serde::Deserialize;
use worker::{Result, SqlStorage};

/// The row of the tenant's own flag (a key's row is named by its id).
const TENANT_ROW: &str = "";

#[derive(Deserialize)]
struct Row {
    change: String,
}

pub fn create(sql: &SqlStorage) -> Result<()> {
    sql.exec(
        "CREATE TABLE IF NOT EXISTS quota_standing (key_id TEXT PRIMARY KEY, change TEXT NOT NULL)",
        None,
    )
    .map(drop)
}

pub fn load(sql: &SqlStorage) -> Result<Standing> {
    let rows: Vec<Row> = sql
        .exec("SELECT change FROM quota_standing", None)?
        .to_array()?;
    let mut standing = Standing::default();
    for row in rows {
        standing.apply(serde_json::from_str(&row.change)?);
    }
    Ok(standing)
}

pub fn save(sql: &SqlStorage, change: &StandingChange) -> Result<()> {
    let key_id = match change {
        StandingChange::Tenant { .. } => TENANT_ROW,
        StandingChange::Key { id, .. } => id.as_str(),
    };
    sql.exec(
        "INSERT OR REPLACE INTO quota_standing (key_id, change) VALUES (?, ?)",
        vec![key_id.into(), serde_json::to_string(change)?.into()],
    )?;
    Ok(())
}
