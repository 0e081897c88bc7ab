//! Where a caller's quota is kept: the budgets a request must fit inside
//! its tenant's (its key's, its user's) and the quota store holding them
//! all, one of the tenant's shards (a budget's requests all go to one, so
//! it holds whole there).

use super::{Budget, Level, QuotaKey, QuotaLimits};
use crate::auth::Principal;
use crate::config::Config;
use crate::routing;

/// The budgets a request of `principal` acting for `user` must fit inside
/// its tenant's: a run-time key's own, then the user's when the tier names
/// `per_user`.
pub fn budgets(config: &Config, principal: &Principal, user: Option<&str>) -> Vec<Budget> {
    let key = principal.key_budget.clone().zip(principal.key_id.clone());
    budgets_of(config, principal.tier, key, user)
}

/// The budgets of a request in tier `tier` by a key with `key`'s id and
/// limits (if it has its own) acting for `user`.
pub fn budgets_of(
    config: &Config,
    tier: usize,
    key: Option<(QuotaLimits, String)>,
    user: Option<&str>,
) -> Vec<Budget> {
    let tier = &config.tiers[tier];
    let key_budget = key.map(|(limits, id)| Budget {
        level: Level::Key(id),
        limits,
    });
    let user_budget = tier.per_user.zip(user).map(|(user_tier, user)| Budget {
        level: Level::User(budget_user_id(user)),
        limits: config.tiers[user_tier].limits.clone(),
    });
    key_budget.into_iter().chain(user_budget).collect()
}

/// The quota store of a request with `budgets` among its tenant's
/// `shards`: the first budget's (by its id), else spread by `request_id`.
pub fn store(tenant_id: &str, shards: u32, budgets: &[Budget], request_id: &str) -> QuotaKey {
    let spread = budgets.first().map_or(request_id, |b| b.level.id());
    let shard = (routing::stable_hash(&[spread]) % u64::from(shards.max(1))) as u32;
    QuotaKey::shard(tenant_id, shard, shards)
}

/// The id a user's budget is kept under: the user as given, or, past
/// 128 bytes, a digest of it (a client's `user` field is free text).
fn budget_user_id(user: &str) -> String {
    if user.len() <= crate::names::MAX_NAME_CHARS {
        user.to_owned()
    } else {
        use sha2::{Digest, Sha256};
        format!("sha256:{}", hex::encode(Sha256::digest(user.as_bytes())))
    }
}
