//! Budgets inside the tenant's: a user's (and, with the admin API's key
//! limits, a key's), each a quota state of its own kept in the tenant's
//! store, reserved and settled together with the tenant's in the same
//! operation, so no level ever overshoots under concurrency.
//!
//! A request is admitted only if every level admits it. A refusal names
//! the level and the limit that ran out: a limit that can never be met
//! first, else the longest wait, the innermost level on a tie. The
//! `x-ratelimit-*` headers describe the tightest level.

use super::{Amounts, QuotaLimits, QuotaSnapshot, QuotaState, ReserveOutcome};
use crate::error::LimitKind;
use serde::{Deserialize, Serialize};

/// Whose budget a state is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// An API key, by id.
    Key(String),
    /// A user: the token's user claim, the key's user, or the request's
    /// `user` field.
    User(String),
}

impl Level {
    pub fn kind(&self) -> LevelKind {
        match self {
            Level::Key(_) => LevelKind::Key,
            Level::User(_) => LevelKind::User,
        }
    }

    /// The id it is kept under, beside [`LevelKind::name`].
    pub fn id(&self) -> &str {
        match self {
            Level::Key(id) | Level::User(id) => id,
        }
    }

    /// The level back from its stored kind and id.
    pub fn from_stored(kind: &str, id: &str) -> Option<Level> {
        match kind {
            "key" => Some(Level::Key(id.to_owned())),
            "user" => Some(Level::User(id.to_owned())),
            _ => None,
        }
    }
}

/// Which level a limit belongs to, as a refusal names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelKind {
    #[default]
    Tenant,
    Key,
    User,
}

impl LevelKind {
    pub fn name(self) -> &'static str {
        match self {
            LevelKind::Tenant => "tenant",
            LevelKind::Key => "key",
            LevelKind::User => "user",
        }
    }

    /// Whose limit it is, in a sentence ("this API key's …").
    pub fn owner(self) -> &'static str {
        match self {
            LevelKind::Tenant => "",
            LevelKind::Key => "this API key's ",
            LevelKind::User => "this user's ",
        }
    }
}

/// A budget inside the tenant's: whose, and its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub level: Level,
    pub limits: QuotaLimits,
}

/// The tightest of several levels' headers: requests from the level with
/// the fewest left, tokens likewise.
fn tightest(snapshots: impl Iterator<Item = QuotaSnapshot>) -> Option<QuotaSnapshot> {
    snapshots.reduce(|mut t, s| {
        if s.remaining_requests < t.remaining_requests {
            t.limit_requests = s.limit_requests;
            t.remaining_requests = s.remaining_requests;
            t.reset_requests_ms = s.reset_requests_ms;
        }
        if s.remaining_tokens < t.remaining_tokens {
            t.limit_tokens = s.limit_tokens;
            t.remaining_tokens = s.remaining_tokens;
            t.reset_tokens_ms = s.reset_tokens_ms;
        }
        t
    })
}

/// The tenant's state and limits, and each budget with its state, as one
/// store holds them for one request.
pub struct Levels<'a> {
    pub tenant: &'a mut QuotaState,
    pub limits: &'a QuotaLimits,
    pub budgets: Vec<(&'a Budget, &'a mut QuotaState)>,
}

impl Levels<'_> {
    fn snapshot(&self) -> QuotaSnapshot {
        let own = self.tenant.snapshot(self.limits);
        tightest(
            std::iter::once(own).chain(self.budgets.iter().map(|(b, s)| s.snapshot(&b.limits))),
        )
        .unwrap_or(own)
    }

    /// Takes `amounts` at every level, or at none: the refusal names the
    /// level. Reserving an id already outstanding admits again without
    /// taking twice.
    pub fn reserve(
        &mut self,
        now_ms: u64,
        id: &str,
        amounts: Amounts,
        ttl_ms: u64,
    ) -> ReserveOutcome {
        if self.budgets.is_empty() {
            return self
                .tenant
                .reserve(now_ms, self.limits, id, amounts, ttl_ms);
        }
        self.tenant.advance(now_ms, self.limits);
        for (budget, state) in &mut self.budgets {
            state.advance(now_ms, &budget.limits);
        }
        if self.tenant.reservation(id).is_some() {
            return ReserveOutcome::Admit {
                snapshot: self.snapshot(),
            };
        }
        let mut refusal: Option<(LevelKind, LimitKind, Option<u64>)> = None;
        let levels = self
            .budgets
            .iter()
            .map(|(b, s)| (b.level.kind(), &**s, &b.limits))
            .chain(std::iter::once((
                LevelKind::Tenant,
                &*self.tenant,
                self.limits,
            )));
        for (level, state, limits) in levels {
            let Some((limit, wait)) = state.first_denial(now_ms, limits, amounts) else {
                continue;
            };
            let longer = match (&refusal, wait) {
                (None, _) => true,
                (Some((_, _, None)), _) => false,
                (Some(_), None) => true,
                (Some((_, _, Some(held))), Some(ms)) => ms > *held,
            };
            if longer {
                refusal = Some((level, limit, wait));
            }
        }
        if let Some((level, limit, retry_after_ms)) = refusal {
            return ReserveOutcome::Deny {
                level,
                limit,
                retry_after_ms,
                snapshot: self.snapshot(),
            };
        }
        self.tenant
            .reserve(now_ms, self.limits, id, amounts, ttl_ms);
        for (budget, state) in &mut self.budgets {
            state.reserve(now_ms, &budget.limits, id, amounts, ttl_ms);
        }
        ReserveOutcome::Admit {
            snapshot: self.snapshot(),
        }
    }

    /// Charges the real usage at every level; false when the tenant's
    /// reservation was already settled, released or expired.
    pub fn settle(&mut self, now_ms: u64, id: &str, actual: Amounts) -> bool {
        for (budget, state) in &mut self.budgets {
            state.settle(now_ms, &budget.limits, id, actual);
        }
        self.tenant.settle(now_ms, self.limits, id, actual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_305_600_000;

    fn limits(burst: u64) -> QuotaLimits {
        QuotaLimits {
            requests_per_minute: 1,
            request_burst: burst,
            tokens_per_minute: 1_000_000,
            token_burst: 1_000_000,
            tokens_per_day: None,
            cost_per_day_micros: None,
            tokens_per_month: None,
            cost_per_month_micros: None,
            max_concurrent: None,
        }
    }

    fn one() -> Amounts {
        Amounts {
            requests: 1,
            tokens: 10,
            cost_micros: 0,
        }
    }

    #[test]
    fn every_level_admits_or_none_takes_and_the_refusal_names_its_level() {
        let tenant_limits = limits(1_000);
        let key = Budget {
            level: Level::Key("key_1".into()),
            limits: limits(20),
        };
        let user = Budget {
            level: Level::User("u-1".into()),
            limits: limits(5),
        };
        let mut tenant = QuotaState::new(&tenant_limits, T0);
        let mut key_state = QuotaState::new(&key.limits, T0);
        let mut user_state = QuotaState::new(&user.limits, T0);
        let mut admitted = 0;
        for i in 0..50 {
            let mut levels = Levels {
                tenant: &mut tenant,
                limits: &tenant_limits,
                budgets: vec![(&key, &mut key_state), (&user, &mut user_state)],
            };
            match levels.reserve(T0, &format!("r{i}"), one(), 60_000) {
                ReserveOutcome::Admit { snapshot } => {
                    admitted += 1;
                    // The tightest level: the user's.
                    assert_eq!(snapshot.limit_requests, 1);
                    assert_eq!(snapshot.remaining_requests, 5 - admitted);
                }
                ReserveOutcome::Deny { level, limit, .. } => {
                    assert_eq!((level, limit), (LevelKind::User, LimitKind::Requests));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(admitted, 5);
        // The refused requests took nothing from the key or the tenant.
        assert_eq!(key_state.open_count(), 5);
        assert_eq!(tenant.open_count(), 5);
        // Settling reaches every level.
        let mut levels = Levels {
            tenant: &mut tenant,
            limits: &tenant_limits,
            budgets: vec![(&key, &mut key_state), (&user, &mut user_state)],
        };
        assert!(levels.settle(T0, "r0", one()));
        assert!(!levels.settle(T0, "r0", one()));
        assert_eq!(
            (
                tenant.open_count(),
                key_state.open_count(),
                user_state.open_count()
            ),
            (4, 4, 4)
        );
    }

    #[test]
    fn a_level_that_can_never_fit_wins_over_a_wait() {
        let tenant_limits = limits(1);
        let key = Budget {
            level: Level::Key("key_1".into()),
            limits: QuotaLimits {
                token_burst: 5,
                ..limits(10)
            },
        };
        // The tenant's one request is taken: it waits a minute.
        let mut tenant = QuotaState::new(&tenant_limits, T0);
        tenant.reserve(T0, &tenant_limits, "other", one(), 60_000);
        let mut key_state = QuotaState::new(&key.limits, T0);
        let mut levels = Levels {
            tenant: &mut tenant,
            limits: &tenant_limits,
            budgets: vec![(&key, &mut key_state)],
        };
        match levels.reserve(T0, "r", one(), 60_000) {
            ReserveOutcome::Deny {
                level: LevelKind::Key,
                limit: LimitKind::Tokens,
                retry_after_ms: None,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stored_levels_read_back() {
        for level in [Level::Key("key_1".into()), Level::User("u:1@x".into())] {
            let kind = level.kind().name();
            assert_eq!(Level::from_stored(kind, level.id()), Some(level.clone()));
        }
        assert_eq!(Level::from_stored("tenant", "x"), None);
    }
}
