//! edgegate-core exported as a WebAssembly component (`wit/edgegate.wit`):
//! each request's `Exchange` as a resource. A thin adapter between the WIT
//! types and the core's; no logic of its own.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../wit", world: "gateway", pub_export_macro: true });
}

mod convert;

use bindings::exports::edgegate::gateway::core as wit;
use edgegate_core::config::Secrets;
use edgegate_core::exchange::Exchange;
use edgegate_core::gateway::Gateway;
use edgegate_core::request::{Headers, HttpRequest};
use std::cell::RefCell;
use std::sync::OnceLock;

static GATEWAY: OnceLock<Gateway> = OnceLock::new();

struct Component;

impl wit::Guest for Component {
    type Exchange = ExchangeResource;

    fn init(config: String, secrets: Vec<(String, String)>) -> Result<(), String> {
        let secrets: Secrets = secrets.into_iter().collect();
        let gateway = Gateway::from_json(&config, &secrets).map_err(|e| e.to_string())?;
        GATEWAY
            .set(gateway)
            .map_err(|_| "init was already called".to_owned())
    }
}

/// One request's exchange, living in this instance until the host drops it.
struct ExchangeResource(RefCell<Exchange>);

impl wit::GuestExchange for ExchangeResource {
    fn start(
        request: wit::HttpRequest,
        context: wit::RequestContext,
        now_us: u64,
        queue_us: u64,
    ) -> (wit::Exchange, Vec<wit::Action>) {
        let request_id = context.request_id.clone();
        let decision = match GATEWAY.get() {
            Some(gateway) => {
                let request = HttpRequest {
                    method: request.method,
                    path: request.path,
                    headers: Headers::new(request.headers),
                    body: request.body,
                };
                gateway.admit(&request, &convert::context(context))
            }
            None => Err(edgegate_core::GatewayError::Internal {
                message: "the sandbox was not initialised".into(),
            }),
        };
        let mut exchange = Exchange::new(decision, &request_id, now_us).with_queue_us(queue_us);
        let actions = convert::drain(&mut exchange);
        let resource = ExchangeResource(RefCell::new(exchange));
        (wit::Exchange::new(resource), actions)
    }

    fn handle(&self, events: Vec<wit::Event>, now_us: u64) -> Vec<wit::Action> {
        let mut exchange = self.0.borrow_mut();
        if let Some(gateway) = GATEWAY.get() {
            for event in events {
                exchange.handle(gateway, convert::event(event), now_us);
            }
        }
        convert::drain(&mut exchange)
    }
}

#[allow(unsafe_code)]
mod export {
    use super::Component;
    crate::bindings::export!(Component with_types_in crate::bindings);
}
