//! Credentials this broker signed recently, by the SHA-256 of their exact
//! text, with the claims they were signed over: a refresh or exchange that
//! presents one of them needs no Ed25519 verification, because this broker
//! made the signature itself a moment ago and the hash says the text is the
//! same, byte for byte.
//!
//! Only the signature check is skipped. Everything else about a presented
//! credential is checked on every request, hit or miss: that the key it was
//! signed with is still registered and unrevoked, its times (`exp`, `nbf`,
//! `iat`) against now, its issuer, its revocations, its DPoP binding.
//!
//! Bounded: at most [`RecentlySigned::capacity`] entries, the oldest
//! forgotten first; a credential forgotten is verified in full, as any
//! other. Nothing a caller sends is ever inserted: only what this broker
//! signs. One entry is a hash, a key id and the claims (a few hundred
//! bytes), so the default bound of [`DEFAULT_CAPACITY`] holds a few MiB.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use lapse_credential::{Claims, KeyId};

/// How many credentials a broker remembers by default: the credentials of
/// a minute or more at thousands of refreshes a second, when a workload
/// refreshes the one it was given last.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// A credential this broker signed: the key it used and the claims.
#[derive(Debug)]
pub struct Signed {
    pub key_id: KeyId,
    pub claims: Claims,
}

/// See the module documentation.
pub struct RecentlySigned {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_hash: HashMap<[u8; 32], Arc<Signed>>,
    /// Hashes in the order they were inserted, oldest first.
    order: VecDeque<[u8; 32]>,
}

impl Default for RecentlySigned {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl RecentlySigned {
    /// Remember at most `capacity` credentials (0: remember none).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The most entries held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("signed lock").by_hash.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remember that this broker signed the credential whose text hashes to
    /// `sha256`, with `key_id`, over `claims`; the oldest entry goes if the
    /// map is full.
    pub fn insert(&self, sha256: [u8; 32], key_id: KeyId, claims: Claims) {
        if self.capacity == 0 {
            return;
        }
        let signed = Arc::new(Signed { key_id, claims });
        let mut inner = self.inner.lock().expect("signed lock");
        if inner.by_hash.contains_key(&sha256) {
            return;
        }
        while inner.order.len() >= self.capacity {
            match inner.order.pop_front() {
                Some(oldest) => {
                    inner.by_hash.remove(&oldest);
                }
                None => break,
            }
        }
        inner.order.push_back(sha256);
        inner.by_hash.insert(sha256, signed);
    }

    /// What this broker signed as the credential whose exact text hashes to
    /// `sha256`, if it is still remembered.
    pub fn get(&self, sha256: &[u8; 32]) -> Option<Arc<Signed>> {
        self.inner
            .lock()
            .expect("signed lock")
            .by_hash
            .get(sha256)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapse_credential::{StatusClaim, StatusListRef, TenantId, WorkloadId};

    fn claims(n: u64) -> Claims {
        Claims {
            iss: "lapse".into(),
            sub: WorkloadId::new("spiffe://t.example/w").unwrap(),
            aud: vec!["a".into()],
            iat: n,
            nbf: n,
            exp: n + 60,
            jti: format!("{n:032x}"),
            tenant: TenantId::new("t").unwrap(),
            scopes: vec![],
            status: StatusClaim {
                status_list: StatusListRef {
                    idx: n,
                    uri: "lapse/statuslists/0".into(),
                },
            },
            cnf: None,
            chain: None,
            agent: Default::default(),
        }
    }

    fn hash(n: u64) -> [u8; 32] {
        let mut h = [0; 32];
        h[..8].copy_from_slice(&n.to_le_bytes());
        h
    }

    #[test]
    fn stays_at_its_bound_forgetting_the_oldest_first() {
        let signed = RecentlySigned::new(4);
        let key = KeyId::new("n1-k").unwrap();
        for n in 0..1000 {
            signed.insert(hash(n), key.clone(), claims(n));
            assert!(signed.len() <= 4);
        }
        assert_eq!(signed.len(), 4);
        assert!(signed.get(&hash(995)).is_none());
        for n in 996..1000 {
            assert_eq!(signed.get(&hash(n)).unwrap().claims.iat, n);
        }
        // Inserting one already held changes nothing.
        signed.insert(hash(999), key.clone(), claims(1));
        assert_eq!(signed.get(&hash(999)).unwrap().claims.iat, 999);
        assert_eq!(signed.inner.lock().unwrap().order.len(), 4);
        // A bound of zero holds nothing.
        let none = RecentlySigned::new(0);
        none.insert(hash(1), key, claims(1));
        assert!(none.is_empty());
    }

    /// A credential that differs from one remembered by a single byte, at
    /// any place (header, claims, signature, an added character), is not
    /// found: it goes through the full verification.
    #[test]
    fn a_credential_one_byte_off_is_not_taken_from_it() {
        use lapse_credential::SigningKeyPair;
        use sha2::{Digest, Sha256};
        let key = SigningKeyPair::from_seed(KeyId::new("n1-k").unwrap(), [3; 32]);
        let token = key.sign(&claims(7)).unwrap();
        let sha = |text: &[u8]| -> [u8; 32] { Sha256::digest(text).into() };
        let signed = RecentlySigned::new(8);
        signed.insert(sha(token.as_bytes()), key.key_id().clone(), claims(7));
        assert!(signed.get(&sha(token.as_bytes())).is_some());
        let bytes = token.as_bytes();
        for at in 0..bytes.len() {
            for flip in [1u8, 0x20, 0x80] {
                let mut changed = bytes.to_vec();
                changed[at] ^= flip;
                assert!(signed.get(&sha(&changed)).is_none(), "byte {at} ^ {flip}");
            }
        }
        let mut longer = bytes.to_vec();
        longer.push(b'A');
        assert!(signed.get(&sha(&longer)).is_none());
        assert!(signed.get(&sha(&bytes[..bytes.len() - 1])).is_none());
    }
}
