//! Limits: 429 with `Retry-After` and `x-ratelimit-*` once a tier is
//! exhausted, exact admission under concurrency, and token reservations
//! settled with the backend's real usage.

use crate::client::{Reply, chat_body};
use crate::gateway::{EXACT_BURST, METER_BURST, MONTHLY_TOKENS, TIGHT_RPM, USER_BURST, keys};
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};
use serde_json::json;
use std::time::Duration;

fn number(r: &Reply, header: &str) -> Result<u64, String> {
    r.header(header)
        .ok_or_else(|| format!("no {header} header"))?
        .parse()
        .map_err(|e| format!("{header}: {e}"))
}

pub async fn exhausted_tier_gets_429(t: &Target) -> Outcome {
    for sent in 1..=TIGHT_RPM {
        let r = t.chat(keys::TIGHT, &chat_body("hi")).await?;
        r.expect(200)?;
        ensure_eq!(
            number(&r, "x-ratelimit-limit-requests")?,
            TIGHT_RPM,
            "x-ratelimit-limit-requests"
        );
        ensure_eq!(
            number(&r, "x-ratelimit-remaining-requests")?,
            TIGHT_RPM - sent,
            "x-ratelimit-remaining-requests after {sent}"
        );
    }
    let r = t.chat(keys::TIGHT, &chat_body("hi")).await?;
    r.expect_error(429, "rate_limit_error", "rate_limit_exceeded")?;
    // One request refills every 60 / rpm seconds.
    let retry_after = number(&r, "retry-after")?;
    ensure!(
        (1..=60 / TIGHT_RPM).contains(&retry_after),
        "retry-after {retry_after} s"
    );
    ensure_eq!(
        number(&r, "x-ratelimit-remaining-requests")?,
        0,
        "x-ratelimit-remaining-requests"
    );
    for header in [
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
    ] {
        ensure!(r.header(header).is_some(), "the 429 has no {header}");
    }
    Ok(())
}

pub async fn a_monthly_budget_is_429_until_the_next_month(t: &Target) -> Outcome {
    let mut charged = 0;
    let mut answered = 0;
    let refusal = loop {
        ensure!(
            answered < 100,
            "100 requests within a {MONTHLY_TOKENS}-token month"
        );
        let r = t
            .chat(keys::MONTHLY, &chat_body("a month's budget"))
            .await?;
        if r.status != 200 {
            break r;
        }
        let usage = &r.json()?["usage"];
        charged += usage["total_tokens"].as_u64().ok_or("no usage")?;
        answered += 1;
    };
    let error = refusal.expect_error(429, "rate_limit_error", "rate_limit_exceeded")?;
    ensure!(
        error.message.contains("tokens per month"),
        "the refusal names the limit: {}",
        error.message
    );
    ensure!(
        answered > 0 && charged <= MONTHLY_TOKENS,
        "{answered} answered, {charged} tokens charged"
    );
    // Retry-After points at the first of next month (UTC).
    let retry_after = number(&refusal, "retry-after")?;
    ensure!(
        (1..=31 * 86_400).contains(&retry_after),
        "retry-after {retry_after} s"
    );
    Ok(())
}

pub async fn exact_admission_under_200_concurrent(t: &Target) -> Outcome {
    let body = chat_body("crowd");
    let requests = (0..200).map(|_| t.chat(keys::CROWD, &body));
    let replies = futures_util::future::join_all(requests).await;
    let mut admitted = 0;
    let mut limited = 0;
    for reply in replies {
        match reply?.status {
            200 => admitted += 1,
            429 => limited += 1,
            other => return Err(format!("unexpected HTTP {other}")),
        }
    }
    ensure_eq!(
        (admitted, limited),
        (EXACT_BURST, 200 - EXACT_BURST),
        "(admitted, limited) of 200 concurrent requests with a burst of {EXACT_BURST}"
    );
    Ok(())
}

pub async fn a_users_budget_admits_exactly_its_burst_inside_the_tenants(t: &Target) -> Outcome {
    let mut body = chat_body("one user's crowd");
    body["user"] = json!("u-1");
    let requests = (0..200).map(|_| t.chat(keys::USERS, &body));
    let replies = futures_util::future::join_all(requests).await;
    let mut admitted = 0;
    for reply in replies {
        let reply = reply?;
        match reply.status {
            200 => admitted += 1,
            429 => {
                let error = reply.expect_error(429, "rate_limit_error", "rate_limit_exceeded")?;
                ensure!(
                    error.message.contains("this user's requests per minute"),
                    "the 429 names the user's limit: {}",
                    error.message
                );
                ensure_eq!(
                    number(&reply, "x-ratelimit-limit-requests")?,
                    1,
                    "x-ratelimit-limit-requests: the user's, the tightest"
                );
            }
            other => return Err(format!("unexpected HTTP {other}")),
        }
    }
    ensure_eq!(
        admitted,
        USER_BURST,
        "admitted of 200 concurrent requests of one user with a burst of {USER_BURST}"
    );
    // Another user of the same tenant has a budget of its own.
    body["user"] = json!("u-2");
    t.chat(keys::USERS, &body).await?.expect(200)?;
    Ok(())
}

/// How long settlement may take after a response (the Worker settles after
/// sending it); the `meter` tier refills one token a second meanwhile.
pub const SETTLE_WAIT: Duration = Duration::from_millis(500);
/// Refill during the wait, and the rest of the slack.
pub const SETTLE_TOLERANCE: u64 = 3;

pub async fn tokens_settled_with_real_usage(t: &Target) -> Outcome {
    let mut body = chat_body("meter me");
    body["max_tokens"] = json!(500);
    let first = t.chat(keys::METER, &body).await?;
    let usage = first.expect(200)?["usage"]["total_tokens"]
        .as_u64()
        .ok_or("the answer has no usage")?;
    let after_reserve = number(&first, "x-ratelimit-remaining-tokens")?;
    let reserved = METER_BURST - after_reserve;
    ensure!(
        reserved >= 500 && reserved > usage,
        "reserved {reserved} tokens for max_tokens 500 (used {usage})"
    );
    tokio::time::sleep(SETTLE_WAIT).await;
    // The same request reserves the same amount; between the two headers
    // only the first one's settlement moved the bucket.
    let second = t.chat(keys::METER, &body).await?;
    second.expect(200)?;
    let charged = after_reserve as i64 - number(&second, "x-ratelimit-remaining-tokens")? as i64;
    ensure!(
        charged.abs_diff(usage as i64) <= SETTLE_TOLERANCE,
        "charged {charged} tokens, the backend used {usage}, {reserved} were reserved: \
         the unused {} should have been given back",
        reserved - usage
    );
    Ok(())
}
