//! Starts the real `local-runner` binary and simulated regional backends on
//! ephemeral 127.0.0.1 ports, with a generated wrangler.toml.

#![allow(dead_code)]

use edgegate_sim::{Backend, BackendConfig, Controls};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ACME_KEY: &str = "sk-test-acme";
pub const FREE_KEY: &str = "sk-test-free";
pub const OTHER_KEY: &str = "sk-test-other";
pub const BLOCKED_KEY: &str = "sk-test-blocked";
/// The admin API's key, in every runner's `.dev.vars` (used by a config
/// with `admin.api_key_secret = "EDGEGATE_ADMIN_KEY"`).
pub const ADMIN_KEY: &str = "runner-test-admin-key-0123456789";

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// (name, latitude, longitude, residency)
pub const REGIONS: [(&str, f64, f64, &str); 3] = [
    ("us-east", 39.0, -77.5, "us"),
    ("eu-west", 53.3, -6.3, "eu"),
    ("ap-south", 1.35, 103.8, "sg"),
];

pub struct Backends {
    pub by_region: BTreeMap<String, Backend>,
}

impl Backends {
    pub async fn start(token_interval_ms: u64) -> Backends {
        let mut by_region = BTreeMap::new();
        for (name, ..) in REGIONS {
            let cfg = BackendConfig {
                token_interval_ms,
                ..BackendConfig::new(name)
            };
            let backend = Backend::start(cfg, "127.0.0.1:0".parse().expect("addr"))
                .await
                .expect("start backend");
            by_region.insert(name.to_owned(), backend);
        }
        Backends { by_region }
    }

    pub fn controls(&self, region: &str) -> Controls {
        self.by_region[region].controls()
    }

    pub fn url(&self, region: &str) -> String {
        self.by_region[region].base_url()
    }
}

/// The gateway config the tests use, pointing at `backends`.
pub fn config(backends: &Backends) -> Value {
    let regions: Vec<Value> = REGIONS
        .iter()
        .map(|(name, lat, lon, res)| {
            json!({
                "name": name, "base_url": backends.url(name), "latitude": lat, "longitude": lon,
                "residency": res, "models": ["chat-model", "embed-model"],
            })
        })
        .collect();
    json!({
        "limits": {"max_body_bytes": 65536},
        "tiers": {
            "pro": {"requests_per_minute": 6000, "tokens_per_minute": 10000000, "max_tokens_cap": 1024},
            "free": {"requests_per_minute": 3, "tokens_per_minute": 100000, "max_tokens_cap": 256},
        },
        "tenants": [
            {"id": "acme", "tier": "pro", "api_key_sha256": [sha256_hex(ACME_KEY)]},
            {"id": "other", "tier": "pro", "api_key_sha256": [sha256_hex(OTHER_KEY)]},
            {"id": "free-co", "tier": "free", "api_key_sha256": [sha256_hex(FREE_KEY)]},
            {"id": "blocked", "tier": "pro", "api_key_sha256": [sha256_hex(BLOCKED_KEY)], "ip_deny": ["127.0.0.0/8"]},
        ],
        "models": [
            {"name": "chat-model", "aliases": ["gpt-4o-mini"], "context_window": 8192,
             "input_usd_per_million": 1.0, "output_usd_per_million": 2.0},
            {"name": "embed-model", "endpoints": ["embeddings"], "context_window": 8192,
             "input_usd_per_million": 0.1, "output_usd_per_million": 0.0},
        ],
        "routes": [
            {"model": "chat-model", "cache": {"ttl_seconds": 60},
             "timeouts": {"connect_ms": 500, "first_byte_ms": 5000, "stream_idle_ms": 1000}},
        ],
        "regions": regions,
        "default_location": {"latitude": 39.0, "longitude": -77.5},
        "observability": {"metrics_tenants": ["acme"]},
    })
}

pub struct Runner {
    pub dir: tempfile::TempDir,
    pub base: String,
    child: Child,
    args: Vec<String>,
}

impl Runner {
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("wrangler.toml")
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Starts the runner with `gateway` as `[vars.gateway]` and extra flags.
    pub fn start(gateway: &Value, extra: &[&str]) -> Runner {
        let dir = tempfile::tempdir().expect("tempdir");
        let wrangler = json!({"name": "edgegate-test", "vars": {"gateway": gateway}});
        std::fs::write(
            dir.path().join("wrangler.toml"),
            toml::to_string(&wrangler).expect("config as TOML"),
        )
        .expect("write config");
        std::fs::write(
            dir.path().join(".dev.vars"),
            format!("EDGEGATE_ADMIN_KEY={ADMIN_KEY}\n"),
        )
        .expect("write .dev.vars");
        let mut args: Vec<String> = [
            "serve",
            "--config",
            &dir.path().join("wrangler.toml").to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            &dir.path().join("state").to_string_lossy(),
            "--instances",
            "2",
            "--probe-interval-ms",
            "200",
            "--trust-geo-headers",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let (child, base) = spawn(dir.path(), &args);
        Runner {
            dir,
            base,
            child,
            args,
        }
    }

    /// `kill -9`, then start again on the same state.
    pub fn kill_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
        let (child, base) = spawn(self.dir.path(), &self.args);
        self.child = child;
        self.base = base;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, args: &[String]) -> (Child, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("access.log"))
        .expect("access log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_local-runner"))
        .args(args)
        .stdout(Stdio::from(log))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn local-runner");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("edgegate: listening on ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(url.to_owned());
            }
            eprintln!("[runner] {line}");
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the runner starts listening");
    (child, base)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

pub fn chat(content: &str) -> Value {
    json!({
        "model": "chat-model",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16,
    })
}

pub async fn post(
    client: &reqwest::Client,
    runner: &Runner,
    path: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .post(runner.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request")
}

pub fn header<'r>(r: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}
