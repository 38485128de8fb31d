//! The verifier's bounded memory of verified signatures: what lets a
//! repeated credential cost a hash instead of an Ed25519 verification.
//!
//! An entry says only "these bytes carry a valid signature by this key and
//! decode to these claims": it is keyed by the SHA-256 of the compact
//! credential, and holds the key's id and bytes, so a hit counts only while
//! the verifier's key set still holds that key with those bytes. Everything
//! else (time, issuer, audience, tenant, key window, DPoP proof, every
//! revocation check) is judged again on every call.
//!
//! Only a credential whose signature verified is ever remembered, so input
//! that does not carry a valid signature by a key of the feed cannot fill
//! it; and whatever fills it, it holds at most its capacity, evicting the
//! oldest entry of a shard first.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use lapse_credential::Claims;

/// The SHA-256 of a compact credential.
pub(crate) type TokenHash = [u8; 32];

/// What a verified signature established.
#[derive(Debug)]
pub(crate) struct Signed {
    /// The hash of the credential it was established for.
    pub token_hash: TokenHash,
    pub key_id: String,
    /// The key's bytes as the feed held them then.
    pub public_key: [u8; 32],
    pub claims: Claims,
}

/// Shards, so that threads verifying at once rarely wait on each other.
const SHARDS: usize = 16;

/// A bounded map from credential hash to [`Signed`]: at most `capacity`
/// entries, the oldest of a shard evicted first.
pub(crate) struct SignatureCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    recalled: AtomicU64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<TokenHash, Arc<Signed>, BuildHasherDefault<Prefix>>,
    /// Insertion order, oldest first.
    order: VecDeque<TokenHash>,
}

impl SignatureCache {
    /// A cache of at most `capacity` entries; 0 remembers nothing.
    pub fn new(capacity: usize) -> Self {
        // Below a few entries a shard each, one shard holds them all.
        let shards = if capacity >= 4 * SHARDS { SHARDS } else { 1 };
        Self {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            per_shard: capacity / shards,
            recalled: AtomicU64::new(0),
        }
    }

    fn shard(&self, hash: &TokenHash) -> &Mutex<Shard> {
        &self.shards[usize::from(hash[31]) % self.shards.len()]
    }

    pub fn get(&self, hash: &TokenHash) -> Option<Arc<Signed>> {
        if self.per_shard == 0 {
            return None;
        }
        let shard = self
            .shard(hash)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.entries.get(hash).cloned()
    }

    pub fn insert(&self, signed: Arc<Signed>) {
        if self.per_shard == 0 {
            return;
        }
        let hash = signed.token_hash;
        let mut shard = self
            .shard(&hash)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.entries.insert(hash, signed).is_some() {
            return;
        }
        shard.order.push_back(hash);
        while shard.order.len() > self.per_shard {
            if let Some(oldest) = shard.order.pop_front() {
                shard.entries.remove(&oldest);
            }
        }
    }

    /// Forget one entry (its key left the key set).
    pub fn remove(&self, hash: &TokenHash) {
        let mut shard = self
            .shard(hash)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.entries.remove(hash).is_some() {
            shard.order.retain(|h| h != hash);
        }
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
    }

    /// Count a verification whose signature was taken as checked.
    pub fn recall(&self) {
        self.recalled.fetch_add(1, Ordering::Relaxed);
    }

    /// Verifications whose signature was taken as checked.
    pub fn recalled(&self) -> u64 {
        self.recalled.load(Ordering::Relaxed)
    }

    /// The most entries it may hold.
    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }
}

/// Hashes a SHA-256 digest by its first eight bytes: the digest is already
/// uniform, and only credentials whose signature verified are stored.
#[derive(Default)]
struct Prefix(u64);

impl Hasher for Prefix {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (n, byte) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*byte) << (8 * n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(n: u32) -> Arc<Signed> {
        let mut token_hash = [0u8; 32];
        token_hash[..4].copy_from_slice(&n.to_le_bytes());
        token_hash[31] = n as u8;
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "iss": "lapse", "sub": "spiffe://t/w", "aud": ["a"], "iat": 1, "nbf": 1,
            "exp": 2, "jti": "j", "tenant": "t", "scopes": [],
            "status": {"status_list": {"idx": 1, "uri": "u"}},
        }))
        .unwrap();
        Arc::new(Signed {
            token_hash,
            key_id: "k".into(),
            public_key: [0; 32],
            claims,
        })
    }

    #[test]
    fn holds_at_most_its_capacity_and_evicts_the_oldest() {
        for capacity in [0, 1, 7, 64, 1000] {
            let cache = SignatureCache::new(capacity);
            assert!(cache.capacity() <= capacity);
            for n in 0..5000 {
                cache.insert(signed(n));
                assert!(cache.len() <= capacity, "{capacity}: {}", cache.len());
            }
            assert!(cache.len() + SHARDS >= capacity.min(5000), "{capacity}");
            assert!(cache.get(&signed(4999).token_hash).is_some() || capacity == 0);
            assert!(cache.get(&signed(0).token_hash).is_none());
        }
    }

    #[test]
    fn an_entry_inserted_twice_counts_once() {
        let cache = SignatureCache::new(2);
        cache.insert(signed(1));
        cache.insert(signed(1));
        cache.insert(signed(2));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&signed(1).token_hash).is_some());
        cache.remove(&signed(1).token_hash);
        assert!(cache.get(&signed(1).token_hash).is_none());
        assert_eq!(cache.len(), 1);
    }
}
