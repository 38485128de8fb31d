//! Keys, credentials and input layouts shared by the `credential_proofs`
//! and `verifier_http` targets and by the seed generator
//! (`examples/seeds.rs`).
//!
//! Signatures would stop almost every fuzzed token before its claims are
//! read, so `credential_proofs` signs what the fuzzer writes: its input is
//! the JSON of a token's header and claims (and of a DPoP proof's), which
//! the target encodes and signs with one of the keys here. All keys are
//! derived from fixed seeds or test fixtures; they protect nothing.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use lapse_credential::break_glass::key_id_of;
use lapse_credential::{
    Claims, Confirmation, KeyId, SigningKeyPair, StatusClaim, StatusListRef, TenantId, WorkloadId,
};

/// The moment `credential_proofs` judges everything at (seconds).
pub const NOW: u64 = 1_800_000_000;

/// The cluster signing key's id: in the key ring and the verifier's feed.
pub const CLUSTER_KID: &str = "n1-test";

/// The external issuer's name and audience in `credential_proofs`.
pub const EXTERNAL_ISSUER: &str = "https://kubernetes.default.svc";
pub const EXTERNAL_AUDIENCE: &str = "lapse";

/// The URL DPoP proofs in the seeds are made for.
pub const DPOP_URL: &str = "https://broker.example/v1/refresh";

/// Test-only ES256 key of `crates/credential/tests` (PKCS#8 DER) and its
/// public coordinates.
const ES256_TEST_KEY: &[u8] =
    include_bytes!("../../crates/credential/tests/fixtures/external-es256-test-key.der");
const ES256_TEST_X: &str = "3G3mRhlZG2lICIXMoISaM41BFRN3X7ocJXoGSE_W6_U";
const ES256_TEST_Y: &str = "iPKLNpkf5D6b8VLC0rNGvuET-z0A8ZHU3CMiky-d3p4";
/// Test-only RS256 key of `crates/credential/tests` (PKCS#1 DER) and its
/// modulus.
pub const RS256_TEST_KEY: &[u8] =
    include_bytes!("../../crates/credential/tests/fixtures/external-rs256-test-key.der");
const RS256_TEST_N: &str = "y_iIDx1nI_dhz-cHG-k7_FevionvsCa_V1jF1bKR0ThAlaU6WrcqU6Fet4VZXOyTyFws7lb3Q2hZmUhTl-PQsGrjwMntGeZPzZdMmkfqtDxTi-p4QSwdiblkElLL8Mq7nvP0U3ibQPXGyv1Yg2Up8adXky4eBiLxQ71mIJUUUHxC-Glb_iOR1Mf4xdxEFE4pgTv_a5wO4zyccw2U0r_1H-rl-1FBf2m8S7eK5OdGgOiPLpWk8kgv8bKZi_ft8OWSENeQgEjlDseXFk5sHhcZxgMuP_FnjRpRzT6hQ0zkyI3yQz3IHVPmfzxGV9QqA8Hc-4wS81Ckxith--9B8pN6yQ";

/// The cluster's signing key.
pub fn cluster_key() -> SigningKeyPair {
    SigningKeyPair::from_seed(KeyId::new(CLUSTER_KID).expect("valid"), [7; 32])
}

/// An offline break-glass key (its id is [`key_id_of`] its public key).
pub fn break_glass_key() -> SigningKeyPair {
    let seed = [11; 32];
    let public = SigningKeyPair::from_seed(KeyId::new("x").expect("valid"), seed).public_key();
    SigningKeyPair::from_seed(key_id_of(&public), seed)
}

/// The key a workload holds and proves possession of with DPoP.
pub fn dpop_key() -> SigningKeyPair {
    SigningKeyPair::from_seed(KeyId::new("holder").expect("valid"), [5; 32])
}

/// A key nobody trusts.
pub fn stranger_key() -> SigningKeyPair {
    SigningKeyPair::from_seed(KeyId::new(CLUSTER_KID).expect("valid"), [0x42; 32])
}

/// The external issuer's ES256 signing key.
pub fn es256_key() -> EncodingKey {
    EncodingKey::from_ec_der(ES256_TEST_KEY)
}

/// Key ring of the cluster: its signing key only.
pub fn cluster_ring() -> BTreeMap<String, [u8; 32]> {
    [(CLUSTER_KID.to_owned(), cluster_key().public_key())].into()
}

/// Key ring of break-glass keys.
pub fn break_glass_ring() -> BTreeMap<String, [u8; 32]> {
    let key = break_glass_key();
    [(key.key_id().to_string(), key.public_key())].into()
}

/// The external issuer's JWKS: RSA (`rsa-1`), P-256 (`ec-1`) and Ed25519
/// (`ed-1`, the cluster key's public half, so Ed25519 tokens the target
/// signs reach every check).
pub fn external_jwks() -> String {
    serde_json::json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": RS256_TEST_N, "e": "AQAB"},
        {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": ES256_TEST_X, "y": ES256_TEST_Y},
        {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": cluster_key().public_jwk().x},
    ]})
    .to_string()
}

/// Base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Who signs a token the target assembles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Cluster,
    BreakGlass,
    Es256,
    Stranger,
    Dpop,
}

/// `b64(header).b64(claims).signature`, signed by `signer`.
pub fn assemble(header: &[u8], claims: &[u8], signer: Signer) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let signature = match signer {
        Signer::Cluster => b64(&cluster_key().sign_raw(input.as_bytes())),
        Signer::BreakGlass => b64(&break_glass_key().sign_raw(input.as_bytes())),
        Signer::Stranger => b64(&stranger_key().sign_raw(input.as_bytes())),
        Signer::Dpop => b64(&dpop_key().sign_raw(input.as_bytes())),
        Signer::Es256 => {
            jsonwebtoken::crypto::sign(input.as_bytes(), &es256_key(), Algorithm::ES256)
                .expect("ES256 signs")
        }
    };
    format!("{input}.{signature}")
}

/// The decoded JSON of part `n` of a compact JWT (empty when absent).
pub fn part(token: &str, n: usize) -> Vec<u8> {
    token
        .split('.')
        .nth(n)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .unwrap_or_default()
}

/// Claims of a cluster credential for `billing`, issued at `iat`.
pub fn claims(index: u64, tenant: &str, iat: u64, lifetime: u64) -> Claims {
    Claims {
        iss: lapse_credential::DEFAULT_ISSUER.into(),
        sub: WorkloadId::new("spiffe://acme.example/payments").expect("valid"),
        aud: vec!["billing".into()],
        iat,
        nbf: iat,
        exp: iat + lifetime,
        jti: format!("jti-{index}"),
        tenant: TenantId::new(tenant).expect("valid"),
        scopes: vec!["read".into()],
        status: StatusClaim {
            status_list: StatusListRef {
                idx: index,
                uri: "https://lapse.test/status".into(),
            },
        },
        cnf: None,
        chain: None,
        agent: Default::default(),
    }
}

/// Claims bound to the DPoP key (`cnf.jkt`).
pub fn bound_claims(index: u64, iat: u64) -> Claims {
    Claims {
        cnf: Some(Confirmation {
            jkt: dpop_key().public_jwk().thumbprint(),
        }),
        ..claims(index, "acme", iat, 600)
    }
}

/// Splits `data` on `0x00` into at most `n` segments; missing ones are
/// empty.
pub fn segments(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |&b| b == 0).collect();
    out.resize(n, &[]);
    out
}

/// Joins segments with `0x00` (the inverse of [`segments`] when no
/// segment holds a `0x00`).
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
}

/// `credential_proofs` flags (first input byte).
pub mod flags {
    /// Segment 0 is the whole token, not its header JSON.
    pub const TOKEN_RAW: u8 = 1;
    /// Bits 1–2: who signs the token: cluster, break-glass, ES256, stranger.
    pub const SIGNER_SHIFT: u8 = 1;
    /// Segment 2 is the whole proof, not its header JSON.
    pub const PROOF_RAW: u8 = 1 << 3;
    /// Flip a bit of the token's signature.
    pub const DAMAGE: u8 = 1 << 4;
    /// The proof must carry the token's hash (`ath`).
    pub const BOUND: u8 = 1 << 5;
    /// Require the audience `billing` (otherwise any).
    pub const AUDIENCE: u8 = 1 << 6;
    /// The proof is signed by the cluster key instead of the DPoP key.
    pub const PROOF_BY_CLUSTER: u8 = 1 << 7;
}

/// `verifier_http` dictionaries: the fuzzer picks entries by index.
pub mod http {
    pub const METHODS: &[&str] = &[
        "POST", "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "LAPSE",
    ];
    pub const PATHS: &[&str] = &[
        "/v1/verify",
        "/v1/verify-all",
        "/v1/check-secret",
        "/v1/status",
        "/metrics",
        "/healthz",
        "/",
        "/v1/verify/",
        "/v1",
        "//v1/verify",
        "/v1/VERIFY",
        "/v1/verify%2F",
    ];
    pub const QUERIES: &[&str] = &[
        "",
        "?verifier=v-fresh",
        "?verifier=v-open",
        "?verifier=v-empty",
        "?verifier=v-noaud",
        "?verifier=nope",
        "?verifier=",
        "?verifier",
        "?verifier=%ff%fe",
        "?verifier=v-fresh&verifier=v-open",
        "?other=1",
        "?verifier[]=x",
        "?&&==",
    ];
    pub const HEADER_NAMES: &[&str] = &[
        "content-type",
        "content-length",
        "authorization",
        "accept",
        "transfer-encoding",
        "host",
        "content-encoding",
        "expect",
    ];
    pub const CONTENT_TYPES: &[&str] = &[
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ];
    /// Body modes (one byte after the headers).
    pub const BODY_EMPTY: u8 = 0;
    pub const BODY_RAW: u8 = 1;
    pub const BODY_VERIFY: u8 = 2;
    pub const BODY_SECRET: u8 = 3;
    pub const BODY_OVERSIZE: u8 = 4;
    pub const BODY_BLANK: u8 = 5;
    pub const BODY_MODES: u8 = 6;
    /// Header value modes.
    pub const VALUE_DICTIONARY: u8 = 0;
    pub const VALUE_BEARER: u8 = 1;
    pub const VALUE_RAW: u8 = 2;
    pub const VALUE_LENGTH: u8 = 3;
    pub const VALUE_MODES: u8 = 4;
    /// Token choices in a verify body or a bearer header: an entry of the
    /// credential bank, or (at `BANK_LEN` and above) fuzzer text.
    pub const BANK_LEN: u8 = 10;
}
