//! edgegate's prompt estimate against a real tokenizer: every sample of the
//! estimator's corpus (`core/tests/corpus`: prose, code, JSON, CJK, mixed) is
//! sent as a one-message chat request straight to the llama.cpp server, whose
//! `usage.prompt_tokens` counts it with SmolLM2's own tokenizer and chat
//! template, and compared with the estimate the gateway reserves for the
//! same request.

use crate::llama::{Llama, MODEL};
use edgegate_core::request::{Endpoint, ParsedBody};
use edgegate_core::tokens::{estimate_request, scaled};
use serde_json::{Value, json};
use std::path::Path;

/// The estimate may be at most this far under the real count, per sample.
pub const MAX_UNDERCOUNT: f64 = 0.10;

pub struct Category {
    pub name: String,
    /// (estimate - real) / real, per sample.
    pub errors: Vec<f64>,
}

impl Category {
    pub fn mean(&self) -> f64 {
        self.errors.iter().sum::<f64>() / self.errors.len().max(1) as f64
    }

    /// The largest undercount as a positive fraction (0 if it never undercounts).
    pub fn worst_undercount(&self) -> f64 {
        self.errors.iter().fold(0.0_f64, |w, e| w.max(-e))
    }
}

/// SmolLM2's 49k-token vocabulary spends up to 1.94× the tokens
/// cl100k_base does on this corpus (CJK; 1.6× on JSON, 1.1× on prose), so
/// the suite's config tells the gateway so (`prompt_estimate_factor`).
pub const SMOLLM2_FACTOR: f64 = 2.0;

/// What the gateway reserves for `body`'s prompt.
fn estimate(body: &Value) -> u64 {
    let parsed = ParsedBody {
        endpoint: Endpoint::ChatCompletions,
        body: body.as_object().cloned().unwrap_or_default(),
        model: MODEL.to_owned(),
        stream: false,
        client_wants_usage: false,
        max_tokens: Some(1),
    };
    u64::from(scaled(estimate_request(&parsed), SMOLLM2_FACTOR))
}

/// One row per corpus category.
pub async fn compare(llama: &Llama) -> Result<Vec<Category>, String> {
    let corpus = crate::target::repo_dir().join("core/tests/corpus");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let mut categories = Vec::new();
    let mut dirs: Vec<_> = read_dir(&corpus)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut files = read_dir(&dir)?;
        files.sort();
        let mut category = Category {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            errors: Vec::new(),
        };
        for file in files {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let body = json!({"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 1});
            let answer: Value = http
                .post(format!("{}/v1/chat/completions", llama.base_url))
                .json(&body)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("{}: {e}", file.display()))?
                .json()
                .await
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let real = answer["usage"]["prompt_tokens"]
                .as_u64()
                .ok_or_else(|| format!("{}: no usage.prompt_tokens", file.display()))?;
            let est = estimate(&body);
            category
                .errors
                .push((est as f64 - real as f64) / real as f64);
        }
        categories.push(category);
    }
    Ok(categories)
}

fn read_dir(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    Ok(std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect())
}
