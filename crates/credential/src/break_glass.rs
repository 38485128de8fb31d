//! Break-glass credentials: emergency credentials signed offline, with a
//! key kept off the cluster, for when no broker can be reached.
//!
//! A break-glass credential is an EdDSA JWT whose header says
//! `typ: lapse-break-glass+jwt` and whose `kid` is derived from the public
//! key ([`key_id_of`]: `bg-` and the start of its RFC 7638 thumbprint). Its
//! claims ([`BreakGlassClaims`]) are a regular credential's without a status
//! index (no broker leased it one), plus `lapse_break_glass`: the reason
//! given and the key id. Its lifetime is at most [`MAX_TTL_SECONDS`] and
//! its reason at most [`MAX_REASON_BYTES`]. It is never accepted as a
//! regular credential (it has no status claim and its key is not in the
//! feed), and a regular credential is never accepted as a break-glass one
//! (wrong `typ`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::ids::{KeyId, TenantId, WorkloadId};
use crate::jwk::Jwk;
use crate::jwt::{
    CredentialError, KeyLookup, SigningKeyPair, VerifyError, check_times, header_json,
    no_clock_validation,
};

/// The JOSE `typ` of a break-glass credential.
pub const BREAK_GLASS_TYPE: &str = "lapse-break-glass+jwt";
/// The `iss` of every break-glass credential.
pub const BREAK_GLASS_ISSUER: &str = "lapse-break-glass";
/// The longest a break-glass credential may live.
pub const MAX_TTL_SECONDS: u64 = 3600;
/// The longest reason a break-glass credential may carry, in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// The most audiences a break-glass credential may name.
pub const MAX_AUDIENCES: usize = 16;
/// The longest audience, in bytes.
pub const MAX_AUDIENCE_BYTES: usize = 256;
/// The tenant of a break-glass credential minted without one: `lapse
/// revoke tenant break-glass` revokes all of those at once.
pub const DEFAULT_TENANT: &str = "break-glass";

/// What makes a credential a break-glass one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassUse {
    /// Why it was minted, in words (at most [`MAX_REASON_BYTES`]).
    pub reason: String,
    /// The break-glass key that signed it; the same as the header's `kid`.
    pub key: String,
}

/// The claims of a break-glass credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassClaims {
    pub iss: String,
    pub sub: WorkloadId,
    pub aud: Vec<String>,
    /// Seconds since the Unix epoch.
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// Unique per credential: 128 random bits, hex.
    pub jti: String,
    pub tenant: TenantId,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub lapse_break_glass: BreakGlassUse,
}

/// Why a break-glass credential cannot be minted or is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakGlassError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("not a break-glass credential (its typ is {0:?})")]
    NotBreakGlass(String),
    #[error("lifetime of {lifetime_seconds} s is longer than the {max_seconds} s allowed")]
    LifetimeTooLong {
        lifetime_seconds: u64,
        max_seconds: u64,
    },
    #[error("a lifetime of 0 s: give a positive ttl")]
    ZeroLifetime,
    #[error("issued at {iat}, in the future (now {now})")]
    IssuedInFuture { iat: u64, now: u64 },
    #[error("the reason is {0}")]
    BadReason(&'static str),
    #[error("audiences: {0}")]
    BadAudience(String),
    #[error("the claims say key {claimed:?}, the header {header:?}")]
    KeyMismatch { claimed: String, header: String },
    #[error("jti must be 16 to 64 letters, digits, '-' or '_'")]
    BadJti,
    #[error("iss is {0:?}, expected \"{BREAK_GLASS_ISSUER}\"")]
    WrongIssuer(String),
    #[error(transparent)]
    Signing(#[from] CredentialError),
}

/// The key id of a break-glass public key: `bg-` and the first 22
/// characters (132 bits) of its RFC 7638 thumbprint.
pub fn key_id_of(public_key: &[u8; 32]) -> KeyId {
    let thumbprint = Jwk::from_public_key(None, public_key).thumbprint();
    KeyId::new(format!("bg-{}", &thumbprint[..22])).expect("a thumbprint is base64url")
}

/// Whether a token's header says it is a break-glass credential (read
/// without verifying anything).
pub fn is_break_glass(token: &str) -> bool {
    header_json(token)
        .ok()
        .and_then(|h| h.get("typ").and_then(|t| t.as_str()).map(str::to_owned))
        .is_some_and(|typ| typ == BREAK_GLASS_TYPE)
}

fn check_reason(reason: &str) -> Result<(), BreakGlassError> {
    if reason.trim().is_empty() {
        return Err(BreakGlassError::BadReason("empty"));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(BreakGlassError::BadReason(
            "longer than 256 bytes; say why briefly",
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err(BreakGlassError::BadReason(
            "not one line: it holds a control character",
        ));
    }
    Ok(())
}

fn check_audiences(audiences: &[String]) -> Result<(), BreakGlassError> {
    if audiences.is_empty() {
        return Err(BreakGlassError::BadAudience("name at least one".into()));
    }
    if audiences.len() > MAX_AUDIENCES {
        return Err(BreakGlassError::BadAudience(format!(
            "{} named; at most {MAX_AUDIENCES}",
            audiences.len()
        )));
    }
    if let Some(bad) = audiences
        .iter()
        .find(|a| a.is_empty() || a.len() > MAX_AUDIENCE_BYTES || a.chars().any(char::is_control))
    {
        return Err(BreakGlassError::BadAudience(format!(
            "{bad:?} is empty, longer than {MAX_AUDIENCE_BYTES} bytes or not one line"
        )));
    }
    Ok(())
}

fn check_jti(jti: &str) -> Result<(), BreakGlassError> {
    let ok = (16..=64).contains(&jti.len())
        && jti
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(BreakGlassError::BadJti)
    }
}

/// What an operator asks for when minting.
#[derive(Debug, Clone)]
pub struct MintRequest {
    pub subject: WorkloadId,
    pub audiences: Vec<String>,
    pub tenant: TenantId,
    pub scopes: Vec<String>,
    pub reason: String,
    pub ttl_seconds: u64,
    /// Seconds since the Unix epoch, on the minting machine's clock.
    pub now_seconds: u64,
    /// 128 random bits from the caller (this crate reads no OS randomness).
    pub nonce: [u8; 16],
}

/// Sign a break-glass credential with `key` (whose id must be
/// [`key_id_of`] its public key).
pub fn mint(key: &SigningKeyPair, request: &MintRequest) -> Result<String, BreakGlassError> {
    check_reason(&request.reason)?;
    check_audiences(&request.audiences)?;
    if request.ttl_seconds == 0 {
        return Err(BreakGlassError::ZeroLifetime);
    }
    if request.ttl_seconds > MAX_TTL_SECONDS {
        return Err(BreakGlassError::LifetimeTooLong {
            lifetime_seconds: request.ttl_seconds,
            max_seconds: MAX_TTL_SECONDS,
        });
    }
    let key_id = key_id_of(&key.public_key());
    if key.key_id() != &key_id {
        return Err(BreakGlassError::KeyMismatch {
            claimed: key.key_id().to_string(),
            header: key_id.to_string(),
        });
    }
    let claims = BreakGlassClaims {
        iss: BREAK_GLASS_ISSUER.into(),
        sub: request.subject.clone(),
        aud: request.audiences.clone(),
        iat: request.now_seconds,
        nbf: request.now_seconds,
        exp: request.now_seconds + request.ttl_seconds,
        jti: hex_of(&request.nonce),
        tenant: request.tenant.clone(),
        scopes: request.scopes.clone(),
        lapse_break_glass: BreakGlassUse {
            reason: request.reason.clone(),
            key: key_id.to_string(),
        },
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(BREAK_GLASS_TYPE.into());
    header.kid = Some(key_id.to_string());
    Ok(key.sign_with_header(&header, &claims)?)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A header member as text ("" when absent or not a string).
fn text_of<'a>(header: &'a serde_json::Map<String, serde_json::Value>, name: &str) -> &'a str {
    header.get(name).and_then(|v| v.as_str()).unwrap_or("")
}

/// How to judge a break-glass credential.
#[derive(Debug, Clone, Copy)]
pub struct BreakGlassOptions {
    pub now_seconds: u64,
    pub leeway_seconds: u64,
    /// The longest lifetime (`exp - iat`) accepted; at most
    /// [`MAX_TTL_SECONDS`] whatever is given.
    pub max_ttl_seconds: u64,
}

/// A break-glass credential whose signature, times, lifetime and form
/// checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBreakGlass {
    pub key_id: KeyId,
    pub claims: BreakGlassClaims,
}

/// Verify a break-glass credential against the break-glass keys in `keys`.
/// Audiences, tenants and revocation are the caller's to check.
pub fn verify_break_glass(
    token: &str,
    keys: &impl KeyLookup,
    options: &BreakGlassOptions,
) -> Result<VerifiedBreakGlass, BreakGlassError> {
    let header = header_json(token)?;
    let typ = text_of(&header, "typ");
    if typ != BREAK_GLASS_TYPE {
        return Err(BreakGlassError::NotBreakGlass(typ.to_owned()));
    }
    let alg = text_of(&header, "alg");
    if alg != "EdDSA" {
        return Err(VerifyError::UnsupportedAlgorithm(alg.to_owned()).into());
    }
    let signature = token.rsplit('.').next().unwrap_or_default();
    if !matches!(URL_SAFE_NO_PAD.decode(signature), Ok(bytes) if bytes.len() == 64) {
        return Err(
            VerifyError::Malformed("the signature is not 64 bytes of base64url".into()).into(),
        );
    }
    let kid = header
        .get("kid")
        .and_then(|v| v.as_str())
        .ok_or(VerifyError::MissingKeyId)?;
    let public_key = keys
        .public_key(kid)
        .ok_or_else(|| VerifyError::UnknownKeyId(crate::jwt::quoted(kid)))?;
    let key_id = KeyId::new(kid).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_ed_der(&public_key),
        &no_clock_validation(Algorithm::EdDSA),
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => VerifyError::BadSignature,
        _ => VerifyError::Malformed(e.to_string()),
    })?;
    let claims: BreakGlassClaims =
        serde_json::from_value(data.claims).map_err(|e| VerifyError::BadClaims(e.to_string()))?;
    if claims.iss != BREAK_GLASS_ISSUER {
        return Err(BreakGlassError::WrongIssuer(claims.iss));
    }
    if claims.lapse_break_glass.key != kid {
        return Err(BreakGlassError::KeyMismatch {
            claimed: claims.lapse_break_glass.key,
            header: kid.to_owned(),
        });
    }
    check_reason(&claims.lapse_break_glass.reason)?;
    check_audiences(&claims.aud)?;
    check_jti(&claims.jti)?;
    let max_seconds = options.max_ttl_seconds.min(MAX_TTL_SECONDS);
    let lifetime_seconds = claims.exp.saturating_sub(claims.iat);
    if claims.exp < claims.iat || lifetime_seconds > max_seconds {
        return Err(BreakGlassError::LifetimeTooLong {
            lifetime_seconds,
            max_seconds,
        });
    }
    // An `iat` in the future would dodge "issued before" rules.
    let now = options.now_seconds;
    if claims.iat > now.saturating_add(options.leeway_seconds) {
        return Err(BreakGlassError::IssuedInFuture {
            iat: claims.iat,
            now,
        });
    }
    check_times(
        Some(claims.exp),
        Some(claims.nbf),
        now,
        options.leeway_seconds,
    )?;
    Ok(VerifiedBreakGlass { key_id, claims })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn glass_key(seed: u8) -> SigningKeyPair {
        let public = SigningKeyPair::from_seed(KeyId::new("x").unwrap(), [seed; 32]).public_key();
        SigningKeyPair::from_seed(key_id_of(&public), [seed; 32])
    }

    fn request(ttl_seconds: u64) -> MintRequest {
        MintRequest {
            subject: WorkloadId::new("spiffe://example.org/oncall").unwrap(),
            audiences: vec!["billing".into()],
            tenant: TenantId::new(DEFAULT_TENANT).unwrap(),
            scopes: vec![],
            reason: "INC-42: brokers down".into(),
            ttl_seconds,
            now_seconds: 1_000_000,
            nonce: [7; 16],
        }
    }

    fn keys(key: &SigningKeyPair) -> BTreeMap<String, [u8; 32]> {
        BTreeMap::from([(key.key_id().to_string(), key.public_key())])
    }

    fn options(now_seconds: u64) -> BreakGlassOptions {
        BreakGlassOptions {
            now_seconds,
            leeway_seconds: 30,
            max_ttl_seconds: 1800,
        }
    }

    #[test]
    fn a_minted_credential_verifies_within_its_limits() {
        let key = glass_key(1);
        let token = mint(&key, &request(1800)).unwrap();
        assert!(is_break_glass(&token));
        let verified = verify_break_glass(&token, &keys(&key), &options(1_000_100)).unwrap();
        assert_eq!(verified.key_id, *key.key_id());
        assert_eq!(verified.claims.exp - verified.claims.iat, 1800);
        assert_eq!(verified.claims.jti, "07".repeat(16));
        assert_eq!(
            verified.claims.lapse_break_glass.reason,
            "INC-42: brokers down"
        );
    }

    #[test]
    fn limits_are_enforced_when_minting() {
        let key = glass_key(1);
        assert!(matches!(
            mint(&key, &request(MAX_TTL_SECONDS + 1)),
            Err(BreakGlassError::LifetimeTooLong { .. })
        ));
        let mut long = request(60);
        long.reason = "x".repeat(MAX_REASON_BYTES + 1);
        assert!(matches!(
            mint(&key, &long),
            Err(BreakGlassError::BadReason(_))
        ));
        let mut none = request(60);
        none.audiences.clear();
        assert!(matches!(
            mint(&key, &none),
            Err(BreakGlassError::BadAudience(_))
        ));
    }

    #[test]
    fn refused_beyond_the_verifiers_limits() {
        let key = glass_key(1);
        let token = mint(&key, &request(3600)).unwrap();
        assert!(matches!(
            verify_break_glass(&token, &keys(&key), &options(1_000_100)),
            Err(BreakGlassError::LifetimeTooLong {
                lifetime_seconds: 3600,
                max_seconds: 1800
            })
        ));
        let token = mint(&key, &request(600)).unwrap();
        assert!(matches!(
            verify_break_glass(&token, &keys(&key), &options(1_000_700)),
            Err(BreakGlassError::Verify(VerifyError::Expired { .. }))
        ));
        assert!(matches!(
            verify_break_glass(&token, &keys(&key), &options(999_000)),
            Err(BreakGlassError::IssuedInFuture { .. })
        ));
        let other = glass_key(2);
        assert!(matches!(
            verify_break_glass(&token, &keys(&other), &options(1_000_100)),
            Err(BreakGlassError::Verify(VerifyError::UnknownKeyId(_)))
        ));
        // The other key's public key under this key's id: a bad signature.
        let forged = BTreeMap::from([(key.key_id().to_string(), other.public_key())]);
        assert!(matches!(
            verify_break_glass(&token, &forged, &options(1_000_100)),
            Err(BreakGlassError::Verify(VerifyError::BadSignature))
        ));
    }

    #[test]
    fn a_regular_credential_is_not_a_break_glass_one() {
        let key = glass_key(1);
        let claims = crate::Claims {
            iss: BREAK_GLASS_ISSUER.into(),
            sub: WorkloadId::new("spiffe://example.org/a").unwrap(),
            aud: vec!["billing".into()],
            iat: 1_000_000,
            nbf: 1_000_000,
            exp: 1_000_600,
            jti: "07".repeat(16),
            tenant: TenantId::new("acme").unwrap(),
            scopes: vec![],
            status: crate::StatusClaim {
                status_list: crate::StatusListRef {
                    idx: 1,
                    uri: String::new(),
                },
            },
            cnf: None,
            chain: None,
            agent: Default::default(),
        };
        let token = key.sign(&claims).unwrap();
        assert!(!is_break_glass(&token));
        assert!(matches!(
            verify_break_glass(&token, &keys(&key), &options(1_000_100)),
            Err(BreakGlassError::NotBreakGlass(_))
        ));
    }
}
