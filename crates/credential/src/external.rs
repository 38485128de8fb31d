//! Attestation JWTs from external issuers (Kubernetes service-account
//! tokens, CI OIDC tokens), checked against the issuer's JWKS. RS256, ES256
//! and EdDSA are accepted; `none` and HMAC never are. The key a token names
//! must be fit for its algorithm (key type, curve, and the JWK's `alg`,
//! `use` and `key_ops` when given); a token must name its key (`kid`)
//! unless the issuer is configured otherwise, carry `iat`, and be no older
//! than the issuer's maximum age. Time is passed in; reading the JWKS again
//! is the caller's (the broker's) to schedule.

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::jwt::{VerifyError, check_times, header_json, no_clock_validation, quoted};

/// The largest JWKS document read (a few dozen RSA keys fit many times).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The most keys one issuer's JWKS may hold.
pub const MAX_JWKS_KEYS: usize = 64;

/// How old a token may be, unless the issuer is configured otherwise: a
/// Kubernetes projected service-account token lives an hour by default.
pub const DEFAULT_MAX_TOKEN_AGE_SECONDS: u64 = 3600;

#[derive(Debug, Clone)]
pub struct ExternalIssuer {
    pub issuer: String,
    pub audience: String,
    pub jwks: JwkSet,
    /// Refuse a token whose header names no key (`kid`). When false, a
    /// token without one is checked against the JWKS's only key, and
    /// refused when there are several.
    pub require_key_id: bool,
    /// Refuse a token issued (`iat`) longer ago than this.
    pub max_token_age_seconds: u64,
}

impl ExternalIssuer {
    /// An issuer whose keys are the JWKS `jwks_json`, requiring `kid` and
    /// at most [`DEFAULT_MAX_TOKEN_AGE_SECONDS`] of age.
    pub fn from_jwks_json(
        issuer: String,
        audience: String,
        jwks_json: &str,
    ) -> Result<Self, VerifyError> {
        if jwks_json.len() > MAX_JWKS_BYTES {
            return Err(VerifyError::Malformed(format!(
                "JWKS: {} bytes, more than the {MAX_JWKS_BYTES} read",
                jwks_json.len()
            )));
        }
        let jwks: JwkSet = serde_json::from_str(jwks_json)
            .map_err(|e| VerifyError::Malformed(format!("JWKS: {e}")))?;
        if jwks.keys.len() > MAX_JWKS_KEYS {
            return Err(VerifyError::Malformed(format!(
                "JWKS: {} keys, more than the {MAX_JWKS_KEYS} an issuer may have",
                jwks.keys.len()
            )));
        }
        Ok(Self {
            issuer,
            audience,
            jwks,
            require_key_id: true,
            max_token_age_seconds: DEFAULT_MAX_TOKEN_AGE_SECONDS,
        })
    }

    /// Whether the JWKS holds a key with this id.
    pub fn has_key(&self, kid: &str) -> bool {
        self.jwks.find(kid).is_some()
    }

    /// Verify `token` and return its claims.
    pub fn verify(
        &self,
        token: &str,
        now_seconds: u64,
        leeway_seconds: u64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, VerifyError> {
        let header = header_json(token)?;
        let alg = header
            .get("alg")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let algorithm = match alg {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            "EdDSA" => Algorithm::EdDSA,
            other => return Err(VerifyError::UnsupportedAlgorithm(quoted(other))),
        };
        let jwk = match header.get("kid").and_then(|v| v.as_str()) {
            Some(kid) => self
                .jwks
                .find(kid)
                .ok_or_else(|| VerifyError::UnknownKeyId(quoted(kid)))?,
            None if !self.require_key_id && self.jwks.keys.len() == 1 => &self.jwks.keys[0],
            None => return Err(VerifyError::MissingKeyId),
        };
        check_key_fits(jwk, algorithm)?;
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| VerifyError::Malformed(format!("JWKS key: {e}")))?;
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &no_clock_validation(algorithm))
                .map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => VerifyError::BadSignature,
                    jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                        VerifyError::UnsupportedAlgorithm(format!("{alg} does not match the key"))
                    }
                    _ => VerifyError::Malformed(e.to_string()),
                })?;
        let serde_json::Value::Object(claims) = data.claims else {
            return Err(VerifyError::BadClaims(
                "claims are not a JSON object".into(),
            ));
        };
        let number = |name: &str| claims.get(name).and_then(|v| v.as_u64());
        if number("exp").is_none() {
            return Err(VerifyError::BadClaims("no exp".into()));
        }
        check_times(number("exp"), number("nbf"), now_seconds, leeway_seconds)?;
        let Some(iat) = number("iat") else {
            return Err(VerifyError::BadClaims(
                "no iat: the token's age cannot be judged".into(),
            ));
        };
        if iat > now_seconds.saturating_add(leeway_seconds) {
            return Err(VerifyError::IssuedInFuture {
                iat,
                now: now_seconds,
            });
        }
        let age_seconds = now_seconds.saturating_sub(iat);
        if age_seconds > self.max_token_age_seconds.saturating_add(leeway_seconds) {
            return Err(VerifyError::TooOld {
                age_seconds,
                max_seconds: self.max_token_age_seconds,
            });
        }
        let found = claims
            .get("iss")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if found != self.issuer {
            return Err(VerifyError::WrongIssuer {
                expected: self.issuer.clone(),
                found: quoted(found),
            });
        }
        let audience_ok = match claims.get("aud") {
            Some(serde_json::Value::String(aud)) => *aud == self.audience,
            Some(serde_json::Value::Array(list)) => {
                list.iter().any(|a| a.as_str() == Some(&self.audience))
            }
            _ => false,
        };
        if !audience_ok {
            return Err(VerifyError::WrongAudience {
                expected: self.audience.clone(),
            });
        }
        Ok(claims)
    }
}

/// Refuse a key that is not for signing, names another algorithm, or is
/// of a type or curve the token's algorithm does not use (RFC 8725 §3.1:
/// the key decides the algorithm, not the token).
fn check_key_fits(jwk: &Jwk, algorithm: Algorithm) -> Result<(), VerifyError> {
    let unfit = |why: &str| {
        Err(VerifyError::KeyUnfit(format!(
            "key {:?} cannot verify {algorithm:?}: {why}",
            quoted(jwk.common.key_id.as_deref().unwrap_or_default())
        )))
    };
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return unfit("its use is not sig"),
    }
    if let Some(operations) = &jwk.common.key_operations
        && !operations.contains(&KeyOperations::Verify)
    {
        return unfit("its key_ops do not include verify");
    }
    let named = match algorithm {
        Algorithm::RS256 => KeyAlgorithm::RS256,
        Algorithm::ES256 => KeyAlgorithm::ES256,
        _ => KeyAlgorithm::EdDSA,
    };
    if let Some(key_algorithm) = jwk.common.key_algorithm
        && key_algorithm != named
    {
        return unfit("its alg is another");
    }
    let type_fits = match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    if !type_fits {
        return unfit("its key type or curve is for another algorithm");
    }
    Ok(())
}
