//! A tenant's budget headroom as the admin API shows it
//! (`GET /admin/v1/budgets?tenant=`): what is left now of the tenant's
//! limits (its shards summed) and of the budgets its run-time keys carry —
//! each key's own `limits`, and each key's user's under a tier with
//! `per_user` — read from the quota stores that hold them, never changed by
//! the read. (A user known only from a token or a request's `user` field
//! has no record to be found by, so it is not listed.)
//!
//! The directory plans the read ([`plan`]: it holds the keys), the host
//! asks each of the tenant's stores its [`QuotaPeek`], and
//! [`super::remaining::report_naming_keys`] merges the answers.

use super::placement;
use super::remaining::QuotaPeek;
use super::{Budget, QuotaKey};
use crate::config::{Config, Tenant};
use crate::directory::KeyRecord;
use serde::{Deserialize, Serialize};

/// What a budgets report asks each of a tenant's quota stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetPlan {
    pub tenant: String,
    pub peeks: Vec<QuotaPeek>,
}

/// The plan for `tenant`, whose run-time keys are `keys`: a peek per
/// shard, each with the budgets of the usable keys (not revoked, not
/// expired at `now_ms`) kept there, once each.
pub fn plan(config: &Config, tenant: &Tenant, keys: &[KeyRecord], now_ms: u64) -> BudgetPlan {
    let shards = tenant.quota_shards;
    let mut at: Vec<(QuotaKey, Vec<Budget>)> = QuotaKey::all(&tenant.id, shards)
        .into_iter()
        .map(|key| (key, Vec::new()))
        .collect();
    let usable = keys.iter().filter(|k| {
        k.revoked_ms.is_none()
            && !k.standing.revoked
            && k.standing.expires_ms.is_none_or(|at| at > now_ms)
    });
    for key in usable {
        let own = key.standing.budget.clone().map(|l| (l, key.id.clone()));
        let budgets = placement::budgets_of(config, tenant.tier, own, key.user.as_deref());
        if budgets.is_empty() {
            continue;
        }
        let home = placement::store(&tenant.id, shards, &budgets, "");
        if let Some((_, kept)) = at.iter_mut().find(|(k, _)| *k == home) {
            for budget in budgets {
                if !kept.iter().any(|b| b.level == budget.level) {
                    kept.push(budget);
                }
            }
        }
    }
    let limits = config.tiers[tenant.tier].limits.shard(shards);
    BudgetPlan {
        tenant: tenant.id.clone(),
        peeks: at
            .into_iter()
            .map(|(key, budgets)| QuotaPeek {
                key,
                limits: limits.clone(),
                presented: None,
                budgets,
            })
            .collect(),
    }
}
