//! Test fixtures shared by the unit tests: the fixture config, signed tokens
//! and requests.

use crate::config::Secrets;
use crate::gateway::{Gateway, RequestContext};
use crate::request::{Headers, HttpRequest};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

pub const CONFIG_JSON: &str = include_str!("../fixtures/gateway.json");
pub const HS_SECRET: &str = "test-hs256-secret-of-at-least-32-bytes!!";
pub const RSA_PRIVATE: &str = include_str!("../fixtures/test-rsa-private.pem");
pub const OTHER_RSA_PRIVATE: &str = include_str!("../fixtures/other-rsa-private.pem");
pub const RSA_PUBLIC: &str = include_str!("../fixtures/test-rsa-public.pem");
/// 2026-11-22T00:00:00Z in ms.
pub const NOW_MS: u64 = 1_795_305_600_000;
pub const NOW_S: u64 = NOW_MS / 1000;

pub fn secrets() -> Secrets {
    Secrets::from([("JWT_HS256_SECRET".to_owned(), HS_SECRET.to_owned())])
}

pub fn config_value() -> Value {
    serde_json::from_str(CONFIG_JSON).expect("fixture parses")
}

pub fn gateway() -> Gateway {
    Gateway::from_json(CONFIG_JSON, &secrets()).expect("fixture config is valid")
}

pub fn sign_hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .expect("sign")
}

pub fn sign_rs256(claims: &Value, kid: Option<&str>, private_pem: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("rsa key"),
    )
    .expect("sign")
}

pub fn hs_claims() -> Value {
    serde_json::json!({
        "iss": "https://auth.example.test",
        "aud": "edgegate",
        "org": "acme",
        "sub": "user-1",
        "exp": NOW_S + 600,
        "iat": NOW_S,
    })
}

pub fn headers_with_key(key: &str) -> Headers {
    Headers::new([
        ("Authorization", format!("Bearer {key}")),
        ("Content-Type", "application/json".to_owned()),
    ])
}

pub fn post(path: &str, headers: Headers, body: &Value) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        path: path.into(),
        headers,
        body: body.to_string().into_bytes(),
    }
}

pub fn chat_body(content: &str) -> Value {
    serde_json::json!({
        "model": "llama-3.1-8b",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 64,
        "temperature": 0,
    })
}

pub fn ctx() -> RequestContext {
    RequestContext {
        now_ms: NOW_MS,
        request_id: "req-1".into(),
        client_ip: Some("203.0.113.9".parse().expect("ip")),
        ..Default::default()
    }
}
