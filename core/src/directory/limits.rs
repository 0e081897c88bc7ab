//! A key's own limits, inside its tenant's: requests and tokens per minute
//! (with burst), tokens and cost per day and per month, concurrent
//! requests, and a model subset. A limit left out does not bind the key
//! (its tenant's still does).

use crate::config::Config;
use crate::error::GatewayError;
use crate::quota::QuotaLimits;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// No limit at this level: a bucket this large never runs out. The
/// largest integer JSON carries exactly through JavaScript (the Worker
/// reads its objects' commands with `JSON.parse`).
pub const UNLIMITED: u64 = (1 << 53) - 1;

/// `limits` as the admin API takes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimitsInput {
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    #[serde(default)]
    pub request_burst: Option<u64>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub token_burst: Option<u64>,
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    #[serde(default)]
    pub cost_per_day_usd: Option<f64>,
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
    #[serde(default)]
    pub cost_per_month_usd: Option<f64>,
    #[serde(default)]
    pub max_concurrent: Option<u64>,
    /// Model names or aliases the key may use (within its tenant's).
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// A key's limits as kept: costs in micro-dollars.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimits {
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    #[serde(default)]
    pub request_burst: Option<u64>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub token_burst: Option<u64>,
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    #[serde(default)]
    pub cost_per_day_micros: Option<u64>,
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
    #[serde(default)]
    pub cost_per_month_micros: Option<u64>,
    #[serde(default)]
    pub max_concurrent: Option<u64>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

fn bad(field: &str, message: &str) -> GatewayError {
    let param = format!("limits.{field}");
    GatewayError::invalid(format!("`{param}` {message}."), Some(&param))
}

impl KeyLimitsInput {
    /// Checked (every number above 0, every model known) and kept.
    pub fn validate(&self, config: &Config) -> Result<KeyLimits, GatewayError> {
        let count = |field: &str, v: Option<u64>| match v {
            Some(0) => Err(bad(field, "must be greater than 0")),
            v => Ok(v),
        };
        let usd = |field: &str, v: Option<f64>| match v {
            None => Ok(None),
            Some(usd) if usd.is_finite() && usd > 0.0 => Ok(Some((usd * 1e6).round() as u64)),
            Some(_) => Err(bad(field, "must be a finite number of dollars above 0")),
        };
        if let Some(models) = &self.models {
            if models.is_empty() {
                return Err(bad("models", "must name at least one model"));
            }
            if let Some(i) = models.iter().position(|m| config.model(m).is_none()) {
                return Err(bad(
                    &format!("models[{i}]"),
                    "is not a model of this gateway",
                ));
            }
        }
        Ok(KeyLimits {
            requests_per_minute: count("requests_per_minute", self.requests_per_minute)?,
            request_burst: count("request_burst", self.request_burst)?,
            tokens_per_minute: count("tokens_per_minute", self.tokens_per_minute)?,
            token_burst: count("token_burst", self.token_burst)?,
            tokens_per_day: count("tokens_per_day", self.tokens_per_day)?,
            cost_per_day_micros: usd("cost_per_day_usd", self.cost_per_day_usd)?,
            tokens_per_month: count("tokens_per_month", self.tokens_per_month)?,
            cost_per_month_micros: usd("cost_per_month_usd", self.cost_per_month_usd)?,
            max_concurrent: count("max_concurrent", self.max_concurrent)?,
            models: self.models.clone(),
        })
    }
}

impl KeyLimits {
    /// The key's budget, if any quota limit is set: a per-minute limit
    /// left out is unlimited, a burst defaults to its per-minute rate.
    pub fn budget(&self) -> Option<QuotaLimits> {
        let any = [
            self.requests_per_minute,
            self.request_burst,
            self.tokens_per_minute,
            self.token_burst,
            self.tokens_per_day,
            self.cost_per_day_micros,
            self.tokens_per_month,
            self.cost_per_month_micros,
            self.max_concurrent,
        ]
        .iter()
        .any(Option::is_some);
        let rpm = self.requests_per_minute.unwrap_or(UNLIMITED);
        let tpm = self.tokens_per_minute.unwrap_or(UNLIMITED);
        any.then(|| QuotaLimits {
            requests_per_minute: rpm,
            request_burst: self.request_burst.unwrap_or(rpm),
            tokens_per_minute: tpm,
            token_burst: self.token_burst.unwrap_or(tpm),
            tokens_per_day: self.tokens_per_day,
            cost_per_day_micros: self.cost_per_day_micros,
            tokens_per_month: self.tokens_per_month,
            cost_per_month_micros: self.cost_per_month_micros,
            max_concurrent: self.max_concurrent,
        })
    }

    /// As the admin API shows them.
    pub fn view(&self) -> Value {
        let usd = |micros: Option<u64>| micros.map(|m| m as f64 / 1e6);
        json!({
            "requests_per_minute": self.requests_per_minute,
            "request_burst": self.request_burst,
            "tokens_per_minute": self.tokens_per_minute,
            "token_burst": self.token_burst,
            "tokens_per_day": self.tokens_per_day,
            "cost_per_day_usd": usd(self.cost_per_day_micros),
            "tokens_per_month": self.tokens_per_month,
            "cost_per_month_usd": usd(self.cost_per_month_micros),
            "max_concurrent": self.max_concurrent,
            "models": self.models,
        })
    }
}
