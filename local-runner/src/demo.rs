//! `local-runner demo`: simulated regional GPU backends on the addresses the
//! config names, and the gateway in front of them, with examples to paste.

use crate::settings::Settings;
use crate::{ConfigArgs, ServeArgs};
use anyhow::{Context, Result, bail};
use edgegate_sim::{Backend, BackendConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Per-region simulated latency: (first byte, per token) in ms, by position.
const PACING: [(u64, u64); 4] = [(20, 15), (35, 18), (60, 25), (45, 20)];

/// The secret the demo's admin API key is read from, when the config turns
/// the admin API on for itself.
const ADMIN_SECRET: &str = "EDGEGATE_ADMIN_KEY";

pub async fn run(config: PathBuf, listen: SocketAddr) -> Result<()> {
    let mut settings = Settings::load(&config, None)?;
    let admin_key = turn_on_admin(&mut settings);
    let regions = settings
        .gateway
        .get("regions")
        .and_then(serde_json::Value::as_array)
        .context("the config has no regions")?;
    let mut backends = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let name = r.get("name").and_then(|v| v.as_str()).unwrap_or("region");
        let url = r.get("base_url").and_then(|v| v.as_str()).unwrap_or("");
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| {
                format!("region {name}: the demo needs base_url http://127.0.0.1:PORT, got {url}")
            })?;
        if !addr.ip().is_loopback() {
            bail!("region {name}: the demo only simulates backends on 127.0.0.1");
        }
        let (base_latency_ms, token_interval_ms) = PACING[i % PACING.len()];
        let cfg = BackendConfig {
            region: name.to_owned(),
            base_latency_ms,
            token_interval_ms,
            ..BackendConfig::new(name)
        };
        let backend = Backend::start(cfg, addr).await.with_context(|| {
            format!("starting the simulated backend for {name} on {addr} (is the port free?)")
        })?;
        eprintln!(
            "edgegate demo: simulated region {name} at {}",
            backend.base_url()
        );
        backends.push(backend);
    }
    let state_dir = std::env::temp_dir().join(format!("edgegate-demo-{}", std::process::id()));
    print_examples(listen, admin_key.as_deref());
    let args = ServeArgs {
        config: ConfigArgs { config, env: None },
        listen,
        state_dir: Some(state_dir.clone()),
        cache_mb: 64,
        probe_interval_ms: 2_000,
        instances: None,
        guest_memory_mb: 128,
        guest_deadline_ms: 2_000,
        breaker_failures: 3,
        breaker_open_ms: 10_000,
        trust_geo_headers: true,
        trust_forwarded_for: false,
    };
    let result = crate::serve(settings, args, crate::shutdown_signal()).await;
    drop(backends);
    let _ = std::fs::remove_dir_all(state_dir);
    result
}

/// Turns the admin API (and so the dashboard) on when the config leaves it
/// off: its key is `$EDGEGATE_ADMIN_KEY`, or one made for this run. Returns
/// the key to show, if the demo chose it.
fn turn_on_admin(settings: &mut Settings) -> Option<String> {
    let gateway = settings.gateway.as_object_mut()?;
    if gateway.contains_key("admin") {
        return None;
    }
    gateway.insert(
        "admin".into(),
        serde_json::json!({"api_key_secret": ADMIN_SECRET}),
    );
    let key = std::env::var(ADMIN_SECRET).unwrap_or_else(|_| {
        let [a, b] = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
        format!("eg-demo-admin-{}{}", a.simple(), b.simple())
    });
    settings.secrets.insert(ADMIN_SECRET.into(), key.clone());
    Some(key)
}

fn print_examples(listen: SocketAddr, admin_key: Option<&str>) {
    let base = format!("http://{listen}");
    if let Some(key) = admin_key {
        eprintln!(
            "\nedgegate demo: the dashboard is at {base}/dashboard — sign in with the admin key {key}\n\
             (also for the admin API: export EDGEGATE_ADMIN_KEY={key}; target/release/local-runner admin usage)"
        );
    }
    eprintln!(
        r#"
edgegate demo — tenants: sk-demo-acme (pro), sk-demo-eu (pro, EU only), sk-demo-free (free)

  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer sk-demo-acme' \
    -H 'content-type: application/json' \
    -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hello!"}}],"temperature":0}}' -i

  # streaming, from Europe (the demo trusts x-edgegate-client-* geo headers)
  curl -sN {base}/v1/chat/completions -H 'Authorization: Bearer sk-demo-acme' \
    -H 'x-edgegate-client-latitude: 48.85' -H 'x-edgegate-client-longitude: 2.35' \
    -H 'content-type: application/json' \
    -d '{{"model":"llama-3.1-8b","stream":true,"messages":[{{"role":"user","content":"Tell me a story"}}]}}'

  python3 - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{base}/v1", api_key="sk-demo-acme")
print(client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hi"}}]).choices[0].message.content)
for chunk in client.chat.completions.create(model="llama-3.1-8b", stream=True, messages=[{{"role": "user", "content": "Count"}}]):
    print(chunk.choices[0].delta.content or "", end="", flush=True) if chunk.choices else None
print()
print(len(client.embeddings.create(model="text-embedding-3-small", input="hello").data[0].embedding), "dims")
PY

  curl -s {base}/metrics | head      # Prometheus metrics
"#
    );
}
