//! JWT verification with `jsonwebtoken`. The clock is an input: `exp`/`nbf`
//! are checked here against the host's `now` (the crate's own checks read the
//! system clock, which traps on wasm32-unknown-unknown).

use crate::config::raw::RawJwtIssuer;
use crate::config::{ConfigError, Lookup, Secrets, config_error};
use crate::error::GatewayError;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, jwk::Jwk};
use serde_json::Map;
use serde_json::Value;
use std::str::FromStr;

#[derive(Clone)]
struct VerifyingKey {
    kid: Option<String>,
    key: DecodingKey,
}

/// A trusted token issuer, validated from config.
#[derive(Clone)]
pub struct JwtIssuer {
    pub issuer: String,
    pub leeway_seconds: u64,
    pub tenant_claim: String,
    pub tier_claim: Option<String>,
    pub user_claim: String,
    /// Tier for tenants the token names but the config does not list.
    pub unlisted_tenant_tier: Option<usize>,
    hmac_key: Option<DecodingKey>,
    public_keys: Vec<VerifyingKey>,
    algorithms: Vec<Algorithm>,
    /// Empty: the token's `aud` is not checked.
    audiences: Vec<String>,
}

impl std::fmt::Debug for JwtIssuer {
    // Keys stay out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtIssuer")
            .field("issuer", &self.issuer)
            .field("algorithms", &self.algorithms())
            .field("public_keys", &self.public_keys.len())
            .finish_non_exhaustive()
    }
}

/// The verified claims the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub tenant: String,
    pub tier: Option<String>,
    pub user: Option<String>,
}

impl JwtIssuer {
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.algorithms.clone()
    }

    pub(crate) fn from_raw(
        path: &str,
        raw: &RawJwtIssuer,
        secrets: &Secrets,
        lookup: &Lookup,
    ) -> Result<JwtIssuer, ConfigError> {
        if raw.issuer.is_empty() {
            return Err(config_error(format!("{path}.issuer"), "must not be empty"));
        }
        if raw.algorithms.is_empty() {
            return Err(config_error(
                format!("{path}.algorithms"),
                "list at least one algorithm",
            ));
        }
        let mut algorithms = Vec::new();
        for (i, name) in raw.algorithms.iter().enumerate() {
            let alg = Algorithm::from_str(name).map_err(|_| {
                config_error(
                    format!("{path}.algorithms[{i}]"),
                    format!("unsupported algorithm `{name}`"),
                )
            })?;
            algorithms.push(alg);
        }
        let wants_hmac = algorithms.iter().any(|a| is_hmac(*a));
        let wants_public = algorithms.iter().any(|a| !is_hmac(*a));

        let hmac_key = match (&raw.hs256_secret, wants_hmac) {
            (Some(name), true) => {
                let secret = secrets.get(name).ok_or_else(|| {
                    config_error(
                        format!("{path}.hs256_secret"),
                        format!("secret `{name}` is not set"),
                    )
                })?;
                if secret.len() < 32 {
                    return Err(config_error(
                        format!("{path}.hs256_secret"),
                        format!("secret `{name}` must be at least 32 bytes"),
                    ));
                }
                Some(DecodingKey::from_secret(secret.as_bytes()))
            }
            (None, true) => {
                return Err(config_error(
                    format!("{path}.hs256_secret"),
                    "an HMAC algorithm is allowed, so name the secret holding its key",
                ));
            }
            (Some(_), false) => {
                return Err(config_error(
                    format!("{path}.hs256_secret"),
                    "set, but no HMAC algorithm is allowed",
                ));
            }
            (None, false) => None,
        };

        let mut public_keys = Vec::new();
        for (i, k) in raw.keys.iter().enumerate() {
            let kpath = format!("{path}.keys[{i}]");
            let key = match (&k.pem, &k.jwk) {
                (Some(pem), None) => DecodingKey::from_rsa_pem(pem.as_bytes())
                    .or_else(|_| DecodingKey::from_ec_pem(pem.as_bytes()))
                    .map_err(|_| {
                        config_error(format!("{kpath}.pem"), "not an RSA or EC public key PEM")
                    })?,
                (None, Some(jwk)) => {
                    let jwk: Jwk = serde_json::from_value(jwk.clone()).map_err(|e| {
                        config_error(format!("{kpath}.jwk"), format!("invalid JWK: {e}"))
                    })?;
                    DecodingKey::from_jwk(&jwk).map_err(|e| {
                        config_error(format!("{kpath}.jwk"), format!("unusable JWK: {e}"))
                    })?
                }
                _ => {
                    return Err(config_error(kpath, "give exactly one of `pem` or `jwk`"));
                }
            };
            public_keys.push(VerifyingKey {
                kid: k.kid.clone(),
                key,
            });
        }
        if wants_public && public_keys.is_empty() {
            return Err(config_error(
                format!("{path}.keys"),
                "a public-key algorithm is allowed, so list at least one key",
            ));
        }

        let unlisted_tenant_tier = raw
            .unlisted_tenant_tier
            .as_ref()
            .map(|t| lookup.tier(&format!("{path}.unlisted_tenant_tier"), t))
            .transpose()?;

        Ok(JwtIssuer {
            issuer: raw.issuer.clone(),
            leeway_seconds: raw.leeway_seconds.unwrap_or(30),
            tenant_claim: raw.tenant_claim.clone().unwrap_or_else(|| "tenant".into()),
            tier_claim: raw.tier_claim.clone(),
            user_claim: raw.user_claim.clone().unwrap_or_else(|| "sub".into()),
            unlisted_tenant_tier,
            hmac_key,
            public_keys,
            algorithms,
            audiences: raw.audiences.clone(),
        })
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

fn reject(reason: &str) -> GatewayError {
    GatewayError::unauthenticated(reason)
}

/// Whether a bearer credential is shaped like a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|&b| b == b'.').count() == 2
}

/// Verifies `token` against the configured issuers at `now_s` (Unix seconds).
///
/// The payload is decoded once: its unverified `iss` picks the issuer and its
/// keys, the signature is checked over the exact `header.payload` bytes with
/// `jsonwebtoken`'s crypto, and only then are the claims trusted.
pub fn verify(
    issuers: &[JwtIssuer],
    token: &str,
    now_s: u64,
) -> Result<(usize, VerifiedToken), GatewayError> {
    // `alg: none` and unknown algorithms fail here: `Algorithm` has no such variant.
    let header =
        jsonwebtoken::decode_header(token).map_err(|_| reject("malformed or unsupported token"))?;
    let (message, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| reject("malformed or unsupported token"))?;
    let payload = message
        .split_once('.')
        .map(|(_, p)| p)
        .ok_or_else(|| reject("malformed or unsupported token"))?;
    let claims: Map<String, Value> = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| reject("malformed token claims"))?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| reject("token lacks a required claim"))?;
    let (index, issuer) = issuers
        .iter()
        .enumerate()
        .find(|(_, i)| i.issuer == iss)
        .ok_or_else(|| reject("token issuer is not trusted"))?;
    if !issuer.algorithms.contains(&header.alg) {
        return Err(reject("token algorithm is not allowed for its issuer"));
    }

    let signed = |key: &DecodingKey| {
        jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, header.alg)
            .unwrap_or(false)
    };
    let verified = if is_hmac(header.alg) {
        issuer.hmac_key.as_ref().is_some_and(signed)
    } else {
        let mut candidates = issuer
            .public_keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .peekable();
        if candidates.peek().is_none() {
            return Err(reject("token key id (kid) is unknown"));
        }
        candidates.any(|k| signed(&k.key))
    };
    if !verified {
        return Err(reject("token signature is invalid"));
    }

    if !issuer.audiences.is_empty() {
        let accepted = |a: &Value| {
            a.as_str()
                .is_some_and(|a| issuer.audiences.iter().any(|x| x == a))
        };
        match claims.get("aud") {
            None => return Err(reject("token lacks a required claim")),
            Some(Value::Array(list)) if list.iter().any(accepted) => {}
            Some(single) if accepted(single) => {}
            Some(_) => return Err(reject("token audience is not accepted")),
        }
    }
    let leeway = issuer.leeway_seconds;
    let exp = match claims.get("exp") {
        None => return Err(reject("token lacks a required claim")),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| reject("token `exp` claim is missing or invalid"))?,
    };
    if now_s > exp.saturating_add(leeway) {
        return Err(reject("token has expired"));
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf
            .as_u64()
            .ok_or_else(|| reject("token `nbf` claim is invalid"))?;
        if now_s.saturating_add(leeway) < nbf {
            return Err(reject("token is not valid yet"));
        }
    }

    let claim_str = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let tenant = claim_str(&issuer.tenant_claim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| reject("token does not name a tenant"))?;
    Ok((
        index,
        VerifiedToken {
            tenant,
            tier: issuer.tier_claim.as_deref().and_then(claim_str),
            user: claim_str(&issuer.user_claim),
        },
    ))
}
