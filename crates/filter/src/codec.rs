//! Low-level, panic-free byte and bit codecs: LEB128 varints, a bounds-checked
//! reader, and Golomb-Rice coding of gap sequences.

use crate::error::FilterError;

/// Append `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Append a length-prefixed UTF-8 string.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A cursor over untrusted input; every read is bounds-checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fail with `TrailingBytes` unless the input has been fully consumed.
    pub(crate) fn finish(&self) -> Result<(), FilterError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(FilterError::TrailingBytes(n)),
        }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], FilterError> {
        if n > self.remaining() {
            return Err(FilterError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FilterError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u64_le(&mut self) -> Result<u64, FilterError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn array32(&mut self) -> Result<[u8; 32], FilterError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.bytes(32)?);
        Ok(a)
    }

    /// Read an unsigned LEB128 varint of at most 10 bytes, rejecting overflow
    /// and non-minimal encodings.
    pub(crate) fn varint(&mut self) -> Result<u64, FilterError> {
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            if i == 9 && low > 1 {
                return Err(FilterError::Corrupt("varint overflows u64".into()));
            }
            v |= low << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(FilterError::Corrupt("non-minimal varint".into()));
                }
                return Ok(v);
            }
        }
        Err(FilterError::Corrupt("varint longer than 10 bytes".into()))
    }

    /// Read a count and check it against a hard cap and against the input
    /// left, given that every counted item takes at least `min_bytes` bytes.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        max: u64,
        min_bytes: u64,
    ) -> Result<usize, FilterError> {
        let n = self.varint()?;
        if n > max {
            return Err(FilterError::TooLarge { what, len: n, max });
        }
        if n.saturating_mul(min_bytes) > self.remaining() as u64 {
            return Err(FilterError::Truncated);
        }
        usize::try_from(n).map_err(|_| FilterError::TooLarge { what, len: n, max })
    }

    /// Read a length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn str(&mut self, max: u64) -> Result<String, FilterError> {
        let n = self.varint()?;
        if n > max {
            return Err(FilterError::TooLarge {
                what: "string",
                len: n,
                max,
            });
        }
        let n = usize::try_from(n).map_err(|_| FilterError::Truncated)?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| FilterError::Corrupt("invalid UTF-8".into()))
    }
}

/// MSB-first bit writer.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u8,
    nbits: u8,
}

impl BitWriter<'_> {
    fn bit(&mut self, b: bool) {
        self.acc = (self.acc << 1) | u8::from(b);
        self.nbits += 1;
        if self.nbits == 8 {
            self.out.push(self.acc);
            self.acc = 0;
            self.nbits = 0;
        }
    }

    fn bits(&mut self, v: u64, k: u8) {
        for i in (0..k).rev() {
            self.bit((v >> i) & 1 == 1);
        }
    }

    fn flush(self) {
        if self.nbits > 0 {
            self.out.push(self.acc << (8 - self.nbits));
        }
    }
}

/// Cost in bits of Rice-coding `gaps` with parameter `k`, saturating.
fn rice_cost(gaps: &[u64], k: u8) -> u64 {
    gaps.iter()
        .fold(0u64, |acc, &g| acc.saturating_add(rice_code_bits(g, k)))
}

/// Bits of one Rice code.
#[inline]
fn rice_code_bits(g: u64, k: u8) -> u64 {
    (g >> k) + 1 + u64::from(k)
}

/// The Rice parameters [`choose_rice_k`] picks among for `count` gaps
/// summing to `sum`, and the first guess: `floor(log2(mean gap))` and its
/// neighbours within two, clamped to `0..=MAX_RICE_K`. `count` must be > 0.
fn rice_k_candidates(count: u64, sum: u128) -> (u8, u8, u8) {
    let mean = (sum / u128::from(count.max(1))).max(1);
    let est = (127 - mean.leading_zeros()).min(u32::from(MAX_RICE_K)) as u8;
    let lo = est.saturating_sub(2);
    let hi = (est + 2).min(MAX_RICE_K);
    (lo, hi, est)
}

/// Pick the Rice parameter: start from `floor(log2(mean gap))` (for a random
/// set this is `floor(log2(U / R))`) and keep the cheapest of its neighbours,
/// measured exactly on the gaps. Always in `0..=MAX_RICE_K`.
pub(crate) fn choose_rice_k(gaps: &[u64]) -> u8 {
    if gaps.is_empty() {
        return 0;
    }
    let sum: u128 = gaps.iter().map(|&g| u128::from(g)).sum();
    let (lo, hi, est) = rice_k_candidates(gaps.len() as u64, sum);
    (lo..=hi)
        .min_by_key(|&k| (rice_cost(gaps, k), k))
        .unwrap_or(est)
}

/// [`choose_rice_k`] over gaps that are not held in a slice: `gaps` is
/// called twice (once for the mean, once for the candidates' costs), and
/// must yield the same sequence both times.
pub(crate) fn choose_rice_k_streamed<I: Iterator<Item = u64>>(gaps: impl Fn() -> I) -> u8 {
    let (mut count, mut sum) = (0u64, 0u128);
    for g in gaps() {
        count += 1;
        sum += u128::from(g);
    }
    if count == 0 {
        return 0;
    }
    let (lo, hi, est) = rice_k_candidates(count, sum);
    let mut costs = [0u64; 5];
    for g in gaps() {
        for (c, k) in costs.iter_mut().zip(lo..=hi) {
            *c = c.saturating_add(rice_code_bits(g, k));
        }
    }
    (lo..=hi)
        .zip(costs)
        .min_by_key(|&(k, c)| (c, k))
        .map_or(est, |(k, _)| k)
}

/// What [`choose_rice_k`] needs of a gap sequence read once, for checking
/// that a decoded parameter `k` is the canonical one without holding the
/// gaps: their count and sum, and the cost of every parameter within four of
/// `k` (the candidates always lie within two of the estimate, so if `k` is
/// one of them, so are all the others).
#[derive(Debug, Clone)]
pub(crate) struct RiceStats {
    k: u8,
    count: u64,
    sum: u128,
    costs: [u64; 9],
}

impl RiceStats {
    pub(crate) fn new(k: u8) -> Self {
        Self {
            k,
            count: 0,
            sum: 0,
            costs: [0; 9],
        }
    }

    /// Account for one more gap.
    #[inline]
    pub(crate) fn add(&mut self, g: u64) {
        self.count += 1;
        self.sum += u128::from(g);
        let first = self.k.saturating_sub(4);
        let last = self.k.saturating_add(4).min(MAX_RICE_K);
        for (c, k) in self.costs.iter_mut().zip(first..=last) {
            *c = c.saturating_add(rice_code_bits(g, k));
        }
    }

    /// Whether `k` is the parameter [`choose_rice_k`] picks for these gaps.
    pub(crate) fn is_canonical(&self) -> bool {
        if self.count == 0 {
            return self.k == 0;
        }
        let (lo, hi, est) = rice_k_candidates(self.count, self.sum);
        if !(lo..=hi).contains(&self.k) {
            return false;
        }
        let first = self.k.saturating_sub(4);
        let chosen = (lo..=hi)
            .min_by_key(|&k| (self.costs[usize::from(k - first)], k))
            .unwrap_or(est);
        chosen == self.k
    }
}

/// Largest Rice parameter accepted on the wire.
pub(crate) const MAX_RICE_K: u8 = 63;

/// Append `gaps` Rice-coded with parameter `k`, padded with zero bits to a
/// byte boundary.
pub(crate) fn rice_encode(out: &mut Vec<u8>, gaps: impl IntoIterator<Item = u64>, k: u8) {
    let mut w = BitWriter {
        out,
        acc: 0,
        nbits: 0,
    };
    for g in gaps {
        let q = g >> k;
        for _ in 0..q {
            w.bit(true);
        }
        w.bit(false);
        w.bits(g, k);
    }
    w.flush();
}

/// Decode exactly `count` Rice codes with parameter `k` from `r`, calling
/// `sink` for each value, then consume the zero padding up to the next byte.
/// The caller must already have bounded `count`; reads never leave `r`.
pub(crate) fn rice_decode(
    r: &mut Reader<'_>,
    count: usize,
    k: u8,
    mut sink: impl FnMut(u64) -> Result<(), FilterError>,
) -> Result<(), FilterError> {
    if k > MAX_RICE_K {
        return Err(FilterError::Corrupt(format!("rice parameter {k} > 63")));
    }
    let buf = &r.buf[r.pos..];
    let total_bits = buf.len() as u64 * 8;
    let mut pos: u64 = 0;
    let bit = |pos: &mut u64| -> Result<bool, FilterError> {
        if *pos >= total_bits {
            return Err(FilterError::Truncated);
        }
        let b = buf[(*pos / 8) as usize] >> (7 - (*pos % 8)) & 1;
        *pos += 1;
        Ok(b == 1)
    };
    let max_q = u64::MAX >> k;
    for _ in 0..count {
        let mut q: u64 = 0;
        while bit(&mut pos)? {
            q += 1;
            if q > max_q {
                return Err(FilterError::Corrupt("rice quotient overflows".into()));
            }
        }
        let mut low: u64 = 0;
        for _ in 0..k {
            low = (low << 1) | u64::from(bit(&mut pos)?);
        }
        sink((q << k) | low)?;
    }
    let used = pos.div_ceil(8) as usize;
    if pos & 7 != 0 {
        let pad_bits = 8 - (pos & 7);
        let last = buf[used - 1];
        if last & ((1u8 << pad_bits) - 1) != 0 {
            return Err(FilterError::Corrupt("non-zero rice padding".into()));
        }
    }
    r.pos += used;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_rejects() {
        for v in [0u64, 1, 127, 128, 300, u64::MAX, u64::MAX - 1, 1 << 63] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut r = Reader::new(&b);
            assert_eq!(r.varint().unwrap(), v);
            r.finish().unwrap();
        }
        assert!(Reader::new(&[0x80, 0x00]).varint().is_err());
        assert!(Reader::new(&[0xff; 10]).varint().is_err());
        assert_eq!(Reader::new(&[0x80]).varint(), Err(FilterError::Truncated));
    }

    #[test]
    fn rice_round_trip() {
        let small = vec![0u64, 1, 2, 99, 1000, 5];
        let huge = vec![0u64, u64::MAX, u64::MAX >> 4, 7];
        for (gaps, k) in [
            (&small, 0u8),
            (&small, 3),
            (&small, 6),
            (&small, 20),
            (&huge, 60),
            (&huge, 63),
        ] {
            let mut b = Vec::new();
            rice_encode(&mut b, gaps.iter().copied(), k);
            let mut got = Vec::new();
            let mut r = Reader::new(&b);
            rice_decode(&mut r, gaps.len(), k, |g| {
                got.push(g);
                Ok(())
            })
            .unwrap();
            r.finish().unwrap();
            assert_eq!(&got, gaps, "k = {k}");
        }
    }

    #[test]
    fn choose_k_near_log_mean() {
        let gaps = vec![99u64; 1000];
        let k = choose_rice_k(&gaps);
        assert!((5..=7).contains(&k), "k = {k}");
        assert_eq!(choose_rice_k(&[]), 0);
        assert!(choose_rice_k(&[u64::MAX, u64::MAX]) <= MAX_RICE_K);
    }

    proptest::proptest! {
        /// The streamed choice and the one-pass canonical check agree with
        /// `choose_rice_k` on every gap list, for every wire parameter.
        #[test]
        fn streamed_k_matches_slice_k(
            gaps in proptest::collection::vec(
                proptest::prop_oneof![0u64..4, 0u64..1000, 0u64..(1 << 30), proptest::prelude::any::<u64>()],
                0..64,
            ),
            huge in proptest::prelude::any::<bool>(),
        ) {
            let gaps: Vec<u64> = if huge { gaps.iter().map(|g| g >> 1).collect() } else { gaps.into_iter().map(|g| g % (1 << 40)).collect() };
            let k = choose_rice_k(&gaps);
            proptest::prop_assert_eq!(choose_rice_k_streamed(|| gaps.iter().copied()), k);
            for wire_k in 0..=MAX_RICE_K {
                let mut stats = RiceStats::new(wire_k);
                for &g in &gaps {
                    stats.add(g);
                }
                proptest::prop_assert_eq!(stats.is_canonical(), wire_k == k, "wire k {}", wire_k);
            }
        }
    }
}
