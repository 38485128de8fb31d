//! The verifier's bounded memory of verified signatures: what lets a
//! repeated credential cost a lookup instead of an Ed25519 verification.
//!
//! An entry says only "these bytes carry a valid signature by this key and
//! decode to these claims": it holds the credential's own bytes, found by
//! a keyed hash of its signature segment and taken only when the presented
//! credential is byte for byte the one remembered. It also holds the
//! credential's SHA-256 (for the leaked-secret check), the key's id and
//! bytes, so a hit counts only while the verifier's key set still holds
//! that key with those bytes. Everything else (time, issuer, audience,
//! tenant, key window, DPoP proof, every revocation check) is judged again
//! on every call.
//!
//! Only a credential whose signature verified is ever remembered, so input
//! that does not carry a valid signature by a key of the feed cannot fill
//! it; and whatever fills it, it holds at most its capacity, evicting the
//! oldest entry of a shard first, and no credential longer than
//! [`MAX_REMEMBERED_BYTES`].

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use lapse_credential::Claims;

/// The SHA-256 of a compact credential.
pub(crate) type TokenHash = [u8; 32];

/// Longest credential remembered: longer ones are verified every time.
pub(crate) const MAX_REMEMBERED_BYTES: usize = 8 * 1024;

/// What a verified signature established. Its `Debug` leaves out the
/// credential, a bearer secret.
pub(crate) struct Signed {
    /// The credential it was established for, as presented.
    pub token: Box<str>,
    /// Its SHA-256.
    pub token_hash: TokenHash,
    pub key_id: String,
    /// The key's bytes as the feed held them then.
    pub public_key: [u8; 32],
    pub claims: Claims,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("key_id", &self.key_id)
            .field("token_bytes", &self.token.len())
            .finish_non_exhaustive()
    }
}

/// Bytes of a signature segment (base64url, 6 bits each) hashed for its
/// key: 96 bits.
const KEYED_BYTES: usize = 16;

/// Shards, so that threads verifying at once rarely wait on each other.
const SHARDS: usize = 16;

/// A bounded map from credential to [`Signed`]: at most `capacity`
/// entries, the oldest of a shard evicted first.
pub(crate) struct SignatureCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Keys the hash of a credential's signature segment, per process: a
    /// client cannot choose credentials that collide.
    hasher: RandomState,
    recalled: AtomicU64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<u64, Arc<Signed>, BuildHasherDefault<Passthrough>>,
    /// Insertion order, oldest first.
    order: VecDeque<u64>,
}

impl SignatureCache {
    /// A cache of at most `capacity` entries; 0 remembers nothing.
    pub fn new(capacity: usize) -> Self {
        // Below a few entries a shard each, one shard holds them all.
        let shards = if capacity >= 4 * SHARDS { SHARDS } else { 1 };
        Self {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            per_shard: capacity / shards,
            hasher: RandomState::new(),
            recalled: AtomicU64::new(0),
        }
    }

    /// The key of `token`: a keyed hash of the first [`KEYED_BYTES`] of
    /// its signature segment (the part after its last dot), which differ
    /// between any two credentials a key signed (an Ed25519 signature's
    /// first half is a hash of the key and the message). A collision only
    /// costs a miss: a hit also compares the whole credential.
    fn key(&self, token: &str) -> u64 {
        let signature = token.rsplit('.').next().unwrap_or(token).as_bytes();
        self.hasher
            .hash_one(&signature[..signature.len().min(KEYED_BYTES)])
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        &self.shards[(key >> 59) as usize % self.shards.len()]
    }

    /// What remembering `token` established, if it is remembered.
    pub fn get(&self, token: &str) -> Option<Arc<Signed>> {
        if self.per_shard == 0 || token.len() > MAX_REMEMBERED_BYTES {
            return None;
        }
        let key = self.key(token);
        let shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard
            .entries
            .get(&key)
            .filter(|signed| &*signed.token == token)
            .cloned()
    }

    pub fn insert(&self, signed: Arc<Signed>) {
        if self.per_shard == 0 || signed.token.len() > MAX_REMEMBERED_BYTES {
            return;
        }
        let key = self.key(&signed.token);
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.entries.insert(key, signed).is_some() {
            return;
        }
        shard.order.push_back(key);
        while shard.order.len() > self.per_shard {
            if let Some(oldest) = shard.order.pop_front() {
                shard.entries.remove(&oldest);
            }
        }
    }

    /// Forget `token` (its key left the key set).
    pub fn remove(&self, token: &str) {
        let key = self.key(token);
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.entries.remove(&key).is_some() {
            shard.order.retain(|k| *k != key);
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

/// Hashes a key that is already a keyed hash: passed through.
#[derive(Default)]
struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (n, byte) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*byte) << (8 * n);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u32) -> String {
        format!("header.payload-{n}.signature-{n}")
    }

    fn signed(n: u32) -> Arc<Signed> {
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "iss": "lapse", "sub": "spiffe://t/w", "aud": ["a"], "iat": 1, "nbf": 1,
            "exp": 2, "jti": "j", "tenant": "t", "scopes": [],
            "status": {"status_list": {"idx": 1, "uri": "u"}},
        }))
        .unwrap();
        Arc::new(Signed {
            token: token(n).into(),
            token_hash: [0; 32],
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
            assert!(cache.get(&token(4999)).is_some() || capacity == 0);
            assert!(cache.get(&token(0)).is_none());
        }
    }

    #[test]
    fn an_entry_inserted_twice_counts_once() {
        let cache = SignatureCache::new(2);
        cache.insert(signed(1));
        cache.insert(signed(1));
        cache.insert(signed(2));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&token(1)).is_some());
        cache.remove(&token(1));
        assert!(cache.get(&token(1)).is_none());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn only_the_very_credential_remembered_is_recalled() {
        let cache = SignatureCache::new(64);
        cache.insert(signed(1));
        // The same signature on another header or payload is not it.
        assert!(cache.get("header.payload-2.signature-1").is_none());
        assert!(cache.get("other.payload-1.signature-1").is_none());
        assert!(cache.get("header.payload-1.signature-1").is_some());
        // Nor is a prefix or an extension of it.
        assert!(cache.get("header.payload-1.signature-").is_none());
        assert!(cache.get("header.payload-1.signature-1x").is_none());
    }

    #[test]
    fn overlong_credentials_are_not_remembered() {
        let cache = SignatureCache::new(64);
        let mut long = signed(1);
        Arc::get_mut(&mut long).unwrap().token =
            format!("h.{}.s", "p".repeat(MAX_REMEMBERED_BYTES)).into();
        let token = long.token.to_string();
        cache.insert(long);
        assert_eq!(cache.len(), 0);
        assert!(cache.get(&token).is_none());
    }
}
