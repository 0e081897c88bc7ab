//! Authentication: API keys, HS256 and RS256 JWTs and the attacks on them
//! (each a 401 in OpenAI's shape), and a tenant's IP deny list.

use crate::client::{chat_body, content_of};
use crate::gateway::{HS256_ISSUER, RS256_ISSUER, keys};
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq, jwt};
use serde_json::Value;

/// A token (or key) that must be refused with 401 `invalid_api_key`.
async fn refused(t: &Target, credential: &str) -> Outcome {
    let r = t.chat(credential, &chat_body("hello")).await?;
    let error = r.expect_error(401, "authentication_error", "invalid_api_key")?;
    ensure!(
        !error.message.contains(credential),
        "the error echoes the credential"
    );
    Ok(())
}

async fn served(t: &Target, credential: &str) -> Outcome {
    let answer = t.chat(credential, &chat_body("hello")).await?.expect(200)?;
    ensure_eq!(answer["object"], "chat.completion", "object");
    ensure!(
        content_of(&answer).contains("echo: hello"),
        "not the backend's answer: {answer}"
    );
    Ok(())
}

pub async fn api_key(t: &Target) -> Outcome {
    served(t, keys::AUTH).await?;
    // `x-api-key` works as well as `Authorization: Bearer`.
    let r = t
        .post("/v1/chat/completions")
        .header("x-api-key", keys::AUTH)
        .json(&chat_body("hello"))
        .send()
        .await?;
    r.expect(200).map(drop)
}

pub async fn unknown_key(t: &Target) -> Outcome {
    refused(t, "sk-conf-nobody").await?;
    let anonymous = t.post("/v1/chat/completions").json(&chat_body("hi"));
    anonymous
        .send()
        .await?
        .expect_error(401, "authentication_error", "invalid_api_key")
        .map(drop)
}

pub async fn hs256_jwt(t: &Target) -> Outcome {
    served(t, &jwt::hs256(&jwt::hs_claims())).await
}

pub async fn rs256_jwt(t: &Target) -> Outcome {
    served(t, &jwt::rs256(&jwt::claims(RS256_ISSUER))).await
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

pub async fn expired_jwt(t: &Target) -> Outcome {
    let now = jwt::now_s();
    let claims = with(jwt::hs_claims(), "iat", (now - 7200).into());
    refused(t, &jwt::hs256(&with(claims, "exp", (now - 3600).into()))).await
}

pub async fn not_yet_valid_jwt(t: &Target) -> Outcome {
    let now = jwt::now_s();
    let claims = with(jwt::hs_claims(), "nbf", (now + 3600).into());
    refused(t, &jwt::hs256(&with(claims, "exp", (now + 7200).into()))).await
}

pub async fn wrong_audience_jwt(t: &Target) -> Outcome {
    let claims = with(jwt::hs_claims(), "aud", "someone-else".into());
    refused(t, &jwt::hs256(&claims)).await?;
    let claims = with(jwt::claims(RS256_ISSUER), "aud", "someone-else".into());
    refused(t, &jwt::rs256(&claims)).await
}

pub async fn wrong_issuer_jwt(t: &Target) -> Outcome {
    // Signed with the right secret, but for an issuer nobody configured.
    let claims = with(jwt::hs_claims(), "iss", "https://evil.test".into());
    refused(t, &jwt::hs256(&claims)).await
}

pub async fn alg_none_jwt(t: &Target) -> Outcome {
    refused(t, &jwt::unsigned(&jwt::hs_claims())).await?;
    refused(t, &jwt::unsigned(&jwt::claims(RS256_ISSUER))).await
}

pub async fn hs_rs_confusion_jwt(t: &Target) -> Outcome {
    refused(t, &jwt::hs256_with_public_key(&jwt::claims(RS256_ISSUER))).await?;
    // The HS256 issuer does not take RS256 tokens either.
    refused(t, &jwt::rs256(&jwt::claims(HS256_ISSUER))).await
}

pub async fn ip_deny(t: &Target) -> Outcome {
    // The tenant denies 127.0.0.0/8, where every client of the suite is.
    let r = t.chat(keys::DENIED, &chat_body("hello")).await?;
    r.expect_error(403, "permission_error", "permission_denied")
        .map(drop)
}

/// A validly signed JWT of 200 KB: refused with 431 before it is verified,
/// the same limit (`limits.max_header_bytes`, 32 KiB) on both runners.
pub async fn oversized_jwt_is_431(t: &Target) -> Outcome {
    let claims = with(jwt::hs_claims(), "padding", "x".repeat(200 << 10).into());
    let token = jwt::hs256(&claims);
    let r = t.chat(&token, &chat_body("hello")).await?;
    let error = r.expect_error(
        431,
        "invalid_request_error",
        "request_header_fields_too_large",
    )?;
    ensure!(
        error.message.contains(&(32 << 10).to_string()),
        "the message does not give the limit: {}",
        error.message
    );
    // Just under the limit, the same kind of token is verified and served.
    let claims = with(jwt::hs_claims(), "padding", "x".repeat(16 << 10).into());
    served(t, &jwt::hs256(&claims)).await
}
