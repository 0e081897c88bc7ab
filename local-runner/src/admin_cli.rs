//! `local-runner admin …`: a running gateway's admin API from the command
//! line (this runner's, or the Worker's: the API is the same). The URL and
//! the admin key come from flags or the environment (`EDGEGATE_URL`,
//! `EDGEGATE_ADMIN_KEY`); answers print as a table, or as the API's JSON
//! with `--json`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

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
    match args.command {
        AdminCommand::Usage(u) => {
            let params = [
                ("tenant", u.tenant),
                ("key", u.key),
                ("from", u.from),
                ("to", u.to),
                ("group_by", u.group_by),
            ];
            let query: Vec<(&str, String)> = params
                .into_iter()
                .filter_map(|(name, value)| value.map(|v| (name, v)))
                .collect();
            let report = get(&base, "/admin/v1/usage", &query, &key).await?;
            if args.json {
                println!("{report:#}");
            } else {
                print!("{}", usage_table(&report));
            }
            Ok(())
        }
    }
}

async fn get(base: &str, path: &str, query: &[(&str, String)], key: &str) -> Result<Value> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .get(&url)
        .query(query)
        .bearer_auth(key)
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

/// The report as aligned columns: its groups, then the counts; a total last.
fn usage_table(report: &Value) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for by in report["group_by"].as_array().into_iter().flatten() {
        match by.as_str() {
            Some("model") => columns.extend(["model", "version"]),
            Some(other) => columns.push(other),
            None => {}
        }
    }
    let dimensions = columns.len();
    columns.extend([
        "requests",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "errors",
        "cache_hits",
        "degraded",
    ]);
    let cell = |row: &Value, name: &str| match &row[name] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) if name == "cost_usd" => format!("{:.6}", n.as_f64().unwrap_or(0.0)),
        other => other.to_string(),
    };
    let mut rows: Vec<Vec<String>> = vec![columns.iter().map(|c| (*c).to_owned()).collect()];
    for row in report["data"].as_array().into_iter().flatten() {
        rows.push(columns.iter().map(|c| cell(row, c)).collect());
    }
    let total = &report["total"];
    rows.push(
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| match i {
                0 => "total".to_owned(),
                i if i < dimensions => String::new(),
                _ => cell(total, c),
            })
            .collect(),
    );
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (v, w))| {
                if i < dimensions {
                    format!("{v:<w$}")
                } else {
                    format!("{v:>w$}")
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_report_prints_as_aligned_columns_with_a_total() {
        let report = json!({
            "group_by": ["model"],
            "data": [
                {"model": "chat", "version": "v1", "requests": 2, "input_tokens": 20,
                 "output_tokens": 6, "cost_usd": 0.000032, "errors": 0, "cache_hits": 0, "degraded": 0},
                {"model": "chat", "version": null, "requests": 1, "input_tokens": 0,
                 "output_tokens": 0, "cost_usd": 0.0, "errors": 0, "cache_hits": 1, "degraded": 0},
            ],
            "total": {"requests": 3, "input_tokens": 20, "output_tokens": 6, "cost_usd": 0.000032,
                      "errors": 0, "cache_hits": 1, "degraded": 0},
        });
        let table = usage_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("model  version  requests"), "{table}");
        assert!(lines[1].contains("0.000032"), "{table}");
        assert!(lines[2].starts_with("chat   -"), "{table}");
        assert!(lines[3].starts_with("total"), "{table}");
        assert!(lines[3].contains(" 3 "), "{table}");
    }
}
