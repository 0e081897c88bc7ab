//! `observability`: what the hosts say about themselves. Per-tenant metric
//! series exist only for the tenants listed, so a gateway with thousands
//! of tenants keeps a bounded number of series; the rest are `other`.

use super::raw::RawObservability;
use super::{ConfigError, Result};
use std::collections::BTreeSet;

/// The most tenants with series of their own.
pub const MAX_METRICS_TENANTS: usize = 100;
/// The tenant label of every tenant not listed.
pub const OTHER_TENANTS: &str = "other";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observability {
    /// Tenants whose requests, tokens and cost have series of their own.
    pub metrics_tenants: BTreeSet<String>,
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

pub(super) fn validate(raw: Option<&RawObservability>) -> Result<Observability> {
    let Some(raw) = raw else {
        return Ok(Observability::default());
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(tenants: &[&str]) -> RawObservability {
        RawObservability {
            metrics_tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        }
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
