//! The admin API on this machine (`/admin/v1/…`). The core checks the
//! caller and parses what is asked (`edgegate_core::admin`); this reads the
//! stores and answers. Usage comes from the ledger in the state file, read
//! after every settlement queued before the request is committed; tenants
//! and keys from the directory ([`crate::directory`]), whose changes are
//! committed before the answer. A key holder's own usage (`/v1/usage`)
//! is read from the same ledger, what is left of its budgets from the
//! quota states in memory.

use crate::app::{App, Body, response};
use edgegate_core::GatewayError;
use edgegate_core::admin::{self, AdminCall, AdminRequest};
use edgegate_core::directory::ops::{Applied, DirectoryOp};
use edgegate_core::directory::views;
use edgegate_core::gateway::LocalResponse;
use edgegate_core::quota::remaining::{Peeked, QuotaPeek};
use hyper::Response;

/// Answers one admin request, or a key holder's own usage, at `now_ms`
/// (the clock `call.today` was read from).
pub async fn handle(
    app: &App,
    call: &AdminCall<'_>,
    now_ms: u64,
    request_id: &str,
) -> Response<Body> {
    let asked = if call.path == admin::OWN_USAGE_PATH {
        let provisioned = app.directory.provisioned(&app.config, call.headers);
        admin::own_usage(&app.config, call, now_ms, provisioned.as_ref())
    } else {
        admin::parse(&app.config, call)
    };
    let answer = match asked {
        Ok(AdminRequest::Usage {
            query,
            format,
            peeks,
        }) => match app.quota.usage(&query).await {
            Ok(rows) => {
                let answers = peeks.iter().map(|p| peek(app, p, now_ms)).collect();
                let budgets = (!peeks.is_empty()).then_some((peeks.as_slice(), answers));
                admin::usage_response(query, rows, budgets, format, request_id)
            }
            Err(e) => Err(e),
        },
        Ok(AdminRequest::Latency { query }) => app
            .quota
            .latency(&query)
            .await
            .map(|rows| admin::latency_response(query, rows, request_id)),
        Ok(AdminRequest::Regions) => {
            let view = admin::regions_view(&app.config, &app.health.statuses(), &app.loads.loads());
            Ok(admin::json_response(200, &view, request_id))
        }
        Ok(AdminRequest::Budgets { plan }) => match apply(app, plan, now_ms).await {
            Ok(applied) => admin::budget_plan(applied.body).and_then(|plan| {
                let answers = plan.peeks.iter().map(|p| peek(app, p, now_ms)).collect();
                admin::budgets_response(&plan, answers, request_id)
            }),
            Err(e) => Err(e),
        },
        Ok(AdminRequest::Directory(op)) => {
            let applied = apply(app, op, now_ms).await;
            match applied {
                Ok(mut applied) => show_last_used(app, &mut applied.body)
                    .await
                    .map(|()| admin::json_response(applied.status, &applied.body, request_id)),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let local = answer.unwrap_or_else(|e: GatewayError| LocalResponse::error(&e, request_id));
    response(local.status, local.headers, crate::app::full(local.body))
}

/// Applies a tenant or key operation to the directory (its changes
/// committed before it returns).
async fn apply(app: &App, op: DirectoryOp, now_ms: u64) -> Result<Applied, GatewayError> {
    let (directory, config) = (app.directory.clone(), app.config.clone());
    tokio::task::spawn_blocking(move || directory.apply(&config, &op, now_ms))
        .await
        .unwrap_or_else(|e| {
            Err(GatewayError::Internal {
                message: format!("directory operation: {e}"),
            })
        })
}

/// Fills in when each key an answer shows was last used, from the ledger.
async fn show_last_used(app: &App, body: &mut serde_json::Value) -> Result<(), GatewayError> {
    let tenants = views::key_tenants(body);
    let one = match tenants.len() {
        0 => return Ok(()),
        1 => tenants.first().map(String::as_str),
        _ => None,
    };
    let last_used = app.quota.last_used(one).await?;
    views::show_last_used(body, &last_used);
    Ok(())
}

/// What is left of a key holder's budgets in one quota store, unless its
/// tenant's standing refuses the key.
fn peek(app: &App, peek: &QuotaPeek, now_ms: u64) -> Peeked {
    let refusal = app
        .directory
        .refusal(&peek.key.name, peek.presented.as_ref(), now_ms);
    match refusal {
        Some(refusal) => Peeked::Refused { refusal },
        None => app.quota.peek(peek, now_ms),
    }
}
