//! Quota state in memory, made durable in SQLite by rows.
//!
//! Each quota key (a tenant, or one of its shards) has its own `QuotaState`
//! behind its own lock, so tenants never wait on each other; the core's pure
//! functions change it in place, in O(log n) of the reservations open. The
//! rows each operation changed (the key's counters record, a reservation
//! inserted or deleted) go to one writer thread that commits whatever has
//! queued up in one transaction (group commit). `reserve` returns only after
//! the transaction holding its reservation committed, so a request is
//! forwarded only once `kill -9` can no longer lose its charge; settling
//! does not wait (a settle lost to a crash leaves the reservation charged in
//! full, never less). On start-up the state is rebuilt from the tables.
//! WAL with `synchronous = NORMAL`: durable across process crashes, not
//! power loss. Checkpoints (copying the WAL into the database, with its
//! fsync) run on their own thread and connection, never inside a commit
//! that reservations wait on.
//!
//! A key's budgets inside the tenant's (its users', `QuotaRequest::budgets`)
//! live under the key's lock with its state, so all levels are reserved
//! and settled in one operation (`quota::Levels`); each budget touched is
//! written whole, as JSON, to `quota_budgets` in the same transaction.

use anyhow::{Context, Result, bail};
use edgegate_core::GatewayError;
use edgegate_core::gateway::QuotaRequest;
use edgegate_core::ledger::latency::{LatencyKey, Pruning};
use edgegate_core::ledger::{
    LatencyQuery, LatencyRow, LedgerCounts, LedgerEntry, LedgerKey, UsageQuery,
};
use edgegate_core::quota::remaining::{self, Peeked, QuotaPeek};
use edgegate_core::quota::{
    Amounts, Budget, Level, Levels, Outstanding, QuotaChange, QuotaCounters, QuotaKey, QuotaLimits,
    QuotaState, ReserveOutcome,
};
use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

mod ledger;

/// Shards of the key → state map; its locks are held for one hash lookup.
const MAP_SHARDS: usize = 32;

fn internal(message: String) -> GatewayError {
    GatewayError::Internal { message }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One key's rows to write (and a ledger entry to add with them), and who
/// waits for the commit.
struct Write {
    key: Arc<QuotaKey>,
    counters: QuotaCounters,
    changes: Vec<QuotaChange>,
    /// Each budget the operation touched, whole, as JSON.
    budgets: Vec<(Level, String)>,
    ledger: Option<LedgerEntry>,
    committed: Option<oneshot::Sender<Result<(), String>>>,
}

/// A ledger read, served once everything queued before it is committed.
enum Read {
    /// The rows a usage report selects.
    Usage {
        query: UsageQuery,
        reply: oneshot::Sender<Result<Vec<LedgerEntry>, String>>,
    },
    /// The latency counts a latency report selects.
    Latency {
        query: LatencyQuery,
        reply: oneshot::Sender<Result<Vec<LatencyRow>, String>>,
    },
    /// When each key of one tenant (or of all) was last used.
    LastUsed {
        tenant: Option<String>,
        reply: oneshot::Sender<Result<HashMap<String, u64>, String>>,
    },
}

/// What the writer thread does, in the order asked.
enum Job {
    Write(Box<Write>),
    Read(Read),
}

/// A quota key's state and the budgets kept with it.
#[derive(Default)]
struct Book {
    state: QuotaState,
    budgets: HashMap<Level, QuotaState>,
}

impl Book {
    /// Runs `f` over the key's state and the request's budgets (new ones
    /// start full); the budgets' states as JSON, to write.
    fn levels<T>(
        &mut self,
        request: &QuotaRequest,
        now_ms: u64,
        f: impl FnOnce(&mut Levels<'_>) -> T,
    ) -> (T, Vec<(Level, String)>) {
        let mut taken: Vec<(&Budget, QuotaState)> = request
            .budgets
            .iter()
            .map(|b| {
                let state = self
                    .budgets
                    .remove(&b.level)
                    .unwrap_or_else(|| QuotaState::new(&b.limits, now_ms));
                (b, state)
            })
            .collect();
        let out = f(&mut Levels {
            tenant: &mut self.state,
            limits: &request.limits,
            budgets: taken.iter_mut().map(|(b, s)| (*b, s)).collect(),
        });
        let rows = taken
            .into_iter()
            .map(|(b, state)| {
                let json = state.to_stored_json();
                self.budgets.insert(b.level.clone(), state);
                (b.level.clone(), json)
            })
            .collect();
        (out, rows)
    }
}

type Shard = Mutex<HashMap<Arc<QuotaKey>, Arc<Mutex<Book>>>>;

pub struct QuotaStore {
    shards: Vec<Shard>,
    hasher: RandomState,
    writer: Mutex<mpsc::Sender<Job>>,
    /// Dropped with the store: the checkpointer's last checkpoint, then it ends.
    _checkpoints: mpsc::Sender<()>,
    /// The lock that keeps a second runner off this state.
    _owner: File,
}

/// Locks `<state>.lock`: one runner owns its state, and a second runner on
/// the same state dir fails instead of sharing it.
fn own(path: &Path) -> Result<File> {
    let lock_path = path.with_extension("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => bail!(
            "{} is in use by another local-runner (it holds {})",
            path.display(),
            lock_path.display()
        ),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", lock_path.display()))
        }
    }
}

impl QuotaStore {
    pub fn open(path: &Path) -> Result<QuotaStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        let owner = own(path)?;
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS quota_counters (
                key TEXT PRIMARY KEY,
                counters TEXT NOT NULL
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS quota_reservations (
                key TEXT NOT NULL,
                id TEXT NOT NULL,
                reservation TEXT NOT NULL,
                PRIMARY KEY (key, id)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS quota_budgets (
                key TEXT NOT NULL,
                level TEXT NOT NULL,
                id TEXT NOT NULL,
                state TEXT NOT NULL,
                PRIMARY KEY (key, level, id)
            ) WITHOUT ROWID;",
        )?;
        ledger::create(&conn)?;
        let (tx, rx) = mpsc::channel();
        let (checkpoints, stop) = mpsc::channel();
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_timeout(Duration::from_secs(5))?;
        std::thread::Builder::new()
            .name("quota-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, &stop))
            .context("starting the quota checkpointer")?;
        let store = QuotaStore {
            shards: (0..MAP_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            writer: Mutex::new(tx),
            _checkpoints: checkpoints,
            _owner: owner,
        };
        for (key, book) in load(&conn)? {
            lock(store.shard(&key)).insert(Arc::new(key), Arc::new(Mutex::new(book)));
        }
        std::thread::Builder::new()
            .name("quota-writer".into())
            .spawn(move || write_loop(conn, rx))
            .context("starting the quota writer")?;
        Ok(store)
    }

    fn shard(&self, key: &QuotaKey) -> &Shard {
        &self.shards[self.hasher.hash_one(key) as usize % MAP_SHARDS]
    }

    fn state(
        &self,
        key: &QuotaKey,
        limits: &QuotaLimits,
        now_ms: u64,
    ) -> (Arc<QuotaKey>, Arc<Mutex<Book>>) {
        let mut shard = lock(self.shard(key));
        if let Some((k, s)) = shard.get_key_value(key) {
            return (k.clone(), s.clone());
        }
        let k = Arc::new(key.clone());
        let s = Arc::new(Mutex::new(Book {
            state: QuotaState::new(limits, now_ms),
            budgets: HashMap::new(),
        }));
        shard.insert(k.clone(), s.clone());
        (k, s)
    }

    /// Sends the rows `state` changed to the writer; called with the key's
    /// lock held, so one key's writes reach the database in order.
    fn persist(
        &self,
        key: &Arc<QuotaKey>,
        state: &mut QuotaState,
        budgets: Vec<(Level, String)>,
        ledger: Option<LedgerEntry>,
        committed: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        let write = Write {
            key: key.clone(),
            counters: state.counters(),
            changes: state.take_changes(),
            budgets,
            ledger,
            committed,
        };
        if let Err(mpsc::SendError(Job::Write(w))) =
            lock(&self.writer).send(Job::Write(Box::new(write)))
            && let Some(done) = w.committed
        {
            done.send(Err("the quota writer has stopped".into())).ok();
        }
    }

    /// Reserves in memory, then waits until the reservation is committed.
    pub async fn reserve(
        &self,
        request: &QuotaRequest,
        id: &str,
        now_ms: u64,
    ) -> Result<ReserveOutcome, GatewayError> {
        let (key, book) = self.state(&request.key, &request.limits, now_ms);
        let (outcome, committed) = {
            let mut b = lock(&book);
            let (outcome, budgets) = b.levels(request, now_ms, |levels| {
                levels.reserve(now_ms, id, request.amounts, request.ttl_ms)
            });
            let (done, committed) = oneshot::channel();
            let admitted = matches!(outcome, ReserveOutcome::Admit { .. });
            self.persist(&key, &mut b.state, budgets, None, admitted.then_some(done));
            (outcome, admitted.then_some(committed))
        };
        let Some(committed) = committed else {
            return Ok(outcome);
        };
        let failure = match committed.await {
            Ok(Ok(())) => return Ok(outcome),
            Ok(Err(e)) => e,
            Err(_) => "the quota writer has stopped".to_owned(),
        };
        // Not durable, so not admitted: give it back.
        self.release(request, id, None, now_ms);
        Err(internal(format!("quota store: {failure}")))
    }

    /// Charges the real usage instead of the reservation, at every level,
    /// and adds the request to the ledger, in one transaction (not waited
    /// for). The entry is added even when the reservation had expired: the
    /// ledger counts what the request used.
    pub fn settle(
        &self,
        request: &QuotaRequest,
        id: &str,
        actual: Amounts,
        ledger: Option<LedgerEntry>,
        now_ms: u64,
    ) {
        let (key, book) = self.state(&request.key, &request.limits, now_ms);
        let mut b = lock(&book);
        let (settled, budgets) =
            b.levels(request, now_ms, |levels| levels.settle(now_ms, id, actual));
        if settled || ledger.is_some() {
            self.persist(&key, &mut b.state, budgets, ledger, None);
        }
    }

    /// Gives the whole reservation back (adding the request to the ledger
    /// as an error, when it reached the backend's side of the exchange).
    pub fn release(
        &self,
        request: &QuotaRequest,
        id: &str,
        ledger: Option<LedgerEntry>,
        now_ms: u64,
    ) {
        self.settle(request, id, Amounts::default(), ledger, now_ms);
    }

    /// What is left of a key holder's budgets in `peek`'s store (read,
    /// never changed; a state not made yet is whole).
    pub fn peek(&self, peek: &QuotaPeek, now_ms: u64) -> Peeked {
        let book = lock(self.shard(&peek.key)).get(&peek.key).cloned();
        let book = book.as_ref().map(|b| lock(b));
        remaining::answer(
            &peek.limits,
            &peek.budgets,
            book.as_ref().map(|b| &b.state),
            |budget| book.as_ref().and_then(|b| b.budgets.get(&budget.level)),
            now_ms,
        )
    }

    /// The ledger rows `query` selects, read after everything settled
    /// before this call is committed.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<LedgerEntry>, GatewayError> {
        let (reply, rows) = oneshot::channel();
        self.read(
            Read::Usage {
                query: query.clone(),
                reply,
            },
            rows,
        )
        .await
    }

    /// The latency counts `query` selects, read after everything settled
    /// before this call is committed.
    pub async fn latency(&self, query: &LatencyQuery) -> Result<Vec<LatencyRow>, GatewayError> {
        let (reply, rows) = oneshot::channel();
        let query = query.clone();
        self.read(Read::Latency { query, reply }, rows).await
    }

    /// When each key of `tenant` (or of every tenant) was last used, by
    /// key id, from the ledger as of everything settled before this call.
    pub async fn last_used(
        &self,
        tenant: Option<&str>,
    ) -> Result<HashMap<String, u64>, GatewayError> {
        let (reply, last) = oneshot::channel();
        let tenant = tenant.map(str::to_owned);
        self.read(Read::LastUsed { tenant, reply }, last).await
    }

    async fn read<T>(
        &self,
        read: Read,
        answer: oneshot::Receiver<Result<T, String>>,
    ) -> Result<T, GatewayError> {
        let stopped = || internal("the quota writer has stopped".into());
        lock(&self.writer)
            .send(Job::Read(read))
            .map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => Err(internal(format!("reading the ledger: {e}"))),
            Err(_) => Err(stopped()),
        }
    }
}

/// The state of every key, from its counters record and its open rows, or
/// from the whole-state JSON rows of earlier versions (table `quota`), with
/// its budgets.
fn load(conn: &Connection) -> Result<Vec<(QuotaKey, Book)>> {
    let mut counters: HashMap<String, QuotaCounters> = HashMap::new();
    let mut q = conn.prepare("SELECT key, counters FROM quota_counters")?;
    for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (key, json) = row?;
        let c = serde_json::from_str(&json).with_context(|| format!("quota counters of {key}"))?;
        counters.insert(key, c);
    }
    let mut open: HashMap<String, Vec<(String, Outstanding)>> = HashMap::new();
    let mut q = conn.prepare("SELECT key, id, reservation FROM quota_reservations")?;
    for row in q.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })? {
        let (key, id, json) = row?;
        let o = serde_json::from_str(&json).with_context(|| format!("reservation {id}"))?;
        open.entry(key).or_default().push((id, o));
    }
    let mut states: Vec<(String, QuotaState)> = counters
        .into_iter()
        .map(|(key, c)| {
            let rows = open.remove(&key).unwrap_or_default();
            (key, QuotaState::restore(c, rows))
        })
        .collect();
    let legacy: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'quota'",
        [],
        |r| r.get(0),
    )?;
    if legacy {
        let mut q = conn.prepare("SELECT key, state FROM quota")?;
        for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (key, json) = row?;
            if !states.iter().any(|(k, _)| *k == key) {
                let s = QuotaState::from_stored_json(&json)
                    .with_context(|| format!("stored quota state of {key}"))?;
                let rows: Vec<QuotaChange> = s
                    .reservations()
                    .map(|(id, o)| QuotaChange::Opened {
                        id: id.clone(),
                        reservation: *o,
                    })
                    .collect();
                write_rows(conn, &key, Some(&s.counters()), &rows)?;
                states.push((key, s));
            }
        }
        conn.execute_batch("DROP TABLE quota")?;
    }
    let mut budgets: HashMap<String, HashMap<Level, QuotaState>> = HashMap::new();
    let mut q = conn.prepare("SELECT key, level, id, state FROM quota_budgets")?;
    let rows = q.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (key, level, id, json) = row?;
        let level = Level::from_stored(&level, &id)
            .with_context(|| format!("the stored budget level `{level}` of {key}"))?;
        let state = QuotaState::from_stored_json(&json)
            .with_context(|| format!("a stored budget of {key}"))?;
        budgets.entry(key).or_default().insert(level, state);
    }
    states
        .into_iter()
        .map(|(name, state)| {
            let key = QuotaKey::parse(&name)
                .with_context(|| format!("the stored quota key `{name}` is not a quota key"))?;
            let budgets = budgets.remove(&name).unwrap_or_default();
            Ok((key, Book { state, budgets }))
        })
        .collect()
}

/// Rows hold small serde records as JSON text.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Writes a key's counters record (when given) and its reservation rows.
fn write_rows(
    conn: &Connection,
    key: &str,
    counters: Option<&QuotaCounters>,
    changes: &[QuotaChange],
) -> rusqlite::Result<()> {
    if let Some(counters) = counters {
        conn.prepare_cached(
            "INSERT INTO quota_counters (key, counters) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET counters = excluded.counters",
        )?
        .execute(params![key, json(counters)])?;
    }
    for change in changes {
        match change {
            QuotaChange::Opened { id, reservation } => {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO quota_reservations (key, id, reservation)
                     VALUES (?1, ?2, ?3)",
                )?
                .execute(params![key, id, json(reservation)])?;
            }
            QuotaChange::Closed { id } => {
                conn.prepare_cached("DELETE FROM quota_reservations WHERE key = ?1 AND id = ?2")?
                    .execute(params![key, id])?;
            }
        }
    }
    Ok(())
}

/// Commits whatever writes have queued up in one transaction, answers
/// everyone who waits on it, then serves the reads that queued with them.
/// Ends when the store is dropped.
fn write_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    let mut pruning = Pruning::default();
    while let Ok(first) = rx.recv() {
        let mut batch: Vec<Write> = Vec::new();
        let mut reads: Vec<Read> = Vec::new();
        for job in std::iter::once(first).chain(rx.try_iter()) {
            match job {
                Job::Write(w) => batch.push(*w),
                Job::Read(r) => reads.push(r),
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, batch);
        }
        if let Some(before) = pruning.due(crate::clock::now_ms())
            && let Err(e) = ledger::prune_latency(&conn, before)
        {
            eprintln!("edgegate: pruning the latency counts failed: {e}");
        }
        for read in reads {
            match read {
                Read::Usage { query, reply } => {
                    reply
                        .send(ledger::read(&conn, &query).map_err(|e| e.to_string()))
                        .ok();
                }
                Read::Latency { query, reply } => {
                    let rows = ledger::read_latency(&conn, &query);
                    reply.send(rows.map_err(|e| e.to_string())).ok();
                }
                Read::LastUsed { tenant, reply } => {
                    let last = ledger::last_used(&conn, tenant.as_deref());
                    reply.send(last.map_err(|e| e.to_string())).ok();
                }
            }
        }
    }
}

/// Commits a batch in one transaction and tells whoever waits on it.
fn commit_batch(conn: &Connection, batch: Vec<Write>) {
    let result = commit(conn, &batch).map_err(|e| e.to_string());
    if let Err(e) = &result {
        eprintln!(
            "edgegate: quota commit of {} writes failed: {e}",
            batch.len()
        );
    }
    for w in batch {
        if let Some(done) = w.committed {
            done.send(result.clone()).ok();
        }
    }
}

/// How often the WAL is copied into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// WAL frames (pages) past which a checkpoint also restarts the WAL, briefly
/// holding the writer: a WAL under constant writes is never idle long
/// enough for a passive checkpoint to let it start over.
const WAL_RESTART_FRAMES: i64 = 16384;

/// Checkpoints the WAL every `CHECKPOINT_EVERY` without blocking the writer
/// (`PASSIVE`); once it grew past `WAL_RESTART_FRAMES`, restarts it. Ends,
/// after a last checkpoint, when the store is dropped.
fn checkpoint_loop(conn: &Connection, stop: &mpsc::Receiver<()>) {
    loop {
        let last = matches!(
            stop.recv_timeout(CHECKPOINT_EVERY),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        let mode = match checkpoint(conn, "PASSIVE") {
            Ok(frames) if frames > WAL_RESTART_FRAMES || last => Some("RESTART"),
            Ok(_) => None,
            Err(e) => {
                eprintln!("edgegate: quota checkpoint failed: {e}");
                None
            }
        };
        if let Some(mode) = mode
            && let Err(e) = checkpoint(conn, mode)
        {
            eprintln!("edgegate: quota checkpoint ({mode}) failed: {e}");
        }
        if last {
            return;
        }
    }
}

/// Runs a checkpoint; the WAL's size in frames.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        r.get::<_, i64>(1)
    })
}

fn commit(conn: &Connection, batch: &[Write]) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let written = (|| {
        // A key written many times in a batch needs only its last
        // counters; its store name is formatted once.
        let mut last: HashMap<&QuotaKey, (usize, String)> = HashMap::new();
        for (i, w) in batch.iter().enumerate() {
            last.entry(&*w.key)
                .or_insert_with(|| (i, w.key.to_string()))
                .0 = i;
        }
        for (i, w) in batch.iter().enumerate() {
            let (newest, name) = &last[&*w.key];
            let counters = (*newest == i).then_some(&w.counters);
            write_rows(conn, name, counters, &w.changes)?;
            for (level, state) in &w.budgets {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO quota_budgets (key, level, id, state)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![name, level.kind().name(), level.id(), state])?;
            }
        }
        // Entries of one row (one tenant, key, model and day) are summed
        // first: one upsert per row per batch, however many requests.
        let mut ledger: HashMap<&LedgerKey, LedgerCounts> = HashMap::new();
        for entry in batch.iter().filter_map(|w| w.ledger.as_ref()) {
            ledger.entry(&entry.key).or_default().add(&entry.counts);
        }
        for (key, counts) in ledger {
            ledger::add(conn, key, &counts)?;
        }
        // So are their latency counts: one upsert per bucket per batch.
        let mut latency: HashMap<LatencyKey<'_>, u64> = HashMap::new();
        for entry in batch.iter().filter_map(|w| w.ledger.as_ref()) {
            for key in entry.latency_keys() {
                *latency.entry(key).or_default() += 1;
            }
        }
        for (key, count) in latency {
            ledger::add_latency(conn, &key, count)?;
        }
        Ok(())
    })();
    let end = if written.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    conn.prepare_cached(end)?.execute([])?;
    written
}

#[cfg(test)]
mod tests;
