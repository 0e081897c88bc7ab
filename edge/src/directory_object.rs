//! Tenants and API keys created through the admin API, at the edge: one
//! SQLite-backed Durable Object (binding `DIRECTORY`, named `directory`)
//! holds the records and applies the operations one at a time (the core's
//! `directory::ops::apply`). Before it answers, what follows from a change
//! is done:
//!
//! - each hash of each key the change touched is written to KV
//!   (`apikey:<hash>`, where requests look keys up): a new key is served
//!   wherever KV has it (Cloudflare: up to 60 s; workerd: at once);
//! - the change's standing goes to each of the tenant's quota objects,
//!   which every request of the tenant passes through: a revocation, an
//!   expiry change, a rotation and a disable hold on the very next request
//!   everywhere, whatever KV still says.
//!
//! A failed step answers 500 naming what was not done; the operation can be
//! repeated (every write is idempotent).

use crate::clock::now_ms;
use crate::kv_store::EdgeKv;
use crate::quota_object::QuotaStore;
use edgegate_core::GatewayError;
use edgegate_core::directory::ops::{self, DirectoryOp};
use edgegate_core::directory::{self, Change, Records};
use edgegate_core::quota::QuotaKey;
use futures_util::lock::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::RefCell;
use worker::{
    DurableObject, Env, ObjectNamespace, Request, Response, Result, SqlStorage, State,
    console_warn, durable_object,
};

const BINDING: &str = "DIRECTORY";
/// The one object holding every record.
const NAME: &str = "directory";

/// What an operation answered: the status and body, or the error.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Applied { status: u16, body: Value },
    Refused(GatewayError),
}

/// The Worker's handle on the directory object.
pub struct Directory(ObjectNamespace);

impl Directory {
    pub fn new(env: &Env) -> std::result::Result<Self, GatewayError> {
        env.durable_object(BINDING).map(Directory).map_err(|e| {
            store_error(format!(
                "Durable Object binding `{BINDING}` is missing: {e}"
            ))
        })
    }

    /// Applies `op`; its answer's status and JSON body.
    pub async fn apply(&self, op: &DirectoryOp) -> std::result::Result<(u16, Value), GatewayError> {
        let answer: Answer =
            crate::object_call::call(&self.0, NAME, "https://directory.internal/", op)
                .await
                .map_err(|e| store_error(e.to_string()))?;
        match answer {
            Answer::Applied { status, body } => Ok((status, body)),
            Answer::Refused(error) => Err(error),
        }
    }
}

fn store_error(detail: String) -> GatewayError {
    console_warn!("edgegate: directory: {detail}");
    GatewayError::Internal {
        message: "the tenant and key directory is unavailable".into(),
    }
}

#[derive(Deserialize)]
struct RecordRow {
    record: String,
}

#[durable_object]
pub struct DirectoryObject {
    state: State,
    env: Env,
    /// Loaded on first use.
    records: RefCell<Option<Records>>,
    /// Held for a whole operation, its KV writes and quota pushes included,
    /// so two operations' effects never land out of order.
    turn: Mutex<()>,
}

impl DurableObject for DirectoryObject {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        let created = sql
            .exec(directory::sql::CREATE_TENANTS, None)
            .and(sql.exec(directory::sql::CREATE_KEYS, None));
        if let Err(e) = created {
            console_warn!("edgegate: directory tables: {e}");
        }
        DirectoryObject {
            state,
            env,
            records: RefCell::new(None),
            turn: Mutex::new(()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op: DirectoryOp = match req.json().await {
            Ok(op) => op,
            Err(e) => return Response::error(format!("bad directory operation: {e}"), 400),
        };
        let _turn = self.turn.lock().await;
        let answer = match self.apply(&op).await {
            Ok((status, body)) => Answer::Applied { status, body },
            Err(error) => Answer::Refused(error),
        };
        Response::from_json(&answer)
    }
}

impl DirectoryObject {
    async fn apply(&self, op: &DirectoryOp) -> std::result::Result<(u16, Value), GatewayError> {
        let gateway = crate::config::gateway(&self.env)?;
        let config = gateway.config();
        let sql = self.state.storage().sql();
        let mut entropy = [0u8; 32];
        getrandom::fill(&mut entropy).map_err(|e| store_error(format!("randomness: {e}")))?;
        // Apply and persist without awaiting: atomic within this object.
        let (applied, lookups) = {
            let mut memory = self.records.borrow_mut();
            if memory.is_none() {
                *memory = Some(load(&sql).map_err(|e| store_error(format!("loading: {e}")))?);
            }
            let Some(records) = memory.as_mut() else {
                return Err(store_error("records not loaded".into()));
            };
            let applied = ops::apply(config, op, &*records, now_ms(), &entropy)?;
            for change in &applied.changes {
                if let Err(e) = persist(&sql, change) {
                    *memory = None;
                    return Err(store_error(format!("writing: {e}")));
                }
                records.add(change.clone());
            }
            let lookups: Vec<_> = applied
                .changes
                .iter()
                .flat_map(|c| ops::lookups(c, &*records))
                .collect();
            (applied, lookups)
        };
        let kv = EdgeKv::new(&self.env)?;
        for (hash, record) in &lookups {
            kv.put_api_key(hash, record)
                .await
                .map_err(|e| store_error(format!("KV write of a key lookup: {e}")))?;
        }
        let quotas = QuotaStore::new(&self.env)?;
        for change in &applied.changes {
            let tenant = change.tenant();
            for key in QuotaKey::all(tenant, config.quota_shards(tenant)) {
                quotas.standing(&key, &change.standing()).await?;
            }
        }
        Ok((applied.status, applied.body))
    }
}

/// Every stored record.
fn load(sql: &SqlStorage) -> Result<Records> {
    let rows = |select: &str| -> Result<Vec<String>> {
        let rows: Vec<RecordRow> = sql.exec(select, None)?.to_array()?;
        Ok(rows.into_iter().map(|r| r.record).collect())
    };
    let tenants = rows(directory::sql::SELECT_TENANTS)?;
    Ok(Records::from_rows(
        tenants,
        rows(directory::sql::SELECT_KEYS)?,
    )?)
}

fn persist(sql: &SqlStorage, change: &Change) -> Result<()> {
    let (upsert, id, json) = change.row()?;
    sql.exec(upsert, vec![id.into(), json.into()])?;
    Ok(())
}
