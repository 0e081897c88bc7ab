//! A real client: the official `openai` Python SDK runs `tests/sdk/session.py`
//! against the runner (chat, a stream with usage, embeddings, the model list,
//! and a 429 seen as `RateLimitError`, then retried after `Retry-After`).
//! scripts/setup.sh installs the SDK into a virtual environment.

use crate::gateway::keys;
use crate::suite::Outcome;
use crate::target::{Target, repo_dir};
use std::path::PathBuf;

/// `$EDGEGATE_PYTHON`, else the virtual environment scripts/setup.sh makes.
pub(crate) fn python() -> Result<PathBuf, String> {
    if let Ok(python) = std::env::var("EDGEGATE_PYTHON") {
        return Ok(python.into());
    }
    let python = crate::llama::tools_dir()?.join("venv/bin/python");
    if python.is_file() {
        Ok(python)
    } else {
        Err(format!(
            "{} is missing: run scripts/setup.sh (it installs the openai SDK)",
            python.display()
        ))
    }
}

pub async fn openai_python_sdk_session(t: &Target) -> Outcome {
    let url = t.url("/v1");
    run_script(
        "session.py",
        &[
            "--runner",
            t.name(),
            "--base-url",
            &url,
            "--key",
            keys::SDK,
            "--limited-key",
            keys::SDK_LIMITED,
        ],
    )
    .await
}

/// Runs `tests/sdk/<script>` with the SDK's python, shows what it printed,
/// and fails with the end of its stderr if it failed.
pub(crate) async fn run_script(script: &str, args: &[&str]) -> Outcome {
    let output = tokio::process::Command::new(python()?)
        .arg(repo_dir().join("tests/sdk").join(script))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running {script}: {e}"))?;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        println!("        {line}");
    }
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        Err(format!(
            "{script} failed ({}){}",
            output.status,
            tail.iter()
                .rev()
                .map(|l| format!("\n    | {l}"))
                .collect::<String>()
        ))
    }
}
