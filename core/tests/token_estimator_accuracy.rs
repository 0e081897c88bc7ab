//! Accuracy of `estimate_text` against exact BPE counts (cl100k_base, o200k_base).
//!
//! Run with `cargo test --release --test token_estimator_accuracy -- --nocapture`
//! to see the per-category table.

use std::fs;
use std::path::{Path, PathBuf};

use edgegate_core::tokens::estimate_text;
use tiktoken_rs::CoreBPE;

/// The estimate may be at most this far under the exact count (per sample).
const MAX_UNDERCOUNT: f64 = 0.10;

struct Sample {
    category: String,
    path: PathBuf,
    text: String,
}

fn load_corpus() -> Vec<Sample> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut samples = Vec::new();
    let mut categories: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_dir())
        .collect();
    categories.sort();
    for dir in categories {
        let category = dir
            .file_name()
            .expect("category dir")
            .to_string_lossy()
            .into_owned();
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("category dir")
            .map(|entry| entry.expect("corpus file").path())
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        for path in files {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            samples.push(Sample {
                category: category.clone(),
                path,
                text,
            });
        }
    }
    samples
}

/// Per (category, encoding) aggregate of signed relative errors.
struct Stats {
    category: String,
    encoding: &'static str,
    errors: Vec<f64>,
}

#[test]
fn estimate_is_never_far_under_exact_counts() {
    let samples = load_corpus();
    assert!(samples.len() >= 32, "corpus too small: {}", samples.len());

    let encodings: [(&str, CoreBPE); 2] = [
        ("cl100k", tiktoken_rs::cl100k_base().expect("cl100k_base")),
        ("o200k", tiktoken_rs::o200k_base().expect("o200k_base")),
    ];

    let mut stats: Vec<Stats> = Vec::new();
    let mut failures = Vec::new();
    for sample in &samples {
        let estimate = f64::from(estimate_text(&sample.text));
        for (name, bpe) in &encodings {
            let exact = bpe.encode_with_special_tokens(&sample.text).len() as f64;
            let error = (estimate - exact) / exact;
            if error < -MAX_UNDERCOUNT {
                failures.push(format!(
                    "{} ({name}): estimate {estimate} vs exact {exact} ({:+.1}%)",
                    sample.path.display(),
                    error * 100.0
                ));
            }
            match stats
                .iter_mut()
                .find(|s| s.category == sample.category && s.encoding == *name)
            {
                Some(s) => s.errors.push(error),
                None => stats.push(Stats {
                    category: sample.category.clone(),
                    encoding: name,
                    errors: vec![error],
                }),
            }
        }
    }

    println!();
    println!(
        "{:<8} {:<8} {:>7} {:>12} {:>16} {:>15}",
        "category", "encoding", "samples", "mean error", "worst undercount", "worst overcount"
    );
    for s in &stats {
        let n = s.errors.len() as f64;
        let mean = s.errors.iter().sum::<f64>() / n;
        let min = s.errors.iter().copied().fold(f64::INFINITY, f64::min);
        let max = s.errors.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "{:<8} {:<8} {:>7} {:>+11.1}% {:>+15.1}% {:>+14.1}%",
            s.category,
            s.encoding,
            s.errors.len(),
            mean * 100.0,
            min * 100.0,
            max * 100.0
        );
    }

    assert!(
        failures.is_empty(),
        "estimate more than {:.0}% under the exact count:\n{}",
        MAX_UNDERCOUNT * 100.0,
        failures.join("\n")
    );
}
