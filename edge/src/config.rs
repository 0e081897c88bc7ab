//! The gateway, built once per isolate from the `gateway` var
//! (`[vars.gateway]` in wrangler.toml) and the secrets it names.

use edgegate_core::config::secret_names;
use edgegate_core::{Gateway, GatewayError, Secrets};
use serde_json::Value;
use std::cell::OnceCell;
use std::rc::Rc;
use worker::{Env, console_error};

thread_local! {
    // Vars and secrets are fixed for an isolate's life: a new deployment or
    // `wrangler secret put` starts new isolates.
    static GATEWAY: OnceCell<Result<Rc<Gateway>, GatewayError>> = const { OnceCell::new() };
}

/// The isolate's gateway, or the error to answer every request with.
pub fn gateway(env: &Env) -> Result<Rc<Gateway>, GatewayError> {
    GATEWAY.with(|cell| cell.get_or_init(|| build(env)).clone())
}

fn build(env: &Env) -> Result<Rc<Gateway>, GatewayError> {
    let config: Value = env.object_var("gateway").map_err(|e| {
        console_error!("edgegate: the `gateway` var is missing or not an object: {e}");
        misconfigured()
    })?;
    let secrets = named_secrets(&config, env);
    Gateway::from_json(&config.to_string(), &secrets)
        .map(Rc::new)
        .map_err(|e| {
            // Config errors name the field, never a secret's value.
            console_error!("edgegate: invalid gateway config: {e}");
            misconfigured()
        })
}

/// The secrets the config refers to by name (each JWT issuer's
/// `hs256_secret`). A missing one is left out: the core reports it by field.
fn named_secrets(config: &Value, env: &Env) -> Secrets {
    secret_names(config)
        .into_iter()
        .filter_map(|name| {
            let value = env.secret(name).ok()?.to_string();
            Some((name.to_owned(), value))
        })
        .collect()
}

/// Clients learn only that the deployment is broken; the details are in the logs.
fn misconfigured() -> GatewayError {
    GatewayError::Internal {
        message: "the gateway configuration is invalid; see the Worker's logs".into(),
    }
}
