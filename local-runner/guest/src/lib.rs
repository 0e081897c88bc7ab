//! edgegate-core exported as a WebAssembly component (`wit/edgegate.wit`).
//! A thin adapter: JSON in, core call, JSON out. No logic of its own.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../wit", world: "gateway", pub_export_macro: true });
}

use bindings::exports::edgegate::gateway::core::{Admitted, Guest, HttpRequest};
use edgegate_core::GatewayError;
use edgegate_core::config::Secrets;
use edgegate_core::gateway::{Decision, Gateway, LocalResponse, RequestContext};
use edgegate_core::health::{HealthBoard, Observation};
use edgegate_core::request::{Headers, HttpRequest as CoreRequest};
use edgegate_core::response::{self, ResponseKind, StreamObserver};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

static GATEWAY: OnceLock<Gateway> = OnceLock::new();

thread_local! {
    static STREAMS: RefCell<(u64, HashMap<u64, StreamObserver>)> = RefCell::new((0, HashMap::new()));
}

fn to_json<T: Serialize>(v: &T) -> String {
    // The core's types always serialise.
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"serialise_error\":\"{e}\"}}"))
}

fn from_json<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("invalid {what} from host: {e}"))
}

fn internal(message: String) -> String {
    to_json(&GatewayError::Internal { message })
}

fn kind(name: &str) -> Result<ResponseKind, String> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| format!("unknown response kind `{name}`"))
}

fn gateway() -> Result<&'static Gateway, String> {
    GATEWAY
        .get()
        .ok_or_else(|| "init was not called".to_owned())
}

struct Component;

impl Guest for Component {
    fn init(config_json: String, secrets_json: String) -> Result<(), String> {
        let secrets: Secrets = from_json("secrets", &secrets_json)?;
        let gateway = Gateway::from_json(&config_json, &secrets).map_err(|e| e.to_string())?;
        GATEWAY
            .set(gateway)
            .map_err(|_| "init was already called".to_owned())
    }

    fn admit(request: HttpRequest, context_json: String) -> Result<Admitted, String> {
        let gateway = gateway().map_err(internal)?;
        let ctx: RequestContext = from_json("context", &context_json).map_err(internal)?;
        let request = CoreRequest {
            method: request.method,
            path: request.path,
            headers: Headers::new(request.headers),
            body: request.body,
        };
        match gateway.admit(&request, &ctx) {
            Ok(Decision::Forward(mut plan)) => {
                let bodies = std::mem::take(&mut plan.bodies);
                Ok(Admitted {
                    decision_json: to_json(&Decision::Forward(plan)),
                    bodies,
                })
            }
            Ok(decision) => Ok(Admitted {
                decision_json: to_json(&decision),
                bodies: Vec::new(),
            }),
            Err(e) => Err(to_json(&e)),
        }
    }

    fn parse_upstream_body(kind_name: String, body: Vec<u8>) -> Result<String, String> {
        let kind = kind(&kind_name).map_err(internal)?;
        response::parse_upstream_body(kind, &body)
            .map(|m| to_json(&m))
            .map_err(|e| to_json(&e))
    }

    fn upstream_error(status: u16, body: Vec<u8>) -> String {
        to_json(&response::upstream_error(status, &body))
    }

    fn replay_as_sse(
        kind_name: String,
        response_json: String,
        include_usage: bool,
    ) -> Result<Vec<u8>, String> {
        let kind = kind(&kind_name)?;
        let response: serde_json::Value = from_json("cached response", &response_json)?;
        response::replay_as_sse(kind, &response, include_usage).map_err(|e| e.to_string())
    }

    fn error_response(error_json: String, request_id: String) -> String {
        let err: GatewayError = from_json("error", &error_json)
            .unwrap_or_else(|e| GatewayError::Internal { message: e });
        to_json(&LocalResponse::error(&err, &request_id))
    }

    fn stream_open(kind_name: String, strip_usage_chunk: bool) -> u64 {
        let kind = kind(&kind_name).unwrap_or(ResponseKind::Chat);
        STREAMS.with(|s| {
            let (next, streams) = &mut *s.borrow_mut();
            *next += 1;
            streams.insert(*next, StreamObserver::new(kind, strip_usage_chunk));
            *next
        })
    }

    fn stream_feed(id: u64, chunk: Vec<u8>) -> Result<Vec<u8>, String> {
        STREAMS.with(|s| {
            let streams = &mut s.borrow_mut().1;
            let observer = streams
                .get_mut(&id)
                .ok_or_else(|| format!("no stream {id}"))?;
            Ok(observer.feed(&chunk))
        })
    }

    fn stream_finish(id: u64) -> Result<(Vec<u8>, String), String> {
        STREAMS.with(|s| {
            let mut observer = s
                .borrow_mut()
                .1
                .remove(&id)
                .ok_or_else(|| format!("no stream {id}"))?;
            let tail = observer.finish();
            Ok((tail, to_json(&observer.metered())))
        })
    }

    fn stream_close(id: u64) -> Option<String> {
        STREAMS.with(|s| s.borrow_mut().1.remove(&id).map(|o| to_json(&o.metered())))
    }

    fn health_observe(
        board_json: String,
        region: String,
        now_ms: u64,
        observation_json: String,
    ) -> String {
        let result = (|| {
            let mut board: HealthBoard = from_json("health board", &board_json)?;
            let obs: Observation = from_json("observation", &observation_json)?;
            board.observe(&region, now_ms, obs);
            Ok::<_, String>(to_json(&board))
        })();
        result.unwrap_or(board_json)
    }

    fn health_statuses(board_json: String, now_ms: u64) -> String {
        let board: HealthBoard = from_json("health board", &board_json).unwrap_or_default();
        to_json(&board.statuses(now_ms))
    }
}

#[allow(unsafe_code)]
mod export {
    use super::Component;
    crate::bindings::export!(Component with_types_in crate::bindings);
}
