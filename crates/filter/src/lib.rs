//! Compact, versioned revocation filters for Lapse edge verifiers.
//!
//! The cluster publishes, per epoch, everything a verifier needs to reject a
//! revoked credential without calling home:
//!
//! - [`RevokedSet`]: the exact set of revoked status indices inside a live
//!   window, Rice-coded close to the `log2 C(U, R)` bound
//!   ([`information_bound_bits`]) on the wire and held as Elias-Fano in
//!   memory, within 1.1x of the same bound;
//! - [`RevokedDelta`]: indices revoked since the previous epoch plus window
//!   moves, so verifiers can follow along cheaply;
//! - [`SecretSet`]: SHA-256 hashes of leaked static secrets, a Bloom filter
//!   for the fast path backed by an exact set for confirmation;
//! - [`RuleSet`]: subject, tenant, task and key-id revocation rules;
//! - [`KeySet`]: the public keys credentials are signed with.
//!
//! [`format`] wraps these in a checksummed, versioned container
//! ([`encode_message`] / [`decode_message`]). Decoding is safe on untrusted
//! bytes: it never panics and every allocation is bounded by the input size
//! and by hard constants.
//!
//! The crate is pure: no IO, no clock, no OS randomness — Bloom seeds are
//! passed in by the caller.

mod bloom;
mod broadword;
mod codec;
mod delta;
mod error;
mod exact;
pub mod format;
mod gaps;
mod keys;
mod rules;
mod succinct;
#[cfg(test)]
mod testing;
pub mod vouch;

pub use bloom::{MAX_PLANNED_ITEMS, MAX_SECRETS, MIN_PLANNED_ITEMS, SecretHash, SecretSet};
pub use delta::RevokedDelta;
pub use error::FilterError;
pub use exact::{RevokedSet, information_bound_bits};
pub use format::{
    CredentialFacts, DeltaMessage, FORMAT_VERSION, MAGIC, MAX_MESSAGE_BYTES, Message, MessageKind,
    Snapshot, decode_message, encode_message,
};
pub use gaps::MAX_INDICES;
pub use keys::{KeyAlgorithm, KeySet, MAX_KEYS, MAX_PUBLIC_KEY_BYTES, PublicKey};
pub use rules::{MAX_RULES, MAX_STRING_BYTES, MAX_TASK_BYTES, RevokedBy, RuleSet};
pub use vouch::{StateDigest, Statement};
