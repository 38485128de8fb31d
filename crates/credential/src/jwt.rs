//! Signing and verifying Lapse credentials: EdDSA JWTs via jsonwebtoken.
//! Only EdDSA is accepted, the header must say `typ: lapse+jwt` and carry a
//! `kid` and no `crit`, the issuer is always checked and the audience
//! unless the caller explicitly accepts any, and `exp`/`nbf`/`iat` are
//! checked against the `now` the caller passes (jsonwebtoken's own clock
//! checks are off), with a leeway.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use jsonwebtoken::{Algorithm, Header, Validation};

use crate::claims::Claims;
use crate::ids::KeyId;
use crate::jwk::Jwk;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("signing failed: {0}")]
    Signing(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0:?} is not accepted; only EdDSA is")]
    UnsupportedAlgorithm(String),
    #[error("token header has no kid")]
    MissingKeyId,
    #[error("no published key with kid {0:?}")]
    UnknownKeyId(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("expired at {exp}, now {now}")]
    Expired { exp: u64, now: u64 },
    #[error("not valid before {nbf}, now {now}")]
    NotYetValid { nbf: u64, now: u64 },
    #[error("audience {expected:?} is not among the token's audiences")]
    WrongAudience { expected: String },
    #[error("issuer is {found:?}, expected {expected:?}")]
    WrongIssuer { expected: String, found: String },
    #[error("claims are invalid: {0}")]
    BadClaims(String),
    #[error("typ is {found:?}, expected {expected:?}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error(
        "the header lists critical extensions (crit) and this verifier understands none, so it refuses the token"
    )]
    CriticalExtension,
    #[error("issued at {iat}, in the future (now {now})")]
    IssuedInFuture { iat: u64, now: u64 },
    #[error("issued {age_seconds} s ago, more than the {max_seconds} s accepted")]
    TooOld { age_seconds: u64, max_seconds: u64 },
    #[error("{0}")]
    KeyUnfit(String),
}

/// The JOSE `typ` of every credential a broker issues (RFC 8725 §3.11):
/// a verifier takes no other JWT, however it is signed, for a Lapse
/// credential.
pub const CREDENTIAL_TYPE: &str = "lapse+jwt";

/// The `iss` of a cluster that configures no other (`[issuance] issuer`).
pub const DEFAULT_ISSUER: &str = "lapse";

/// The most of a caller-supplied header value repeated in an error.
const MAX_QUOTED_BYTES: usize = 64;

/// `text` cut to at most [`MAX_QUOTED_BYTES`], on a character boundary.
pub(crate) fn quoted(text: &str) -> String {
    let mut end = text.len().min(MAX_QUOTED_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Whether a header's `typ` is `expected`: compared without regard to
/// case, with or without the `application/` prefix (RFC 7515 §4.1.9).
pub(crate) fn type_is(header: &serde_json::Map<String, serde_json::Value>, expected: &str) -> bool {
    let typ = header
        .get("typ")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let typ = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    typ.eq_ignore_ascii_case(expected)
}

/// An Ed25519 signing key, held in memory only.
pub struct SigningKeyPair {
    key_id: KeyId,
    /// The expanded key, made once: every signature uses it directly.
    signing: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyPair")
            .field("key_id", &self.key_id)
            .field("public_key", &URL_SAFE_NO_PAD.encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl SigningKeyPair {
    pub fn from_seed(key_id: KeyId, seed: [u8; 32]) -> Self {
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        Self { key_id, signing }
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub fn public_jwk(&self) -> Jwk {
        Jwk::from_public_key(Some(&self.key_id), &self.public_key())
    }

    /// Sign `claims` as a JWT with `alg: EdDSA`, `typ: lapse+jwt` and this
    /// key's id.
    pub fn sign(&self, claims: &Claims) -> Result<String, CredentialError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(CREDENTIAL_TYPE.into());
        header.kid = Some(self.key_id.to_string());
        self.sign_with_header(&header, claims)
    }

    /// Sign `claims` under a header of the caller's (its `alg` must be
    /// EdDSA).
    pub(crate) fn sign_with_header(
        &self,
        header: &Header,
        claims: &impl serde::Serialize,
    ) -> Result<String, CredentialError> {
        debug_assert_eq!(header.alg, Algorithm::EdDSA);
        // The JWS compact form (RFC 7515 §7.1), signed with the expanded
        // key held since `from_seed`: no key decoding per signature.
        let header =
            serde_json::to_vec(header).map_err(|e| CredentialError::Signing(e.to_string()))?;
        let payload =
            serde_json::to_vec(claims).map_err(|e| CredentialError::Signing(e.to_string()))?;
        let mut token = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 90);
        URL_SAFE_NO_PAD.encode_string(&header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self.signing.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }

    /// A raw Ed25519 signature, for baselines and DPoP proofs.
    pub fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

/// Verify a raw Ed25519 signature: the baseline verification is measured
/// against.
pub fn verify_raw(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    use ed25519_dalek::Verifier as _;
    ed25519_dalek::VerifyingKey::from_bytes(public_key).is_ok_and(|key| {
        key.verify(message, &ed25519_dalek::Signature::from_bytes(signature))
            .is_ok()
    })
}

/// Finds public keys by key id.
pub trait KeyLookup {
    fn public_key(&self, key_id: &str) -> Option<[u8; 32]>;
}

impl KeyLookup for BTreeMap<String, [u8; 32]> {
    fn public_key(&self, key_id: &str) -> Option<[u8; 32]> {
        self.get(key_id).copied()
    }
}

/// Which audience a credential must name. There is no default: a caller
/// that checks none says so (RFC 8725 §3.9: a credential meant for one
/// service must not be accepted by another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceCheck<'a> {
    /// The credential's `aud` must list this one.
    Require(&'a str),
    /// Any audience: for a caller that judges no service's credentials,
    /// such as a broker refreshing a credential for whatever it was for.
    Any,
}

pub struct VerifyOptions<'a> {
    pub audience: AudienceCheck<'a>,
    /// The `iss` every credential must carry: the cluster's
    /// `[issuance] issuer`.
    pub issuer: &'a str,
    pub now_seconds: u64,
    pub leeway_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub key_id: KeyId,
    pub claims: Claims,
}

/// The decoded JOSE header of a compact JWT, without verifying anything.
pub(crate) fn header_json(
    token: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, VerifyError> {
    if token.len() > 64 * 1024 {
        return Err(VerifyError::Malformed("token is longer than 64 KiB".into()));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed(
            "a JWT has three dot-separated parts".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|e| VerifyError::Malformed(format!("header is not base64url: {e}")))?;
    let header = match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err(VerifyError::Malformed("header is not a JSON object".into())),
    };
    // RFC 7515 §4.1.11: a recipient must understand every extension `crit`
    // lists or refuse the token. Lapse defines none and understands none.
    if header.contains_key("crit") {
        return Err(VerifyError::CriticalExtension);
    }
    Ok(header)
}

/// The `kid` of a token, read without verifying it.
pub fn peek_key_id(token: &str) -> Result<Option<String>, VerifyError> {
    Ok(header_json(token)?
        .get("kid")
        .and_then(|v| v.as_str())
        .map(str::to_owned))
}

pub(crate) fn no_clock_validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation
}

/// Check `exp`/`nbf` against `now` with `leeway`.
pub(crate) fn check_times(
    exp: Option<u64>,
    nbf: Option<u64>,
    now: u64,
    leeway: u64,
) -> Result<(), VerifyError> {
    if let Some(exp) = exp
        && now > exp.saturating_add(leeway)
    {
        return Err(VerifyError::Expired { exp, now });
    }
    if let Some(nbf) = nbf
        && now.saturating_add(leeway) < nbf
    {
        return Err(VerifyError::NotYetValid { nbf, now });
    }
    Ok(())
}

/// A credential whose header passed and whose signature decoded, not yet
/// checked against any key: what [`check_signature`] and
/// [`crate::batch::verify_batch`] check. It borrows the token.
#[derive(Debug, Clone)]
pub struct Unverified<'a> {
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'a str,
    /// The payload, still base64url.
    payload: &'a str,
    signature: ed25519_dalek::Signature,
    kid: String,
}

impl<'a> Unverified<'a> {
    /// Read a compact credential's header and signature, checking what
    /// needs no key: three parts, `alg: EdDSA`, `typ: lapse+jwt`, no
    /// `crit`, a signature of 64 bytes, a `kid`.
    pub fn parse(token: &'a str) -> Result<Self, VerifyError> {
        let header = header_json(token)?;
        let alg = header
            .get("alg")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if alg != "EdDSA" {
            return Err(VerifyError::UnsupportedAlgorithm(quoted(alg)));
        }
        if !type_is(&header, CREDENTIAL_TYPE) {
            return Err(VerifyError::WrongType {
                expected: CREDENTIAL_TYPE,
                found: quoted(
                    header
                        .get("typ")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default(),
                ),
            });
        }
        // `header_json` saw three parts.
        let (signing_input, signature) = token.rsplit_once('.').unwrap_or_default();
        let payload = signing_input.split_once('.').unwrap_or_default().1;
        // A truncated or mangled signature is a malformed token, not a forgery.
        let Some(bytes) = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
        else {
            return Err(VerifyError::Malformed(
                "the signature is not 64 bytes of base64url".into(),
            ));
        };
        let kid = header
            .get("kid")
            .and_then(|v| v.as_str())
            .ok_or(VerifyError::MissingKeyId)?
            .to_owned();
        Ok(Self {
            signing_input,
            payload,
            signature: ed25519_dalek::Signature::from_bytes(&bytes),
            kid,
        })
    }

    /// The `kid` the header names (not yet checked against anything).
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// The key the header names, from `keys`.
    pub fn key(&self, keys: &impl KeyLookup) -> Result<CredentialKey, VerifyError> {
        let public_key = keys
            .public_key(&self.kid)
            .ok_or_else(|| VerifyError::UnknownKeyId(quoted(&self.kid)))?;
        let key_id = KeyId::new(&self.kid).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        CredentialKey::new(key_id, public_key)
    }

    /// Check the signature with `key` (ed25519-dalek's `verify`, as the
    /// JWT libraries do).
    pub fn check_signature(&self, key: &CredentialKey) -> Result<(), VerifyError> {
        use ed25519_dalek::Verifier as _;
        key.key
            .verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| VerifyError::BadSignature)
    }

    /// The claims, decoded. Only meaningful once the signature is checked.
    pub fn claims(&self) -> Result<Claims, VerifyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(self.payload)
            .map_err(|e| VerifyError::Malformed(format!("payload is not base64url: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => VerifyError::BadClaims(e.to_string()),
            _ => VerifyError::Malformed(format!("payload is not JSON: {e}")),
        })
    }

    pub(crate) fn parts(&self) -> (&[u8], &ed25519_dalek::Signature) {
        (self.signing_input.as_bytes(), &self.signature)
    }
}

/// A credential key, its point decoded once.
#[derive(Debug, Clone)]
pub struct CredentialKey {
    key_id: KeyId,
    bytes: [u8; 32],
    pub(crate) key: ed25519_dalek::VerifyingKey,
}

impl CredentialKey {
    pub fn new(key_id: KeyId, public_key: [u8; 32]) -> Result<Self, VerifyError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&public_key).map_err(|_| {
            VerifyError::Malformed(format!(
                "key {:?} is not an Ed25519 public key",
                key_id.as_str()
            ))
        })?;
        Ok(Self {
            key_id,
            bytes: public_key,
            key,
        })
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.bytes
    }
}

/// Verify a Lapse credential's signature and decode its claims, checking
/// nothing the claims say: the caller must still [`check_claims`] (at its
/// own `now`, for every use). What this returns depends only on the token
/// and the key, so it may be remembered; what [`check_claims`] decides may
/// not.
pub fn verify_signature(token: &str, keys: &impl KeyLookup) -> Result<Verified, VerifyError> {
    let unverified = Unverified::parse(token)?;
    let key = unverified.key(keys)?;
    unverified.check_signature(&key)?;
    let claims = unverified.claims()?;
    Ok(Verified {
        key_id: key.key_id,
        claims,
    })
}

/// Check what a credential's claims say against `options`: `exp`, `nbf`
/// and `iat` against `now` with the leeway, the audience and the issuer.
pub fn check_claims(claims: &Claims, options: &VerifyOptions) -> Result<(), VerifyError> {
    check_times(
        Some(claims.exp),
        Some(claims.nbf),
        options.now_seconds,
        options.leeway_seconds,
    )?;
    // An `iat` in the future would dodge "issued before" revocations of
    // its workload, tenant or key.
    if claims.iat > options.now_seconds.saturating_add(options.leeway_seconds) {
        return Err(VerifyError::IssuedInFuture {
            iat: claims.iat,
            now: options.now_seconds,
        });
    }
    if let AudienceCheck::Require(audience) = options.audience
        && !claims.aud.iter().any(|a| a == audience)
    {
        return Err(VerifyError::WrongAudience {
            expected: audience.to_owned(),
        });
    }
    if claims.iss != options.issuer {
        return Err(VerifyError::WrongIssuer {
            expected: options.issuer.to_owned(),
            found: quoted(&claims.iss),
        });
    }
    Ok(())
}

/// Verify a Lapse credential: its signature ([`verify_signature`]), then
/// its claims ([`check_claims`]).
pub fn verify(
    token: &str,
    keys: &impl KeyLookup,
    options: &VerifyOptions,
) -> Result<Verified, VerifyError> {
    let verified = verify_signature(token, keys)?;
    check_claims(&verified.claims, options)?;
    Ok(verified)
}
