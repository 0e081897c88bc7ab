//! The conformance suite against both runners (`cargo test --release`, or
//! `cargo test --release -p edgegate-conformance` once `local-runner` and
//! the Worker are built). Prints one `<runner>: N passed, M failed` line per
//! runner and fails on any failure.
//!
//! Narrowing it while working on a case (the summary then counts only what ran):
//! `EDGEGATE_CONFORMANCE_RUNNERS=workerd` (comma-separated runner names) and
//! `EDGEGATE_CONFORMANCE_CASES=cache` (cases whose name contains it).
//!
//! Then, once for the suite, the prompt estimate against the llama.cpp
//! server's tokenizer over the estimator's corpus (named [`ESTIMATOR`]).

use edgegate_conformance::estimator::{self, MAX_UNDERCOUNT};
use edgegate_conformance::llama::Llama;
use edgegate_conformance::{cases, suite, target::Runner};
use std::process::ExitCode;

const ESTIMATOR: &str = "llama: the prompt estimate against SmolLM2's own tokenizer";

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
    let estimator_ok = !ESTIMATOR.contains(only.as_str()) || runtime.block_on(estimator_table());
    println!(
        "\n== conformance summary ({} cases per runner)",
        cases.len()
    );
    for tally in &tallies {
        println!("{tally}");
    }
    if !tallies.is_empty() && tallies.iter().all(|t| t.failed == 0) && estimator_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints the per-category table; false when the server could not be asked
/// or a sample is undercounted by more than [`MAX_UNDERCOUNT`].
async fn estimator_table() -> bool {
    println!("\n== {ESTIMATOR}");
    let rows = match Llama::start().await {
        Ok(llama) => estimator::compare(&llama).await,
        Err(e) => Err(e),
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            println!("  FAIL  {e}");
            return false;
        }
    };
    println!("  | category | samples | mean error | worst undercount |");
    println!("  | --- | --- | --- | --- |");
    let mut ok = true;
    for row in &rows {
        let worst = row.worst_undercount();
        ok &= worst <= MAX_UNDERCOUNT;
        println!(
            "  | {} | {} | {:+.1}% | {:.1}%{} |",
            row.name,
            row.errors.len(),
            100.0 * row.mean(),
            100.0 * worst,
            if worst > MAX_UNDERCOUNT {
                " (over the 10% limit)"
            } else {
                ""
            }
        );
    }
    ok
}
