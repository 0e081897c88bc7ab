//! `observability`: what the hosts say about themselves. Per-tenant metric
//! series exist only for the tenants listed, so a gateway with thousands
//! of tenants keeps a bounded number of series; the rest are `other`.
//! Spans go over OTLP/HTTP when `otlp_endpoint` is set.

use super::raw::RawObservability;
use super::{ConfigError, Credential, Lookup, Result};
use std::collections::BTreeSet;

/// Spans held for export by default; more are dropped and counted.
pub const DEFAULT_OTLP_QUEUE_SPANS: usize = 4096;
/// The most spans a host may be asked to hold.
pub const MAX_OTLP_QUEUE_SPANS: usize = 1 << 20;

/// The most tenants with series of their own.
pub const MAX_METRICS_TENANTS: usize = 100;
/// The tenant label of every tenant not listed.
pub const OTHER_TENANTS: &str = "other";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observability {
    /// Tenants whose requests, tokens and cost have series of their own.
    pub metrics_tenants: BTreeSet<String>,
    /// Where spans are exported, if anywhere.
    pub otlp: Option<Otlp>,
}

/// An OTLP/HTTP (protobuf) trace export.
#[derive(Debug, Clone, PartialEq)]
pub struct Otlp {
    /// `otlp_endpoint` + `/v1/traces` (the OTLP/HTTP convention for a
    /// collector's base URL).
    pub traces_url: String,
    /// Headers each export carries (`otlp_headers_secret`: `name=value`
    /// pairs, comma-separated, as `OTEL_EXPORTER_OTLP_HEADERS`); the
    /// values never show in `Debug`.
    pub headers: Vec<(String, Credential)>,
    /// Spans held for export at most; past it they are dropped and counted.
    pub queue_spans: usize,
    /// The share of the traces the gateway starts that are sampled (a
    /// client's trace keeps its own flag): 0 to 1.
    pub sample_ratio: f64,
}

impl Observability {
    /// The tenant label of a request of `tenant`: itself if listed, else
    /// [`OTHER_TENANTS`] (a request refused before it had a tenant too).
    pub fn tenant_label<'a>(&'a self, tenant: Option<&'a str>) -> &'a str {
        match tenant {
            Some(t) if self.metrics_tenants.contains(t) => t,
            _ => OTHER_TENANTS,
        }
    }
}

pub(super) fn validate(raw: Option<&RawObservability>, lookup: &Lookup) -> Result<Observability> {
    let Some(raw) = raw else {
        return Ok(Observability::default());
    };
    let otlp = match &raw.otlp_endpoint {
        Some(endpoint) => Some(validate_otlp(raw, endpoint, lookup)?),
        None => {
            for (field, set) in [
                ("otlp_headers_secret", raw.otlp_headers_secret.is_some()),
                ("otlp_queue_spans", raw.otlp_queue_spans.is_some()),
                ("otlp_sample_ratio", raw.otlp_sample_ratio.is_some()),
            ] {
                if set {
                    return Err(ConfigError::new(
                        format!("observability.{field}"),
                        "applies only with observability.otlp_endpoint",
                    ));
                }
            }
            None
        }
    };
    let path = "observability.metrics_tenants";
    if raw.metrics_tenants.len() > MAX_METRICS_TENANTS {
        return Err(ConfigError::new(
            path,
            format!("at most {MAX_METRICS_TENANTS} tenants have series of their own"),
        ));
    }
    for (i, tenant) in raw.metrics_tenants.iter().enumerate() {
        if !crate::names::is_valid(tenant) {
            return Err(ConfigError::new(
                format!("{path}[{i}]"),
                format!("a tenant id {}", crate::names::NAME_RULE),
            ));
        }
        if tenant == OTHER_TENANTS {
            return Err(ConfigError::new(
                format!("{path}[{i}]"),
                format!("`{OTHER_TENANTS}` is the label of the tenants not listed"),
            ));
        }
    }
    Ok(Observability {
        metrics_tenants: raw.metrics_tenants.iter().cloned().collect(),
        otlp,
    })
}

fn validate_otlp(raw: &RawObservability, endpoint: &str, lookup: &Lookup) -> Result<Otlp> {
    let base = super::region::validate_base_url("observability.otlp_endpoint", endpoint)?;
    let headers = match &raw.otlp_headers_secret {
        Some(name) => {
            let path = "observability.otlp_headers_secret";
            parse_headers(&lookup.secret(path, name)?).map_err(|message| {
                ConfigError::new(path, format!("the secret `{name}` {message}"))
            })?
        }
        None => Vec::new(),
    };
    let queue_spans = match raw.otlp_queue_spans {
        None => DEFAULT_OTLP_QUEUE_SPANS,
        Some(n) if (1..=MAX_OTLP_QUEUE_SPANS as u64).contains(&n) => n as usize,
        Some(_) => {
            return Err(ConfigError::new(
                "observability.otlp_queue_spans",
                format!("must be 1 to {MAX_OTLP_QUEUE_SPANS}"),
            ));
        }
    };
    let sample_ratio = raw.otlp_sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(ConfigError::new(
            "observability.otlp_sample_ratio",
            "must be 0 to 1",
        ));
    }
    Ok(Otlp {
        traces_url: format!("{base}/v1/traces"),
        headers,
        queue_spans,
        sample_ratio,
    })
}

/// `name=value,name=value`; what is wrong never quotes a value.
fn parse_headers(value: &str) -> std::result::Result<Vec<(String, Credential)>, String> {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let mut headers = Vec::new();
    for (i, pair) in value.split(',').enumerate() {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("entry {i} is not `name=value`"));
        };
        let (name, value) = (name.trim(), value.trim());
        if !token(name) {
            return Err(format!("entry {i} has no valid header name"));
        }
        if value.is_empty() || !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return Err(format!("entry {i} ({name}) has no valid header value"));
        }
        headers.push((name.to_ascii_lowercase(), Credential::verbatim(value)));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(tenants: &[&str]) -> RawObservability {
        RawObservability {
            metrics_tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
            otlp_endpoint: None,
            otlp_headers_secret: None,
            otlp_queue_spans: None,
            otlp_sample_ratio: None,
        }
    }

    fn validate(raw: Option<&RawObservability>) -> Result<Observability> {
        let secrets = [
            (
                "OTLP_HEADERS".to_owned(),
                "Authorization=Bearer s3cret, x-team = gpu".to_owned(),
            ),
            ("BAD_HEADERS".to_owned(), "Authorization".to_owned()),
        ]
        .into_iter()
        .collect();
        super::validate(raw, &Lookup::secrets_only(&secrets))
    }

    #[test]
    fn otlp_is_the_collectors_traces_url_with_its_headers() {
        let mut r = raw(&[]);
        r.otlp_endpoint = Some("http://127.0.0.1:4318/".into());
        r.otlp_headers_secret = Some("OTLP_HEADERS".into());
        let otlp = validate(Some(&r)).expect("valid").otlp.expect("otlp");
        assert_eq!(otlp.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(otlp.queue_spans, DEFAULT_OTLP_QUEUE_SPANS);
        let headers: Vec<(&str, &str)> = otlp
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.header_value()))
            .collect();
        assert_eq!(
            headers,
            [("authorization", "Bearer s3cret"), ("x-team", "gpu")]
        );
        assert!(!format!("{otlp:?}").contains("s3cret"), "a secret in Debug");

        r.otlp_headers_secret = Some("BAD_HEADERS".into());
        let e = validate(Some(&r)).expect_err("no value");
        assert_eq!(e.path, "observability.otlp_headers_secret");
        r.otlp_headers_secret = Some("MISSING".into());
        assert_eq!(
            validate(Some(&r)).expect_err("missing").path,
            "observability.otlp_headers_secret"
        );
        r.otlp_headers_secret = None;
        r.otlp_sample_ratio = Some(1.5);
        assert_eq!(
            validate(Some(&r)).expect_err("ratio").path,
            "observability.otlp_sample_ratio"
        );
        r.otlp_sample_ratio = Some(0.25);
        assert_eq!(
            validate(Some(&r))
                .expect("valid")
                .otlp
                .expect("otlp")
                .sample_ratio,
            0.25
        );
        r.otlp_queue_spans = Some(0);
        assert_eq!(
            validate(Some(&r)).expect_err("zero").path,
            "observability.otlp_queue_spans"
        );
        r.otlp_endpoint = Some("collector:4318".into());
        assert_eq!(
            validate(Some(&r)).expect_err("no scheme").path,
            "observability.otlp_endpoint"
        );
        r.otlp_endpoint = None;
        r.otlp_queue_spans = Some(10);
        let e = validate(Some(&r)).expect_err("queue without endpoint");
        assert_eq!(e.path, "observability.otlp_queue_spans");
    }

    #[test]
    fn listed_tenants_are_their_own_label_and_the_rest_other() {
        let o = validate(Some(&raw(&["acme", "globex"]))).expect("valid");
        assert_eq!(o.tenant_label(Some("acme")), "acme");
        assert_eq!(o.tenant_label(Some("initech")), OTHER_TENANTS);
        assert_eq!(o.tenant_label(None), OTHER_TENANTS);
        assert_eq!(validate(None).expect("none"), Observability::default());
    }

    #[test]
    fn a_bad_list_names_its_entry() {
        let e = validate(Some(&raw(&["acme", "a b"]))).expect_err("a space");
        assert_eq!(e.path, "observability.metrics_tenants[1]");
        let e = validate(Some(&raw(&["other"]))).expect_err("other");
        assert_eq!(e.path, "observability.metrics_tenants[0]");
        let many: Vec<String> = (0..=MAX_METRICS_TENANTS).map(|i| format!("t{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let e = validate(Some(&raw(&many))).expect_err("too many");
        assert_eq!(e.path, "observability.metrics_tenants");
    }
}
