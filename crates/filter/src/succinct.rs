//! `EliasFano`: a static, strictly increasing sequence of offsets in
//! `[0, span)` held in about `n (2 + log2(span / n))` bits, with a small
//! select0 sampling index so that membership and rank read a few words.
//!
//! Layout (`n` offsets, `l = floor(log2(span / n))` low bits each):
//!
//! - `low`: the low `l` bits of every offset, packed LSB-first, `n * l` bits;
//! - `high`: for offset `i` with high part `h = offset >> l`, bit `i + h` is
//!   set; bucket `h` (the offsets sharing high part `h`) is a run of ones
//!   closed by one zero, so the bit vector is `n + buckets` bits long with
//!   `buckets = ((span - 1) >> l) + 1 <= 2n`;
//! - `samples`: the position where bucket `j * SAMPLE_EVERY` starts, for every
//!   `j`: `4 * ceil(buckets / SAMPLE_EVERY)` bytes. Finding where bucket `h`
//!   starts takes one sample and a popcount scan over fewer than
//!   `SAMPLE_EVERY` zeros (for a uniform set with `n / span` near a power
//!   of two over 100, about 0.6 of the bits are zeros: three or four words
//!   on average, seven at most).
//!
//! Every buffer is a boxed slice allocated at its exact size, so
//! [`EliasFano::heap_bytes`] is exactly what the sequence holds.

use crate::error::FilterError;

/// Buckets between two select0 samples: 4 bytes per 256 buckets, about
/// 1/64 of a bit per bucket, against a scan of at most 256 zeros.
const SAMPLE_EVERY: u64 = 256;

/// The static sequence; see the module documentation for the layout.
#[derive(Debug, Clone, Default)]
pub(crate) struct EliasFano {
    len: usize,
    span: u64,
    low_bits: u32,
    low_mask: u64,
    low: Box<[u64]>,
    high: Box<[u64]>,
    samples: Box<[u32]>,
}

/// Position (0-based) of the `r`-th set bit of `x` (0-based `r`); requires
/// `x.count_ones() > r`. Broadword (no data-dependent branches): byte-wise
/// prefix popcounts locate the byte, then the bits below it are cleared.
#[inline]
fn select_in_word(x: u64, r: u32) -> u64 {
    const L8: u64 = 0x0101_0101_0101_0101;
    const H8: u64 = 0x8080_8080_8080_8080;
    let mut s = x - ((x >> 1) & 0x5555_5555_5555_5555);
    s = (s & 0x3333_3333_3333_3333) + ((s >> 2) & 0x3333_3333_3333_3333);
    s = (s + (s >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // Byte i of `prefix` holds the number of ones in bytes 0..=i.
    let prefix = s.wrapping_mul(L8);
    // High bit of byte i set where prefix[i] <= r: those bytes come before.
    let before = (((u64::from(r) * L8) | H8) - prefix) & H8;
    let byte = ((before >> 7).wrapping_mul(L8) >> 56) * 8;
    let below = ((prefix << 8) >> byte) & 0xff;
    let mut b = (x >> byte) & 0xff;
    for _ in 0..(u64::from(r) - below) {
        b &= b - 1;
    }
    byte + u64::from(b.trailing_zeros())
}

impl EliasFano {
    /// Number of offsets.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held: the low bits, the high bits and the samples.
    pub(crate) fn heap_bytes(&self) -> usize {
        (self.low.len() + self.high.len()) * 8 + self.samples.len() * 4
    }

    /// The low bits of offset `i` (`i < len`).
    #[inline]
    fn low_of(&self, i: usize) -> u64 {
        if self.low_bits == 0 {
            return 0;
        }
        let bit = i as u64 * u64::from(self.low_bits);
        let w = (bit / 64) as usize;
        let s = (bit % 64) as u32;
        let mut v = self.low[w] >> s;
        if s + self.low_bits > 64 {
            v |= self.low[w + 1] << (64 - s);
        }
        v & self.low_mask
    }

    #[inline]
    fn high_bit(&self, p: u64) -> bool {
        self.high[(p / 64) as usize] >> (p % 64) & 1 == 1
    }

    /// Position in `high` where bucket `h` starts (`h < buckets`).
    #[inline]
    fn bucket_start(&self, h: u64) -> u64 {
        let j = h / SAMPLE_EVERY;
        let pos = u64::from(self.samples[j as usize]);
        let mut r = h - j * SAMPLE_EVERY;
        if r == 0 {
            return pos;
        }
        let mut w = (pos / 64) as usize;
        let mut z = !self.high[w] & (u64::MAX << (pos % 64));
        loop {
            let c = u64::from(z.count_ones());
            if c >= r {
                return w as u64 * 64 + select_in_word(z, (r - 1) as u32) + 1;
            }
            r -= c;
            w += 1;
            z = !self.high[w];
        }
    }

    /// Whether `offset` is in the sequence.
    #[inline]
    pub(crate) fn contains(&self, offset: u64) -> bool {
        if offset >= self.span {
            return false;
        }
        let h = offset >> self.low_bits;
        let lo = offset & self.low_mask;
        let mut p = self.bucket_start(h);
        let mut i = (p - h) as usize;
        while self.high_bit(p) {
            let v = self.low_of(i);
            if v >= lo {
                return v == lo;
            }
            i += 1;
            p += 1;
        }
        false
    }

    /// The number of offsets below `offset`, and a position in `high` from
    /// which the first offset at or above it is the next set bit.
    fn lower_bound(&self, offset: u64) -> (usize, u64) {
        if offset >= self.span {
            return (self.len, self.high.len() as u64 * 64);
        }
        let h = offset >> self.low_bits;
        let lo = offset & self.low_mask;
        let mut p = self.bucket_start(h);
        let mut i = (p - h) as usize;
        while self.high_bit(p) && self.low_of(i) < lo {
            i += 1;
            p += 1;
        }
        (i, p)
    }

    /// How many offsets are below `offset`.
    pub(crate) fn rank(&self, offset: u64) -> usize {
        self.lower_bound(offset).0
    }

    /// The offsets at or above `offset`, in increasing order.
    pub(crate) fn iter_from(&self, offset: u64) -> EfIter<'_> {
        let (i, pos) = self.lower_bound(offset);
        EfIter { ef: self, i, pos }
    }
}

/// Increasing iterator over an [`EliasFano`]'s offsets.
#[derive(Debug, Clone)]
pub(crate) struct EfIter<'a> {
    ef: &'a EliasFano,
    i: usize,
    pos: u64,
}

impl Iterator for EfIter<'_> {
    type Item = u64;

    #[inline]
    fn next(&mut self) -> Option<u64> {
        if self.i >= self.ef.len {
            return None;
        }
        let mut w = (self.pos / 64) as usize;
        let mut bits = self.ef.high[w] & (u64::MAX << (self.pos % 64));
        while bits == 0 {
            w += 1;
            bits = self.ef.high[w];
        }
        let p = w as u64 * 64 + u64::from(bits.trailing_zeros());
        let h = p - self.i as u64;
        let v = (h << self.ef.low_bits) | self.ef.low_of(self.i);
        self.i += 1;
        self.pos = p + 1;
        Some(v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.ef.len - self.i.min(self.ef.len);
        (n, Some(n))
    }
}

impl ExactSizeIterator for EfIter<'_> {}

/// Fills an [`EliasFano`] of a known length in one pass, offset by offset.
#[derive(Debug)]
pub(crate) struct EfBuilder {
    ef: EliasFano,
    next: usize,
    last: Option<u64>,
}

impl EfBuilder {
    /// A builder for exactly `len` strictly increasing offsets in
    /// `[0, span)`. Allocates `len * (l + 1) + ((span - 1) >> l) + 1` bits
    /// (`l = floor(log2(span / len))`), at most `len * 66 + 1` bits, so
    /// `len` must already be bounded; `len > span` is refused.
    pub(crate) fn new(span: u64, len: usize) -> Result<Self, FilterError> {
        if len as u64 > span {
            return Err(FilterError::Corrupt(
                "more offsets than the span holds".into(),
            ));
        }
        if len == 0 {
            return Ok(Self {
                ef: EliasFano::default(),
                next: 0,
                last: None,
            });
        }
        let q = span / len as u64;
        let low_bits = 63 - q.leading_zeros();
        let low_mask = if low_bits == 0 {
            0
        } else {
            u64::MAX >> (64 - low_bits)
        };
        let buckets = ((span - 1) >> low_bits) + 1;
        let low_words = (len as u64 * u64::from(low_bits)).div_ceil(64) as usize;
        let high_words = (len as u64 + buckets).div_ceil(64) as usize;
        let n_samples = buckets.div_ceil(SAMPLE_EVERY) as usize;
        Ok(Self {
            ef: EliasFano {
                len,
                span,
                low_bits,
                low_mask,
                low: vec![0; low_words].into_boxed_slice(),
                high: vec![0; high_words].into_boxed_slice(),
                samples: vec![0; n_samples].into_boxed_slice(),
            },
            next: 0,
            last: None,
        })
    }

    /// Append the next offset: it must be above the previous one, inside
    /// the span, and no more than `len` may be pushed.
    pub(crate) fn push(&mut self, offset: u64) -> Result<(), FilterError> {
        let ef = &mut self.ef;
        if self.next >= ef.len || offset >= ef.span || self.last.is_some_and(|last| offset <= last)
        {
            return Err(FilterError::Corrupt("offsets out of order or range".into()));
        }
        let i = self.next;
        if ef.low_bits > 0 {
            let v = offset & ef.low_mask;
            let bit = i as u64 * u64::from(ef.low_bits);
            let w = (bit / 64) as usize;
            let s = (bit % 64) as u32;
            ef.low[w] |= v << s;
            if s + ef.low_bits > 64 {
                ef.low[w + 1] |= v >> (64 - s);
            }
        }
        let p = i as u64 + (offset >> ef.low_bits);
        ef.high[(p / 64) as usize] |= 1 << (p % 64);
        self.next += 1;
        self.last = Some(offset);
        Ok(())
    }

    /// The finished sequence, once exactly `len` offsets were pushed.
    pub(crate) fn finish(mut self) -> Result<EliasFano, FilterError> {
        if self.next != self.ef.len {
            return Err(FilterError::Corrupt("fewer offsets than announced".into()));
        }
        let ef = &mut self.ef;
        // samples[j] = start of bucket j * SAMPLE_EVERY = one past the
        // (j * SAMPLE_EVERY)-th zero (1-based). Padding bits past the end of
        // `high` are zeros too, but they come after every real zero, and
        // only real zeros are ever targeted.
        let mut filled = usize::from(!ef.samples.is_empty());
        let mut target = SAMPLE_EVERY;
        let mut seen = 0u64;
        for (w, &word) in ef.high.iter().enumerate() {
            if filled >= ef.samples.len() {
                break;
            }
            let z = !word;
            let c = u64::from(z.count_ones());
            while filled < ef.samples.len() && seen + c >= target {
                let p = w as u64 * 64 + select_in_word(z, (target - seen - 1) as u32);
                ef.samples[filled] = u32::try_from(p + 1)
                    .map_err(|_| FilterError::Corrupt("sequence too long".into()))?;
                filled += 1;
                target += SAMPLE_EVERY;
            }
            seen += c;
        }
        Ok(self.ef)
    }
}

/// Build from strictly increasing offsets in `[0, span)`, exactly `len` of
/// them.
pub(crate) fn build(
    span: u64,
    len: usize,
    offsets: impl IntoIterator<Item = u64>,
) -> Result<EliasFano, FilterError> {
    let mut b = EfBuilder::new(span, len)?;
    for o in offsets {
        b.push(o)?;
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(span: u64, v: &[u64]) {
        let ef = build(span, v.len(), v.iter().copied()).unwrap();
        assert_eq!(ef.iter_from(0).collect::<Vec<_>>(), v, "span {span}");
        for &x in v {
            assert!(ef.contains(x), "{x} in span {span}");
        }
        let probes: Vec<u64> = (0..span.min(300))
            .chain(v.iter().flat_map(|&x| [x.saturating_sub(1), x + 1]))
            .chain([span.saturating_sub(1), span, u64::MAX])
            .collect();
        for x in probes {
            assert_eq!(ef.contains(x), v.binary_search(&x).is_ok(), "{x}");
            let rank = v.partition_point(|&y| y < x);
            assert_eq!(ef.rank(x), rank, "rank {x}");
            assert_eq!(
                ef.iter_from(x).collect::<Vec<_>>(),
                &v[rank..],
                "iter_from {x}"
            );
        }
    }

    #[test]
    fn small_and_edge_sequences() {
        check(0, &[]);
        check(1, &[]);
        check(1, &[0]);
        check(5, &[0, 1, 2, 3, 4]);
        check(64, &[63]);
        check(1000, &[0, 999]);
        check(u64::MAX, &[0, 1, 1 << 40, u64::MAX - 1]);
        check(u64::MAX, &[u64::MAX - 1]);
        let dense: Vec<u64> = (0..5000).filter(|x| x % 3 != 0).collect();
        check(5000, &dense);
        let sparse: Vec<u64> = (0..3000).map(|x| x * 997 + 13).collect();
        check(3000 * 997 + 20, &sparse);
        let clumped: Vec<u64> = (0..2000).chain(1_000_000..1_000_300).collect();
        check(2_000_000, &clumped);
    }

    #[test]
    fn select_in_word_matches_naive() {
        for x in [1u64, 0x8000_0000_0000_0000, u64::MAX, 0xf0f0_0f0f_1234_8001] {
            let ones: Vec<u64> = (0..64).filter(|b| x >> b & 1 == 1).collect();
            for (r, &b) in ones.iter().enumerate() {
                assert_eq!(select_in_word(x, r as u32), b, "{x:#x} r={r}");
            }
        }
    }

    #[test]
    fn builder_refuses_bad_input() {
        assert!(EfBuilder::new(3, 4).is_err());
        let mut b = EfBuilder::new(10, 2).unwrap();
        b.push(4).unwrap();
        assert!(b.push(4).is_err());
        assert!(b.push(10).is_err());
        b.push(9).unwrap();
        assert!(b.push(9).is_err());
        let mut short = EfBuilder::new(10, 2).unwrap();
        short.push(1).unwrap();
        assert!(short.finish().is_err());
    }
}
