//! The admin API's front door (`/admin/v1/…`): off unless the config names
//! an admin key secret (`admin.api_key_secret`); the caller presents that
//! key as `Authorization: Bearer …`, compared by its SHA-256 in constant
//! time; then what the request asks, parsed, every bad parameter or field
//! a 400 naming it, a body over [`MAX_BODY_BYTES`] a 413. The host reads
//! what is asked from its stores and answers with [`usage_response`], or
//! applies a tenant or key operation ([`crate::directory::ops`]) to its
//! records and answers with [`json_response`].
//!
//! Order of refusals: not configured → 404 (as if the API did not exist);
//! a missing or wrong key → 401 (before anything about the path is said);
//! an unknown path → 404; a known path with another method → 405.

use crate::auth::{key_hash, presented_credential};
use crate::config::Config;
use crate::directory::ops::{self, DirectoryOp};
use crate::error::GatewayError;
use crate::gateway::LocalResponse;
use crate::ledger::{
    Day, LatencyQuery, LatencyReport, LatencyRow, LedgerEntry, UsageFormat, UsageQuery, UsageReport,
};
use crate::quota::QuotaKey;
use crate::quota::headroom::BudgetPlan;
use crate::quota::remaining::{Peeked, QuotaPeek};
use crate::request::Headers;
use subtle::ConstantTimeEq;

mod regions;
pub use regions::regions_view;

/// Where the admin API lives.
pub const PREFIX: &str = "/admin/";

/// The largest admin request body; a host reads at most one byte more.
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// Who may call the admin API: the key's SHA-256 (the key itself is not
/// kept once the config is read).
#[derive(Clone)]
pub struct AdminAccess {
    key_hash: [u8; 32],
}

impl AdminAccess {
    pub fn new(key: &str) -> AdminAccess {
        AdminAccess {
            key_hash: key_hash(key),
        }
    }

    fn admits(&self, presented: &str) -> bool {
        key_hash(presented).ct_eq(&self.key_hash).into()
    }
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminAccess(…)")
    }
}

/// What an admin request asks.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminRequest {
    /// `GET /admin/v1/usage`, or a key holder's `GET /v1/usage`: a usage
    /// report from the ledger; for a key holder, with what is left of its
    /// budgets, read from each of `peeks`' stores.
    Usage {
        query: UsageQuery,
        format: UsageFormat,
        peeks: Vec<QuotaPeek>,
    },
    /// `GET /admin/v1/latency`: latency percentiles per phase, and per
    /// hour, from the latency counts beside the ledger.
    Latency { query: LatencyQuery },
    /// `GET /admin/v1/budgets?tenant=`: the host applies `plan` (a
    /// [`DirectoryOp::BudgetPlan`]) to its directory, asks each store of
    /// the plan its peek, and answers with [`budgets_response`].
    Budgets { plan: DirectoryOp },
    /// `GET /admin/v1/regions`: the regions and replicas with their
    /// health and load as this host sees them ([`regions_view`]).
    Regions,
    /// A tenant or key operation.
    Directory(DirectoryOp),
}

/// Whether `path` is the admin API's (the host sends it to [`admit`]).
pub fn is_admin_path(path: &str) -> bool {
    path.starts_with(PREFIX) || path == "/admin"
}

/// An admin answer of JSON, never cached: a tenant or key operation the
/// host applied ([`ops::apply`]: its status and body) and whose changes it
/// persisted, or a view such as [`regions_view`].
pub fn json_response(status: u16, body: &serde_json::Value, request_id: &str) -> LocalResponse {
    let mut response = LocalResponse::json(status, body.to_string(), request_id);
    response
        .headers
        .push(("cache-control".into(), "no-store".into()));
    response
}

/// An admin request as the host received it.
#[derive(Debug, Clone, Copy)]
pub struct AdminCall<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The URL's query string, without `?`.
    pub query: &'a str,
    pub headers: &'a Headers,
    /// At most [`MAX_BODY_BYTES`] and one more.
    pub body: &'a [u8],
    /// The host's UTC day.
    pub today: Day,
}

/// Checks the caller and parses what it asks.
pub fn parse(config: &Config, call: &AdminCall<'_>) -> Result<AdminRequest, GatewayError> {
    let AdminCall {
        method,
        path,
        query,
        headers,
        body,
        today,
    } = *call;
    let Some(access) = &config.admin else {
        return Err(GatewayError::UnknownEndpoint {
            path: path.chars().take(200).collect(),
        });
    };
    let presented = presented_credential(headers)
        .ok_or_else(|| GatewayError::unauthenticated("no admin key provided"))?;
    if !access.admits(presented) {
        return Err(GatewayError::unauthenticated("invalid admin key"));
    }
    let only_get = || {
        if method == "GET" {
            Ok(())
        } else {
            Err(GatewayError::MethodNotAllowed {
                method: method.chars().take(16).collect(),
                path: path.chars().take(200).collect(),
            })
        }
    };
    let route = path.trim_end_matches('/');
    if route == "/admin/v1/usage" {
        only_get()?;
        return Ok(AdminRequest::Usage {
            query: UsageQuery::parse(query, today)?,
            format: UsageFormat::from_accept(headers.get("accept")),
            peeks: Vec::new(),
        });
    }
    if route == "/admin/v1/budgets" {
        only_get()?;
        let tenant = crate::ledger::query::Params::parse(query, &["tenant"])?
            .text("tenant")?
            .ok_or_else(|| GatewayError::invalid("`tenant` is required.", Some("tenant")))?;
        return Ok(AdminRequest::Budgets {
            plan: DirectoryOp::BudgetPlan { tenant },
        });
    }
    if route == "/admin/v1/regions" {
        only_get()?;
        return Ok(AdminRequest::Regions);
    }
    if route == "/admin/v1/latency" {
        only_get()?;
        return Ok(AdminRequest::Latency {
            query: LatencyQuery::parse(query, today)?,
        });
    }
    if let Some(op) = ops::parse(method, route, query, body) {
        if body.len() > MAX_BODY_BYTES {
            return Err(GatewayError::PayloadTooLarge {
                limit_bytes: MAX_BODY_BYTES,
            });
        }
        return op.map(AdminRequest::Directory);
    }
    Err(GatewayError::UnknownEndpoint {
        path: path.chars().take(200).collect(),
    })
}

/// Where a key holder reads its own usage.
pub const OWN_USAGE_PATH: &str = "/v1/usage";

/// `GET /v1/usage` with an API key: the report of that key's own ledger
/// rows (its tenant and its id are fixed by the credential; `tenant=` and
/// `key=` are refused), `from`, `to` and `group_by` as in
/// `/admin/v1/usage`, and what is left of its tenant's, its key's and its
/// user's budgets. A token has no key to report on (403).
pub fn own_usage(
    config: &Config,
    call: &AdminCall<'_>,
    now_ms: u64,
    provisioned: Option<&crate::auth::ApiKeyRecord>,
) -> Result<AdminRequest, GatewayError> {
    if call.method != "GET" {
        return Err(GatewayError::MethodNotAllowed {
            method: call.method.chars().take(16).collect(),
            path: OWN_USAGE_PATH.into(),
        });
    }
    let principal = crate::auth::authenticate(config, call.headers, now_ms, provisioned)?;
    let key = principal
        .key_id
        .clone()
        .ok_or_else(|| GatewayError::PermissionDenied {
            reason: "usage is reported per API key; call it with one".into(),
        })?;
    let mut query = UsageQuery::parse(call.query, call.today)?;
    for (given, name) in [(&query.tenant, "tenant"), (&query.key, "key")] {
        if given.is_some() {
            return Err(GatewayError::invalid(
                format!("`{name}` is your API key's own; leave it out."),
                Some(name),
            ));
        }
    }
    query.key = Some(key);
    let peeks = crate::quota::remaining::peeks(config, &principal);
    query.tenant = Some(principal.tenant_id);
    Ok(AdminRequest::Usage {
        query,
        format: UsageFormat::from_accept(call.headers.get("accept")),
        peeks,
    })
}

/// The answer to a usage request: the report summed from the ledger rows
/// the host read for `query`, as JSON or CSV; a key holder's JSON with
/// `budgets` from its stores' answers to the request's peeks (CSV holds
/// the rows only).
pub fn usage_response(
    query: UsageQuery,
    rows: Vec<LedgerEntry>,
    budgets: Option<(&[QuotaPeek], Vec<Peeked>)>,
    format: UsageFormat,
    request_id: &str,
) -> Result<LocalResponse, GatewayError> {
    let report = UsageReport::build(query, rows);
    let body = match (budgets, format) {
        (Some((peeks, answers)), UsageFormat::Json) => {
            let mut json = report.to_json_value();
            json["budgets"] = crate::quota::remaining::report(peeks, answers)?;
            json.to_string()
        }
        _ => report.render(format),
    };
    Ok(LocalResponse {
        status: 200,
        headers: vec![
            ("content-type".into(), format.content_type().into()),
            ("x-request-id".into(), request_id.to_owned()),
            ("cache-control".into(), "no-store".into()),
        ],
        body,
    })
}

/// The answer to a latency report: the counts the host read for it
/// (summed per hour, phase and bucket, in any order and repeated across
/// stores) as [`LatencyReport`]'s JSON.
pub fn latency_response(
    query: LatencyQuery,
    rows: Vec<LatencyRow>,
    request_id: &str,
) -> LocalResponse {
    let body = LatencyReport::build(query, rows)
        .to_json_value()
        .to_string();
    let mut response = LocalResponse::json(200, body, request_id);
    response
        .headers
        .push(("cache-control".into(), "no-store".into()));
    response
}

/// The answer to a budgets report: the tenant's level, then each key's and
/// each user's, from the stores' answers to the plan's peeks.
pub fn budgets_response(
    plan: &BudgetPlan,
    answers: Vec<Peeked>,
    request_id: &str,
) -> Result<LocalResponse, GatewayError> {
    let levels = crate::quota::remaining::report_naming_keys(&plan.peeks, answers)?;
    let body = serde_json::json!({
        "object": "budget_report",
        "tenant": plan.tenant,
        "levels": levels,
    });
    Ok(json_response(200, &body, request_id))
}

/// The plan a directory answered a [`DirectoryOp::BudgetPlan`] with.
pub fn budget_plan(body: serde_json::Value) -> Result<BudgetPlan, GatewayError> {
    serde_json::from_value(body).map_err(|e| GatewayError::Internal {
        message: format!("the directory's budget plan: {e}"),
    })
}

/// The quota stores a usage or latency report reads on a host that keeps
/// the ledger with each quota key (the Worker's quota objects): each shard
/// of the report's `tenant`, or of every tenant the config lists or
/// `registered` names (tenants known to have rows).
pub fn usage_stores(config: &Config, tenant: Option<&str>, registered: &[String]) -> Vec<QuotaKey> {
    let mut tenants: Vec<&str> = match tenant {
        Some(t) => vec![t],
        None => config
            .tenants
            .iter()
            .map(|t| t.id.as_str())
            .chain(registered.iter().map(String::as_str))
            .collect(),
    };
    tenants.sort_unstable();
    tenants.dedup();
    tenants
        .into_iter()
        .flat_map(|t| QuotaKey::all(t, config.quota_shards(t)))
        .collect()
}

#[cfg(test)]
mod tests;
