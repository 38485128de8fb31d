//! Signing keys to the wire.

use lapse_credential::{Jwk, KeyId};
use lapse_ledger::{EvidenceKey, SigningKey};

use lapse_wire::cluster as pb;

/// A key kept for checking audit evidence, as `ListKeys` reports it:
/// `current` is the registered key when it is still published.
pub fn evidence_key_info(
    id: &KeyId,
    key: &EvidenceKey,
    current: Option<&SigningKey>,
) -> pb::SigningKeyInfo {
    match current {
        Some(current) => signing_key_info(id, current),
        None => signing_key_info(
            id,
            &SigningKey {
                broker: key.broker,
                public_key: key.public_key.clone(),
                not_before_ms: 0,
                not_after_ms: key.not_after_ms,
                registered_epoch: key.registered_epoch,
                changed_epoch: key.registered_epoch,
                retired_at_ms: None,
                revoked: None,
            },
        ),
    }
}

/// A registered signing key as `ListKeys` reports it, with its public half
/// as a JWK (empty if the stored key is not a 32-byte Ed25519 key).
pub fn signing_key_info(id: &KeyId, key: &SigningKey) -> pb::SigningKeyInfo {
    let jwk = <[u8; 32]>::try_from(key.public_key.as_slice())
        .ok()
        .and_then(|public| serde_json::to_string(&Jwk::from_public_key(Some(id), &public)).ok())
        .unwrap_or_default();
    pb::SigningKeyInfo {
        key_id: id.to_string(),
        broker_id: key.broker,
        not_before_ms: key.not_before_ms,
        not_after_ms: key.not_after_ms,
        retired_at_ms: key.retired_at_ms,
        revoked: key.revoked.is_some(),
        jwk,
    }
}
