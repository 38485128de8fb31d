//! Batch verification of credential signatures (ed25519-dalek's
//! `verify_batch`): one multi-scalar multiplication for many signatures,
//! cheaper per signature than checking each alone. A batch either passes
//! whole or says only that something in it is wrong, so a failed batch
//! falls back to checking each signature alone, and each credential gets
//! its own answer.
//!
//! The batch equation is the unscaled one (no cofactor), like
//! ed25519-dalek's single `verify` in all but signatures built with
//! small-order components, which only the holder of the signing key can
//! make: no batch accepts a signature whose key holder did not sign it.

use crate::jwt::{CredentialKey, Unverified, VerifyError};

/// Check each credential's signature with its key: one batch when they
/// all pass, each alone when the batch fails. The answers are in the
/// order given.
pub fn verify_batch(items: &[(&Unverified<'_>, &CredentialKey)]) -> Vec<Result<(), VerifyError>> {
    if batch_passes(items) {
        return vec![Ok(()); items.len()];
    }
    items
        .iter()
        .map(|(unverified, key)| unverified.check_signature(key))
        .collect()
}

/// Whether every signature of `items` verifies, in one batch. An empty
/// batch passes.
pub fn batch_passes(items: &[(&Unverified<'_>, &CredentialKey)]) -> bool {
    match items {
        [] => true,
        [(unverified, key)] => unverified.check_signature(key).is_ok(),
        _ => {
            let mut messages = Vec::with_capacity(items.len());
            let mut signatures = Vec::with_capacity(items.len());
            let mut keys = Vec::with_capacity(items.len());
            for (unverified, key) in items {
                let (message, signature) = unverified.parts();
                messages.push(message);
                signatures.push(*signature);
                keys.push(key.key);
            }
            ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        }
    }
}
