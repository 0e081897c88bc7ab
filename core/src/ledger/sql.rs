//! The ledger's table as both hosts keep it in SQLite (local-runner's state
//! file, each quota Durable Object's storage): one definition, so the rows
//! and the sums are the same everywhere.
//!
//! Bind order: [`UPSERT`] takes the key's five columns
//! ([`super::StoredKey`]) then the seven [`COUNT_COLUMNS`] and `last_ms`
//! ([`super::LedgerCounts::to_columns`]); [`SELECT`] takes the first and
//! last day (numbers), the tenant and the key id (each NULL for any), and
//! returns the same thirteen columns.

pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS usage_ledger (
    tenant TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    day INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    cache_hits INTEGER NOT NULL,
    degraded INTEGER NOT NULL,
    last_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, key_id, model, version, day)
) WITHOUT ROWID";

/// The count columns, in order.
pub const COUNT_COLUMNS: [&str; 7] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cost_micros",
    "errors",
    "cache_hits",
    "degraded",
];

/// Fails on a table made before `last_ms` was kept; [`ADD_LAST_MS`] then
/// adds it (its rows read as never used).
pub const PROBE_LAST_MS: &str = "SELECT last_ms FROM usage_ledger LIMIT 0";
pub const ADD_LAST_MS: &str =
    "ALTER TABLE usage_ledger ADD COLUMN last_ms INTEGER NOT NULL DEFAULT 0";

/// Adds an entry to its row (creating it).
pub const UPSERT: &str = "INSERT INTO usage_ledger (tenant, key_id, model, version, day,
    requests, input_tokens, output_tokens, cost_micros, errors, cache_hits, degraded, last_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
    ON CONFLICT (tenant, key_id, model, version, day) DO UPDATE SET
    requests = requests + excluded.requests,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    cost_micros = cost_micros + excluded.cost_micros,
    errors = errors + excluded.errors,
    cache_hits = cache_hits + excluded.cache_hits,
    degraded = degraded + excluded.degraded,
    last_ms = MAX(last_ms, excluded.last_ms)";

/// The rows of a day range, of one tenant and one key or any.
pub const SELECT: &str = "SELECT tenant, key_id, model, version, day,
    requests, input_tokens, output_tokens, cost_micros, errors, cache_hits, degraded, last_ms
    FROM usage_ledger
    WHERE day BETWEEN ?1 AND ?2 AND (?3 IS NULL OR tenant = ?3) AND (?4 IS NULL OR key_id = ?4)";

/// When each key of one tenant (or of all, ?1 NULL) was last used: its id
/// and the latest `last_ms` of its rows.
pub const LAST_USED: &str = "SELECT key_id, MAX(last_ms) AS last_ms FROM usage_ledger
    WHERE (?1 IS NULL OR tenant = ?1) AND key_id <> '' GROUP BY key_id";

/// Latency by phase (`super::latency`): a count per tenant × model × hour
/// × phase × bucket, in the same database as the ledger.
pub const CREATE_LATENCY_TABLE: &str = "CREATE TABLE IF NOT EXISTS usage_latency (
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    hour INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (tenant, model, hour, phase, bucket)
) WITHOUT ROWID";

/// Adds to a latency count (creating it): tenant, model, hour, phase,
/// bucket, count.
pub const UPSERT_LATENCY: &str =
    "INSERT INTO usage_latency (tenant, model, hour, phase, bucket, count)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT (tenant, model, hour, phase, bucket) DO UPDATE SET count = count + excluded.count";

/// The counts of an hour range (first and last hour), of one tenant and
/// one model or any (each NULL for any), summed over the rest:
/// `hour, phase, bucket, count`.
pub const SELECT_LATENCY: &str =
    "SELECT hour, phase, bucket, SUM(count) AS count FROM usage_latency
    WHERE hour BETWEEN ?1 AND ?2 AND (?3 IS NULL OR tenant = ?3) AND (?4 IS NULL OR model = ?4)
    GROUP BY hour, phase, bucket";

/// Deletes the counts of the hours before ?1 (`super::latency::Pruning`).
pub const PRUNE_LATENCY: &str = "DELETE FROM usage_latency WHERE hour < ?1";
