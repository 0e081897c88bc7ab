use crate::error::GatewayError;
use crate::request::Headers;
use crate::testing::*;
use base64::Engine;
use serde_json::{Value, json};

fn auth_with(token: &str) -> Result<super::Principal, GatewayError> {
    let g = gateway();
    super::authenticate(g.config(), &headers_with_key(token), NOW_MS, None)
}

fn reason(r: Result<super::Principal, GatewayError>) -> String {
    match r {
        Err(GatewayError::Unauthenticated { reason }) => reason,
        other => panic!("expected 401, got {other:?}"),
    }
}

#[test]
fn api_key_by_bearer_and_x_api_key() {
    let p = auth_with("sk-acme-test-key-1").expect("valid key");
    assert_eq!(p.tenant_id, "acme");
    let g = gateway();
    let h = Headers::new([("X-Api-Key", "sk-free-key")]);
    let p = super::authenticate(g.config(), &h, NOW_MS, None).expect("x-api-key");
    assert_eq!(p.tenant_id, "free-co");
}

#[test]
fn unknown_and_missing_keys_are_401_without_echo() {
    let r = reason(auth_with("sk-not-a-real-key"));
    assert!(!r.contains("sk-not"), "{r}");
    let g = gateway();
    let err =
        super::authenticate(g.config(), &Headers::default(), NOW_MS, None).expect_err("no key");
    assert_eq!(err.status(), 401);
}

#[test]
fn provisioned_keys_need_a_usable_record() {
    let g = gateway();
    let h = headers_with_key("sk-from-kv");
    let rec = super::ApiKeyRecord {
        tenant: "newco".into(),
        id: None,
        tier: Some("free".into()),
        ..super::ApiKeyRecord::default()
    };
    let p = super::authenticate(g.config(), &h, NOW_MS, Some(&rec)).expect("provisioned");
    assert_eq!((p.tenant_id.as_str(), p.tenant), ("newco", None));
    // Named by its hash, never by the key.
    let derived = super::derived_key_id(&super::key_hash("sk-from-kv"));
    assert_eq!(p.key_id.as_deref(), Some(derived.as_str()));
    assert!(derived.starts_with("cfg_") && !derived.contains("sk-from-kv"));
    let rec = super::ApiKeyRecord {
        tenant: "acme".into(),
        id: Some("key_kv_1".into()),
        ..super::ApiKeyRecord::default()
    };
    let p = super::authenticate(g.config(), &h, NOW_MS, Some(&rec)).expect("listed tenant");
    assert_eq!(
        p.tenant,
        g.config().tenant("acme").map(super::TenantRef::Config)
    );
    assert_eq!(p.key_id.as_deref(), Some("key_kv_1"));
    let rec = super::ApiKeyRecord {
        tenant: "newco".into(),
        ..super::ApiKeyRecord::default()
    };
    assert!(super::authenticate(g.config(), &h, NOW_MS, Some(&rec)).is_err());
    assert_eq!(
        super::presented_key_hash(&h).as_deref(),
        Some(hex::encode(super::key_hash("sk-from-kv")).as_str())
    );
}

#[test]
fn valid_hs256_and_rs256_tokens() {
    let p = auth_with(&sign_hs256(&hs_claims())).expect("hs256");
    assert_eq!(p.tenant_id, "acme");
    assert_eq!(p.user.as_deref(), Some("user-1"));
    assert_eq!(p.method, super::AuthMethod::Jwt);

    let mut claims = hs_claims();
    claims["iss"] = json!("https://rs.example.test");
    let p = auth_with(&sign_rs256(&claims, Some("rs-1"), RSA_PRIVATE)).expect("rs256 with kid");
    assert_eq!(p.tenant_id, "acme");
    auth_with(&sign_rs256(&claims, None, RSA_PRIVATE)).expect("rs256 without kid");
}

#[test]
fn tier_claim_and_unlisted_tenants() {
    let g = gateway();
    let mut claims = hs_claims();
    claims["org"] = json!("startup-xyz");
    let p = auth_with(&sign_hs256(&claims)).expect("unlisted tenant gets the issuer's tier");
    assert_eq!(p.tier, g.config().tier("free").expect("free"));
    claims["tier"] = json!("pro");
    let p = auth_with(&sign_hs256(&claims)).expect("tier claim");
    assert_eq!(p.tier, g.config().tier("pro").expect("pro"));
    claims["tier"] = json!("platinum");
    assert!(reason(auth_with(&sign_hs256(&claims))).contains("unknown tier"));
}

#[test]
fn expired_and_not_yet_valid_tokens_respect_leeway() {
    let mut c = hs_claims();
    c["exp"] = json!(NOW_S - 31); // default leeway is 30 s
    assert_eq!(reason(auth_with(&sign_hs256(&c))), "token has expired");
    c["exp"] = json!(NOW_S - 29);
    auth_with(&sign_hs256(&c)).expect("within leeway");

    let mut c = hs_claims();
    c["nbf"] = json!(NOW_S + 31);
    assert_eq!(reason(auth_with(&sign_hs256(&c))), "token is not valid yet");
    c["nbf"] = json!(NOW_S + 29);
    auth_with(&sign_hs256(&c)).expect("within leeway");
}

#[test]
fn tokens_without_exp_are_rejected() {
    let mut c = hs_claims();
    c.as_object_mut().expect("obj").remove("exp");
    assert!(reason(auth_with(&sign_hs256(&c))).contains("required claim"));
}

#[test]
fn wrong_issuer_and_audience() {
    let mut c = hs_claims();
    c["iss"] = json!("https://evil.example");
    assert_eq!(
        reason(auth_with(&sign_hs256(&c))),
        "token issuer is not trusted"
    );
    let mut c = hs_claims();
    c["aud"] = json!("someone-else");
    assert_eq!(
        reason(auth_with(&sign_hs256(&c))),
        "token audience is not accepted"
    );
    let mut c = hs_claims();
    c.as_object_mut().expect("obj").remove("aud");
    assert!(reason(auth_with(&sign_hs256(&c))).contains("required claim"));
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn alg_none_is_rejected() {
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT"})),
            b64(&hs_claims())
        );
        assert_eq!(reason(auth_with(&token)), "malformed or unsupported token");
    }
}

#[test]
fn algorithm_confusion_is_rejected() {
    // An attacker signs HS256 with the issuer's *public* RSA key as the secret.
    let mut claims = hs_claims();
    claims["iss"] = json!("https://rs.example.test");
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
    )
    .expect("sign");
    assert_eq!(
        reason(auth_with(&forged)),
        "token algorithm is not allowed for its issuer"
    );
    // And an RS256 token against the HS256-only issuer.
    let forged = sign_rs256(&hs_claims(), None, RSA_PRIVATE);
    assert_eq!(
        reason(auth_with(&forged)),
        "token algorithm is not allowed for its issuer"
    );
}

#[test]
fn unknown_kid_and_wrong_key_are_rejected() {
    let mut claims = hs_claims();
    claims["iss"] = json!("https://rs.example.test");
    assert_eq!(
        reason(auth_with(&sign_rs256(&claims, Some("rs-9"), RSA_PRIVATE))),
        "token key id (kid) is unknown"
    );
    assert_eq!(
        reason(auth_with(&sign_rs256(
            &claims,
            Some("rs-1"),
            OTHER_RSA_PRIVATE
        ))),
        "token signature is invalid"
    );
}

#[test]
fn tampered_payload_is_rejected() {
    let token = sign_hs256(&hs_claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut claims = hs_claims();
    claims["org"] = json!("eu-corp");
    let forged_payload = b64(&claims);
    parts[1] = &forged_payload;
    assert_eq!(
        reason(auth_with(&parts.join("."))),
        "token signature is invalid"
    );
}

#[test]
fn ip_allow_and_deny() {
    let g = gateway();
    let t = g
        .config()
        .tenant("restricted")
        .map(|i| &g.config().tenants[i]);
    let ip = |s: &str| Some(s.parse().expect("ip"));
    assert!(super::check_ip(t, ip("10.1.2.3")).is_ok());
    assert!(
        super::check_ip(t, ip("10.9.0.1")).is_err(),
        "deny wins inside allow"
    );
    assert!(
        super::check_ip(t, ip("192.0.2.1")).is_err(),
        "outside allow"
    );
    assert!(
        super::check_ip(t, None).is_err(),
        "unknown address fails closed"
    );
    let open = g.config().tenant("acme").map(|i| &g.config().tenants[i]);
    assert!(super::check_ip(open, None).is_ok());
}

#[test]
fn only_unlisted_api_keys_are_looked_up_in_the_key_store() {
    use super::{key_hash, key_to_look_up};
    let g = gateway();
    let listed = headers_with_key("sk-acme-test-key-1");
    assert_eq!(key_to_look_up(g.config(), &listed), None);
    let unlisted = headers_with_key("sk-provisioned-elsewhere");
    assert_eq!(
        key_to_look_up(g.config(), &unlisted),
        Some(hex::encode(key_hash("sk-provisioned-elsewhere")))
    );
    let jwt = headers_with_key(&sign_hs256(&hs_claims()));
    assert_eq!(key_to_look_up(g.config(), &jwt), None);
}

#[test]
fn a_tenant_name_that_could_share_a_store_is_refused() {
    let mut claims = hs_claims();
    claims["org"] = json!("acme#1");
    assert_eq!(
        reason(auth_with(&sign_hs256(&claims))),
        "token names an invalid tenant"
    );
    let g = gateway();
    let rec = super::ApiKeyRecord {
        tenant: "acme#1".into(),
        id: None,
        tier: Some("free".into()),
        ..super::ApiKeyRecord::default()
    };
    let h = headers_with_key("sk-from-kv");
    assert!(super::authenticate(g.config(), &h, NOW_MS, Some(&rec)).is_err());
}
