//! edgegate as a Cloudflare Worker. `edgegate-core` makes every decision;
//! this crate is its I/O at the edge: Workers KV (API keys, region health,
//! the response cache), a Durable Object per quota key, outbound `fetch` to
//! the regional backends, and Analytics Engine for usage.
//!
//! Start at [`pipeline`]: it reads as the request's path. The `worker` crate
//! installs the panic hook (it logs the panic and re-instantiates the module),
//! so no handler here sets another.

mod admin;
mod clock;
mod coalescing;
mod config;
mod directory_object;
mod gate_object;
mod health_cron;
mod incoming;
mod kv_store;
mod object_call;
mod otlp_proto;
mod pipeline;
mod quota_budgets;
mod quota_ledger;
mod quota_object;
mod quota_standing;
mod region_health;
mod respond;
mod traces;
mod upstream;
mod usage;

pub use directory_object::DirectoryObject;
pub use gate_object::GateObject;
pub use quota_object::QuotaObject;

use worker::{Context, Env, Request, Response, ScheduleContext, ScheduledEvent, event};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let path = req.path();
    if edgegate_core::admin::is_admin_path(&path) || path == edgegate_core::admin::OWN_USAGE_PATH {
        let request_id = match incoming::request_id() {
            Ok(id) => id,
            Err(e) => return Ok(respond::error(&e, "")),
        };
        return Ok(admin::handle(req, &env, &request_id).await);
    }
    if edgegate_core::dashboard::is_dashboard_path(&path) {
        return Ok(dashboard(&req, &env));
    }
    Ok(pipeline::handle(req, env, ctx).await)
}

/// The dashboard's page or one of its assets, as the core serves them.
fn dashboard(req: &Request, env: &Env) -> Response {
    let answer = incoming::request_id().and_then(|request_id| {
        let gateway = config::gateway(env)?;
        let headers = incoming::headers(req);
        let method = req.inner().method();
        Ok(edgegate_core::dashboard::serve(
            gateway.config(),
            &method,
            &req.path(),
            &headers,
            &request_id,
        ))
    });
    match answer {
        Ok(local) => respond::fixed(
            local.status,
            respond::headers(&local.headers),
            local.body.into_bytes(),
        ),
        Err(e) => respond::error(&e, ""),
    }
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    health_cron::probe_regions(&env).await;
}
