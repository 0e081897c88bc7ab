//! Prompt screening applied before forwarding, per route: prompt-injection
//! detection (flag or block) and PII redaction.

mod scan;

pub use scan::{InjectionMode, RedactionCounts, redact_pii, screen_injection};

use crate::config::SafetyPolicy;
use crate::error::GatewayError;
use crate::request::{Endpoint, ParsedBody};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What screening found; never contains prompt text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyReport {
    /// The injection rule that matched (flag mode).
    pub injection_rule: Option<String>,
    pub redactions: RedactionCounts,
}

impl SafetyReport {
    /// Nothing was flagged or redacted.
    pub fn is_empty(&self) -> bool {
        self.injection_rule.is_none() && self.redactions.total() == 0
    }
}

/// Screens and redacts the prompt text of `parsed` in place.
pub fn apply(policy: &SafetyPolicy, parsed: &mut ParsedBody) -> Result<SafetyReport, GatewayError> {
    let mut report = SafetyReport::default();
    if policy.injection == InjectionMode::Off && !policy.redact_pii {
        return Ok(report);
    }
    let field = match parsed.endpoint {
        Endpoint::ChatCompletions => "messages",
        Endpoint::Completions => "prompt",
        Endpoint::Embeddings => "input",
        Endpoint::Models => return Ok(report),
    };
    let mut rule = None;
    if let Some(v) = parsed.body.get_mut(field) {
        for_each_prompt_text(v, &mut |text: &mut String| {
            if policy.injection != InjectionMode::Off && rule.is_none() {
                rule = screen_injection(text);
            }
            if policy.redact_pii
                && let Some((redacted, counts)) = redact_pii(text)
            {
                *text = redacted;
                report.redactions.add(counts);
            }
        });
    }
    if let Some(rule) = rule {
        if policy.injection == InjectionMode::Block {
            return Err(GatewayError::ContentBlocked {
                reason: format!("possible prompt injection ({rule})"),
            });
        }
        report.injection_rule = Some(rule.to_owned());
    }
    Ok(report)
}

/// Visits every prompt string: message contents (strings and text parts),
/// completion prompts and embedding inputs. Token-id arrays are skipped.
fn for_each_prompt_text(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(m) => {
                        if let Some(content) = m.get_mut("content") {
                            for_each_prompt_text(content, f);
                        } else if let Some(Value::String(text)) = m.get_mut("text") {
                            f(text);
                        }
                    }
                    Value::String(s) => f(s),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}
