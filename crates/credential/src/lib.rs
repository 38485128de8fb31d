//! The Lapse credential: validated identifiers, claims, EdDSA JWT signing
//! and verification at an explicit `now`, Ed25519 JWKs, DPoP proofs,
//! verification of external attestation JWTs, break-glass credentials
//! signed offline ([`break_glass`]), and batch verification of credential
//! signatures ([`batch`]).
//!
//! Pure: no clock, no OS randomness, no IO. Time is an argument; key
//! generation takes its seed from the caller.

pub mod batch;
pub mod break_glass;
mod claims;
mod dpop;
mod external;
mod ids;
mod jwk;
mod jwt;
pub mod presented;
pub mod status_list;

pub use claims::{
    Actor, AgentContext, Chain, Claims, Confirmation, MAX_DELEGATION_DEPTH, MAX_ON_BEHALF_OF_BYTES,
    MAX_TASK_BYTES, StatusClaim, StatusListRef, intent_problem, on_behalf_of_problem, task_problem,
};
pub use dpop::{
    DpopError, DpopExpectation, ReplayCache, VerifiedProof, access_token_hash, make_proof,
    make_proof_with_nonce, verify_proof,
};
pub use external::{DEFAULT_MAX_TOKEN_AGE_SECONDS, ExternalIssuer, MAX_JWKS_BYTES, MAX_JWKS_KEYS};
pub use ids::{IdError, KeyId, StatusIndex, TenantId, WorkloadId};
pub use jwk::{Jwk, JwkError, JwkSet};
pub use jwt::{
    AudienceCheck, CREDENTIAL_TYPE, CredentialError, CredentialKey, DEFAULT_ISSUER, KeyLookup,
    SigningKeyPair, Unverified, Verified, VerifyError, VerifyOptions, check_claims, peek_key_id,
    verify, verify_raw, verify_signature,
};
