//! Issuance evidence: what makes an [`IssuanceRecord`] checkable by anyone
//! holding the cluster's public keys. Each broker chains its records (every
//! record's seal names the hash of the broker's previous record) and signs
//! each one with its committed key over a domain-separated digest of the
//! record with the signature left empty.
//!
//! Pure: hashing, signature checks and chain walks, no IO. The broker's
//! audit log seals with [`seal`]; `lapse audit verify` and tests check with
//! [`ChainCheck`].

use lapse_credential::{KeyId, verify_raw};
use sha2::{Digest, Sha256 as Hasher};

use crate::command::{IssuanceRecord, NodeId, Seal, Sha256};

/// The domain the evidence signature is made in: no other Lapse signature
/// (credentials, heartbeats, proofs) can be taken for one.
pub const EVIDENCE_DOMAIN: &[u8] = b"lapse-evidence-v1\0";

/// What the first record of a broker's chain names as its previous hash.
pub const GENESIS_SHA256: Sha256 = [0; 32];

/// The exact bytes of a record as evidence: its postcard encoding, seal
/// included. What the audit query carries and [`record_sha256`] hashes.
pub fn evidence_bytes(record: &IssuanceRecord) -> Vec<u8> {
    postcard::to_stdvec(record).expect("records always serialise")
}

/// Decode evidence bytes (untrusted) back into a record.
pub fn record_from_evidence(bytes: &[u8]) -> Result<IssuanceRecord, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// The hash the broker's next record chains to: sha256 of the whole record,
/// signature included.
pub fn record_sha256(record: &IssuanceRecord) -> Sha256 {
    Hasher::digest(evidence_bytes(record)).into()
}

/// What the evidence signature signs: sha256 of [`EVIDENCE_DOMAIN`] and the
/// record's encoding with its seal's signature empty. A record without a
/// seal is digested as it is.
pub fn evidence_digest(record: &IssuanceRecord) -> Sha256 {
    let mut unsigned = record.clone();
    if let Some(seal) = &mut unsigned.seal {
        seal.signature.clear();
    }
    let mut hasher = Hasher::new();
    hasher.update(EVIDENCE_DOMAIN);
    hasher.update(evidence_bytes(&unsigned));
    hasher.finalize().into()
}

/// Seal `record` as the successor of the record hashed `previous_sha256`:
/// signed by `signer` (a key id and an Ed25519 signing function) when the
/// broker has a committed key, else only chained.
pub fn seal(
    record: &mut IssuanceRecord,
    previous_sha256: Sha256,
    signer: Option<(KeyId, &Sign<'_>)>,
) {
    let (key_id, sign) = match signer {
        Some((key_id, sign)) => (Some(key_id), Some(sign)),
        None => (None, None),
    };
    record.seal = Some(Seal {
        previous_sha256,
        key_id,
        signature: Vec::new(),
    });
    if let Some(sign) = sign {
        let signature = sign(&evidence_digest(record)).to_vec();
        if let Some(seal) = &mut record.seal {
            seal.signature = signature;
        }
    }
}

/// Finds the broker and Ed25519 public key of an evidence key by its id.
pub type KeyLookup<'a> = dyn Fn(&KeyId) -> Option<(NodeId, [u8; 32])> + 'a;

/// Signs a message with Ed25519.
pub type Sign<'a> = dyn Fn(&[u8]) -> [u8; 64] + 'a;

/// Why a broker's chain of records does not check, at the first record
/// found broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("it carries no seal (recorded before evidence was sealed, or the seal was removed)")]
    Unsealed,
    #[error(
        "it comes after record {previous} (expected record {expected}): a record was removed or reordered"
    )]
    OutOfSequence { previous: u64, expected: u64 },
    #[error(
        "previous hash does not match record {previous}: a record was changed, removed or reordered"
    )]
    PreviousMismatch { previous: u64 },
    #[error(
        "it is the broker's first record but names a previous hash: records before it were removed"
    )]
    NotGenesis,
    #[error(
        "signature does not verify with key {key_id}: the record was changed after it was signed"
    )]
    BadSignature { key_id: KeyId },
    #[error("it is signed with key {key_id}, which the cluster does not keep (unknown or pruned)")]
    UnknownKey { key_id: KeyId },
    #[error("it is signed with key {key_id}, which belongs to broker {owner}")]
    ForeignKey { key_id: KeyId, owner: NodeId },
}

/// The first broken link of a broker's chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker {broker}, record {sequence}: {broken}")]
pub struct BrokenLink {
    pub broker: NodeId,
    pub sequence: u64,
    pub broken: Broken,
}

/// Walks one broker's records in the order given and checks each: first
/// its signature by the key it names (which must be the broker's), then its
/// link to the record before it.
///
/// Links are checked between records whose sequences follow each other.
/// With `allow_gaps` false, a jump in sequence is a break (a record is
/// missing); with it true (a filtered view, such as one tenant's records),
/// the link across the gap is counted as unchecked instead. The first
/// record's link is checked only when it is the broker's record 1 (which
/// must name [`GENESIS_SHA256`]); otherwise it anchors the walk.
pub struct ChainCheck<'k> {
    broker: NodeId,
    allow_gaps: bool,
    key: &'k KeyLookup<'k>,
    last: Option<(u64, Sha256)>,
    /// Records checked so far.
    pub records: u64,
    /// Records chained but unsigned (no committed key yet).
    pub unsigned: u64,
    /// Links across a gap, not checked (only with `allow_gaps`).
    pub unchecked_links: u64,
}

impl<'k> ChainCheck<'k> {
    pub fn new(broker: NodeId, allow_gaps: bool, key: &'k KeyLookup<'k>) -> Self {
        Self {
            broker,
            allow_gaps,
            key,
            last: None,
            records: 0,
            unsigned: 0,
            unchecked_links: 0,
        }
    }

    /// Check the next record of the broker's chain.
    pub fn next(&mut self, record: &IssuanceRecord) -> Result<(), BrokenLink> {
        let broken = |broken| BrokenLink {
            broker: self.broker,
            sequence: record.sequence,
            broken,
        };
        let seal = record
            .seal
            .as_ref()
            .ok_or_else(|| broken(Broken::Unsealed))?;
        match &seal.key_id {
            None => self.unsigned += 1,
            Some(key_id) => {
                let (owner, public) = (self.key)(key_id).ok_or_else(|| {
                    broken(Broken::UnknownKey {
                        key_id: key_id.clone(),
                    })
                })?;
                if owner != self.broker {
                    return Err(broken(Broken::ForeignKey {
                        key_id: key_id.clone(),
                        owner,
                    }));
                }
                let signature: Option<[u8; 64]> = seal.signature.as_slice().try_into().ok();
                if !signature.is_some_and(|s| verify_raw(&public, &evidence_digest(record), &s)) {
                    return Err(broken(Broken::BadSignature {
                        key_id: key_id.clone(),
                    }));
                }
            }
        }
        match self.last {
            None if record.sequence == 1 && seal.previous_sha256 != GENESIS_SHA256 => {
                return Err(broken(Broken::NotGenesis));
            }
            None => {}
            Some((previous, hash)) => {
                let expected = previous.saturating_add(1);
                if record.sequence == expected {
                    if seal.previous_sha256 != hash {
                        return Err(broken(Broken::PreviousMismatch { previous }));
                    }
                } else if self.allow_gaps && record.sequence > expected {
                    self.unchecked_links += 1;
                } else {
                    return Err(broken(Broken::OutOfSequence { previous, expected }));
                }
            }
        }
        self.last = Some((record.sequence, record_sha256(record)));
        self.records += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use lapse_credential::SigningKeyPair;

    use super::*;
    use crate::command::Decision;

    fn key(n: u8) -> SigningKeyPair {
        SigningKeyPair::from_seed(KeyId::new(format!("k{n}")).unwrap(), [n; 32])
    }

    fn record(sequence: u64, scope: &str) -> IssuanceRecord {
        IssuanceRecord {
            sequence,
            at_ms: 1000 + sequence,
            tenant: None,
            workload: None,
            index: None,
            key_id: None,
            scopes: vec![scope.into()],
            audiences: vec![],
            expires_at_ms: None,
            attestation: None,
            decision: Decision {
                policy_version: 1,
                input_sha256: [7; 32],
                allowed: true,
                reason: String::new(),
            },
            inputs: None,
            seal: None,
        }
    }

    /// A chain of `n` records, the first `unsigned` of them without a key.
    fn chain(n: u64, unsigned: u64, signer: &SigningKeyPair) -> Vec<IssuanceRecord> {
        let mut previous = GENESIS_SHA256;
        (1..=n)
            .map(|sequence| {
                let mut r = record(sequence, &format!("s{sequence}"));
                let sign = |m: &[u8]| signer.sign_raw(m);
                let with = (sequence > unsigned).then(|| (signer.key_id().clone(), &sign as _));
                seal(&mut r, previous, with);
                previous = record_sha256(&r);
                r
            })
            .collect()
    }

    fn keys(pairs: &[(&SigningKeyPair, NodeId)]) -> BTreeMap<KeyId, (NodeId, [u8; 32])> {
        pairs
            .iter()
            .map(|(k, b)| (k.key_id().clone(), (*b, k.public_key())))
            .collect()
    }

    fn check(
        broker: NodeId,
        allow_gaps: bool,
        records: &[IssuanceRecord],
        known: &BTreeMap<KeyId, (NodeId, [u8; 32])>,
    ) -> Result<(u64, u64, u64), BrokenLink> {
        let lookup = |id: &KeyId| known.get(id).copied();
        let mut walk = ChainCheck::new(broker, allow_gaps, &lookup);
        for r in records {
            walk.next(r)?;
        }
        Ok((walk.records, walk.unsigned, walk.unchecked_links))
    }

    #[test]
    fn a_sealed_chain_checks_and_counts_unsigned_records() {
        let k = key(1);
        let records = chain(6, 2, &k);
        assert_eq!(check(3, false, &records, &keys(&[(&k, 3)])), Ok((6, 2, 0)));
        // Any suffix checks too: its first record anchors the walk.
        assert_eq!(
            check(3, false, &records[3..], &keys(&[(&k, 3)])),
            Ok((3, 0, 0))
        );
    }

    #[test]
    fn the_digest_is_domain_separated_and_ignores_only_the_signature() {
        let k = key(1);
        let r = chain(1, 0, &k).remove(0);
        let bytes = {
            let mut unsigned = r.clone();
            unsigned.seal.as_mut().unwrap().signature.clear();
            evidence_bytes(&unsigned)
        };
        assert_ne!(evidence_digest(&r), <Sha256>::from(Hasher::digest(&bytes)));
        let mut resigned = r.clone();
        resigned.seal.as_mut().unwrap().signature = vec![0; 64];
        assert_eq!(evidence_digest(&r), evidence_digest(&resigned));
        assert_ne!(record_sha256(&r), record_sha256(&resigned));
        assert_eq!(record_from_evidence(&evidence_bytes(&r)).unwrap(), r);
    }

    #[test]
    fn a_changed_record_is_named_by_its_signature_or_by_the_next_link() {
        let k = key(1);
        let known = keys(&[(&k, 3)]);
        let mut signed = chain(5, 0, &k);
        signed[2].scopes = vec!["admin".into()];
        let err = check(3, false, &signed, &known).unwrap_err();
        assert_eq!(
            (err.sequence, &err.broken),
            (
                3,
                &Broken::BadSignature {
                    key_id: k.key_id().clone()
                }
            )
        );
        // Unsigned records are caught by the record after them.
        let mut unsigned = chain(5, 5, &k);
        unsigned[2].scopes = vec!["admin".into()];
        let err = check(3, false, &unsigned, &known).unwrap_err();
        assert_eq!(
            (err.sequence, &err.broken),
            (4, &Broken::PreviousMismatch { previous: 3 })
        );
        assert_eq!(
            err.to_string(),
            "broker 3, record 4: previous hash does not match record 3: a record was changed, removed or reordered"
        );
    }

    #[test]
    fn removed_and_reordered_records_are_named() {
        let k = key(1);
        let known = keys(&[(&k, 3)]);
        let records = chain(5, 0, &k);

        let mut removed = records.clone();
        removed.remove(2);
        let err = check(3, false, &removed, &known).unwrap_err();
        assert_eq!(
            (err.sequence, err.broken),
            (
                4,
                Broken::OutOfSequence {
                    previous: 2,
                    expected: 3
                }
            )
        );
        // In a filtered view the gap is counted, not a break.
        assert_eq!(check(3, true, &removed, &known), Ok((4, 0, 1)));

        let mut swapped = records.clone();
        swapped.swap(1, 2);
        let err = check(3, false, &swapped, &known).unwrap_err();
        assert_eq!(err.sequence, 3);
        // Swapped and renumbered, to look consecutive: the signatures
        // cover the sequence numbers.
        let mut renumbered = records.clone();
        renumbered.swap(1, 2);
        renumbered[1].sequence = 2;
        renumbered[2].sequence = 3;
        let err = check(3, true, &renumbered, &known).unwrap_err();
        assert_eq!(err.sequence, 2);
        assert!(matches!(err.broken, Broken::BadSignature { .. }));
        // Removing the first records is seen only when record 1 is claimed.
        let mut first = records[1].clone();
        first.sequence = 1;
        assert!(check(3, false, &[first], &known).is_err());
    }

    #[test]
    fn keys_must_be_known_and_the_brokers_own() {
        let (k, other) = (key(1), key(2));
        let records = chain(2, 0, &k);
        let err = check(3, false, &records, &keys(&[(&other, 3)])).unwrap_err();
        assert!(matches!(err.broken, Broken::UnknownKey { .. }));
        let err = check(3, false, &records, &keys(&[(&k, 4)])).unwrap_err();
        assert_eq!(
            err.broken,
            Broken::ForeignKey {
                key_id: k.key_id().clone(),
                owner: 4
            }
        );
        // A key with another's public half does not verify.
        let mut forged = keys(&[(&k, 3)]);
        forged.get_mut(k.key_id()).unwrap().1 = other.public_key();
        let err = check(3, false, &records, &forged).unwrap_err();
        assert!(matches!(err.broken, Broken::BadSignature { .. }));
        let mut unsealed = records[0].clone();
        unsealed.seal = None;
        let err = check(3, false, &[unsealed], &keys(&[(&k, 3)])).unwrap_err();
        assert_eq!(err.broken, Broken::Unsealed);
    }
}
