//! Tenants and API keys created through the admin API, on this machine:
//! in memory for every request's key lookup and standing check, and in the
//! state file's tables `directory_tenants` and `directory_keys`, committed
//! before the admin API answers, so what it created or revoked survives
//! `kill -9`. A change takes effect on the next request. The rules are the
//! core's (`edgegate_core::directory`); this keeps the records.

use anyhow::{Context, Result};
use edgegate_core::auth::{self, ApiKeyRecord};
use edgegate_core::directory::ops::{self, Applied, DirectoryOp};
use edgegate_core::directory::{PresentedKey, Records, Refusal, sql};
use edgegate_core::request::Headers;
use edgegate_core::{Config, GatewayError};
use rusqlite::{Connection, params};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

pub struct Directory {
    records: RwLock<Records>,
    /// Whether any run-time tenant or key exists: until one does, a
    /// request's lookup and standing check read this flag, not the lock.
    any: AtomicBool,
    /// Its own connection to the state file; held for a whole operation,
    /// so operations apply one at a time.
    conn: Mutex<Connection>,
}

fn internal(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Internal {
        message: format!("directory store: {e}"),
    }
}

impl Directory {
    /// Opens the tables in the state file at `path` (the quota store's,
    /// which owns the file) and loads every record.
    pub fn open(path: &Path) -> Result<Directory> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute(sql::CREATE_TENANTS, [])?;
        conn.execute(sql::CREATE_KEYS, [])?;
        let rows = |select: &str| -> Result<Vec<String>> {
            let mut q = conn.prepare(select)?;
            let rows = q.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        let (tenants, keys) = (rows(sql::SELECT_TENANTS)?, rows(sql::SELECT_KEYS)?);
        let any = !tenants.is_empty() || !keys.is_empty();
        let records = Records::from_rows(tenants, keys).context("a stored tenant or API key")?;
        Ok(Directory {
            records: RwLock::new(records),
            any: AtomicBool::new(any),
            conn: Mutex::new(conn),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Records> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The record of the run-time key a request presents, if it does
    /// (nothing is hashed while there are none).
    pub fn provisioned(&self, config: &Config, headers: &Headers) -> Option<ApiKeyRecord> {
        if !self.any.load(Ordering::Acquire) || !self.read().has_keys() {
            return None;
        }
        let sha256 = auth::key_to_look_up(config, headers)?;
        self.read().lookup(&sha256)
    }

    /// Why the tenant's standing refuses a request now, if it does.
    pub fn refusal(
        &self,
        tenant: &str,
        presented: Option<&PresentedKey>,
        now_ms: u64,
    ) -> Option<Refusal> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.read().refusal(tenant, presented, now_ms)
    }

    /// Applies one admin operation and commits what it wrote before
    /// answering (blocking: run it off the async workers).
    pub fn apply(
        &self,
        config: &Config,
        op: &DirectoryOp,
        now_ms: u64,
    ) -> Result<Applied, GatewayError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut entropy = [0u8; 32];
        getrandom::fill(&mut entropy).map_err(internal)?;
        let applied = ops::apply(config, op, &*self.read(), now_ms, &entropy)?;
        if applied.changes.is_empty() {
            return Ok(applied);
        }
        let tx = conn.transaction().map_err(internal)?;
        for change in &applied.changes {
            let (upsert, id, json) = change.row().map_err(internal)?;
            tx.execute(upsert, params![id, json]).map_err(internal)?;
        }
        tx.commit().map_err(internal)?;
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        for change in &applied.changes {
            records.add(change.clone());
        }
        self.any.store(true, Ordering::Release);
        Ok(applied)
    }
}
