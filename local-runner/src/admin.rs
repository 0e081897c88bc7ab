//! The admin API on this machine (`/admin/v1/…`). The core checks the
//! caller and parses what is asked (`edgegate_core::admin`); this reads the
//! stores and answers. Usage comes from the ledger in the state file, read
//! after every settlement queued before the request is committed.

use crate::app::{App, Body, full, response};
use edgegate_core::admin::{self, AdminCall, Admitted};
use edgegate_core::gateway::LocalResponse;
use edgegate_core::ledger::Day;
use edgegate_core::request::Headers;
use edgegate_core::{Config, GatewayError};
use hyper::Response;

/// Answers one admin request.
pub async fn handle(
    app: &App,
    config: &Config,
    method: &str,
    path: &str,
    query: &str,
    headers: &Headers,
    request_id: &str,
) -> Response<Body> {
    let call = AdminCall {
        method,
        path,
        query,
        headers,
        today: Day::of_ms(crate::clock::now_ms()),
    };
    let answer = match admin::admit(config, &call, request_id) {
        Ok(Admitted::Answered(local)) => Ok(local),
        Ok(Admitted::Usage { query, format }) => app
            .quota
            .usage(&query)
            .await
            .map(|rows| admin::usage_response(query, rows, format, request_id)),
        Err(e) => Err(e),
    };
    let local = answer.unwrap_or_else(|e: GatewayError| LocalResponse::error(&e, request_id));
    response(local.status, local.headers, full(local.body))
}
