//! Ed25519 public keys as JWKs (RFC 8037) and their RFC 7638 thumbprints.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::KeyId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("JWK kty is {0:?}, expected \"OKP\"")]
    WrongKeyType(String),
    #[error("JWK crv is {0:?}, expected \"Ed25519\"")]
    WrongCurve(String),
    #[error("JWK x is not 32 bytes of base64url")]
    BadPublicKey,
}

/// An Ed25519 public key as a JWK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub alg: Option<String>,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none", default)]
    pub use_: Option<String>,
    /// A private key member: present only in a key that must be refused.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub d: Option<String>,
}

impl Jwk {
    pub fn from_public_key(kid: Option<&KeyId>, public_key: &[u8; 32]) -> Self {
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(public_key),
            kid: kid.map(|k| k.to_string()),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
            d: None,
        }
    }

    pub fn public_key(&self) -> Result<[u8; 32], JwkError> {
        if self.kty != "OKP" {
            return Err(JwkError::WrongKeyType(self.kty.clone()));
        }
        if self.crv != "Ed25519" {
            return Err(JwkError::WrongCurve(self.crv.clone()));
        }
        URL_SAFE_NO_PAD
            .decode(&self.x)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
            .ok_or(JwkError::BadPublicKey)
    }

    /// RFC 7638: base64url(sha256) of the required members in lexicographic
    /// order, without white space.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":{},"kty":{},"x":{}}}"#,
            serde_json::Value::from(self.crv.as_str()),
            serde_json::Value::from(self.kty.as_str()),
            serde_json::Value::from(self.x.as_str())
        );
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}
