//! Input helpers shared by the Lapse fuzz targets.
//!
//! Random bytes rarely get past a checksum or a canonical-form check, so each
//! target reads its first byte as a mode: feed the rest as it is, or build a
//! valid value from the rest with [`Source`], encode it, and damage the
//! encoding with [`mutate`]. Messages can also be framed with a correct
//! header and CRC ([`frame`], [`refresh_frame`]) so the body parsers see the
//! bytes. [`credentials`] holds the keys, credentials and input layouts of
//! the credential and HTTP targets.

pub mod credentials;

use lapse_filter::{
    DeltaMessage, KeyAlgorithm, KeySet, MAGIC, Message, PublicKey, RevokedDelta, RevokedSet,
    RuleSet, SecretSet, Snapshot,
};

/// Header: magic (4), version (2), kind (1), body length (4).
pub const HEADER_LEN: usize = 11;
/// Trailer: CRC-32 (4).
pub const TRAILER_LEN: usize = 4;

/// Reads values from fuzzer bytes; once they run out, every read is zero.
#[derive(Debug)]
pub struct Source<'a> {
    data: &'a [u8],
}

impl<'a> Source<'a> {
    /// A source over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// One byte, or 0.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// Up to `n` bytes (fewer when the input runs out).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A length byte, then that many bytes.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte());
        self.take(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// Whether the next byte is odd.
    pub fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// Eight bytes little-endian (missing bytes read as zero).
    pub fn u64(&mut self) -> u64 {
        let mut a = [0u8; 8];
        for b in &mut a {
            *b = self.byte();
        }
        u64::from_le_bytes(a)
    }

    /// A value in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.u64() % n }
    }

    /// A value spread over several magnitudes: small ones are common.
    pub fn sized(&mut self) -> u64 {
        match self.byte() % 4 {
            0 => u64::from(self.byte() % 16),
            1 => self.below(1 << 16),
            2 => self.below(1 << 40),
            _ => self.u64(),
        }
    }

    /// A short string over a small alphabet (so that sorting matters).
    pub fn string(&mut self) -> String {
        let len = self.byte() % 6;
        (0..len)
            .map(|_| char::from(b'a' + self.byte() % 4))
            .collect()
    }

    /// 32 bytes.
    pub fn array32(&mut self) -> [u8; 32] {
        let mut a = [0u8; 32];
        for b in &mut a {
            *b = self.byte();
        }
        a
    }
}

/// Split off the mode byte: `Some(rest)` means "use `rest` as it is",
/// `None` means "build a valid value from `rest` and damage it".
pub fn raw_or_valid(data: &[u8]) -> (bool, &[u8]) {
    match data.split_first() {
        Some((&mode, rest)) => (mode & 1 == 0, rest),
        None => (true, data),
    }
}

/// Apply up to seven edits drawn from `src`: overwrite, flip a bit, insert,
/// remove, or truncate.
pub fn mutate(bytes: &mut Vec<u8>, src: &mut Source<'_>) {
    let edits = src.byte() % 8;
    for _ in 0..edits {
        let op = src.byte() % 5;
        let at = src.below(bytes.len() as u64 + 1) as usize;
        match op {
            0 if at < bytes.len() => bytes[at] = src.byte(),
            1 if at < bytes.len() => bytes[at] ^= 1 << (src.byte() % 8),
            2 => bytes.insert(at, src.byte()),
            3 if at < bytes.len() => {
                bytes.remove(at);
            }
            4 => bytes.truncate(at),
            _ => {}
        }
    }
}

/// A complete message around `body`: magic, version 1, `kind`, length, CRC.
pub fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TRAILER_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&1u16.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Rewrite the body length and CRC of a (damaged) message so that the body
/// parser, not the checksum, decides.
pub fn refresh_frame(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return;
    }
    let body_len = (bytes.len() - HEADER_LEN - TRAILER_LEN) as u32;
    bytes[7..11].copy_from_slice(&body_len.to_le_bytes());
    let at = bytes.len() - TRAILER_LEN;
    let crc = crc32fast::hash(&bytes[..at]);
    bytes[at..].copy_from_slice(&crc.to_le_bytes());
}

/// A window `[base, base + universe)` that never overflows.
fn window(src: &mut Source<'_>) -> (u64, u64) {
    let base = match src.byte() % 3 {
        0 => src.sized(),
        1 => u64::MAX - src.sized(),
        _ => src.u64(),
    };
    let room = u64::MAX - base;
    let universe = match src.byte() % 4 {
        0 => src.below(64),
        1 => src.below(1 << 20),
        _ => src.u64(),
    }
    .min(room);
    (base, universe)
}

/// Up to `max` distinct sorted values in `[base, base + universe)`.
fn indices(src: &mut Source<'_>, base: u64, universe: u64, max: u8) -> Vec<u64> {
    let n = src.byte() % max.max(1);
    let mut v: Vec<u64> = (0..n)
        .filter(|_| universe > 0)
        .map(|_| base + src.below(universe))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// A valid revoked set.
pub fn valid_set(src: &mut Source<'_>) -> RevokedSet {
    let (base, universe) = window(src);
    let v = indices(src, base, universe, 64);
    RevokedSet::from_sorted(base, universe, v).expect("valid by construction")
}

/// A valid delta.
pub fn valid_delta(src: &mut Source<'_>) -> RevokedDelta {
    let from = src.sized().min(u64::MAX - 1);
    let to = from + 1 + src.below(u64::MAX - from - 1).min(u64::from(src.byte()));
    let (base, universe) = window(src);
    let added = indices(src, base, universe, 64);
    let removed_below = src.flag().then(|| base + src.below(universe));
    RevokedDelta::new(from, to, added, removed_below).expect("valid by construction")
}

/// A valid rule set.
pub fn valid_rules(src: &mut Source<'_>) -> RuleSet {
    let mut r = RuleSet::new();
    for _ in 0..src.byte() % 6 {
        let t = src.string();
        let s = src.string();
        let c = src.sized();
        match src.byte() % 4 {
            0 => r.revoke_subject(&t, &s, c),
            1 => r.revoke_tenant(&t, c),
            2 => r.revoke_task(&t, &s, c),
            _ => r.revoke_key(&s),
        }
        .expect("short strings");
    }
    r
}

/// A valid secret set (small Bloom parameters, so decoding stays fast).
pub fn valid_secrets(src: &mut Source<'_>) -> SecretSet {
    let planned = src.below(3000);
    let fp = [0.5, 0.01, 1e-3, 1e-6][usize::from(src.byte() % 4)];
    let mut s = SecretSet::new(planned, fp, src.array32()).expect("valid parameters");
    for _ in 0..src.byte() % 5 {
        let mut h = [0u8; 32];
        h[0] = src.byte();
        h[31] = src.byte();
        s.insert(h).expect("below the cap");
    }
    s
}

/// A valid key set.
pub fn valid_keys(src: &mut Source<'_>) -> KeySet {
    let mut k = KeySet::new();
    for _ in 0..src.byte() % 4 {
        let kid = src.string();
        let nb = src.sized();
        let na = nb.saturating_add(src.sized());
        let key = PublicKey {
            algorithm: KeyAlgorithm::Ed25519,
            bytes: vec![src.byte(); 32],
            not_before_ms: nb,
            not_after_ms: na,
        };
        k.insert(&kid, key).expect("valid key");
    }
    k
}

/// A valid message: a full snapshot or a delta.
pub fn valid_message(src: &mut Source<'_>) -> Message {
    if src.flag() {
        Message::Full(Box::new(Snapshot {
            epoch: src.sized(),
            set: valid_set(src),
            secrets: valid_secrets(src),
            rules: valid_rules(src),
            keys: valid_keys(src),
        }))
    } else {
        let n = src.byte() % 4;
        Message::Delta(DeltaMessage {
            revoked: valid_delta(src),
            added_secrets: (0..n).map(|_| src.array32()).collect(),
            rules: valid_rules(src),
            keys: valid_keys(src),
            keys_removed: (0..src.byte() % 3).map(|_| src.string()).collect(),
        })
    }
}

/// Small fixed sets a decoded delta is applied to: an ordinary window, the
/// widest possible one, and one at the very top of the index space.
pub fn fixed_sets() -> Vec<RevokedSet> {
    vec![
        RevokedSet::from_sorted(100, 1000, [100, 150, 1099]).expect("valid"),
        RevokedSet::from_sorted(0, u64::MAX, [0, 1, 1 << 40, u64::MAX - 1]).expect("valid"),
        RevokedSet::from_sorted(u64::MAX - 10, 10, [u64::MAX - 10, u64::MAX - 1]).expect("valid"),
        RevokedSet::empty(0, 0).expect("valid"),
    ]
}

/// Apply `delta` to a copy of `set` and check the outcome: on success the
/// window moved as asked, every added index is present and nothing left the
/// window; on failure the set is untouched.
pub fn check_apply(set: &RevokedSet, delta: &RevokedDelta) {
    let mut s = set.clone();
    match s.apply(delta) {
        Ok(()) => {
            let base = delta.removed_below().unwrap_or(set.base());
            assert_eq!(s.base(), base);
            assert_eq!(s.universe(), set.universe());
            for &i in delta.added() {
                assert!(s.contains(i));
            }
            let kept = set.iter().filter(|&i| i >= base).count();
            assert_eq!(s.len(), kept + delta.added().len());
            let mut prev = None;
            for i in s.iter() {
                assert!(i >= base && i - base < s.universe());
                assert!(prev < Some(i));
                prev = Some(i);
            }
        }
        Err(_) => assert_eq!(&s, set, "a failed apply must not mutate"),
    }
}
