//! Quota state in SQLite: one row per quota key holding the core's
//! `QuotaState`. Every reserve/settle/release is one IMMEDIATE transaction
//! around the core's pure function, so concurrent requests are serialised and
//! a crash loses nothing that was committed (WAL; `synchronous = NORMAL` is
//! durable across process crashes, not power loss).

use crate::sandbox::Sandbox;
use anyhow::{Context, Result};
use edgegate_core::GatewayError;
use edgegate_core::gateway::QuotaRequest;
use edgegate_core::quota::{Amounts, QuotaLimits, ReserveOutcome};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

fn db(e: rusqlite::Error) -> GatewayError {
    GatewayError::Internal {
        message: format!("quota store: {e}"),
    }
}

pub struct QuotaStore {
    conn: Mutex<Connection>,
}

impl QuotaStore {
    pub fn open(path: &Path) -> Result<QuotaStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // One runner owns its state: no per-transaction file locking, and a
        // second runner on the same state dir fails instead of sharing it.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS quota (
                key TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                updated_ms INTEGER NOT NULL
            )",
        )?;
        Ok(QuotaStore {
            conn: Mutex::new(conn),
        })
    }

    fn with_state<T>(
        &self,
        key: &str,
        now_ms: u64,
        f: impl FnOnce(Option<String>) -> Result<(Option<String>, T), GatewayError>,
    ) -> Result<T, GatewayError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        // Cached BEGIN/COMMIT statements: re-parsing them was a tenth of the
        // runner's CPU per request.
        conn.prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]))
            .map_err(db)?;
        let result = Self::transact(&conn, key, now_ms, f);
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        conn.prepare_cached(end)
            .and_then(|mut s| s.execute([]))
            .map_err(db)?;
        result
    }

    fn transact<T>(
        tx: &Connection,
        key: &str,
        now_ms: u64,
        f: impl FnOnce(Option<String>) -> Result<(Option<String>, T), GatewayError>,
    ) -> Result<T, GatewayError> {
        let state: Option<String> = tx
            .prepare_cached("SELECT state FROM quota WHERE key = ?1")
            .and_then(|mut q| q.query_row([key], |r| r.get(0)).optional())
            .map_err(db)?;
        let (new_state, out) = f(state)?;
        if let Some(new_state) = new_state {
            tx.prepare_cached(
                "INSERT INTO quota (key, state, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
            )
            .and_then(|mut q| q.execute(params![key, new_state, now_ms as i64]))
            .map_err(db)?;
        }
        Ok(out)
    }

    pub fn reserve(
        &self,
        sandbox: &Sandbox,
        request: &QuotaRequest,
        id: &str,
        now_ms: u64,
    ) -> Result<ReserveOutcome, GatewayError> {
        self.with_state(&request.key, now_ms, |state| {
            let (new_state, outcome) =
                sandbox.quota_reserve(state.as_deref(), request, id, now_ms)?;
            Ok((Some(new_state), outcome))
        })
    }

    pub fn settle(
        &self,
        sandbox: &Sandbox,
        key: &str,
        limits: &QuotaLimits,
        id: &str,
        actual: Amounts,
        now_ms: u64,
    ) -> Result<(), GatewayError> {
        self.with_state(key, now_ms, |state| match state {
            Some(s) => Ok((
                Some(sandbox.quota_settle(&s, limits, id, actual, now_ms)?),
                (),
            )),
            None => Ok((None, ())),
        })
    }

    pub fn release(
        &self,
        sandbox: &Sandbox,
        key: &str,
        limits: &QuotaLimits,
        id: &str,
        now_ms: u64,
    ) -> Result<(), GatewayError> {
        self.with_state(key, now_ms, |state| match state {
            Some(s) => Ok((Some(sandbox.quota_release(&s, limits, id, now_ms)?), ())),
            None => Ok((None, ())),
        })
    }
}
