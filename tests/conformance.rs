//! The conformance suite against both runners (`cargo test --release`, or
//! `cargo test --release -p edgegate-conformance` once `local-runner` and
//! the Worker are built). Prints one `<runner>: N passed, M failed` line per
//! runner and fails on any failure.
//!
//! Narrowing it while working on a case (the summary then counts only what ran):
//! `EDGEGATE_CONFORMANCE_RUNNERS=workerd` (comma-separated runner names) and
//! `EDGEGATE_CONFORMANCE_CASES=cache` (cases whose name contains it).

use edgegate_conformance::{cases, suite, target::Runner};
use std::process::ExitCode;

fn main() -> ExitCode {
    let runners: Vec<Runner> = match std::env::var("EDGEGATE_CONFORMANCE_RUNNERS") {
        Ok(names) => Runner::ALL
            .into_iter()
            .filter(|r| names.split(',').any(|n| n.trim() == r.name()))
            .collect(),
        Err(_) => Runner::ALL.to_vec(),
    };
    let only = std::env::var("EDGEGATE_CONFORMANCE_CASES").unwrap_or_default();
    let cases: Vec<&suite::Case> = cases::ALL
        .iter()
        .filter(|c| c.name.contains(only.as_str()))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let tallies = runtime.block_on(async {
        let mut tallies = Vec::new();
        for runner in runners {
            tallies.push(suite::run(runner, &cases).await);
        }
        tallies
    });
    println!(
        "\n== conformance summary ({} cases per runner)",
        cases.len()
    );
    for tally in &tallies {
        println!("{tally}");
    }
    if !tallies.is_empty() && tallies.iter().all(|t| t.failed == 0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
