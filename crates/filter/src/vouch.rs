//! What a broker vouches for in a signed heartbeat: a digest of the state a
//! verifier should hold, and the statement the broker signs over it.
//!
//! The digest covers everything that decides a verification: the window
//! base and every revoked index above it, every leaked-secret hash (the
//! exact set, not the Bloom filter, whose seed is each broker's own), and
//! the rules and keys still live at the statement's cluster time. Rules and
//! keys age out by cluster time on both sides and at different moments, so
//! both sides filter them by the same predicate at the same time (the one
//! the statement names) before hashing: a broker that pruned earlier and a
//! verifier that pruned later agree.
//!
//! The digest is split in two: the part that depends only on the epoch
//! (indices and secrets, the bulk of the state) can be cached per epoch;
//! the rest is small and is hashed at each heartbeat.

use sha2::{Digest, Sha256};

use crate::FilterError;
use crate::format::Snapshot;

/// A SHA-256 digest.
pub type StateDigest = [u8; 32];

/// Domain separation of the state digest.
const STATE_DOMAIN: &[u8] = b"lapse-feed-state-v1\0";
/// Domain separation of a heartbeat statement: nothing else Lapse signs
/// starts with these bytes.
pub const STATEMENT_DOMAIN: &[u8] = b"lapse-heartbeat-v1\0";
/// Length of an encoded [`Statement`].
pub const STATEMENT_BYTES: usize = STATEMENT_DOMAIN.len() + 5 * 8 + 32;

fn put_str(hash: &mut Sha256, s: &str) {
    hash.update((s.len() as u64).to_le_bytes());
    hash.update(s.as_bytes());
}

impl Snapshot {
    /// The digest of the part of this state fixed by its epoch: window
    /// base, revoked indices and leaked-secret hashes.
    pub fn epoch_digest(&self) -> StateDigest {
        let mut hash = Sha256::new();
        hash.update(STATE_DOMAIN);
        hash.update(self.epoch.to_le_bytes());
        hash.update(self.set.base().to_le_bytes());
        hash.update(self.set.universe().to_le_bytes());
        hash.update((self.set.len() as u64).to_le_bytes());
        for index in self.set.iter() {
            hash.update(index.to_le_bytes());
        }
        hash.update((self.secrets.len() as u64).to_le_bytes());
        for secret in self.secrets.iter() {
            hash.update(secret);
        }
        hash.finalize().into()
    }

    /// The digest of this state as it matters at cluster time `at_ms` when
    /// credentials live at most `max_ttl_ms`: `epoch_digest` (pass it when
    /// cached) and the rules and keys live at `at_ms`.
    pub fn digest_at(
        &self,
        epoch_digest: Option<StateDigest>,
        at_ms: u64,
        max_ttl_ms: u64,
    ) -> StateDigest {
        let live = |since: u64| since.saturating_add(max_ttl_ms) > at_ms;
        let mut hash = Sha256::new();
        hash.update(STATE_DOMAIN);
        hash.update(epoch_digest.unwrap_or_else(|| self.epoch_digest()));
        hash.update(at_ms.to_le_bytes());
        hash.update(max_ttl_ms.to_le_bytes());
        let subjects: Vec<_> = self
            .rules
            .subjects()
            .iter()
            .filter(|(_, cutoff)| live(**cutoff))
            .collect();
        hash.update((subjects.len() as u64).to_le_bytes());
        for ((tenant, subject), cutoff) in subjects {
            put_str(&mut hash, tenant);
            put_str(&mut hash, subject);
            hash.update(cutoff.to_le_bytes());
        }
        let tenants: Vec<_> = self
            .rules
            .tenants()
            .iter()
            .filter(|(_, cutoff)| live(**cutoff))
            .collect();
        hash.update((tenants.len() as u64).to_le_bytes());
        for (tenant, cutoff) in tenants {
            put_str(&mut hash, tenant);
            hash.update(cutoff.to_le_bytes());
        }
        let tasks: Vec<_> = self
            .rules
            .tasks()
            .iter()
            .filter(|(_, cutoff)| live(**cutoff))
            .collect();
        hash.update((tasks.len() as u64).to_le_bytes());
        for ((tenant, task), cutoff) in tasks {
            put_str(&mut hash, tenant);
            put_str(&mut hash, task);
            hash.update(cutoff.to_le_bytes());
        }
        // A revoked key matters only while credentials it signed can live:
        // it is covered as a flag on the live key.
        let keys: Vec<_> = self
            .keys
            .iter()
            .filter(|(_, key)| live(key.not_after_ms))
            .collect();
        hash.update((keys.len() as u64).to_le_bytes());
        for (kid, key) in keys {
            put_str(&mut hash, kid);
            hash.update([key.algorithm as u8]);
            hash.update((key.bytes.len() as u64).to_le_bytes());
            hash.update(&key.bytes);
            hash.update(key.not_before_ms.to_le_bytes());
            hash.update(key.not_after_ms.to_le_bytes());
            hash.update([u8::from(self.rules.key_ids().contains(kid))]);
        }
        hash.finalize().into()
    }
}

/// What a broker signs in a heartbeat: at cluster time `cluster_time_ms`,
/// having confirmed its state current with the leader, broker `broker_id`
/// holds `epoch`, whose state (live at that time, with credentials living
/// at most `max_ttl_ms`) has digest `digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    pub broker_id: u64,
    pub epoch: u64,
    pub cluster_time_ms: u64,
    pub max_ttl_ms: u64,
    pub interval_ms: u64,
    pub digest: StateDigest,
}

impl Statement {
    /// The bytes signed: fixed length, domain-separated.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATEMENT_BYTES);
        out.extend_from_slice(STATEMENT_DOMAIN);
        for value in [
            self.broker_id,
            self.epoch,
            self.cluster_time_ms,
            self.max_ttl_ms,
            self.interval_ms,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(&self.digest);
        out
    }

    /// Read a statement; anything but the exact layout is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, FilterError> {
        if bytes.len() != STATEMENT_BYTES {
            return Err(FilterError::Corrupt(format!(
                "a heartbeat statement is {STATEMENT_BYTES} bytes, not {}",
                bytes.len()
            )));
        }
        let Some(rest) = bytes.strip_prefix(STATEMENT_DOMAIN) else {
            return Err(FilterError::Corrupt(
                "not a heartbeat statement (wrong domain)".into(),
            ));
        };
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&rest[40..72]);
        Ok(Self {
            broker_id: word(0),
            epoch: word(1),
            cluster_time_ms: word(2),
            max_ttl_ms: word(3),
            interval_ms: word(4),
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyAlgorithm, KeySet, PublicKey, RevokedSet, RuleSet, SecretSet};

    fn state() -> Snapshot {
        let mut rules = RuleSet::new();
        rules.revoke_subject("t", "old", 1_000).unwrap();
        rules.revoke_subject("t", "new", 50_000).unwrap();
        rules.revoke_tenant("gone", 2_000).unwrap();
        rules.revoke_key("k2").unwrap();
        rules.revoke_task("t", "old-task", 1_000).unwrap();
        let mut keys = KeySet::new();
        for (kid, not_after_ms) in [("k1", 60_000), ("k2", 1_500)] {
            keys.insert(
                kid,
                PublicKey {
                    algorithm: KeyAlgorithm::Ed25519,
                    bytes: vec![7; 32],
                    not_before_ms: 0,
                    not_after_ms,
                },
            )
            .unwrap();
        }
        let mut secrets = SecretSet::new(16, 1e-6, [1; 32]).unwrap();
        secrets.insert([9; 32]).unwrap();
        Snapshot {
            epoch: 12,
            set: RevokedSet::from_sorted(100, 1 << 40, [101, 105, 900]).unwrap(),
            secrets,
            rules,
            keys,
        }
    }

    #[test]
    fn aged_out_rules_and_keys_do_not_change_the_digest_at_a_later_time() {
        let full = state();
        let mut pruned = full.clone();
        pruned
            .rules
            .retain_cutoffs(|cutoff| cutoff + 10_000 > 12_000);
        pruned.keys.remove("k2");
        assert_ne!(full.rules, pruned.rules);
        assert_eq!(
            full.digest_at(None, 12_000, 10_000),
            pruned.digest_at(None, 12_000, 10_000)
        );
        // Earlier, the pruned items were still live: the digests differ.
        assert_ne!(
            full.digest_at(None, 5_000, 10_000),
            pruned.digest_at(None, 5_000, 10_000)
        );
    }

    #[test]
    fn every_part_of_the_state_changes_the_digest() {
        let base = state();
        let at = |s: &Snapshot| s.digest_at(None, 3_000, 10_000);
        let mut changed = Vec::new();
        let mut s = base.clone();
        s.epoch += 1;
        changed.push(s);
        let mut s = base.clone();
        s.set = RevokedSet::from_sorted(100, 1 << 40, [101, 105]).unwrap();
        changed.push(s);
        let mut s = base.clone();
        s.set = RevokedSet::from_sorted(101, 1 << 40, [101, 105, 900]).unwrap();
        changed.push(s);
        let mut s = base.clone();
        s.secrets.insert([8; 32]).unwrap();
        changed.push(s);
        let mut s = base.clone();
        s.rules.revoke_subject("t", "another", 9_000).unwrap();
        changed.push(s);
        let mut s = base.clone();
        s.rules.revoke_key("k1").unwrap();
        changed.push(s);
        let mut s = base.clone();
        s.rules.revoke_task("t", "task-9", 9_000).unwrap();
        changed.push(s);
        let mut s = base.clone();
        s.rules.revoke_task("t", "old-task", 9_000).unwrap();
        changed.push(s);
        let mut s = base.clone();
        let mut key = s.keys.get("k1").unwrap().clone();
        key.not_after_ms += 1;
        s.keys.insert("k1", key).unwrap();
        changed.push(s);
        let mut s = base.clone();
        let mut key = s.keys.get("k1").unwrap().clone();
        key.bytes[0] ^= 1;
        s.keys.insert("k1", key).unwrap();
        changed.push(s);
        for (n, s) in changed.iter().enumerate() {
            assert_ne!(at(&base), at(s), "change {n} left the digest as it was");
        }
        assert_ne!(at(&base), base.digest_at(None, 3_000, 10_001));
        assert_eq!(
            at(&base),
            base.digest_at(Some(base.epoch_digest()), 3_000, 10_000)
        );
    }

    #[test]
    fn the_bloom_seed_is_not_part_of_the_digest() {
        let a = state();
        let mut b = a.clone();
        let mut secrets = SecretSet::new(64, 1e-3, [2; 32]).unwrap();
        secrets.insert([9; 32]).unwrap();
        b.secrets = secrets;
        assert_eq!(a.epoch_digest(), b.epoch_digest());
    }

    #[test]
    fn statements_round_trip_and_refuse_anything_else() {
        let statement = Statement {
            broker_id: 3,
            epoch: 77,
            cluster_time_ms: 1_800_000_000_000,
            max_ttl_ms: 3_600_000,
            interval_ms: 200,
            digest: [5; 32],
        };
        let bytes = statement.encode();
        assert_eq!(bytes.len(), STATEMENT_BYTES);
        assert_eq!(Statement::decode(&bytes).unwrap(), statement);
        assert!(Statement::decode(&bytes[1..]).is_err());
        let mut other = bytes.clone();
        other[0] ^= 1;
        assert!(Statement::decode(&other).is_err());
        let mut longer = bytes;
        longer.push(0);
        assert!(Statement::decode(&longer).is_err());
    }
}
