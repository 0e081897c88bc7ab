//! edgegate's core: every decision the gateway makes, as pure functions of
//! their inputs. No I/O, no clock, no randomness of its own: the host passes
//! `now`, the client's address and location, ids and region health.
//!
//! Start at [`gateway`]: it reads as the request's path.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod balance;
pub mod cache;
pub mod config;
pub mod dashboard;
pub mod directory;
pub mod error;
pub mod exchange;
pub mod gateway;
pub mod geo;
pub mod health;
pub mod ledger;
pub mod load;
pub mod names;
pub mod net;
pub mod quota;
pub mod request;
pub mod request_id;
pub mod response;
pub mod routing;
pub mod safety;
pub mod sse;
pub mod telemetry;
pub mod tokens;
pub mod trace_context;

#[cfg(test)]
mod testing;

pub use config::{Config, ConfigError, Secrets};
pub use error::GatewayError;
pub use gateway::{Decision, ForwardPlan, Gateway, RequestContext};

// jsonwebtoken reaches getrandom 0.2 through rand_core; token verification
// never draws randomness, so on the unknown-OS wasm target it always fails.
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
fn no_randomness(_: &mut [u8]) -> Result<(), getrandom::Error> {
    Err(getrandom::Error::UNSUPPORTED)
}
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
getrandom::register_custom_getrandom!(no_randomness);
