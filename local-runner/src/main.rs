//! `local-runner`: the command line of edgegate's self-hosted gateway.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use edgegate_local_runner::admin_cli::{self, AdminArgs};
use edgegate_local_runner::settings::Settings;
use edgegate_local_runner::{ConfigArgs, ServeArgs, demo, serve, shutdown_signal};
use std::net::SocketAddr;
use std::path::PathBuf;

// glibc's allocator was a sixth of the runner's CPU under load (perf:
// `_int_malloc`, `malloc_consolidate`); mimalloc's per-thread heaps suit a
// server that allocates per request on every worker thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "local-runner",
    version,
    about = "edgegate, self-hosted: an OpenAI-compatible gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway with the config in wrangler.toml.
    Serve(ServeArgs),
    /// Validate the config and print what it describes.
    Check(ConfigArgs),
    /// Start simulated regional backends and the gateway in front of them.
    Demo(DemoArgs),
    /// Call a running gateway's admin API (usage, tenants, keys).
    Admin(AdminArgs),
}

#[derive(Args, Clone)]
struct DemoArgs {
    #[arg(long, default_value = "wrangler.toml")]
    config: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Check(args) => check(&args),
        Command::Serve(args) => runtime.block_on(async {
            let settings = Settings::load(&args.config.config, args.config.env.as_deref())?;
            serve(settings, args, shutdown_signal()).await
        }),
        Command::Demo(args) => runtime.block_on(demo::run(args.config, args.listen)),
        Command::Admin(args) => {
            // A refusal is the operator's answer, not a crash: one line.
            if let Err(e) = runtime.block_on(admin_cli::run(args)) {
                eprintln!("local-runner admin: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn check(args: &ConfigArgs) -> Result<()> {
    let settings = Settings::load(&args.config, args.env.as_deref())?;
    let gateway = edgegate_core::Gateway::from_json(&settings.gateway_json(), &settings.secrets)
        .map_err(|e| anyhow::anyhow!("{}: {e}", settings.source.display()))?;
    let c = gateway.config();
    println!("{}: the gateway config is valid", settings.source.display());
    println!(
        "tiers:      {}",
        c.tiers
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "tenants:    {}",
        c.tenants
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "jwt issuers: {}",
        c.jwt_issuers
            .iter()
            .map(|i| i.issuer.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for m in &c.models {
        let versions: Vec<_> = m
            .versions
            .iter()
            .map(|v| format!("{} -> {}", v.name, v.upstream_model))
            .collect();
        println!(
            "model:      {} (aliases: {}; versions: {})",
            m.name,
            m.aliases.join(", "),
            versions.join(", ")
        );
    }
    for r in &c.routes {
        let split: Vec<_> = r
            .split
            .iter()
            .map(|(v, w)| format!("{}={w}", c.models[r.model].versions[*v].name))
            .collect();
        println!(
            "route:      {} split [{}] fallback {} cache {} safety {:?}",
            c.models[r.model].name,
            split.join(", "),
            r.fallback.len(),
            if r.settings.cache.enabled {
                "on"
            } else {
                "off"
            },
            r.settings.safety.injection
        );
    }
    for r in &c.regions {
        let urls: Vec<&str> = r.replicas.iter().map(|x| x.base_url.as_str()).collect();
        println!(
            "region:     {} {} ({:.2}, {:.2}) residency {}",
            r.name,
            urls.join(" "),
            r.location.latitude,
            r.location.longitude,
            r.residency.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
