//! The versioned, checksummed container that carries full snapshots and
//! deltas to edge verifiers, and the state a verifier keeps from them.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic "LPSF" (4) | version u16 | kind u8 | body_len u32 | body | crc32 u32
//! ```
//!
//! The CRC-32 (IEEE) covers every byte before it. Decoding checks magic,
//! version, length limits and the CRC before it looks at the body, and the
//! body must be consumed exactly.
//!
//! Bodies: a full snapshot is `varint epoch, RevokedSet, SecretSet, RuleSet`;
//! a delta is `RevokedDelta, hashes (varint count, count × [u8; 32]),
//! RuleSet` (the rules to merge).

use std::collections::BTreeSet;

use crate::bloom::{SecretHash, decode_hashes, put_hashes};
use crate::codec::{Reader, put_varint};
use crate::delta::RevokedDelta;
use crate::error::FilterError;
use crate::exact::RevokedSet;
use crate::keys::{KeySet, decode_kids, put_kids};
use crate::rules::{RevokedBy, RuleSet};
use crate::{SecretSet, bloom::MAX_SECRETS};

/// The four bytes every message starts with.
pub const MAGIC: [u8; 4] = *b"LPSF";
/// The only container version this build reads and writes. 2: rule sets
/// carry task rules.
pub const FORMAT_VERSION: u16 = 2;
/// Hard cap on a whole message, header and trailer included.
pub const MAX_MESSAGE_BYTES: u64 = 64 * 1024 * 1024;

const HEADER_LEN: usize = 4 + 2 + 1 + 4;
const TRAILER_LEN: usize = 4;

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageKind {
    /// A complete [`Snapshot`].
    Full = 1,
    /// A [`DeltaMessage`] between two epochs.
    Delta = 2,
}

/// The full filter state at one epoch — what a verifier holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Epoch of this state.
    pub epoch: u64,
    /// Revoked status indices.
    pub set: RevokedSet,
    /// Leaked secret hashes.
    pub secrets: SecretSet,
    /// Subject, tenant, task and key-id rules.
    pub rules: RuleSet,
    /// Public keys that credentials may be signed with.
    pub keys: KeySet,
}

/// Everything that changed between two epochs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaMessage {
    /// Status-index changes; its epochs are the delta's epochs.
    pub revoked: RevokedDelta,
    /// Newly leaked secret hashes.
    pub added_secrets: BTreeSet<SecretHash>,
    /// Rules to merge (later cutoffs win, key ids union).
    pub rules: RuleSet,
    /// Keys registered or changed.
    pub keys: KeySet,
    /// Ids of keys that left the window.
    pub keys_removed: BTreeSet<String>,
}

/// A decoded message.
// A delta's maps are a few hundred bytes of headers, moved once per event;
// boxing it would cost an allocation per delta for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A full snapshot (boxed: it is much larger than a delta).
    Full(Box<Snapshot>),
    /// A delta.
    Delta(DeltaMessage),
}

impl Message {
    /// The container kind of this message.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Full(_) => MessageKind::Full,
            Message::Delta(_) => MessageKind::Delta,
        }
    }
}

impl Snapshot {
    /// Apply a delta that starts at this snapshot's epoch. Atomic: on error
    /// `self` is untouched (the work is done on a copy).
    pub fn apply(&mut self, delta: &DeltaMessage) -> Result<(), FilterError> {
        let (from, to) = (delta.revoked.from_epoch(), delta.revoked.to_epoch());
        if from != self.epoch {
            return Err(FilterError::EpochMismatch {
                state: self.epoch,
                from,
                to,
            });
        }
        // Check everything that can fail first, then change in place:
        // a verifier's state may be large, so it is not copied per delta.
        let new_secrets = delta
            .added_secrets
            .iter()
            .filter(|h| !self.secrets.contains(h))
            .count();
        if (self.secrets.len() + new_secrets) as u64 > MAX_SECRETS {
            return Err(FilterError::TooLarge {
                what: "secret set",
                len: (self.secrets.len() + new_secrets) as u64,
                max: MAX_SECRETS,
            });
        }
        self.rules.check_merge(&delta.rules)?;
        self.keys.check_apply(&delta.keys, &delta.keys_removed)?;
        // Atomic on its own; the last step that can fail.
        self.set.apply(&delta.revoked)?;
        for h in &delta.added_secrets {
            let inserted = self.secrets.insert(*h);
            debug_assert!(inserted.is_ok(), "room was checked");
        }
        let merged = self.rules.merge(&delta.rules);
        debug_assert!(merged.is_ok(), "room was checked");
        let applied = self.keys.apply(&delta.keys, &delta.keys_removed);
        debug_assert!(applied.is_ok(), "room was checked");
        self.epoch = to;
        Ok(())
    }

    /// Whether a credential is revoked by any part of this state.
    pub fn revokes(&self, credential: &CredentialFacts<'_>) -> bool {
        self.revoked_by(credential).is_some()
    }

    /// What revokes a credential, if anything: its index, then the first
    /// of its ancestors' indices (root first) in the revoked set, its hash,
    /// then the rules.
    pub fn revoked_by(&self, credential: &CredentialFacts<'_>) -> Option<RevokedBy> {
        if credential
            .status_index
            .is_some_and(|i| self.set.contains(i))
        {
            Some(RevokedBy::StatusIndex)
        } else if let Some(&index) = credential
            .ancestors
            .iter()
            .find(|&&index| self.set.contains(index))
        {
            Some(RevokedBy::Ancestor { index })
        } else if credential
            .secret_hash
            .is_some_and(|h| self.secrets.contains(h))
        {
            Some(RevokedBy::SecretHash)
        } else {
            self.rules.revoked_by(
                credential.tenant,
                credential.subject,
                credential.task,
                credential.key_id,
                credential.issued_at_ms,
            )
        }
    }
}

/// What the revocation state judges a credential by. The optional parts
/// are claims not every credential has (a break-glass credential has no
/// status index; an undelegated one no ancestors; most no task).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CredentialFacts<'a> {
    pub tenant: &'a str,
    pub subject: &'a str,
    pub key_id: &'a str,
    pub issued_at_ms: u64,
    pub status_index: Option<u64>,
    /// The status indices of the credentials it was exchanged from.
    pub ancestors: &'a [u64],
    pub task: Option<&'a str>,
    /// The SHA-256 of the credential's own bytes.
    pub secret_hash: Option<&'a SecretHash>,
}

/// Wrap a message in the container. Fails only if the message exceeds
/// [`MAX_MESSAGE_BYTES`].
pub fn encode_message(msg: &Message) -> Result<Vec<u8>, FilterError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(msg.kind() as u8);
    out.extend_from_slice(&[0; 4]);
    match msg {
        Message::Full(s) => {
            put_varint(&mut out, s.epoch);
            s.set.encode_into(&mut out);
            s.secrets.encode_into(&mut out);
            s.rules.encode_into(&mut out);
            s.keys.encode_into(&mut out);
        }
        Message::Delta(d) => {
            d.revoked.encode_into(&mut out);
            put_hashes(&mut out, d.added_secrets.iter());
            d.rules.encode_into(&mut out);
            d.keys.encode_into(&mut out);
            put_kids(&mut out, d.keys_removed.iter());
        }
    }
    let total = (out.len() + TRAILER_LEN) as u64;
    if total > MAX_MESSAGE_BYTES {
        return Err(FilterError::TooLarge {
            what: "message",
            len: total,
            max: MAX_MESSAGE_BYTES,
        });
    }
    let body_len = (out.len() - HEADER_LEN) as u32;
    out[7..11].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decode an untrusted message. Never panics; allocations are bounded by the
/// input length and the crate's hard limits.
pub fn decode_message(bytes: &[u8]) -> Result<Message, FilterError> {
    let n = bytes.len().min(MAGIC.len());
    if bytes[..n] != MAGIC[..n] {
        return Err(FilterError::BadMagic);
    }
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return Err(FilterError::Truncated);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(FilterError::UnsupportedVersion(version));
    }
    let kind = bytes[6];
    let body_len = u64::from(u32::from_le_bytes([
        bytes[7], bytes[8], bytes[9], bytes[10],
    ]));
    let max_body = MAX_MESSAGE_BYTES - (HEADER_LEN + TRAILER_LEN) as u64;
    if body_len > max_body {
        return Err(FilterError::TooLarge {
            what: "message body",
            len: body_len,
            max: max_body,
        });
    }
    let total = HEADER_LEN as u64 + body_len + TRAILER_LEN as u64;
    let have = bytes.len() as u64;
    if have < total {
        return Err(FilterError::Truncated);
    }
    if have > total {
        return Err(FilterError::TrailingBytes((have - total) as usize));
    }
    let crc_at = bytes.len() - TRAILER_LEN;
    let stored = u32::from_le_bytes([
        bytes[crc_at],
        bytes[crc_at + 1],
        bytes[crc_at + 2],
        bytes[crc_at + 3],
    ]);
    let computed = crc32fast::hash(&bytes[..crc_at]);
    if stored != computed {
        return Err(FilterError::BadChecksum { stored, computed });
    }
    let mut r = Reader::new(&bytes[HEADER_LEN..crc_at]);
    let msg = match kind {
        k if k == MessageKind::Full as u8 => {
            let epoch = r.varint()?;
            let set = RevokedSet::decode_from(&mut r)?;
            let secrets = SecretSet::decode_from(&mut r)?;
            let rules = RuleSet::decode_from(&mut r)?;
            let keys = KeySet::decode_from(&mut r)?;
            Message::Full(Box::new(Snapshot {
                epoch,
                set,
                secrets,
                rules,
                keys,
            }))
        }
        k if k == MessageKind::Delta as u8 => {
            let revoked = RevokedDelta::decode_from(&mut r)?;
            let hashes = decode_hashes(&mut r)?;
            debug_assert!(hashes.len() as u64 <= MAX_SECRETS);
            let rules = RuleSet::decode_from(&mut r)?;
            let keys = KeySet::decode_from(&mut r)?;
            let keys_removed = decode_kids(&mut r)?;
            Message::Delta(DeltaMessage {
                revoked,
                added_secrets: hashes.into_iter().collect(),
                rules,
                keys,
                keys_removed,
            })
        }
        other => return Err(FilterError::UnknownKind(other)),
    };
    r.finish()?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut secrets = SecretSet::new(10, 0.01, [3; 32]).unwrap();
        secrets.insert([1; 32]).unwrap();
        let mut rules = RuleSet::new();
        rules.revoke_tenant("acme", 77).unwrap();
        Snapshot {
            epoch: 5,
            set: RevokedSet::from_sorted(100, 1000, [100, 150, 1099]).unwrap(),
            secrets,
            rules,
            keys: KeySet::new(),
        }
    }

    fn delta() -> DeltaMessage {
        let mut rules = RuleSet::new();
        rules.revoke_key("k7").unwrap();
        DeltaMessage {
            revoked: RevokedDelta::new(5, 6, vec![1100, 1101], Some(120)).unwrap(),
            added_secrets: [[2; 32], [0; 32]].into_iter().collect(),
            rules,
            keys: {
                let mut k = KeySet::new();
                k.insert(
                    "k8",
                    crate::PublicKey {
                        algorithm: crate::KeyAlgorithm::Ed25519,
                        bytes: vec![8; 32],
                        not_before_ms: 1,
                        not_after_ms: 2,
                    },
                )
                .unwrap();
                k
            },
            keys_removed: ["k0".to_string()].into_iter().collect(),
        }
    }

    #[test]
    fn round_trips() {
        for m in [Message::Full(Box::new(snapshot())), Message::Delta(delta())] {
            let b = encode_message(&m).unwrap();
            assert_eq!(&b[..4], b"LPSF");
            assert_eq!(decode_message(&b).unwrap(), m);
        }
    }

    #[test]
    fn header_errors() {
        let b = encode_message(&Message::Full(Box::new(snapshot()))).unwrap();
        assert_eq!(decode_message(&[]), Err(FilterError::Truncated));
        assert_eq!(decode_message(b"LPS"), Err(FilterError::Truncated));
        assert_eq!(decode_message(b"XPSF"), Err(FilterError::BadMagic));
        assert_eq!(
            decode_message(&b[..b.len() - 1]),
            Err(FilterError::Truncated)
        );
        let mut long = b.clone();
        long.push(0);
        assert_eq!(decode_message(&long), Err(FilterError::TrailingBytes(1)));
        let mut v = b.clone();
        v[4] = 9;
        assert_eq!(decode_message(&v), Err(FilterError::UnsupportedVersion(9)));
        let mut c = b.clone();
        let last = c.len() - 5;
        c[last] ^= 1;
        assert!(matches!(
            decode_message(&c),
            Err(FilterError::BadChecksum { .. })
        ));
        let mut big = b.clone();
        big[7..11].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_message(&big),
            Err(FilterError::TooLarge { .. })
        ));
        // Unknown kind with a valid checksum.
        let mut k = b[..b.len() - 4].to_vec();
        k[6] = 9;
        let crc = crc32fast::hash(&k);
        k.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_message(&k), Err(FilterError::UnknownKind(9)));
    }

    #[test]
    fn snapshot_apply() {
        let mut s = snapshot();
        s.apply(&delta()).unwrap();
        assert_eq!(s.epoch, 6);
        assert_eq!(
            s.set.iter().collect::<Vec<_>>(),
            vec![150, 1099, 1100, 1101]
        );
        assert!(s.secrets.contains(&[2; 32]) && s.secrets.contains(&[1; 32]));
        assert!(s.rules.revokes("x", "y", None, "k7", 0));
        let facts = |status_index, ancestors, secret_hash| CredentialFacts {
            tenant: "z",
            subject: "z",
            key_id: "k0",
            status_index,
            ancestors,
            secret_hash,
            ..CredentialFacts::default()
        };
        assert_eq!(
            s.revoked_by(&facts(Some(150), &[], None)),
            Some(RevokedBy::StatusIndex)
        );
        assert!(!s.revokes(&facts(Some(151), &[], Some(&[9; 32]))));
        assert_eq!(
            s.revoked_by(&facts(Some(151), &[140, 1100, 1099], None)),
            Some(RevokedBy::Ancestor { index: 1100 })
        );
        assert!(!s.revokes(&facts(Some(151), &[140, 141], None)));
        // Replaying the same delta is an epoch mismatch and changes nothing.
        let before = s.clone();
        assert!(matches!(
            s.apply(&delta()),
            Err(FilterError::EpochMismatch { .. })
        ));
        assert_eq!(s, before);
    }
}
