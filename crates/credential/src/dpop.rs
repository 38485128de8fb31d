//! DPoP proofs (RFC 9449) signed with Ed25519: making them, verifying them
//! against the request they accompany, and remembering `jti`s to refuse
//! replays. Time is always passed in.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Verifier;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::jwk::Jwk;
use crate::jwt::{CredentialError, SigningKeyPair};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("malformed DPoP proof: {0}")]
    Malformed(String),
    #[error("DPoP proof typ must be \"dpop+jwt\"")]
    WrongType,
    #[error("DPoP proof algorithm {0:?} is not accepted; only EdDSA is")]
    UnsupportedAlgorithm(String),
    #[error("DPoP proof header carries no usable jwk")]
    MissingKey,
    #[error("DPoP proof jwk contains a private key")]
    PrivateKeyInProof,
    #[error("DPoP proof signature does not verify")]
    BadSignature,
    #[error("DPoP proof is for method {found:?}, not {expected:?}")]
    WrongMethod { expected: String, found: String },
    #[error("DPoP proof is for {found:?}, not {expected:?}")]
    WrongUrl { expected: String, found: String },
    #[error("DPoP proof was made at {iat}, outside the accepted window around {now}")]
    Stale { iat: u64, now: u64 },
    #[error("DPoP proof lacks the access-token hash (ath)")]
    MissingAccessTokenHash,
    #[error("DPoP proof is for a different access token")]
    WrongAccessTokenHash,
    #[error("DPoP proof {0:?} was already used")]
    Replayed(String),
    #[error("too many recent DPoP proofs to remember; retry shortly")]
    CacheFull,
}

#[derive(Debug, Serialize, Deserialize)]
struct ProofHeader {
    typ: String,
    alg: String,
    jwk: Jwk,
}

#[derive(Debug, Serialize, Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    ath: Option<String>,
    /// A nonce the server handed out (RFC 9449 §8).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    nonce: Option<String>,
}

pub struct DpopExpectation<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub access_token: Option<&'a str>,
    pub now_seconds: u64,
    pub max_age_seconds: u64,
    pub leeway_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 thumbprint of the proof's key, to compare with `cnf.jkt`.
    pub jkt: String,
    pub jti: String,
    pub iat: u64,
    /// The server nonce the proof carries, if any (at most 256 bytes).
    pub nonce: Option<String>,
}

/// `ath`: base64url(sha256(access token)).
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// A URL without its query and fragment, as `htu` is compared.
fn without_query(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// Make a DPoP proof for a request.
pub fn make_proof(
    key: &SigningKeyPair,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    iat: u64,
    jti: &str,
) -> Result<String, CredentialError> {
    make_proof_with_nonce(key, method, url, access_token, iat, jti, None)
}

/// Make a DPoP proof for a request, carrying the server's `nonce`.
pub fn make_proof_with_nonce(
    key: &SigningKeyPair,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    iat: u64,
    jti: &str,
    nonce: Option<&str>,
) -> Result<String, CredentialError> {
    let mut jwk = key.public_jwk();
    jwk.kid = None;
    jwk.use_ = None;
    let header = ProofHeader {
        typ: "dpop+jwt".into(),
        alg: "EdDSA".into(),
        jwk,
    };
    let claims = ProofClaims {
        jti: jti.to_owned(),
        htm: method.to_owned(),
        htu: url.to_owned(),
        iat,
        ath: access_token.map(access_token_hash),
        nonce: nonce.map(str::to_owned),
    };
    let encode =
        |value: &dyn erased::Json| value.to_json().map(|bytes| URL_SAFE_NO_PAD.encode(bytes));
    let signing_input = format!("{}.{}", encode(&header)?, encode(&claims)?);
    let signature = key.sign_raw(signing_input.as_bytes());
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

mod erased {
    use super::CredentialError;

    /// Serialise either proof part without generics in the closure above.
    pub trait Json {
        fn to_json(&self) -> Result<Vec<u8>, CredentialError>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<Vec<u8>, CredentialError> {
            serde_json::to_vec(self).map_err(|e| CredentialError::Signing(e.to_string()))
        }
    }
}

/// Verify a DPoP proof against the request it came with.
pub fn verify_proof(proof: &str, expected: &DpopExpectation) -> Result<VerifiedProof, DpopError> {
    if proof.len() > 8 * 1024 {
        return Err(DpopError::Malformed("proof is longer than 8 KiB".into()));
    }
    let mut parts = proof.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed(
            "a JWT has three dot-separated parts".into(),
        ));
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| DpopError::Malformed(format!("{what} is not base64url: {e}")))
    };
    let header: serde_json::Value = serde_json::from_slice(&decode(header_b64, "header")?)
        .map_err(|e| DpopError::Malformed(format!("header: {e}")))?;
    if header.get("typ").and_then(|v| v.as_str()) != Some("dpop+jwt") {
        return Err(DpopError::WrongType);
    }
    // RFC 7515 §4.1.11: no extension is understood, so none may be critical.
    if header.get("crit").is_some() {
        return Err(DpopError::Malformed(
            "the header lists critical extensions (crit); none is understood".into(),
        ));
    }
    let alg = header
        .get("alg")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if alg != "EdDSA" {
        return Err(DpopError::UnsupportedAlgorithm(alg.to_owned()));
    }
    let raw_jwk = header.get("jwk").ok_or(DpopError::MissingKey)?;
    // Refuse a private key however the rest of the jwk looks.
    if raw_jwk.get("d").is_some() {
        return Err(DpopError::PrivateKeyInProof);
    }
    let jwk: Jwk = serde_json::from_value(raw_jwk.clone()).map_err(|_| DpopError::MissingKey)?;
    let public_key = jwk.public_key().map_err(|_| DpopError::MissingKey)?;
    let verifying =
        ed25519_dalek::VerifyingKey::from_bytes(&public_key).map_err(|_| DpopError::MissingKey)?;
    let signature: [u8; 64] = decode(signature_b64, "signature")?
        .as_slice()
        .try_into()
        .map_err(|_| DpopError::BadSignature)?;
    let signing_input = &proof[..header_b64.len() + 1 + claims_b64.len()];
    verifying
        .verify(
            signing_input.as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .map_err(|_| DpopError::BadSignature)?;

    let claims: ProofClaims = serde_json::from_slice(&decode(claims_b64, "claims")?)
        .map_err(|e| DpopError::Malformed(format!("claims: {e}")))?;
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(DpopError::Malformed("jti must be 1 to 256 bytes".into()));
    }
    if claims.nonce.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(DpopError::Malformed(
            "nonce must be at most 256 bytes".into(),
        ));
    }
    if claims.htm != expected.method {
        return Err(DpopError::WrongMethod {
            expected: expected.method.to_owned(),
            found: claims.htm,
        });
    }
    if without_query(&claims.htu) != without_query(expected.url) {
        return Err(DpopError::WrongUrl {
            expected: without_query(expected.url).to_owned(),
            found: claims.htu,
        });
    }
    let now = expected.now_seconds;
    let earliest = now.saturating_sub(
        expected
            .max_age_seconds
            .saturating_add(expected.leeway_seconds),
    );
    if claims.iat < earliest || claims.iat > now.saturating_add(expected.leeway_seconds) {
        return Err(DpopError::Stale {
            iat: claims.iat,
            now,
        });
    }
    if let Some(access_token) = expected.access_token {
        match &claims.ath {
            None => return Err(DpopError::MissingAccessTokenHash),
            Some(ath) if *ath != access_token_hash(access_token) => {
                return Err(DpopError::WrongAccessTokenHash);
            }
            Some(_) => {}
        }
    }
    Ok(VerifiedProof {
        jkt: jwk.thumbprint(),
        jti: claims.jti,
        iat: claims.iat,
        nonce: claims.nonce,
    })
}

/// Recently seen proof `jti`s, bounded in number and kept for a window.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    window_seconds: u64,
    seen: BTreeMap<String, u64>,
    by_expiry: BTreeSet<(u64, String)>,
}

impl ReplayCache {
    pub fn new(capacity: usize, window_seconds: u64) -> Self {
        Self {
            capacity: capacity.max(1),
            window_seconds,
            seen: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Refuse a `jti` seen within the window; remember a new one.
    pub fn check_and_remember(&mut self, jti: &str, now_seconds: u64) -> Result<(), DpopError> {
        while let Some((expiry, _)) = self.by_expiry.first() {
            if *expiry > now_seconds {
                break;
            }
            if let Some((_, old)) = self.by_expiry.pop_first() {
                self.seen.remove(&old);
            }
        }
        if self.seen.contains_key(jti) {
            return Err(DpopError::Replayed(jti.to_owned()));
        }
        if self.seen.len() >= self.capacity {
            return Err(DpopError::CacheFull);
        }
        let expiry = now_seconds.saturating_add(self.window_seconds);
        self.seen.insert(jti.to_owned(), expiry);
        self.by_expiry.insert((expiry, jti.to_owned()));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}
