//! Attestation JWTs from external issuers (Kubernetes service-account
//! tokens, CI OIDC tokens), checked against the issuer's JWKS. RS256, ES256
//! and EdDSA are accepted; `none` and HMAC never are. Time is passed in.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::jwt::{VerifyError, check_times, header_json, no_clock_validation};

#[derive(Debug, Clone)]
pub struct ExternalIssuer {
    pub issuer: String,
    pub audience: String,
    pub jwks: JwkSet,
}

impl ExternalIssuer {
    pub fn from_jwks_json(
        issuer: String,
        audience: String,
        jwks_json: &str,
    ) -> Result<Self, VerifyError> {
        let jwks: JwkSet = serde_json::from_str(jwks_json)
            .map_err(|e| VerifyError::Malformed(format!("JWKS: {e}")))?;
        Ok(Self {
            issuer,
            audience,
            jwks,
        })
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
            other => return Err(VerifyError::UnsupportedAlgorithm(other.to_owned())),
        };
        let jwk = match header.get("kid").and_then(|v| v.as_str()) {
            Some(kid) => self
                .jwks
                .find(kid)
                .ok_or_else(|| VerifyError::UnknownKeyId(crate::jwt::quoted(kid)))?,
            None if self.jwks.keys.len() == 1 => &self.jwks.keys[0],
            None => return Err(VerifyError::MissingKeyId),
        };
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
        let found = claims
            .get("iss")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if found != self.issuer {
            return Err(VerifyError::WrongIssuer {
                expected: self.issuer.clone(),
                found: found.to_owned(),
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
