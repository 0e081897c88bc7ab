//! Exact quotas: one SQLite-backed Durable Object per quota key (a tenant,
//! or one of its shards, named `tenant#k`), holding the core's `QuotaState` in memory between
//! requests and in SQLite by rows (a counters record, one row per open
//! reservation). Each command changes the state and writes the rows it
//! changed without awaiting in between, so concurrent requests to one object
//! never interleave inside a reservation.
//!
//! Reservations nobody settles (the isolate died mid-stream) expire: an
//! alarm at the earliest expiry calls `QuotaState::expire`.
//!
//! The usage ledger's rows of the key live here too (table `usage_ledger`,
//! with its latency counts in `usage_latency`,
//! `edgegate_core::ledger::sql`): a settle or release adds its request's
//! entry in the same write as the counters, so the ledger is exact. An
//! object that wrote its first row says so once in KV
//! (`ledger-tenant:<tenant>`), so usage reports over every tenant find it.
//!
//! The tenant's standing (run-time keys revoked, expiring or rotated out; the
//! tenant disabled) lives here too (table `quota_standing`), pushed by the
//! directory object on every change: a reservation it refuses is refused
//! before anything is reserved, on the very next request.

use crate::clock::now_ms;
use crate::{quota_budgets, quota_ledger, quota_standing};
use edgegate_core::GatewayError;
use edgegate_core::directory::{PresentedKey, Standing, StandingChange};
use edgegate_core::gateway::QuotaRequest;
use edgegate_core::ledger::latency::Pruning;
use edgegate_core::ledger::{LatencyQuery, LatencyRow, LedgerEntry, UsageQuery};
use edgegate_core::quota::remaining::{self, Peeked, QuotaPeek};
use edgegate_core::quota::{
    Amounts, Budget, Level, Levels, Outstanding, QuotaChange, QuotaKey, QuotaLimits, QuotaState,
    ReserveOutcome,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use worker::js_sys;
use worker::wasm_bindgen::JsValue;
use worker::{
    DurableObject, Env, ObjectNamespace, Request, Response, Result, ScheduledTime, SqlStorage,
    SqlStorageValue, State, console_warn, durable_object,
};

const BINDING: &str = "QUOTA";

/// What the Worker asks of a quota object.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Command {
    Reserve {
        id: String,
        limits: QuotaLimits,
        amounts: Amounts,
        ttl_ms: u64,
        #[serde(default)]
        presented: Option<PresentedKey>,
        #[serde(default)]
        budgets: Vec<Budget>,
    },
    Settle {
        id: String,
        limits: QuotaLimits,
        actual: Amounts,
        #[serde(default)]
        ledger: Option<Box<LedgerEntry>>,
        #[serde(default)]
        budgets: Vec<Budget>,
    },
    Release {
        id: String,
        limits: QuotaLimits,
        #[serde(default)]
        ledger: Option<Box<LedgerEntry>>,
        #[serde(default)]
        budgets: Vec<Budget>,
    },
}

/// What a quota object is asked: a command, or how many it served since it
/// was loaded (each is a billed Durable Object request).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Incoming {
    Command(Command),
    Query(Query),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Query {
    Stats,
    /// The ledger rows of days `from..=to` (day numbers), of one key or all.
    Usage {
        from: u32,
        to: u32,
        key: Option<String>,
    },
    /// A change to the tenant's standing, from the directory object.
    Standing {
        change: StandingChange,
    },
    /// The latency counts of hours `first..=last` (hour numbers), of one
    /// model or all.
    Latency {
        first: i64,
        last: i64,
        model: Option<String>,
    },
    /// When each key with ledger rows here was last used.
    LastUsed,
    /// What is left of a key holder's budgets here (nothing changes).
    Peek {
        limits: QuotaLimits,
        presented: Option<PresentedKey>,
        budgets: Vec<Budget>,
    },
}

/// The answer to `stats`.
#[derive(Debug, Serialize, Deserialize)]
struct Stats {
    commands: u64,
}

/// The answer to `settle` and `release`.
#[derive(Debug, Serialize, Deserialize)]
struct Settled {
    /// False when the reservation was already settled, released or expired.
    settled: bool,
}

/// The Worker's handle on the quota objects.
pub struct QuotaStore(ObjectNamespace);

impl QuotaStore {
    pub fn new(env: &Env) -> std::result::Result<Self, GatewayError> {
        env.durable_object(BINDING).map(QuotaStore).map_err(|e| {
            store_error(format!(
                "Durable Object binding `{BINDING}` is missing: {e}"
            ))
        })
    }

    pub async fn reserve(
        &self,
        quota: &QuotaRequest,
        id: &str,
    ) -> std::result::Result<ReserveOutcome, GatewayError> {
        let command = Command::Reserve {
            id: id.to_owned(),
            limits: quota.limits.clone(),
            amounts: quota.amounts,
            ttl_ms: quota.ttl_ms,
            presented: quota.presented.clone(),
            budgets: quota.budgets.clone(),
        };
        self.call(&quota.key.to_string(), &command).await
    }

    /// Tells the object of quota key `key` of a change to its tenant's standing.
    pub async fn standing(
        &self,
        key: &QuotaKey,
        change: &StandingChange,
    ) -> std::result::Result<(), GatewayError> {
        let ask = Query::Standing {
            change: change.clone(),
        };
        crate::object_call::call::<Settled>(
            &self.0,
            &key.to_string(),
            "https://quota.internal/",
            &ask,
        )
        .await
        .map(drop)
        .map_err(|e| store_error(e.to_string()))
    }

    /// Charges the real usage instead of the reservation, and adds the
    /// request to the ledger.
    pub async fn settle(
        &self,
        quota: &QuotaRequest,
        id: &str,
        actual: Amounts,
        ledger: Box<LedgerEntry>,
    ) {
        let command = Command::Settle {
            id: id.to_owned(),
            limits: quota.limits.clone(),
            actual,
            ledger: Some(ledger),
            budgets: quota.budgets.clone(),
        };
        self.call_logged(&quota.key.to_string(), &command).await;
    }

    /// Gives the whole reservation back (the call failed), and adds the
    /// request to the ledger as an error.
    pub async fn release(&self, quota: &QuotaRequest, id: &str, ledger: Box<LedgerEntry>) {
        let command = Command::Release {
            id: id.to_owned(),
            limits: quota.limits.clone(),
            ledger: Some(ledger),
            budgets: quota.budgets.clone(),
        };
        self.call_logged(&quota.key.to_string(), &command).await;
    }

    /// The ledger rows the object of quota key `key` holds for `query`'s
    /// days and key.
    pub async fn usage(
        &self,
        key: &QuotaKey,
        query: &UsageQuery,
    ) -> std::result::Result<Vec<LedgerEntry>, GatewayError> {
        let ask = Query::Usage {
            from: query.from.number(),
            to: query.to.number(),
            key: query.key.clone(),
        };
        crate::object_call::call(&self.0, &key.to_string(), "https://quota.internal/", &ask)
            .await
            .map_err(|e| store_error(e.to_string()))
    }

    /// The latency counts the object of quota key `key` holds for `query`'s
    /// hours and model.
    pub async fn latency(
        &self,
        key: &QuotaKey,
        query: &LatencyQuery,
    ) -> std::result::Result<Vec<LatencyRow>, GatewayError> {
        let (first, last) = query.hours();
        let model = query.model.clone();
        let ask = Query::Latency { first, last, model };
        crate::object_call::call(&self.0, &key.to_string(), "https://quota.internal/", &ask)
            .await
            .map_err(|e| store_error(e.to_string()))
    }

    /// When each key with ledger rows in the object of quota key `key` was
    /// last used (Unix ms), by key id.
    pub async fn last_used(
        &self,
        key: &QuotaKey,
    ) -> std::result::Result<HashMap<String, u64>, GatewayError> {
        crate::object_call::call(
            &self.0,
            &key.to_string(),
            "https://quota.internal/",
            &Query::LastUsed,
        )
        .await
        .map_err(|e| store_error(e.to_string()))
    }

    /// What is left of a key holder's budgets in `peek`'s object, or its
    /// tenant's standing's refusal of the key.
    pub async fn peek(&self, peek: &QuotaPeek) -> std::result::Result<Peeked, GatewayError> {
        let ask = Query::Peek {
            limits: peek.limits.clone(),
            presented: peek.presented.clone(),
            budgets: peek.budgets.clone(),
        };
        crate::object_call::call(
            &self.0,
            &peek.key.to_string(),
            "https://quota.internal/",
            &ask,
        )
        .await
        .map_err(|e| store_error(e.to_string()))
    }

    /// Settling is best effort: an unsettled reservation expires on its own.
    async fn call_logged(&self, key: &str, command: &Command) {
        if let Err(e) = self.call::<Settled>(key, command).await {
            console_warn!("edgegate: quota settlement failed: {e}");
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        key: &str,
        command: &Command,
    ) -> std::result::Result<T, GatewayError> {
        crate::object_call::call(&self.0, key, "https://quota.internal/", command)
            .await
            .map_err(|e| store_error(e.to_string()))
    }
}

fn store_error(detail: String) -> GatewayError {
    console_warn!("edgegate: quota store: {detail}");
    GatewayError::Internal {
        message: "the quota store is unavailable".into(),
    }
}

/// A quota object's state, kept in memory between requests and written
/// back by rows: the counters record (with the limits and the alarm) and one
/// row per open reservation.
struct Stored {
    state: QuotaState,
    /// The latest limits a request carried; the alarm expires with them.
    limits: QuotaLimits,
    /// When the alarm is set for, if it is.
    alarm_ms: Option<u64>,
    /// The budgets loaded so far (`quota_budgets`).
    budgets: HashMap<Level, QuotaState>,
}

#[derive(Debug, Deserialize)]
struct CountersRow {
    counters: String,
    limits: String,
    alarm_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ReservationRow {
    id: String,
    reservation: String,
}

#[derive(Debug, Deserialize)]
struct LegacyRow {
    state: String,
    limits: String,
    alarm_ms: Option<u64>,
}

#[durable_object]
pub struct QuotaObject {
    state: State,
    /// Loaded on first use; dropped when a write fails, so the next command
    /// reloads what storage holds.
    memory: RefCell<Option<Stored>>,
    /// Reserve, settle and release commands served by this instance.
    commands: Cell<u64>,
    env: Env,
    /// Whether KV knows this object's tenant has ledger rows.
    registered: Cell<bool>,
    /// The tenant's standing, loaded on first use.
    standing: RefCell<Option<Standing>>,
    /// When this instance last pruned the latency counts (once an hour).
    pruning: RefCell<Pruning>,
}

impl DurableObject for QuotaObject {
    fn new(state: State, env: Env) -> Self {
        let created = state.storage().sql().exec(
            "CREATE TABLE IF NOT EXISTS quota_counters (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                counters TEXT NOT NULL,
                limits TEXT NOT NULL,
                alarm_ms INTEGER
            )",
            None,
        );
        let reservations = state.storage().sql().exec(
            "CREATE TABLE IF NOT EXISTS quota_reservations (
                id TEXT PRIMARY KEY,
                reservation TEXT NOT NULL
            )",
            None,
        );
        let ledger = quota_ledger::create(&state.storage().sql());
        let registered = state.storage().sql().exec(
            "CREATE TABLE IF NOT EXISTS ledger_registered (id INTEGER PRIMARY KEY CHECK (id = 1))",
            None,
        );
        let standing = quota_standing::create(&state.storage().sql());
        let budgets = quota_budgets::create(&state.storage().sql());
        if let Err(e) = created
            .and(reservations)
            .and(ledger)
            .and(registered)
            .and(standing)
            .and(budgets)
        {
            console_warn!("edgegate: quota tables: {e}");
        }
        QuotaObject {
            state,
            memory: RefCell::new(None),
            commands: Cell::new(0),
            env,
            registered: Cell::new(false),
            standing: RefCell::new(None),
            pruning: RefCell::new(Pruning::default()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let command = match req.json().await {
            Ok(Incoming::Command(c)) => c,
            Ok(Incoming::Query(Query::Stats)) => {
                let commands = self.commands.get();
                return json_reply(serde_json::to_string(&Stats { commands })?);
            }
            Ok(Incoming::Query(Query::Usage { from, to, key })) => {
                let rows = quota_ledger::read(&self.state.storage().sql(), from, to, key)?;
                return json_reply(serde_json::to_string(&rows)?);
            }
            Ok(Incoming::Query(Query::Latency { first, last, model })) => {
                let sql = self.state.storage().sql();
                let rows = quota_ledger::read_latency(&sql, first, last, model)?;
                return json_reply(serde_json::to_string(&rows)?);
            }
            Ok(Incoming::Query(Query::Peek {
                limits,
                presented,
                budgets,
            })) => {
                let peeked = self.peek(limits, presented, budgets)?;
                return json_reply(serde_json::to_string(&peeked)?);
            }
            Ok(Incoming::Query(Query::LastUsed)) => {
                let last = quota_ledger::last_used(&self.state.storage().sql())?;
                return json_reply(serde_json::to_string(&last)?);
            }
            Ok(Incoming::Query(Query::Standing { change })) => {
                let sql = self.state.storage().sql();
                let mut standing = self.standing(&sql)?;
                quota_standing::save(&sql, &change)?;
                standing.apply(change);
                return json_reply(serde_json::to_string(&Settled { settled: true })?);
            }
            Err(e) => return Response::error(format!("bad quota command: {e}"), 400),
        };
        self.commands.set(self.commands.get() + 1);
        let limits = command_limits(&command).clone();
        let now = now_ms();
        let sql = self.state.storage().sql();
        // Change and write without awaiting: atomic within this object.
        let (reply, wake, tenant) = {
            let mut memory = self.memory.borrow_mut();
            if memory.is_none() {
                *memory = Some(load(&sql)?.unwrap_or_else(|| Stored {
                    state: QuotaState::new(&limits, now),
                    limits: limits.clone(),
                    alarm_ms: None,
                    budgets: HashMap::new(),
                }));
            }
            let Some(stored) = memory.as_mut() else {
                return Response::error("quota state not loaded", 500);
            };
            stored.limits = limits.clone();
            // The command's budgets (a run-time key's as the standing holds
            // it), out of memory or storage, new ones full.
            let budgets = match &command {
                Command::Reserve {
                    presented, budgets, ..
                } => self.standing(&sql)?.budgets(presented.as_ref(), budgets),
                _ => command_budgets(&command).to_vec(),
            };
            let mut taken: Vec<(&Budget, QuotaState)> = Vec::new();
            for budget in &budgets {
                let state = match stored.budgets.remove(&budget.level) {
                    Some(state) => state,
                    None => quota_budgets::load(&sql, &budget.level)?
                        .unwrap_or_else(|| QuotaState::new(&budget.limits, now)),
                };
                taken.push((budget, state));
            }
            let refusal = match &command {
                Command::Reserve { presented, .. } => {
                    self.refusal(&sql, presented.as_ref(), now)?
                }
                _ => None,
            };
            let mut levels = Levels {
                tenant: &mut stored.state,
                limits: &limits,
                budgets: taken.iter_mut().map(|(b, s)| (*b, s)).collect(),
            };
            let (reply, ledger) = match &command {
                Command::Reserve {
                    id,
                    amounts,
                    ttl_ms,
                    ..
                } => {
                    let outcome = match refusal {
                        Some(refusal) => ReserveOutcome::Refused { refusal },
                        None => levels.reserve(now, id, *amounts, *ttl_ms),
                    };
                    (serde_json::to_string(&outcome)?, None)
                }
                Command::Settle {
                    id, actual, ledger, ..
                } => (
                    serde_json::to_string(&Settled {
                        settled: levels.settle(now, id, *actual),
                    })?,
                    ledger.clone(),
                ),
                Command::Release { id, ledger, .. } => (
                    serde_json::to_string(&Settled {
                        settled: levels.settle(now, id, Amounts::default()),
                    })?,
                    ledger.clone(),
                ),
            };
            drop(levels);
            for (budget, state) in taken {
                if let Err(e) = quota_budgets::save(&sql, &budget.level, &state) {
                    *memory = None;
                    return Err(e);
                }
                stored.budgets.insert(budget.level.clone(), state);
            }
            let wake = earlier_alarm(stored);
            // The counters and the ledger row in one write.
            if let Err(e) = save(&sql, stored).and_then(|()| {
                ledger
                    .as_ref()
                    .map_or(Ok(()), |entry| quota_ledger::add(&sql, entry))
            }) {
                *memory = None;
                return Err(e);
            }
            if let Some(before) = self.pruning.borrow_mut().due(now_ms())
                && let Err(e) = quota_ledger::prune_latency(&sql, before)
            {
                console_warn!("edgegate: pruning the latency counts: {e}");
            }
            (reply, wake, ledger.map(|e| e.key.tenant))
        };
        if let Some(at) = wake {
            self.set_alarm(&sql, at).await;
        }
        if let Some(tenant) = tenant {
            self.register(&sql, &tenant).await;
        }
        json_reply(reply)
    }

    async fn alarm(&self) -> Result<Response> {
        let now = now_ms();
        let sql = self.state.storage().sql();
        let next = {
            let mut memory = self.memory.borrow_mut();
            if memory.is_none() {
                *memory = load(&sql)?;
            }
            let Some(stored) = memory.as_mut() else {
                return Response::empty();
            };
            let limits = stored.limits.clone();
            stored.state.expire(now, &limits);
            stored.alarm_ms = stored.state.next_expiry_ms();
            if let Err(e) = save(&sql, stored) {
                *memory = None;
                return Err(e);
            }
            stored.alarm_ms
        };
        if let Some(at) = next {
            self.set_alarm(&sql, at).await;
        }
        Response::empty()
    }
}

impl QuotaObject {
    /// The tenant's standing, loaded on first use.
    fn standing(&self, sql: &SqlStorage) -> Result<std::cell::RefMut<'_, Standing>> {
        let mut standing = self.standing.borrow_mut();
        if standing.is_none() {
            *standing = Some(quota_standing::load(sql)?);
        }
        Ok(std::cell::RefMut::map(standing, |s| {
            s.get_or_insert_default()
        }))
    }

    /// Why the tenant's standing refuses a reservation, if it does.
    fn refusal(
        &self,
        sql: &SqlStorage,
        presented: Option<&PresentedKey>,
        now: u64,
    ) -> Result<Option<edgegate_core::directory::Refusal>> {
        Ok(self.standing(sql)?.check(presented, now))
    }

    /// What is left of the tenant's limits here and of each budget (a
    /// run-time key's as the standing holds it), read from memory or
    /// storage without changing either; or the standing's refusal.
    fn peek(
        &self,
        limits: QuotaLimits,
        presented: Option<PresentedKey>,
        budgets: Vec<Budget>,
    ) -> Result<Peeked> {
        let sql = self.state.storage().sql();
        let now = now_ms();
        if let Some(refusal) = self.refusal(&sql, presented.as_ref(), now)? {
            return Ok(Peeked::Refused { refusal });
        }
        let budgets = self.standing(&sql)?.budgets(presented.as_ref(), &budgets);
        let mut memory = self.memory.borrow_mut();
        if memory.is_none() {
            *memory = load(&sql)?;
        }
        // Budgets not in memory yet, from storage (kept out of memory: a
        // read loads nothing a command would not).
        let mut stored: HashMap<Level, QuotaState> = HashMap::new();
        for budget in &budgets {
            let held = memory
                .as_ref()
                .is_some_and(|m| m.budgets.contains_key(&budget.level));
            if let (false, Some(state)) = (held, quota_budgets::load(&sql, &budget.level)?) {
                stored.insert(budget.level.clone(), state);
            }
        }
        Ok(remaining::answer(
            &limits,
            &budgets,
            memory.as_ref().map(|m| &m.state),
            |b| {
                memory
                    .as_ref()
                    .and_then(|m| m.budgets.get(&b.level))
                    .or_else(|| stored.get(&b.level))
            },
            now,
        ))
    }

    /// Tells KV, once, that this object's tenant has ledger rows.
    async fn register(&self, sql: &SqlStorage, tenant: &str) {
        if self.registered.get() {
            return;
        }
        let known = sql
            .exec("SELECT id FROM ledger_registered", None)
            .and_then(|c| c.to_array::<serde_json::Value>())
            .is_ok_and(|rows| !rows.is_empty());
        if !known {
            let registered = match crate::kv_store::EdgeKv::new(&self.env) {
                Ok(kv) => kv.register_ledger_tenant(tenant).await,
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = registered {
                console_warn!("edgegate: ledger tenant not registered in KV: {e}");
                return;
            }
            if let Err(e) = sql.exec(
                "INSERT OR IGNORE INTO ledger_registered (id) VALUES (1)",
                None,
            ) {
                console_warn!("edgegate: ledger registration not kept: {e}");
                return;
            }
        }
        self.registered.set(true);
    }

    /// A failed `setAlarm` forgets the alarm so the next command sets it again.
    async fn set_alarm(&self, sql: &SqlStorage, at_ms: u64) {
        let when = ScheduledTime::new(js_sys::Date::new(&JsValue::from_f64(at_ms as f64)));
        if let Err(e) = self.state.storage().set_alarm(when).await {
            console_warn!("edgegate: quota alarm not set: {e}");
            let mut memory = self.memory.borrow_mut();
            if let Some(stored) = memory.as_mut() {
                stored.alarm_ms = None;
                if let Err(e) = save(sql, stored) {
                    console_warn!("edgegate: quota state not saved: {e}");
                    *memory = None;
                }
            }
        }
    }
}

fn command_budgets(command: &Command) -> &[Budget] {
    match command {
        Command::Reserve { budgets, .. }
        | Command::Settle { budgets, .. }
        | Command::Release { budgets, .. } => budgets,
    }
}

fn command_limits(command: &Command) -> &QuotaLimits {
    match command {
        Command::Reserve { limits, .. }
        | Command::Settle { limits, .. }
        | Command::Release { limits, .. } => limits,
    }
}

fn json_reply(body: String) -> Result<Response> {
    let mut response = Response::ok(body)?;
    response
        .headers_mut()
        .set("content-type", "application/json")?;
    Ok(response)
}

/// The alarm time to set, when the earliest expiry is sooner than the alarm
/// already set (or none is). A later alarm than needed only fires early and
/// finds nothing to expire.
fn earlier_alarm(stored: &mut Stored) -> Option<u64> {
    let next = stored.state.next_expiry_ms()?;
    if stored.alarm_ms.is_some_and(|set| set <= next) {
        return None;
    }
    stored.alarm_ms = Some(next);
    Some(next)
}

/// The state from its rows, or from the one whole-state row earlier
/// versions kept (table `quota`), which is then rewritten as rows.
fn load(sql: &SqlStorage) -> Result<Option<Stored>> {
    let rows: Vec<CountersRow> = sql
        .exec(
            "SELECT counters, limits, alarm_ms FROM quota_counters WHERE id = 1",
            None,
        )?
        .to_array()?;
    if let Some(row) = rows.into_iter().next() {
        let open: Vec<ReservationRow> = sql
            .exec("SELECT id, reservation FROM quota_reservations", None)?
            .to_array()?;
        let open = open
            .into_iter()
            .map(|r| Ok((r.id, serde_json::from_str(&r.reservation)?)))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Some(Stored {
            state: QuotaState::restore(serde_json::from_str(&row.counters)?, open),
            limits: serde_json::from_str(&row.limits)?,
            alarm_ms: row.alarm_ms,
            budgets: HashMap::new(),
        }));
    }
    let legacy: Vec<LegacyRow> = match sql.exec(
        "SELECT state, limits, alarm_ms FROM quota WHERE id = 1",
        None,
    ) {
        Ok(cursor) => cursor.to_array()?,
        Err(_) => return Ok(None),
    };
    let Some(row) = legacy.into_iter().next() else {
        return Ok(None);
    };
    let mut stored = Stored {
        state: QuotaState::from_stored_json(&row.state)?,
        limits: serde_json::from_str(&row.limits)?,
        alarm_ms: row.alarm_ms,
        budgets: HashMap::new(),
    };
    for (id, reservation) in stored.state.reservations() {
        insert_reservation(sql, id, reservation)?;
    }
    save(sql, &mut stored)?;
    sql.exec("DROP TABLE quota", None)?;
    Ok(Some(stored))
}

fn insert_reservation(sql: &SqlStorage, id: &str, reservation: &Outstanding) -> Result<()> {
    sql.exec(
        "INSERT OR REPLACE INTO quota_reservations (id, reservation) VALUES (?, ?)",
        vec![id.into(), serde_json::to_string(reservation)?.into()],
    )?;
    Ok(())
}

/// Writes the counters record and the reservation rows changed since the
/// last save: O(1) rows per command, whatever the number open.
fn save(sql: &SqlStorage, stored: &mut Stored) -> Result<()> {
    let alarm = match stored.alarm_ms {
        Some(ms) => SqlStorageValue::try_from_i64(i64::try_from(ms).unwrap_or(i64::MAX))?,
        None => SqlStorageValue::Null,
    };
    sql.exec(
        "INSERT OR REPLACE INTO quota_counters (id, counters, limits, alarm_ms) VALUES (1, ?, ?, ?)",
        vec![
            serde_json::to_string(&stored.state.counters())?.into(),
            serde_json::to_string(&stored.limits)?.into(),
            alarm,
        ],
    )?;
    for change in stored.state.take_changes() {
        match change {
            QuotaChange::Opened { id, reservation } => insert_reservation(sql, &id, &reservation)?,
            QuotaChange::Closed { id } => {
                sql.exec(
                    "DELETE FROM quota_reservations WHERE id = ?",
                    vec![id.into()],
                )?;
            }
        }
    }
    Ok(())
}
