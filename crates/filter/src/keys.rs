//! `KeySet`: the public signing keys a verifier checks signatures with.
//!
//! Keys travel with the revocation state so that a verifier needs nothing but
//! the feed: a snapshot carries every live key, a delta carries the keys that
//! were registered or changed and the ids of keys that left the window.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{Reader, put_str, put_varint};
use crate::error::FilterError;
use crate::rules::MAX_STRING_BYTES;

/// Hard cap on the keys in one set.
pub const MAX_KEYS: u64 = 4096;
/// Hard cap on the byte length of one public key.
pub const MAX_PUBLIC_KEY_BYTES: u64 = 256;

/// Signature algorithm of a [`PublicKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum KeyAlgorithm {
    /// Ed25519 (JWS `EdDSA`); the key is the 32-byte compressed point.
    Ed25519 = 1,
}

impl KeyAlgorithm {
    fn from_byte(b: u8) -> Result<Self, FilterError> {
        match b {
            1 => Ok(Self::Ed25519),
            other => Err(FilterError::Corrupt(format!(
                "unknown key algorithm {other}"
            ))),
        }
    }

    fn key_len(self) -> usize {
        match self {
            Self::Ed25519 => 32,
        }
    }
}

/// One public signing key and the cluster-time window it may sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Signature algorithm.
    pub algorithm: KeyAlgorithm,
    /// The raw public key.
    pub bytes: Vec<u8>,
    /// Credentials issued before this cluster time were not signed by it.
    pub not_before_ms: u64,
    /// Credentials issued at or after this cluster time were not signed by it.
    pub not_after_ms: u64,
}

/// Public keys by key id.
///
/// Wire form (sorted by key id, strictly increasing):
/// `varint n, n × (str kid, u8 algorithm, varint len, key bytes,
/// varint not_before_ms, varint not_after_ms)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: BTreeMap<String, PublicKey>,
}

fn check_key(kid: &str, key: &PublicKey) -> Result<(), FilterError> {
    if kid.len() as u64 > MAX_STRING_BYTES {
        return Err(FilterError::TooLarge {
            what: "key id",
            len: kid.len() as u64,
            max: MAX_STRING_BYTES,
        });
    }
    if key.bytes.len() != key.algorithm.key_len() {
        return Err(FilterError::InvalidParameter(
            "public key length does not match its algorithm",
        ));
    }
    if key.not_before_ms > key.not_after_ms {
        return Err(FilterError::InvalidParameter(
            "key validity ends before it starts",
        ));
    }
    Ok(())
}

impl KeySet {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace the key `kid`.
    pub fn insert(&mut self, kid: &str, key: PublicKey) -> Result<(), FilterError> {
        check_key(kid, &key)?;
        if !self.keys.contains_key(kid) && self.keys.len() as u64 >= MAX_KEYS {
            return Err(FilterError::TooLarge {
                what: "key set",
                len: self.keys.len() as u64 + 1,
                max: MAX_KEYS,
            });
        }
        self.keys.insert(kid.to_owned(), key);
        Ok(())
    }

    /// Remove the key `kid`, if present.
    pub fn remove(&mut self, kid: &str) -> Option<PublicKey> {
        self.keys.remove(kid)
    }

    /// The key `kid`.
    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.get(kid)
    }

    /// Every key, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PublicKey)> + '_ {
        self.keys.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Upsert every key of `other`, then remove `removed`. Atomic: on error
    /// `self` is untouched.
    pub fn apply(&mut self, other: &KeySet, removed: &BTreeSet<String>) -> Result<(), FilterError> {
        self.check_apply(other, removed)?;
        for kid in removed {
            self.keys.remove(kid);
        }
        for (kid, key) in &other.keys {
            self.keys.insert(kid.clone(), key.clone());
        }
        Ok(())
    }

    /// Whether [`KeySet::apply`] would succeed (keys in a `KeySet` are
    /// always valid, so only the count can fail).
    pub fn check_apply(
        &self,
        other: &KeySet,
        removed: &BTreeSet<String>,
    ) -> Result<(), FilterError> {
        let kept = self
            .keys
            .keys()
            .filter(|kid| !removed.contains(*kid))
            .count();
        let added = other
            .keys
            .keys()
            .filter(|kid| !self.keys.contains_key(*kid) || removed.contains(*kid))
            .count();
        if (kept + added) as u64 > MAX_KEYS {
            return Err(FilterError::TooLarge {
                what: "key set",
                len: (kept + added) as u64,
                max: MAX_KEYS,
            });
        }
        Ok(())
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.keys.len() as u64);
        for (kid, key) in &self.keys {
            put_str(out, kid);
            out.push(key.algorithm as u8);
            put_varint(out, key.bytes.len() as u64);
            out.extend_from_slice(&key.bytes);
            put_varint(out, key.not_before_ms);
            put_varint(out, key.not_after_ms);
        }
    }

    /// Decode a complete encoding produced by [`KeySet::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, FilterError> {
        let mut r = Reader::new(bytes);
        let s = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(s)
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, FilterError> {
        let n = r.count("key set", MAX_KEYS, 6)?;
        let mut set = KeySet::new();
        let mut prev: Option<String> = None;
        for _ in 0..n {
            let kid = r.str(MAX_STRING_BYTES)?;
            if prev.as_ref().is_some_and(|p| *p >= kid) {
                return Err(FilterError::NotSorted);
            }
            let algorithm = KeyAlgorithm::from_byte(r.u8()?)?;
            let len = r.varint()?;
            if len > MAX_PUBLIC_KEY_BYTES {
                return Err(FilterError::TooLarge {
                    what: "public key",
                    len,
                    max: MAX_PUBLIC_KEY_BYTES,
                });
            }
            let bytes = r.bytes(len as usize)?.to_vec();
            let key = PublicKey {
                algorithm,
                bytes,
                not_before_ms: r.varint()?,
                not_after_ms: r.varint()?,
            };
            check_key(&kid, &key).map_err(|e| FilterError::Corrupt(e.to_string()))?;
            set.keys.insert(kid.clone(), key);
            prev = Some(kid);
        }
        Ok(set)
    }
}

pub(crate) fn put_kids<'a>(out: &mut Vec<u8>, kids: impl ExactSizeIterator<Item = &'a String>) {
    put_varint(out, kids.len() as u64);
    for kid in kids {
        put_str(out, kid);
    }
}

pub(crate) fn decode_kids(r: &mut Reader<'_>) -> Result<BTreeSet<String>, FilterError> {
    let n = r.count("removed keys", MAX_KEYS, 1)?;
    let mut out = BTreeSet::new();
    let mut prev: Option<String> = None;
    for _ in 0..n {
        let kid = r.str(MAX_STRING_BYTES)?;
        if prev.as_ref().is_some_and(|p| *p >= kid) {
            return Err(FilterError::NotSorted);
        }
        out.insert(kid.clone());
        prev = Some(kid);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey {
            algorithm: KeyAlgorithm::Ed25519,
            bytes: vec![b; 32],
            not_before_ms: 10,
            not_after_ms: 20,
        }
    }

    #[test]
    fn round_trip_and_apply() {
        let mut s = KeySet::new();
        s.insert("b", key(2)).unwrap();
        s.insert("a", key(1)).unwrap();
        assert_eq!(KeySet::decode(&s.encode()).unwrap(), s);
        let mut up = KeySet::new();
        up.insert("c", key(3)).unwrap();
        s.apply(&up, &["a".to_string()].into_iter().collect())
            .unwrap();
        assert_eq!(s.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["b", "c"]);
    }

    #[test]
    fn rejects_bad_keys() {
        let mut s = KeySet::new();
        let mut short = key(1);
        short.bytes.pop();
        assert!(s.insert("a", short).is_err());
        let mut backwards = key(1);
        backwards.not_before_ms = 30;
        assert!(s.insert("a", backwards).is_err());
        // Unknown algorithm byte.
        let mut b = KeySet::new();
        b.insert("a", key(1)).unwrap();
        let mut bytes = b.encode();
        bytes[3] = 7;
        assert!(matches!(
            KeySet::decode(&bytes),
            Err(FilterError::Corrupt(_))
        ));
        // Huge declared key length.
        let mut bytes = b.encode();
        bytes[4] = 0xff;
        assert!(KeySet::decode(&bytes).is_err());
    }
}
