//! The admin API at the edge (`/admin/v1/…`). The core checks the caller
//! and parses what is asked (`edgegate_core::admin`); this reads the stores
//! and answers. Usage comes from the ledger rows in the tenants' quota
//! objects (a key holder's remaining budgets from the same objects' states): one tenant's (each of its shards), or every tenant the config
//! lists or KV notes as having rows. Tenants and keys: the directory
//! object applies each operation ([`crate::directory_object`]); when each
//! key an answer shows was last used comes from its tenant's ledger.

use crate::clock::now_ms;
use crate::directory_object::Directory;
use crate::kv_store::EdgeKv;
use crate::quota_object::QuotaStore;
use crate::{config, incoming, respond};
use edgegate_core::admin::{self, AdminCall, AdminRequest};
use edgegate_core::directory::views;
use edgegate_core::gateway::LocalResponse;
use edgegate_core::ledger::{Day, LedgerEntry, UsageQuery};
use edgegate_core::quota::QuotaKey;
use edgegate_core::{Gateway, GatewayError};
use std::collections::HashMap;
use worker::{Env, Request, Response};

/// Answers one admin request.
pub async fn handle(mut req: Request, env: &Env, request_id: &str) -> Response {
    let answer = answer(&mut req, env, request_id).await;
    let local = answer.unwrap_or_else(|e| LocalResponse::error(&e, request_id));
    respond::fixed(
        local.status,
        respond::headers(&local.headers),
        local.body.into_bytes(),
    )
}

async fn answer(
    req: &mut Request,
    env: &Env,
    request_id: &str,
) -> Result<LocalResponse, GatewayError> {
    let gateway = config::gateway(env)?;
    let url = req
        .url()
        .map_err(|_| GatewayError::invalid("The URL is not valid.", None))?;
    let headers = incoming::headers(req);
    let method = req.inner().method();
    let body = req
        .bytes()
        .await
        .map_err(|_| GatewayError::invalid("The request body could not be read.", None))?;
    let call = AdminCall {
        method: &method,
        path: url.path(),
        query: url.query().unwrap_or(""),
        headers: &headers,
        body: &body,
        today: Day::of_ms(now_ms()),
    };
    let asked = if url.path() == admin::OWN_USAGE_PATH {
        let kv = EdgeKv::new(env)?;
        let provisioned = crate::pipeline::provisioned_key(&gateway, &kv, &headers).await?;
        admin::own_usage(gateway.config(), &call, now_ms(), provisioned.as_ref())?
    } else {
        admin::parse(gateway.config(), &call)?
    };
    match asked {
        AdminRequest::Usage {
            query,
            format,
            peeks,
        } => {
            let rows = usage_rows(&gateway, env, &query).await?;
            let budgets = if peeks.is_empty() {
                None
            } else {
                let quotas = QuotaStore::new(env)?;
                let mut answers = Vec::with_capacity(peeks.len());
                for peek in &peeks {
                    answers.push(quotas.peek(peek).await?);
                }
                Some((peeks.as_slice(), answers))
            };
            admin::usage_response(query, rows, budgets, format, request_id)
        }
        AdminRequest::Latency { query } => {
            let quotas = QuotaStore::new(env)?;
            let mut rows = Vec::new();
            for key in report_stores(&gateway, env, query.tenant.as_deref()).await? {
                rows.extend(quotas.latency(&key, &query).await?);
            }
            Ok(admin::latency_response(query, rows, request_id))
        }
        AdminRequest::Budgets { plan } => {
            let (_, body) = Directory::new(env)?.apply(&plan).await?;
            let plan = admin::budget_plan(body)?;
            let quotas = QuotaStore::new(env)?;
            let mut answers = Vec::with_capacity(plan.peeks.len());
            for peek in &plan.peeks {
                answers.push(quotas.peek(peek).await?);
            }
            admin::budgets_response(&plan, answers, request_id)
        }
        AdminRequest::Regions => {
            let kv = EdgeKv::new(env)?;
            let statuses = crate::region_health::statuses(&kv, now_ms()).await;
            let loads = crate::region_health::loads(gateway.config(), now_ms());
            let view = admin::regions_view(gateway.config(), &statuses, &loads);
            Ok(admin::json_response(200, &view, request_id))
        }
        AdminRequest::Directory(op) => {
            let (status, mut body) = Directory::new(env)?.apply(&op).await?;
            show_last_used(&gateway, env, &mut body).await?;
            Ok(admin::json_response(status, &body, request_id))
        }
    }
}

/// The quota objects a report of `tenant` (or of every tenant: the
/// config's and those KV notes as having rows) reads.
async fn report_stores(
    gateway: &Gateway,
    env: &Env,
    tenant: Option<&str>,
) -> Result<Vec<QuotaKey>, GatewayError> {
    let registered = match tenant {
        Some(_) => Vec::new(),
        None => EdgeKv::new(env)?.ledger_tenants().await?,
    };
    Ok(admin::usage_stores(gateway.config(), tenant, &registered))
}

/// The ledger rows of every quota object the query reaches.
async fn usage_rows(
    gateway: &Gateway,
    env: &Env,
    query: &UsageQuery,
) -> Result<Vec<LedgerEntry>, GatewayError> {
    let quotas = QuotaStore::new(env)?;
    let mut rows = Vec::new();
    for key in report_stores(gateway, env, query.tenant.as_deref()).await? {
        rows.extend(quotas.usage(&key, query).await?);
    }
    Ok(rows)
}

/// Fills in when each key an answer shows was last used, from its
/// tenant's ledger (each of the tenant's quota objects).
async fn show_last_used(
    gateway: &Gateway,
    env: &Env,
    body: &mut serde_json::Value,
) -> Result<(), GatewayError> {
    let tenants = views::key_tenants(body);
    if tenants.is_empty() {
        return Ok(());
    }
    let quotas = QuotaStore::new(env)?;
    let mut last_used: HashMap<String, u64> = HashMap::new();
    for tenant in &tenants {
        for key in QuotaKey::all(tenant, gateway.config().quota_shards(tenant)) {
            for (id, ms) in quotas.last_used(&key).await? {
                let at = last_used.entry(id).or_default();
                *at = (*at).max(ms);
            }
        }
    }
    views::show_last_used(body, &last_used);
    Ok(())
}
