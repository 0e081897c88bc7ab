//! edgegate's conformance suite: one set of cases, written once, run against
//! every runner of the gateway — `local-runner` and the Worker in workerd.
//!
//! The harness ([`suite`]) starts each runner ([`target`]) with its own
//! simulated regional backends (`edgegate-sim`) on 127.0.0.1 and the same
//! gateway config ([`gateway`]), runs every case of [`cases::ALL`] against
//! it, and reports `<runner>: N passed, M failed`. A case is a plain
//! `async fn(&Target) -> Result<(), String>`; it speaks HTTP through
//! [`client`], places clients with trusted geo headers, and flips backend
//! behaviour (down, slow, stalled) through the sim's controls. One region
//! is a real inference server instead ([`llama`]).

pub mod cases;
pub mod client;
pub mod estimator;
pub mod gateway;
pub mod jwt;
pub mod llama;
pub mod suite;
pub mod target;
