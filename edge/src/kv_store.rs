//! Workers KV, binding `EDGEGATE_KV`: everything the gateway may read a
//! little stale. Nothing exact (quotas) lives here.
//!
//! | key | value |
//! | --- | --- |
//! | `apikey:<sha256 hex of the key>` | an `ApiKeyRecord` as JSON (written by the directory object, or by hand) |
//! | `health:regions` | the cron's `HealthBoard` as JSON |
//! | `cache:<plan cache key>` | a cached upstream JSON answer |
//! | `ledger-tenant:<tenant>` | `1`: the tenant has usage ledger rows (written once by its quota object) |

use edgegate_core::GatewayError;
use edgegate_core::auth::ApiKeyRecord;
use edgegate_core::health::HealthBoard;
use worker::{Env, KvStore, console_warn};

const BINDING: &str = "EDGEGATE_KV";
const LEDGER_TENANT_PREFIX: &str = "ledger-tenant:";
const HEALTH_KEY: &str = "health:regions";
/// KV refuses shorter expirations.
const MIN_TTL_SECONDS: u64 = 60;

pub struct EdgeKv(KvStore);

impl EdgeKv {
    pub fn new(env: &Env) -> Result<Self, GatewayError> {
        env.kv(BINDING)
            .map(EdgeKv)
            .map_err(|e| GatewayError::Internal {
                message: format!("KV binding `{BINDING}` is missing: {e}"),
            })
    }

    /// The record for a key the config does not list; `hash` is hex SHA-256.
    pub async fn api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>, GatewayError> {
        let key = format!("apikey:{hash}");
        let text = self.0.get(&key).text().await.map_err(|e| {
            console_warn!("edgegate: API key lookup failed: {e}");
            GatewayError::Internal {
                message: "the API key store is unavailable".into(),
            }
        })?;
        match text.map(|t| serde_json::from_str::<ApiKeyRecord>(&t)) {
            None => Ok(None),
            Some(Ok(record)) => Ok(Some(record)),
            Some(Err(e)) => {
                // The key name is a hash, safe to log; the record is the operator's mistake.
                console_warn!("edgegate: {key} is not a valid API key record: {e}");
                Err(GatewayError::unauthenticated(
                    "API key record is not usable",
                ))
            }
        }
    }

    /// Writes what a key lookup finds for `hash` (hex SHA-256).
    pub async fn put_api_key(&self, hash: &str, record: &ApiKeyRecord) -> Result<(), String> {
        let json = serde_json::to_string(record).map_err(|e| e.to_string())?;
        self.0
            .put(&format!("apikey:{hash}"), json)
            .map_err(|e| e.to_string())?
            .execute()
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn health_board(&self) -> Option<HealthBoard> {
        match self.0.get(HEALTH_KEY).json::<HealthBoard>().await {
            Ok(board) => board,
            Err(e) => {
                console_warn!("edgegate: cannot read {HEALTH_KEY}: {e}");
                None
            }
        }
    }

    pub async fn put_health_board(&self, board: &HealthBoard) -> Result<(), String> {
        let json = serde_json::to_string(board).map_err(|e| e.to_string())?;
        self.0
            .put(HEALTH_KEY, json)
            .map_err(|e| e.to_string())?
            .execute()
            .await
            .map_err(|e| e.to_string())
    }

    /// A cached answer; a failed read is a miss.
    pub async fn cached_answer(&self, key: &str) -> Option<Vec<u8>> {
        match self.0.get(&format!("cache:{key}")).bytes().await {
            Ok(hit) => hit,
            Err(e) => {
                console_warn!("edgegate: cache read failed: {e}");
                None
            }
        }
    }

    /// Stores an answer; a failed write only costs a future miss.
    pub async fn store_answer(&self, key: &str, body: &[u8], ttl_seconds: u64) {
        let put = self
            .0
            .put_bytes(&format!("cache:{key}"), body)
            .map(|p| p.expiration_ttl(ttl_seconds.max(MIN_TTL_SECONDS)));
        let result = match put {
            Ok(put) => put.execute().await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            console_warn!("edgegate: cache write failed: {e}");
        }
    }

    /// Notes that `tenant` has ledger rows (its quota object calls this once).
    pub async fn register_ledger_tenant(&self, tenant: &str) -> Result<(), String> {
        self.0
            .put(&format!("{LEDGER_TENANT_PREFIX}{tenant}"), "1")
            .map_err(|e| e.to_string())?
            .execute()
            .await
            .map_err(|e| e.to_string())
    }

    /// Every tenant registered as having ledger rows.
    pub async fn ledger_tenants(&self) -> Result<Vec<String>, GatewayError> {
        let mut tenants = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut list = self.0.list().prefix(LEDGER_TENANT_PREFIX.to_owned());
            if let Some(c) = cursor.take() {
                list = list.cursor(c);
            }
            let page = list.execute().await.map_err(|e| {
                console_warn!("edgegate: listing ledger tenants failed: {e}");
                GatewayError::Internal {
                    message: "the key-value store is unavailable".into(),
                }
            })?;
            tenants.extend(
                page.keys
                    .iter()
                    .filter_map(|k| k.name.strip_prefix(LEDGER_TENANT_PREFIX))
                    .map(str::to_owned),
            );
            match page.cursor {
                Some(c) if !page.list_complete => cursor = Some(c),
                _ => return Ok(tenants),
            }
        }
    }
}
