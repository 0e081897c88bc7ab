//! The admin API on this machine (`/admin/v1/…`). The core checks the
//! caller and parses what is asked (`edgegate_core::admin`); this reads the
//! stores and answers. Usage comes from the ledger in the state file, read
//! after every settlement queued before the request is committed; tenants
//! and keys from the directory ([`crate::directory`]), whose changes are
//! committed before the answer. A key holder's own usage (`/v1/usage`)
//! is read from the same ledger.

use crate::app::{App, Body, response};
use edgegate_core::GatewayError;
use edgegate_core::admin::{self, AdminCall, AdminRequest};
use edgegate_core::gateway::LocalResponse;
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
            .map(|(query, format)| AdminRequest::Usage { query, format })
    } else {
        admin::parse(&app.config, call)
    };
    let answer = match asked {
        Ok(AdminRequest::Usage { query, format }) => app
            .quota
            .usage(&query)
            .await
            .map(|rows| admin::usage_response(query, rows, format, request_id)),
        Ok(AdminRequest::Directory(op)) => {
            let (directory, config) = (app.directory.clone(), app.config.clone());
            tokio::task::spawn_blocking(move || directory.apply(&config, &op, now_ms))
                .await
                .unwrap_or_else(|e| {
                    Err(GatewayError::Internal {
                        message: format!("directory operation: {e}"),
                    })
                })
                .map(|applied| admin::directory_response(applied.status, &applied.body, request_id))
        }
        Err(e) => Err(e),
    };
    let local = answer.unwrap_or_else(|e: GatewayError| LocalResponse::error(&e, request_id));
    response(local.status, local.headers, crate::app::full(local.body))
}
