//! What is left of a level's limits, as a key holder reads it at
//! `GET /v1/usage`: each limit's size, what is left now and when it is
//! whole again, from the same state reservations are taken from (read,
//! never changed). A tenant with shards sums its shards'.
//!
//! A host is asked one [`QuotaPeek`] per quota store of the caller's
//! tenant (its budgets at the store that holds them) and answers each with
//! a [`Peeked`]; [`report`] merges the answers.

use super::placement;
use super::{Budget, LevelKind, MS_PER_DAY, QuotaKey, QuotaLimits, QuotaState};
use crate::auth::Principal;
use crate::config::Config;
use crate::directory::{PresentedKey, Refusal, UNLIMITED};
use crate::error::GatewayError;
use crate::ledger::Day;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A token bucket refilled per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub per_minute: u64,
    pub burst: u64,
    pub remaining: u64,
    /// Milliseconds until the bucket is full.
    pub full_in_ms: u64,
}

/// A fixed UTC window (a day or a calendar month).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub limit: u64,
    pub used: u64,
    /// When the next window starts (Unix ms).
    pub resets_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub limit: u64,
    pub in_flight: u64,
}

/// What is left of one level's limits at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remaining {
    pub requests: Rate,
    pub tokens: Rate,
    pub tokens_per_day: Option<Window>,
    pub cost_per_day_micros: Option<Window>,
    pub tokens_per_month: Option<Window>,
    pub cost_per_month_micros: Option<Window>,
    pub concurrent: Option<InFlight>,
}

impl QuotaState {
    /// What is left of `limits` at `now_ms`: the state as the next
    /// operation would find it (refilled, windows renewed, expired
    /// reservations charged), without changing it.
    pub fn remaining(&self, limits: &QuotaLimits, now_ms: u64) -> Remaining {
        let mut state = self.clone();
        state.advance(now_ms, limits);
        let c = &state.counters;
        let snapshot = state.snapshot(limits);
        let tomorrow = (now_ms / MS_PER_DAY + 1) * MS_PER_DAY;
        let next_month = u64::from(Day::of_ms(now_ms).next_month().number()) * MS_PER_DAY;
        let window = |limit: Option<u64>, used: u64, resets_at_ms: u64| {
            limit.map(|limit| Window {
                limit,
                used,
                resets_at_ms,
            })
        };
        Remaining {
            requests: Rate {
                per_minute: limits.requests_per_minute,
                burst: limits.request_burst,
                remaining: snapshot.remaining_requests,
                full_in_ms: snapshot.reset_requests_ms,
            },
            tokens: Rate {
                per_minute: limits.tokens_per_minute,
                burst: limits.token_burst,
                remaining: snapshot.remaining_tokens,
                full_in_ms: snapshot.reset_tokens_ms,
            },
            tokens_per_day: window(limits.tokens_per_day, c.day_tokens, tomorrow),
            cost_per_day_micros: window(limits.cost_per_day_micros, c.day_cost_micros, tomorrow),
            tokens_per_month: window(limits.tokens_per_month, c.month_tokens, next_month),
            cost_per_month_micros: window(
                limits.cost_per_month_micros,
                c.month_cost_micros,
                next_month,
            ),
            concurrent: limits.max_concurrent.map(|limit| InFlight {
                limit,
                in_flight: state.open_count() as u64,
            }),
        }
    }
}

impl Rate {
    fn merge(&mut self, o: &Rate) {
        self.per_minute = self.per_minute.saturating_add(o.per_minute);
        self.burst = self.burst.saturating_add(o.burst);
        self.remaining = self.remaining.saturating_add(o.remaining);
        self.full_in_ms = self.full_in_ms.max(o.full_in_ms);
    }

    fn view(&self) -> Value {
        if self.per_minute >= UNLIMITED {
            return Value::Null;
        }
        json!({
            "limit": self.per_minute,
            "burst": self.burst,
            "remaining": self.remaining,
            "resets_in_ms": self.full_in_ms,
        })
    }
}

impl Window {
    fn merge(&mut self, o: &Window) {
        self.limit = self.limit.saturating_add(o.limit);
        self.used = self.used.saturating_add(o.used);
        self.resets_at_ms = self.resets_at_ms.max(o.resets_at_ms);
    }

    fn view(&self, usd: bool) -> Value {
        let amount = |n: u64| if usd { json!(n as f64 / 1e6) } else { json!(n) };
        json!({
            "limit": amount(self.limit),
            "used": amount(self.used),
            "remaining": amount(self.limit.saturating_sub(self.used)),
            "resets_at": self.resets_at_ms / 1000,
        })
    }
}

fn merge_window(mine: &mut Option<Window>, theirs: &Option<Window>) {
    match (mine.as_mut(), theirs) {
        (Some(m), Some(t)) => m.merge(t),
        (None, Some(t)) => *mine = Some(*t),
        _ => {}
    }
}

impl Remaining {
    /// Adds another shard's: limits and what is left sum, the later reset holds.
    pub fn merge(&mut self, o: &Remaining) {
        self.requests.merge(&o.requests);
        self.tokens.merge(&o.tokens);
        merge_window(&mut self.tokens_per_day, &o.tokens_per_day);
        merge_window(&mut self.cost_per_day_micros, &o.cost_per_day_micros);
        merge_window(&mut self.tokens_per_month, &o.tokens_per_month);
        merge_window(&mut self.cost_per_month_micros, &o.cost_per_month_micros);
        match (self.concurrent.as_mut(), &o.concurrent) {
            (Some(m), Some(t)) => {
                m.limit = m.limit.saturating_add(t.limit);
                m.in_flight = m.in_flight.saturating_add(t.in_flight);
            }
            (None, Some(t)) => self.concurrent = Some(*t),
            _ => {}
        }
    }

    /// As `GET /v1/usage` shows it; a limit the level does not have is
    /// null (a per-minute rate of a key without one too).
    fn view(&self, level: LevelKind, whose: Option<&str>) -> Value {
        let window = |w: &Option<Window>, usd| w.as_ref().map_or(Value::Null, |w| w.view(usd));
        let mut v = Map::new();
        v.insert("level".into(), json!(level.name()));
        if let Some(id) = whose {
            v.insert("id".into(), json!(id));
        }
        v.insert("requests_per_minute".into(), self.requests.view());
        v.insert("tokens_per_minute".into(), self.tokens.view());
        v.insert("tokens_per_day".into(), window(&self.tokens_per_day, false));
        v.insert(
            "cost_per_day_usd".into(),
            window(&self.cost_per_day_micros, true),
        );
        v.insert(
            "tokens_per_month".into(),
            window(&self.tokens_per_month, false),
        );
        v.insert(
            "cost_per_month_usd".into(),
            window(&self.cost_per_month_micros, true),
        );
        let concurrent = self.concurrent.map_or(
            Value::Null,
            |c| json!({"limit": c.limit, "in_flight": c.in_flight}),
        );
        v.insert("max_concurrent".into(), concurrent);
        Value::Object(v)
    }
}

/// What one quota store is asked for a key holder's budgets: its tenant's
/// share of the tier's limits there, and the budgets it keeps (the
/// caller's key's and user's, at the one store that holds them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaPeek {
    pub key: QuotaKey,
    pub limits: QuotaLimits,
    /// A run-time key: its tenant's standing may refuse it or hold a newer
    /// budget for it.
    pub presented: Option<PresentedKey>,
    pub budgets: Vec<Budget>,
}

/// A store's answer: what is left at the tenant's level, then at each
/// budget's in the peek's order; or the standing's refusal of the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Peeked {
    Levels { levels: Vec<Remaining> },
    Refused { refusal: Refusal },
}

/// What a host asks its quota stores for `principal`'s remaining budgets
/// (its key's user stands for the user).
pub fn peeks(config: &Config, principal: &Principal) -> Vec<QuotaPeek> {
    let budgets = placement::budgets(config, principal, principal.user.as_deref());
    let shards = principal.tenant(config).map_or(1, |t| t.quota_shards);
    let home = placement::store(&principal.tenant_id, shards, &budgets, "");
    let limits = config.tiers[principal.tier].limits.shard(shards);
    QuotaKey::all(&principal.tenant_id, shards)
        .into_iter()
        .map(|key| QuotaPeek {
            budgets: if key == home {
                budgets.clone()
            } else {
                Vec::new()
            },
            limits: limits.clone(),
            presented: principal.presented.clone(),
            key,
        })
        .collect()
}

/// The stores' answers as the report's `budgets`: the tenant's (its
/// shards summed), then each budget's; a refusal is the key's error.
pub fn report(peeks: &[QuotaPeek], answers: Vec<Peeked>) -> Result<Value, GatewayError> {
    levels(peeks, answers, false)
}

/// As [`report`], each key's level naming its key (for the admin API,
/// which shows many keys' budgets at once).
pub fn report_naming_keys(
    peeks: &[QuotaPeek],
    answers: Vec<Peeked>,
) -> Result<Value, GatewayError> {
    levels(peeks, answers, true)
}

fn levels(
    peeks: &[QuotaPeek],
    answers: Vec<Peeked>,
    name_keys: bool,
) -> Result<Value, GatewayError> {
    let mut tenant: Option<Remaining> = None;
    let mut budgets = Vec::new();
    for (peek, answer) in peeks.iter().zip(answers) {
        let levels = match answer {
            Peeked::Refused { refusal } => return Err(refusal.error()),
            Peeked::Levels { levels } => levels,
        };
        let mut levels = levels.into_iter();
        let Some(own) = levels.next() else {
            return Err(GatewayError::Internal {
                message: format!("quota store {} answered no levels", peek.key),
            });
        };
        match tenant.as_mut() {
            Some(t) => t.merge(&own),
            None => tenant = Some(own),
        }
        budgets.extend(peek.budgets.iter().zip(levels));
    }
    let mut shown: Vec<Value> = tenant
        .map(|t| t.view(LevelKind::Tenant, None))
        .into_iter()
        .collect();
    for (budget, remaining) in budgets {
        let whose = match budget.level.kind() {
            LevelKind::User => Some(budget.level.id()),
            LevelKind::Key if name_keys => Some(budget.level.id()),
            _ => None,
        };
        shown.push(remaining.view(budget.level.kind(), whose));
    }
    Ok(Value::Array(shown))
}

/// What a store answers a peek of its tenant's `limits` and `budgets`:
/// `tenant` the tenant's state there, `budget` each budget's if it has one
/// (a state not made yet is whole).
pub fn answer<'s>(
    limits: &QuotaLimits,
    budgets: &[Budget],
    tenant: Option<&'s QuotaState>,
    budget: impl Fn(&Budget) -> Option<&'s QuotaState>,
    now_ms: u64,
) -> Peeked {
    let whole = |limits: &QuotaLimits| QuotaState::new(limits, now_ms).remaining(limits, now_ms);
    let own = tenant.map_or_else(|| whole(limits), |s| s.remaining(limits, now_ms));
    let levels = std::iter::once(own)
        .chain(budgets.iter().map(|b| {
            budget(b).map_or_else(|| whole(&b.limits), |s| s.remaining(&b.limits, now_ms))
        }))
        .collect();
    Peeked::Levels { levels }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{Amounts, Level};

    const T0: u64 = 1_795_305_600_000;

    fn limits(burst: u64) -> QuotaLimits {
        QuotaLimits {
            requests_per_minute: burst,
            request_burst: burst,
            tokens_per_minute: 1_000,
            token_burst: 1_000,
            tokens_per_day: Some(5_000),
            cost_per_day_micros: None,
            tokens_per_month: None,
            cost_per_month_micros: Some(2_000_000),
            max_concurrent: Some(4),
        }
    }

    fn take(state: &mut QuotaState, limits: &QuotaLimits, id: &str) {
        let amounts = Amounts {
            requests: 1,
            tokens: 100,
            cost_micros: 250_000,
        };
        state.reserve(T0, limits, id, amounts, 60_000);
    }

    #[test]
    fn what_is_left_is_read_from_the_state_without_changing_it() {
        let l = limits(10);
        let mut state = QuotaState::new(&l, T0);
        take(&mut state, &l, "a");
        take(&mut state, &l, "b");
        let before = state.clone();
        let left = state.remaining(&l, T0 + 6_000);
        assert_eq!(state, before);
        // 6 s refill one request (10 a minute) and 100 tokens.
        assert_eq!((left.requests.remaining, left.tokens.remaining), (9, 900));
        assert_eq!(left.requests.full_in_ms, 6_000);
        let day = left.tokens_per_day.expect("a daily window");
        assert_eq!((day.limit, day.used), (5_000, 200));
        assert_eq!(day.resets_at_ms, T0 + 86_400_000);
        let month = left.cost_per_month_micros.expect("a monthly window");
        assert_eq!(month.used, 500_000);
        assert_eq!(Day::of_ms(month.resets_at_ms).to_string(), "2026-12-01");
        assert_eq!(left.concurrent.map(|c| c.in_flight), Some(2));
        assert_eq!(left.cost_per_day_micros, None);
    }

    #[test]
    fn shards_sum_and_each_budget_is_read_where_it_is_kept() {
        let shard = limits(5);
        let key = Budget {
            level: Level::Key("key_1".into()),
            limits: limits(2),
        };
        let peeks: Vec<QuotaPeek> = (0..2)
            .map(|k| QuotaPeek {
                key: QuotaKey::shard("acme", k, 2),
                limits: shard.clone(),
                presented: None,
                budgets: if k == 1 {
                    vec![key.clone()]
                } else {
                    Vec::new()
                },
            })
            .collect();
        let mut tenant = QuotaState::new(&shard, T0);
        take(&mut tenant, &shard, "a");
        let mut key_state = QuotaState::new(&key.limits, T0);
        take(&mut key_state, &key.limits, "a");
        let answers = vec![
            answer(&shard, &[], None, |_| None, T0),
            answer(
                &shard,
                &peeks[1].budgets,
                Some(&tenant),
                |_| Some(&key_state),
                T0,
            ),
        ];
        let shown = report(&peeks, answers).expect("a report");
        assert_eq!(shown[0]["level"], "tenant");
        assert_eq!(shown[0]["requests_per_minute"]["limit"], 10);
        assert_eq!(shown[0]["requests_per_minute"]["remaining"], 9);
        assert_eq!(shown[0]["tokens_per_day"]["remaining"], 9_900);
        assert_eq!(shown[0]["cost_per_month_usd"]["used"], 0.25);
        assert_eq!(shown[0]["max_concurrent"]["in_flight"], 1);
        assert_eq!(shown[0]["cost_per_day_usd"], Value::Null);
        assert_eq!(shown[1]["level"], "key");
        assert_eq!(shown[1]["requests_per_minute"]["remaining"], 1);
        assert_eq!(shown.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn a_key_without_a_per_minute_rate_shows_none_and_a_refusal_is_its_error() {
        let mut unlimited = limits(1);
        unlimited.requests_per_minute = UNLIMITED;
        let state = QuotaState::new(&unlimited, T0);
        assert_eq!(state.remaining(&unlimited, T0).requests.view(), Value::Null);
        let peeks = vec![QuotaPeek {
            key: QuotaKey::whole("acme"),
            limits: limits(1),
            presented: None,
            budgets: Vec::new(),
        }];
        let refused = vec![Peeked::Refused {
            refusal: Refusal::KeyRevoked,
        }];
        assert_eq!(report(&peeks, refused).expect_err("revoked").status(), 401);
    }
}
