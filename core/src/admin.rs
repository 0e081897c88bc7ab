//! The admin API's front door (`/admin/v1/…`): off unless the config names
//! an admin key secret (`admin.api_key_secret`); the caller presents that
//! key as `Authorization: Bearer …`, compared by its SHA-256 in constant
//! time; then what the request asks, parsed, every bad parameter a 400
//! naming it. The host reads what is asked from its stores and answers
//! with [`usage_response`].
//!
//! Order of refusals: not configured → 404 (as if the API did not exist);
//! a missing or wrong key → 401 (before anything about the path is said);
//! an unknown path → 404; a known path with another method → 405.

use crate::auth::{key_hash, presented_credential};
use crate::config::Config;
use crate::error::GatewayError;
use crate::gateway::LocalResponse;
use crate::ledger::{Day, LedgerEntry, UsageFormat, UsageQuery, UsageReport};
use crate::quota::QuotaKey;
use crate::request::Headers;
use subtle::ConstantTimeEq;

mod tenants;

/// Where the admin API lives.
pub const PREFIX: &str = "/admin/";

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequest {
    /// `GET /admin/v1/usage`: a usage report from the ledger.
    Usage {
        query: UsageQuery,
        format: UsageFormat,
    },
    /// `GET /admin/v1/tenants`.
    ListTenants,
    /// `GET /admin/v1/tenants/{id}`.
    GetTenant { id: String },
}

/// Whether `path` is the admin API's (the host sends it to [`admit`]).
pub fn is_admin_path(path: &str) -> bool {
    path.starts_with(PREFIX) || path == "/admin"
}

/// What the host does with an admitted admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// The config alone answered it: respond with this.
    Answered(LocalResponse),
    /// Read the usage ledger's rows for `query` and respond with
    /// [`usage_response`].
    Usage {
        query: UsageQuery,
        format: UsageFormat,
    },
}

/// Checks the caller, parses what it asks and answers what the config
/// alone can. `today` is the host's UTC day.
pub fn admit(
    config: &Config,
    call: &AdminCall<'_>,
    request_id: &str,
) -> Result<Admitted, GatewayError> {
    let body = match parse(config, call)? {
        AdminRequest::Usage { query, format } => return Ok(Admitted::Usage { query, format }),
        AdminRequest::ListTenants => tenants::list(config),
        AdminRequest::GetTenant { id } => tenants::get(config, &id)?,
    };
    let mut response = LocalResponse::json(200, body.to_string(), request_id);
    response
        .headers
        .push(("cache-control".into(), "no-store".into()));
    Ok(Admitted::Answered(response))
}

/// An admin request as the host received it.
#[derive(Debug, Clone, Copy)]
pub struct AdminCall<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The URL's query string, without `?`.
    pub query: &'a str,
    pub headers: &'a Headers,
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
        });
    }
    if route == "/admin/v1/tenants" {
        only_get()?;
        return Ok(AdminRequest::ListTenants);
    }
    if let Some(id) = route.strip_prefix("/admin/v1/tenants/")
        && !id.contains('/')
    {
        only_get()?;
        return Ok(AdminRequest::GetTenant { id: id.to_owned() });
    }
    Err(GatewayError::UnknownEndpoint {
        path: path.chars().take(200).collect(),
    })
}

/// The answer to a usage request: the report summed from the ledger rows
/// the host read for `query`, as JSON or CSV.
pub fn usage_response(
    query: UsageQuery,
    rows: Vec<LedgerEntry>,
    format: UsageFormat,
    request_id: &str,
) -> LocalResponse {
    let report = UsageReport::build(query, rows);
    LocalResponse {
        status: 200,
        headers: vec![
            ("content-type".into(), format.content_type().into()),
            ("x-request-id".into(), request_id.to_owned()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: report.render(format),
    }
}

/// The quota stores a usage query reads on a host that keeps the ledger
/// with each quota key (the Worker's quota objects): each shard of the
/// query's tenant, or of every tenant the config lists or `registered`
/// names (tenants known to have rows).
pub fn usage_stores(config: &Config, query: &UsageQuery, registered: &[String]) -> Vec<QuotaKey> {
    let mut tenants: Vec<&str> = match &query.tenant {
        Some(t) => vec![t.as_str()],
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
        .flat_map(|t| {
            let shards = config
                .tenant(t)
                .map_or(1, |i| config.tenants[i].quota_shards);
            QuotaKey::all(t, shards)
        })
        .collect()
}

#[cfg(test)]
mod tests;
