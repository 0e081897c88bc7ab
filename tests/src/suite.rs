//! Runs the case table against one runner and counts.

use crate::target::{Runner, Target};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

pub type Outcome = Result<(), String>;
pub type CaseFuture<'t> = Pin<Box<dyn Future<Output = Outcome> + 't>>;

/// One conformance case: a name and the function that checks it.
pub struct Case {
    pub name: &'static str,
    pub run: fn(&Target) -> CaseFuture<'_>,
}

/// `case!("what it checks", module::function)`: a table entry for an
/// `async fn(&Target) -> Outcome`.
#[macro_export]
macro_rules! case {
    ($name:literal, $f:path) => {{
        fn run(target: &$crate::target::Target) -> $crate::suite::CaseFuture<'_> {
            Box::pin($f(target))
        }
        $crate::suite::Case { name: $name, run }
    }};
}

/// No case may take longer than this (the canary split sends 2,000 requests).
const CASE_TIMEOUT: Duration = Duration::from_secs(90);

/// One runner's result: the summary line is its `Display`.
pub struct Tally {
    pub runner: Runner,
    pub passed: usize,
    pub failed: usize,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} passed, {} failed",
            self.runner.name(),
            self.passed,
            self.failed
        )
    }
}

/// Starts `runner`, runs `cases` against it one after another (backends
/// reset between cases), stops it. A runner that cannot start fails every case.
pub async fn run(runner: Runner, cases: &[&Case]) -> Tally {
    let started = Instant::now();
    println!("\n== conformance suite: {}", runner.name());
    let mut tally = Tally {
        runner,
        passed: 0,
        failed: 0,
    };
    let target = match Target::start(runner).await {
        Ok(target) => target,
        Err(e) => {
            println!("  FAIL  {} did not start: {e}", runner.name());
            tally.failed = cases.len();
            return tally;
        }
    };
    println!(
        "  {} at {} (started in {:.1} s)",
        runner.name(),
        target.base,
        started.elapsed().as_secs_f64()
    );
    for case in cases {
        let t0 = Instant::now();
        let outcome = match tokio::time::timeout(CASE_TIMEOUT, (case.run)(&target)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("timed out after {CASE_TIMEOUT:?}")),
        };
        target.reset_backends();
        let ms = t0.elapsed().as_millis();
        match outcome {
            Ok(()) => {
                tally.passed += 1;
                println!("  ok    {} ({ms} ms)", case.name);
            }
            Err(why) => {
                tally.failed += 1;
                println!("  FAIL  {} ({ms} ms): {why}", case.name);
                let tail = target.output_tail();
                if !tail.is_empty() {
                    println!("    {}'s last output:\n{tail}", runner.name());
                }
            }
        }
    }
    target.stop().await;
    println!(
        "  {} done in {:.1} s",
        runner.name(),
        started.elapsed().as_secs_f64()
    );
    tally
}
