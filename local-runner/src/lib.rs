//! edgegate on one machine: the core sandboxed in wasmtime, and the I/O
//! around it (HTTP, SQLite quotas, cache, health probes, logs, metrics).

pub mod admin;
pub mod admin_cli;
pub mod app;
pub mod clock;
pub mod coalescing;
pub mod demo;
pub mod directory;
pub mod exchange;
pub mod gates;
pub mod health_monitor;
pub mod load_tracker;
pub mod metrics;
pub mod quota_store;
pub mod response_cache;
pub mod sandbox;
pub mod settings;
pub mod traces;
pub mod upstream;

use anyhow::{Context, Result};
use app::App;
use clap::Args;
use edgegate_core::health::HealthPolicy;
use health_monitor::{HealthMonitor, ProbeTarget};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sandbox::{Sandbox, SandboxLimits};
use settings::Settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Clone)]
pub struct ConfigArgs {
    /// The wrangler.toml holding `[vars.gateway]`.
    #[arg(long, default_value = "wrangler.toml")]
    pub config: PathBuf,
    /// Use `[env.NAME.vars]` (and `.dev.vars.NAME`) instead of the top level.
    #[arg(long)]
    pub env: Option<String>,
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where quota state is kept (SQLite); defaults to `.state/local-runner` beside the config.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Response cache size bound.
    #[arg(long, default_value_t = 64)]
    pub cache_mb: usize,
    /// Interval between active health probes of each region.
    #[arg(long, default_value_t = 5_000)]
    pub probe_interval_ms: u64,
    /// Warm sandbox instances (default: twice the CPU count).
    #[arg(long)]
    pub instances: Option<usize>,
    /// Memory limit of each sandbox instance.
    #[arg(long, default_value_t = 128)]
    pub guest_memory_mb: usize,
    /// Wall-time limit of one call into the sandbox.
    #[arg(long, default_value_t = 2_000)]
    pub guest_deadline_ms: u64,
    /// Consecutive failures that open a region's circuit breaker.
    #[arg(long, default_value_t = 3)]
    pub breaker_failures: u32,
    /// How long an open breaker keeps a region down before a trial request.
    #[arg(long, default_value_t = 10_000)]
    pub breaker_open_ms: u64,
    /// Trust `x-edgegate-client-{latitude,longitude,country,continent}` headers
    /// (set them at a load balancer or CDN in front of the runner).
    #[arg(long)]
    pub trust_geo_headers: bool,
    /// Trust `x-forwarded-for` for the client address.
    #[arg(long)]
    pub trust_forwarded_for: bool,
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub async fn serve(
    settings: Settings,
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut limits = SandboxLimits {
        memory_bytes: args.guest_memory_mb << 20,
        call_deadline: Duration::from_millis(args.guest_deadline_ms),
        ..SandboxLimits::default()
    };
    if let Some(n) = args.instances {
        limits.instances = n;
    }
    let sandbox = Arc::new(
        Sandbox::new(settings.gateway_json(), settings.secret_pairs(), limits)
            .with_context(|| format!("loading {}", settings.source.display()))?,
    );
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        settings
            .source
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(".state/local-runner")
    });
    let state_file = state_dir.join("quota.sqlite");
    let quota = Arc::new(quota_store::QuotaStore::open(&state_file)?);
    let directory = Arc::new(directory::Directory::open(&state_file)?);
    let health = Arc::new(HealthMonitor::new(HealthPolicy {
        failure_threshold: args.breaker_failures.max(1),
        open_ms: args.breaker_open_ms,
        ..HealthPolicy::default()
    }));
    let config = edgegate_core::Config::from_json(&settings.gateway_json(), &settings.secrets)
        .map_err(|e| anyhow::anyhow!("{}: {e}", settings.source.display()))?;
    let probes = probe_targets(&config);
    health_monitor::spawn_probes(
        health.clone(),
        probes,
        Duration::from_millis(args.probe_interval_ms),
    );
    let config = Arc::new(config);
    let gates = gates::Gates::new(config.admission.queue_limit);
    let loads = load_tracker::LoadTracker::new(&config);
    let mut metrics = metrics::Metrics::new(&config.observability);
    metrics.read_live(metrics::Live {
        health: health.clone(),
        loads: loads.clone(),
        gates: gates.clone(),
        sandbox: sandbox.clone(),
    });
    let traces = match &config.observability.otlp {
        Some(otlp) => Some(
            traces::Traces::start(otlp, metrics.span_counters())
                .context("observability.otlp_endpoint: the OTLP exporter")?,
        ),
        None => None,
    };
    let app = Arc::new(App {
        sandbox,
        traces,
        config: config.clone(),
        quota,
        directory,
        cache: response_cache::ResponseCache::new(args.cache_mb << 20),
        coalescing: Arc::default(),
        gates,
        health,
        loads,
        metrics: Arc::new(metrics),
        upstream: upstream::Upstream::default(),
        max_body_bytes: settings.max_body_bytes(),
        trust_geo_headers: args.trust_geo_headers,
        trust_forwarded_for: args.trust_forwarded_for,
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!("edgegate: listening on http://{}", listener.local_addr()?);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("edgegate: accept failed: {e}");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(app::handle(app, req, peer).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    eprintln!("edgegate: shutting down");
    Ok(())
}

/// Every replica's health endpoint, and its metrics where the region names them.
fn probe_targets(config: &edgegate_core::Config) -> Vec<ProbeTarget> {
    config
        .regions
        .iter()
        .flat_map(|r| {
            r.replicas.iter().map(|replica| ProbeTarget {
                region: replica.target.clone(),
                url: format!("{}{}", replica.base_url, r.health_path),
                metrics_url: r
                    .metrics_path
                    .as_ref()
                    .map(|p| format!("{}{p}", replica.base_url)),
            })
        })
        .collect()
}
