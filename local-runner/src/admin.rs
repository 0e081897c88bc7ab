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
use edgegate_core::ledger::Day;
use edgegate_core::request::Headers;
use hyper::Response;

/// An admin request as read off the connection.
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a Headers,
    pub body: &'a [u8],
}

/// Answers one admin request.
pub async fn handle(app: &App, call: &Call<'_>, request_id: &str) -> Response<Body> {
    let now_ms = crate::clock::now_ms();
    let admin_call = AdminCall {
        method: call.method,
        path: call.path,
        query: call.query,
        headers: call.headers,
        body: call.body,
        today: Day::of_ms(now_ms),
    };
    if call.path == admin::OWN_USAGE_PATH {
        let provisioned = app.directory.provisioned(&app.config, call.headers);
        let answer = match admin::own_usage(&app.config, &admin_call, now_ms, provisioned.as_ref())
        {
            Ok((query, format)) => app
                .quota
                .usage(&query)
                .await
                .map(|rows| admin::usage_response(query, rows, format, request_id)),
            Err(e) => Err(e),
        };
        let local = answer.unwrap_or_else(|e| LocalResponse::error(&e, request_id));
        return response(local.status, local.headers, crate::app::full(local.body));
    }
    let answer = match admin::parse(&app.config, &admin_call) {
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
