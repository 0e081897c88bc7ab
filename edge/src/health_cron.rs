//! The cron trigger: probe every region's health endpoint and write the
//! results to KV, where every isolate's fetch path picks them up.

use crate::clock::{now_ms, sleep_ms};
use crate::config;
use crate::kv_store::EdgeKv;
use edgegate_core::config::Region;
use edgegate_core::health::{Observation, PROBE_TIMEOUT_MS};
use futures_util::future::{Either, join_all, select};
use std::pin::pin;
use worker::{AbortController, Env, Fetch, Url, console_error, console_log};

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
    let regions = &gateway.config().regions;
    let results = join_all(regions.iter().map(probe)).await;
    for (region, (at_ms, observation)) in regions.iter().zip(results) {
        board.observe(&region.name, at_ms, observation);
    }
    match kv.put_health_board(&board).await {
        Ok(()) => console_log!(
            "{}",
            serde_json::json!({"event": "health_probe", "regions": board.statuses(now_ms())})
        ),
        Err(e) => console_error!("edgegate: cannot write region health: {e}"),
    }
}

/// GETs `base_url + health_path`; the core judges the answer.
async fn probe(region: &Region) -> (u64, Observation) {
    let started = now_ms();
    let url = match Url::parse(&format!("{}{}", region.base_url, region.health_path)) {
        Ok(url) => url,
        Err(_) => return (started, Observation::Failure),
    };
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Url(url);
    let send = pin!(fetch.send_with_signal(&signal));
    let answer = select(send, sleep_ms(PROBE_TIMEOUT_MS)).await;
    let finished = now_ms();
    let status = match answer {
        Either::Left((Ok(response), _)) => Some(response.status_code()),
        Either::Left((Err(_), _)) => None,
        Either::Right(_) => {
            controller.abort();
            None
        }
    };
    let observation = Observation::of_probe(status, finished.saturating_sub(started));
    (finished, observation)
}
