//! The cron trigger: probe every replica's health endpoint (and its metrics,
//! where the region names them) and write the results to KV, where every
//! isolate's fetch path picks them up.

use crate::clock::{now_ms, sleep_ms};
use crate::config;
use crate::kv_store::EdgeKv;
use edgegate_core::config::{Region, Replica};
use edgegate_core::health::{Observation, PROBE_TIMEOUT_MS};
use edgegate_core::load::BackendLoad;
use futures_util::future::{Either, join_all, select};
use std::pin::pin;
use worker::{AbortController, Env, Fetch, Response, Url, console_error, console_log};

pub async fn probe_regions(env: &Env) {
    let (gateway, kv) = match (config::gateway(env), EdgeKv::new(env)) {
        (Ok(g), Ok(kv)) => (g, kv),
        (Err(e), _) | (_, Err(e)) => {
            console_error!("edgegate: health cron cannot run: {e}");
            return;
        }
    };
    // Keep the breakers' history (consecutive failures) across runs.
    let mut board = kv.health_board().await.unwrap_or_default();
    let replicas: Vec<(&Region, &Replica)> = gateway
        .config()
        .regions
        .iter()
        .flat_map(|r| r.replicas.iter().map(move |x| (r, x)))
        .collect();
    let results = join_all(replicas.iter().map(|(r, x)| probe(r, x))).await;
    for ((_, replica), (at_ms, observation, load)) in replicas.iter().zip(results) {
        board.observe(&replica.target, at_ms, observation);
        if let Some(load) = load {
            board.observe_backend(&replica.target, at_ms, load);
        }
    }
    match kv.put_health_board(&board).await {
        Ok(()) => console_log!(
            "{}",
            serde_json::json!({"event": "health_probe", "regions": board.statuses(now_ms())})
        ),
        Err(e) => console_error!("edgegate: cannot write region health: {e}"),
    }
}

/// GETs `url` within the probe timeout: the response, if one came in time.
async fn get(url: &str) -> Option<Response> {
    let url = Url::parse(url).ok()?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Url(url);
    let send = pin!(fetch.send_with_signal(&signal));
    match select(send, sleep_ms(PROBE_TIMEOUT_MS)).await {
        Either::Left((Ok(response), _)) => Some(response),
        Either::Left((Err(_), _)) => None,
        Either::Right(_) => {
            controller.abort();
            None
        }
    }
}

/// GETs `base_url + health_path` (the core judges the answer), then the
/// metrics where the region names them: `Some(load)` when they were asked
/// for (`load` is `None` when they could not be read).
async fn probe(
    region: &Region,
    replica: &Replica,
) -> (u64, Observation, Option<Option<BackendLoad>>) {
    let started = now_ms();
    let status = get(&format!("{}{}", replica.base_url, region.health_path))
        .await
        .map(|r| r.status_code());
    let finished = now_ms();
    let observation = Observation::of_probe(status, finished.saturating_sub(started));
    let load = match &region.metrics_path {
        Some(path) => Some(match get(&format!("{}{path}", replica.base_url)).await {
            Some(mut r) if (200..300).contains(&r.status_code()) => r
                .text()
                .await
                .ok()
                .and_then(|text| BackendLoad::from_prometheus(&text)),
            _ => None,
        }),
        None => None,
    };
    (finished, observation, load)
}
