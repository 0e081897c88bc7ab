//! Reads the same `wrangler.toml` the Worker deploys with: the gateway config
//! from `[vars.gateway]` (or `[env.NAME.vars.gateway]`: like wrangler, an
//! environment's vars replace the top-level ones), and the secrets it names
//! from `.dev.vars` beside the file (`.dev.vars.NAME` for an environment),
//! then from the process environment.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Settings {
    pub source: PathBuf,
    /// The `[vars.gateway]` table as JSON, exactly what the Worker receives.
    pub gateway: Value,
    /// Only the secrets the config names; nothing else from the environment.
    pub secrets: BTreeMap<String, String>,
}

impl Settings {
    pub fn load(path: &Path, env: Option<&str>) -> Result<Settings> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let root: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let (vars, where_) = match env {
            None => (root.get("vars"), "[vars]".to_owned()),
            Some(name) => {
                let env_table = root
                    .get("env")
                    .and_then(|e| e.get(name))
                    .with_context(|| format!("{} has no [env.{name}]", path.display()))?;
                (env_table.get("vars"), format!("[env.{name}.vars]"))
            }
        };
        let gateway = vars
            .and_then(|v| v.get("gateway"))
            .with_context(|| format!("{} has no gateway table in {where_}", path.display()))?;
        let gateway = serde_json::to_value(gateway)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let dev_vars = match env {
            None => dir.join(".dev.vars"),
            Some(name) => dir.join(format!(".dev.vars.{name}")),
        };
        let file_secrets = match std::fs::read_to_string(&dev_vars) {
            Ok(text) => parse_dev_vars(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => bail!("reading {}: {e}", dev_vars.display()),
        };
        let mut secrets = BTreeMap::new();
        for name in edgegate_core::config::secret_names(&gateway) {
            let value = file_secrets
                .get(name)
                .cloned()
                .or_else(|| std::env::var(name).ok());
            if let Some(value) = value {
                secrets.insert(name.to_owned(), value);
            }
        }
        Ok(Settings {
            source: path.to_path_buf(),
            gateway,
            secrets,
        })
    }

    pub fn gateway_json(&self) -> String {
        self.gateway.to_string()
    }

    /// The secrets the config names, for the sandbox.
    pub fn secret_pairs(&self) -> Vec<(String, String)> {
        self.secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The body limit, so the host never reads more than the core would accept.
    pub fn max_body_bytes(&self) -> usize {
        self.gateway
            .pointer("/limits/max_body_bytes")
            .and_then(Value::as_u64)
            .map_or(1 << 20, |n| n as usize)
    }
}

/// `.dev.vars` is dotenv: `NAME=value`, optional quotes, `#` comments.
/// Hand-read rather than with `dotenvy`: wrangler's `.dev.vars` dialect (the
/// npm `dotenv` parser) takes unquoted values with spaces
/// (`H=authorization=Bearer x`), which `dotenvy` refuses.
fn parse_dev_vars(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_owned(), unquoted.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_replace_top_level_and_secrets_come_from_dev_vars() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wrangler.toml");
        std::fs::write(
            &path,
            r#"
name = "x"
[vars.gateway]
regions = []
[[vars.gateway.jwt_issuers]]
issuer = "a"
hs256_secret = "MY_SECRET"
[env.staging.vars.gateway]
regions = ["staging"]
"#,
        )
        .expect("write");
        std::fs::write(
            dir.path().join(".dev.vars"),
            "# comment\nMY_SECRET=\"s3cr3t\"\nOTHER=1\n",
        )
        .expect("write");
        let s = Settings::load(&path, None).expect("load");
        assert_eq!(
            s.secrets.get("MY_SECRET").map(String::as_str),
            Some("s3cr3t")
        );
        assert!(!s.secrets.contains_key("OTHER"), "only named secrets");
        let staging = Settings::load(&path, Some("staging")).expect("load env");
        assert_eq!(staging.gateway["regions"][0], "staging");
        assert!(Settings::load(&path, Some("prod")).is_err());
    }

    #[test]
    fn dev_vars_take_unquoted_values_with_spaces_as_wrangler_does() {
        let vars = parse_dev_vars("H=authorization=Bearer x \nQ='a b'\n# c=d\n");
        assert_eq!(
            vars.get("H").map(String::as_str),
            Some("authorization=Bearer x")
        );
        assert_eq!(vars.get("Q").map(String::as_str), Some("a b"));
        assert_eq!(vars.len(), 2);
    }
}
