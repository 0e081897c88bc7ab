//! `local-runner admin …`: a running gateway's admin API from the command
//! line (this runner's, or the Worker's: the API is the same). The URL and
//! the admin key come from flags or the environment (`EDGEGATE_URL`,
//! `EDGEGATE_ADMIN_KEY`); answers print as a table, or as the API's JSON
//! with `--json`.

mod table;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

#[derive(Args)]
pub struct AdminArgs {
    /// The gateway's base URL [env: EDGEGATE_URL; default http://127.0.0.1:8080].
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// The admin key [env: EDGEGATE_ADMIN_KEY]; the environment keeps it out
    /// of the shell's history and the process list.
    #[arg(long, global = true)]
    pub admin_key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// The usage ledger, summed (GET /admin/v1/usage).
    Usage(UsageArgs),
    /// Latency percentiles per phase (GET /admin/v1/latency).
    Latency(LatencyArgs),
    /// What is left of a tenant's budgets and its keys' (GET /admin/v1/budgets).
    Budgets {
        #[arg(long)]
        tenant: String,
    },
    /// The regions and replicas: health and load (GET /admin/v1/regions).
    Regions,
    /// Tenants: list, show, create, update, disable, enable.
    #[command(subcommand)]
    Tenants(TenantCommand),
    /// API keys: list, show, create, update, rotate, revoke.
    #[command(subcommand)]
    Keys(KeyCommand),
}

#[derive(Args)]
pub struct UsageArgs {
    #[arg(long)]
    pub tenant: Option<String>,
    /// An API key's id.
    #[arg(long)]
    pub key: Option<String>,
    /// First UTC day, YYYY-MM-DD (default: 31 days ending at --to).
    #[arg(long)]
    pub from: Option<String>,
    /// Last UTC day, YYYY-MM-DD (default: today).
    #[arg(long)]
    pub to: Option<String>,
    /// Comma-separated: tenant, key, model, day (default: all four).
    #[arg(long)]
    pub group_by: Option<String>,
}

#[derive(Args)]
pub struct LatencyArgs {
    #[arg(long)]
    pub tenant: Option<String>,
    /// The model that answered.
    #[arg(long)]
    pub model: Option<String>,
    /// First UTC day, YYYY-MM-DD (default: 7 days ending at --to; at most 31).
    #[arg(long)]
    pub from: Option<String>,
    /// Last UTC day, YYYY-MM-DD (default: today).
    #[arg(long)]
    pub to: Option<String>,
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Every tenant, the config's and the run-time ones.
    List,
    Show {
        id: String,
    },
    Create {
        id: String,
        #[command(flatten)]
        settings: TenantSettings,
    },
    /// Changes the settings given.
    Update {
        id: String,
        #[command(flatten)]
        settings: TenantSettings,
    },
    /// Its requests get 403 from the next one on.
    Disable {
        id: String,
    },
    Enable {
        id: String,
    },
}

#[derive(Args)]
pub struct TenantSettings {
    #[arg(long)]
    pub tier: Option<String>,
    /// Comma-separated model names, or `*` for every model.
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Comma-separated CIDRs.
    #[arg(long, value_delimiter = ',')]
    pub ip_allow: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    pub ip_deny: Option<Vec<String>>,
    #[arg(long)]
    pub residency: Option<String>,
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Every key, or one tenant's (never the keys themselves).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    Show {
        id: String,
    },
    /// A new key, printed this once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        fields: KeyFields,
    },
    /// Changes the fields given.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        fields: KeyFields,
    },
    /// A new key under the same id, printed this once; the old one works
    /// for the grace period.
    Rotate {
        id: String,
        #[arg(long, default_value_t = 0)]
        grace_seconds: u64,
    },
    /// Refused from the next request on.
    Revoke {
        id: String,
    },
}

#[derive(Args)]
pub struct KeyFields {
    /// The user every request of the key is made as.
    #[arg(long)]
    pub user: Option<String>,
    /// Unix seconds.
    #[arg(long)]
    pub expires_at: Option<u64>,
    /// The key's limits as the API takes them, a JSON object, e.g.
    /// '{"requests_per_minute": 60, "request_burst": 20, "models": ["gpt-4o-mini"]}'
    /// (`null` removes them).
    #[arg(long, value_parser = parse_json)]
    pub limits: Option<Value>,
}

fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

const TENANT_COLUMNS: &[&str] = &["id", "tier", "models", "residency", "disabled", "source"];
const KEY_COLUMNS: &[&str] = &[
    "id",
    "tenant",
    "name",
    "user",
    "prefix",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "source",
];

/// What one command asks of the API, and how its answer prints.
struct Ask {
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    /// The list's columns, or `None` for one object.
    columns: Option<&'static [&'static str]>,
}

impl Ask {
    fn new(method: Method, path: String) -> Ask {
        Ask {
            method,
            path,
            query: Vec::new(),
            body: None,
            columns: None,
        }
    }

    fn body(mut self, body: Value) -> Ask {
        self.body = Some(body);
        self
    }

    fn list(mut self, columns: &'static [&'static str]) -> Ask {
        self.columns = Some(columns);
        self
    }
}

/// The fields given, as a JSON object.
fn fields(pairs: impl IntoIterator<Item = (&'static str, Option<Value>)>) -> Value {
    let map: Map<String, Value> = pairs
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name.to_owned(), v)))
        .collect();
    Value::Object(map)
}

fn tenant_fields(s: TenantSettings) -> [(&'static str, Option<Value>); 5] {
    [
        ("tier", s.tier.map(Value::from)),
        ("models", s.models.map(Value::from)),
        ("ip_allow", s.ip_allow.map(Value::from)),
        ("ip_deny", s.ip_deny.map(Value::from)),
        ("residency", s.residency.map(Value::from)),
    ]
}

fn key_fields(f: KeyFields) -> [(&'static str, Option<Value>); 3] {
    [
        ("user", f.user.map(Value::from)),
        ("expires_at", f.expires_at.map(Value::from)),
        ("limits", f.limits),
    ]
}

fn tenant_ask(command: TenantCommand) -> Ask {
    let one = |id: &str| format!("/admin/v1/tenants/{id}");
    match command {
        TenantCommand::List => {
            Ask::new(Method::GET, "/admin/v1/tenants".into()).list(TENANT_COLUMNS)
        }
        TenantCommand::Show { id } => Ask::new(Method::GET, one(&id)),
        TenantCommand::Create { id, settings } => {
            let mut body = fields(tenant_fields(settings));
            body["id"] = json!(id);
            Ask::new(Method::POST, "/admin/v1/tenants".into()).body(body)
        }
        TenantCommand::Update { id, settings } => {
            Ask::new(Method::PATCH, one(&id)).body(fields(tenant_fields(settings)))
        }
        TenantCommand::Disable { id } => Ask::new(Method::POST, format!("{}/disable", one(&id))),
        TenantCommand::Enable { id } => Ask::new(Method::POST, format!("{}/enable", one(&id))),
    }
}

fn key_ask(command: KeyCommand) -> Ask {
    let one = |id: &str| format!("/admin/v1/keys/{id}");
    match command {
        KeyCommand::List { tenant } => {
            let mut ask = Ask::new(Method::GET, "/admin/v1/keys".into()).list(KEY_COLUMNS);
            ask.query.extend(tenant.map(|t| ("tenant", t)));
            ask
        }
        KeyCommand::Show { id } => Ask::new(Method::GET, one(&id)),
        KeyCommand::Create {
            tenant,
            name,
            fields: f,
        } => {
            let mut body = fields(key_fields(f));
            body["tenant"] = json!(tenant);
            body["name"] = json!(name);
            Ask::new(Method::POST, "/admin/v1/keys".into()).body(body)
        }
        KeyCommand::Update {
            id,
            name,
            fields: f,
        } => {
            let mut body = fields(key_fields(f));
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            Ask::new(Method::PATCH, one(&id)).body(body)
        }
        KeyCommand::Rotate { id, grace_seconds } => {
            Ask::new(Method::POST, format!("{}/rotate", one(&id)))
                .body(json!({"grace_seconds": grace_seconds}))
        }
        KeyCommand::Revoke { id } => Ask::new(Method::DELETE, one(&id)),
    }
}

/// Runs one admin command; what the API refused is an error naming why.
pub async fn run(args: AdminArgs) -> Result<()> {
    let base = args
        .url
        .or_else(|| std::env::var("EDGEGATE_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let key = args
        .admin_key
        .or_else(|| std::env::var("EDGEGATE_ADMIN_KEY").ok())
        .context("no admin key: pass --admin-key or set EDGEGATE_ADMIN_KEY")?;
    let ask = match args.command {
        AdminCommand::Usage(u) => {
            let params = [
                ("tenant", u.tenant),
                ("key", u.key),
                ("from", u.from),
                ("to", u.to),
                ("group_by", u.group_by),
            ];
            let ask = report_ask("/admin/v1/usage", params);
            return print_report(&base, &ask, &key, args.json, table::usage).await;
        }
        AdminCommand::Latency(l) => {
            let params = [
                ("tenant", l.tenant),
                ("model", l.model),
                ("from", l.from),
                ("to", l.to),
            ];
            let ask = report_ask("/admin/v1/latency", params);
            return print_report(&base, &ask, &key, args.json, table::latency).await;
        }
        AdminCommand::Budgets { tenant } => {
            let ask = report_ask("/admin/v1/budgets", [("tenant", Some(tenant))]);
            return print_report(&base, &ask, &key, args.json, table::budgets).await;
        }
        AdminCommand::Regions => {
            let ask = report_ask("/admin/v1/regions", []);
            return print_report(&base, &ask, &key, args.json, table::regions).await;
        }
        AdminCommand::Tenants(command) => tenant_ask(command),
        AdminCommand::Keys(command) => key_ask(command),
    };
    let answer = call(&base, &ask, &key).await?;
    if args.json {
        println!("{answer:#}");
        return Ok(());
    }
    match ask.columns {
        Some(columns) => print!("{}", table::list(&answer, columns)),
        None => print!("{}", table::object(&answer)),
    }
    if answer.get("key").is_some() {
        eprintln!("The key is shown this once: keep it now.");
    }
    Ok(())
}

async fn call(base: &str, ask: &Ask, key: &str) -> Result<Value> {
    let url = format!("{}{}", base.trim_end_matches('/'), ask.path);
    let mut request = reqwest::Client::new()
        .request(ask.method.clone(), &url)
        .query(&ask.query)
        .bearer_auth(key);
    if let Some(body) = &ask.body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let status = response.status();
    let text = response.text().await.context("reading the answer")?;
    let body: Value = serde_json::from_str(&text)
        .with_context(|| format!("{url} answered {status} with no JSON"))?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("(no message)");
        bail!("{url} answered {status}: {message}");
    }
    Ok(body)
}

/// Asks for a report and prints it: its JSON, or `table`'s rendering.
async fn print_report(
    base: &str,
    ask: &Ask,
    key: &str,
    json: bool,
    table: fn(&Value) -> String,
) -> Result<()> {
    let report = call(base, ask, key).await?;
    if json {
        println!("{report:#}");
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// A report's GET with the parameters given.
fn report_ask<const N: usize>(path: &str, params: [(&'static str, Option<String>); N]) -> Ask {
    let mut ask = Ask::new(Method::GET, path.into());
    ask.query = params
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect();
    ask
}
