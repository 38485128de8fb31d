//! `SecretSet`: SHA-256 hashes of leaked static secrets, as a Bloom filter
//! (the verifier's fast path) backed by an exact set (confirmation, so
//! [`SecretSet::contains`] has no false positives).

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use bloomfilter::Bloom;

use crate::codec::{Reader, put_varint};
use crate::error::FilterError;

/// A SHA-256 digest of a leaked secret.
pub type SecretHash = [u8; 32];

/// Hard cap on the number of secret hashes in one set or delta.
pub const MAX_SECRETS: u64 = 1 << 20;
/// Hard cap on the planned item count (bounds the Bloom bitmap allocation).
pub const MAX_PLANNED_ITEMS: u64 = 1 << 20;
/// The Bloom filter is always planned for at least this many items: the
/// `bloomfilter` crate misses its false-positive target for smaller sets.
pub const MIN_PLANNED_ITEMS: u64 = 1000;
/// Smallest accepted false-positive rate (bounds the bitmap allocation).
pub const MIN_FP_RATE: f64 = 1e-9;
/// Largest accepted false-positive rate.
pub const MAX_FP_RATE: f64 = 0.5;

/// Hashes exactly the 32 digest bytes, with no length prefix, so Bloom bit
/// positions are identical on 32- and 64-bit verifiers.
#[derive(Clone)]
struct Key(SecretHash);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

/// Leaked-secret hashes: Bloom filter plus exact confirm set.
///
/// Encoding choice: the wire form carries the parameters (`seed`,
/// `planned_items`, `fp_rate`) and the exact sorted list of hashes, and the
/// Bloom filter is rebuilt deterministically on decode. The exact list is
/// needed for false-positive-free `contains` anyway, so shipping the bitmap too
/// would only add bytes (and trust in a foreign bitmap format).
///
/// Wire form: `seed[32], varint planned_items, f64 fp_rate (LE bits),
/// varint count, count × hash[32]` (hashes strictly increasing).
#[derive(Debug, Clone)]
pub struct SecretSet {
    seed: [u8; 32],
    planned_items: u64,
    fp_rate: f64,
    bloom: Bloom<Key>,
    exact: BTreeSet<SecretHash>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(..)")
    }
}

impl PartialEq for SecretSet {
    fn eq(&self, other: &Self) -> bool {
        self.seed == other.seed
            && self.planned_items == other.planned_items
            && self.fp_rate.to_bits() == other.fp_rate.to_bits()
            && self.exact == other.exact
    }
}

impl SecretSet {
    /// An empty set planned for `expected_items` (raised to at least
    /// [`MIN_PLANNED_ITEMS`]) at false-positive rate `fp_rate`, hashing with
    /// the caller-supplied `seed`.
    pub fn new(expected_items: u64, fp_rate: f64, seed: [u8; 32]) -> Result<Self, FilterError> {
        if !(MIN_FP_RATE..=MAX_FP_RATE).contains(&fp_rate) {
            return Err(FilterError::InvalidParameter(
                "fp_rate must be in [1e-9, 0.5]",
            ));
        }
        if expected_items > MAX_PLANNED_ITEMS {
            return Err(FilterError::TooLarge {
                what: "planned items",
                len: expected_items,
                max: MAX_PLANNED_ITEMS,
            });
        }
        let planned = expected_items.max(MIN_PLANNED_ITEMS);
        let bloom = Bloom::new_for_fp_rate_with_seed(planned as usize, fp_rate, &hash_keys(&seed))
            .map_err(|_| FilterError::InvalidParameter("bloom filter parameters"))?;
        Ok(Self {
            seed,
            planned_items: planned,
            fp_rate,
            bloom,
            exact: BTreeSet::new(),
        })
    }

    /// The Bloom seed, as given (the hash keys are derived from it).
    pub fn seed(&self) -> [u8; 32] {
        self.seed
    }

    /// The item count the Bloom filter is sized for (at least 1,000).
    pub fn planned_items(&self) -> u64 {
        self.planned_items
    }

    /// The target false-positive rate.
    pub fn fp_rate(&self) -> f64 {
        self.fp_rate
    }

    /// Size of the Bloom bitmap in bits.
    pub fn bloom_bits(&self) -> u64 {
        self.bloom.len()
    }

    /// Add a hash; returns whether it was new.
    pub fn insert(&mut self, hash: SecretHash) -> Result<bool, FilterError> {
        if self.exact.contains(&hash) {
            return Ok(false);
        }
        if self.exact.len() as u64 >= MAX_SECRETS {
            return Err(FilterError::TooLarge {
                what: "secret set",
                len: self.exact.len() as u64 + 1,
                max: MAX_SECRETS,
            });
        }
        self.bloom.set(&Key(hash));
        self.exact.insert(hash);
        Ok(true)
    }

    /// Bloom-only check: never false for a member, occasionally true for a
    /// non-member (about `fp_rate` of the time).
    pub fn might_contain(&self, hash: &SecretHash) -> bool {
        self.bloom.check(&Key(*hash))
    }

    /// Exact membership: Bloom fast path, then confirmation.
    pub fn contains(&self, hash: &SecretHash) -> bool {
        self.might_contain(hash) && self.exact.contains(hash)
    }

    /// Number of hashes.
    pub fn len(&self) -> usize {
        self.exact.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
    }

    /// The hashes in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = &SecretHash> + '_ {
        self.exact.iter()
    }

    /// The wire form (parameters and exact list; see the type docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seed);
        put_varint(out, self.planned_items);
        out.extend_from_slice(&self.fp_rate.to_bits().to_le_bytes());
        put_hashes(out, self.exact.iter());
    }

    /// Decode a complete encoding produced by [`SecretSet::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, FilterError> {
        let mut r = Reader::new(bytes);
        let s = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(s)
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, FilterError> {
        let seed = r.array32()?;
        let planned = r.varint()?;
        if planned < MIN_PLANNED_ITEMS {
            return Err(FilterError::Corrupt("planned items below minimum".into()));
        }
        let fp_rate = f64::from_bits(r.u64_le()?);
        let mut set = Self::new(planned, fp_rate, seed).map_err(|e| match e {
            FilterError::InvalidParameter(p) => FilterError::Corrupt(p.into()),
            other => other,
        })?;
        for h in decode_hashes(r)? {
            set.insert(h)?;
        }
        Ok(set)
    }
}

/// `varint count, count × hash[32]`.
pub(crate) fn put_hashes<'a>(
    out: &mut Vec<u8>,
    hashes: impl ExactSizeIterator<Item = &'a SecretHash>,
) {
    put_varint(out, hashes.len() as u64);
    for h in hashes {
        out.extend_from_slice(h);
    }
}

/// Inverse of [`put_hashes`]; requires strictly increasing hashes.
pub(crate) fn decode_hashes(r: &mut Reader<'_>) -> Result<Vec<SecretHash>, FilterError> {
    let n = r.count("secret hashes", MAX_SECRETS, 32)?;
    let mut v: Vec<SecretHash> = Vec::with_capacity(n);
    for _ in 0..n {
        let h = r.array32()?;
        if v.last().is_some_and(|p| *p >= h) {
            return Err(FilterError::NotSorted);
        }
        v.push(h);
    }
    Ok(v)
}

/// The two 16-byte hash keys `bloomfilter` takes from a 32-byte seed must
/// differ: with equal halves both hash functions coincide and the false
/// positive rate is thousands of times its target. The second key is mixed
/// with the first and a constant, so any seed, `[x; 32]` included, gives two
/// different keys (they coincide only if the first half equals the constant).
fn hash_keys(seed: &[u8; 32]) -> [u8; 32] {
    const MIX: [u8; 16] = *b"lapse-bloom-key2";
    let mut keys = *seed;
    for i in 0..16 {
        keys[16 + i] ^= seed[i] ^ MIX[i];
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_with_equal_halves_still_meet_the_rate() {
        let mut s = SecretSet::new(1000, 1e-3, [0x5a; 32]).unwrap();
        for i in 0..1000u32 {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            s.insert(h).unwrap();
        }
        let false_positives = (0..100_000u32)
            .filter(|i| {
                let mut h = [1u8; 32];
                h[..4].copy_from_slice(&i.to_le_bytes());
                s.might_contain(&h)
            })
            .count();
        assert!(false_positives < 300, "{false_positives} of 100,000");
    }

    #[test]
    fn params_validated() {
        assert!(SecretSet::new(10, 0.0, [0; 32]).is_err());
        assert!(SecretSet::new(10, f64::NAN, [0; 32]).is_err());
        assert!(SecretSet::new(10, 0.9, [0; 32]).is_err());
        assert!(SecretSet::new(MAX_PLANNED_ITEMS + 1, 0.01, [0; 32]).is_err());
        let s = SecretSet::new(3, 0.01, [1; 32]).unwrap();
        assert_eq!(s.planned_items(), MIN_PLANNED_ITEMS);
        assert!(s.bloom_bits() >= 9000);
    }

    #[test]
    fn bloom_positions_fixed() {
        // Bloom bit positions depend only on the seed and the 32 digest bytes.
        let mut a = SecretSet::new(10, 0.01, [7; 32]).unwrap();
        let mut b = SecretSet::new(10, 0.01, [7; 32]).unwrap();
        a.insert([9; 32]).unwrap();
        b.insert([9; 32]).unwrap();
        assert_eq!(a.bloom.as_slice(), b.bloom.as_slice());
        assert!(a.might_contain(&[9; 32]));
    }
}
