//! Tokens for the auth cases: valid ones from both issuers, and the attacks.

use crate::gateway::{
    AUDIENCE, HS256_ISSUER, HS256_SECRET, JWT_TENANT, RS256_KID, RSA_PRIVATE_PEM, RSA_PUBLIC_PEM,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Valid claims for `issuer`: the suite's audience and JWT tenant, ten minutes to live.
pub fn claims(issuer: &str) -> Value {
    let now = now_s();
    json!({
        "iss": issuer, "aud": AUDIENCE, "tenant": JWT_TENANT, "sub": "jwt-user",
        "iat": now, "exp": now + 600,
    })
}

pub fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(HS256_SECRET.as_bytes()),
    )
    .expect("HS256 signing")
}

pub fn rs256(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(RS256_KID.to_owned());
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("the test RSA key");
    jsonwebtoken::encode(&header, claims, &key).expect("RS256 signing")
}

/// An unsigned token (`alg: none`).
pub fn unsigned(claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        part(&json!({"alg": "none", "typ": "JWT"})),
        part(claims)
    )
}

/// HS/RS confusion: an HS256 token "signed" with the RS256 issuer's public
/// key, hoping a verifier uses the key's bytes as an HMAC secret.
pub fn hs256_with_public_key(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(RS256_KID.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()),
    )
    .expect("HS256 signing")
}

pub fn hs_claims() -> Value {
    claims(HS256_ISSUER)
}
