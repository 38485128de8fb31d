//! `EliasFano`: a static, strictly increasing sequence of offsets in
//! `[0, span)` held in about `n (2 + log2(span / n))` bits, with a small
//! select0 index so that membership reads a few words and takes no
//! data-dependent branch in the common case.
//!
//! Layout (`n` offsets, `l = floor(log2(span / n))` low bits each):
//!
//! - `low`: the low `l` bits of every offset, packed LSB-first, `n * l` bits,
//!   plus one zero word of padding (when `l > 0`) so that a 64-bit window
//!   from any offset's low bits stays inside the buffer;
//! - `high`: for offset `i` with high part `h = offset >> l`, bit `i + h` is
//!   set; bucket `h` (the offsets sharing high part `h`) is a run of ones
//!   closed by one zero, so the bit vector is `n + buckets` bits long with
//!   `buckets = ((span - 1) >> l) + 1 <= 2n`, plus two zero words of
//!   padding so that a 128-bit window from any of its bits stays inside;
//! - `index`: for every block of 1024 (16 [`GROUP_BUCKETS`]) buckets, five
//!   `u32`s: where the block's first bucket starts in `high`, then sixteen
//!   bytes, byte `j` the number of ones (offsets) in the block's group `j`
//!   of [`GROUP_BUCKETS`] (64) buckets (the sixteenth is unused, 0): 20
//!   bytes per 1024 buckets. Where group `g` starts is the block's start
//!   plus `64 j` zeros plus a masked SIMD-within-a-register sum of the
//!   bytes before it; the zero closing bucket `h` is then the `(h % 64)`-th
//!   zero of a 128-bit window read there (a group of 64 buckets spans 64
//!   zeros and, for a uniform set, about 41 ones);
//! - `exceptions`: a block with a group holding 255 ones or more (only a
//!   clumped set has one) keeps, instead of the bytes, the index of its 16
//!   group starts here (`u32` each): 64 bytes per such block, and there are
//!   fewer than `n / 255` of them.
//!
//! So the index takes `20 * ceil(buckets / 1024)` bytes (about 0.16 bits
//! per bucket) for any set without such clumps. Every buffer is a boxed
//! slice allocated at its exact size, so [`EliasFano::heap_bytes`] is
//! exactly what the sequence holds.

use crate::broadword::{BYTES_BELOW, byte_sum, select_in_word, select0_128};
use crate::error::FilterError;

/// Buckets per group: a group's start is found from the index alone.
const GROUP_BUCKETS: u64 = 64;
/// Groups per block: one absolute `u32` start and sixteen one-byte counts.
const BLOCK_GROUPS: u64 = 16;
/// `u32`s per block in `index`.
const BLOCK_WORDS: usize = 5;
/// In a block's first `u32`: its group starts are in `exceptions`.
const EXCEPTION: u32 = 1 << 31;

/// The static sequence; see the module documentation for the layout.
#[derive(Debug, Clone, Default)]
pub(crate) struct EliasFano {
    len: usize,
    span: u64,
    low_bits: u32,
    low_mask: u64,
    /// Masks to compare four low parts at once.
    lanes: Lanes,
    low: Box<[u64]>,
    high: Box<[u64]>,
    index: Box<[u32]>,
    exceptions: Box<[u32]>,
}

/// Masks over four `low_bits`-wide fields of a 64-bit word, for
/// `1 <= low_bits <= 16` (all zero otherwise): the bits of four low parts
/// read at once.
#[derive(Debug, Clone, Copy, Default)]
struct Lanes {
    /// Bit 0 of each field.
    ones: u64,
    /// All bits of each field but its top bit.
    rest: u64,
    /// `last[c]`: the top bit of each of the last (most significant) `c`
    /// fields.
    last: [u64; 5],
}

impl Lanes {
    fn new(low_bits: u32) -> Self {
        if !(1..=16).contains(&low_bits) {
            return Self::default();
        }
        let field = |j: u32| 1u64 << (j * low_bits);
        let ones: u64 = (0..4).map(field).sum();
        let top = ones << (low_bits - 1);
        let rest = ones.wrapping_mul((1 << low_bits) - 1) ^ top;
        let mut last = [0; 5];
        for c in 1..5 {
            last[c] = last[c - 1] | field(4 - c as u32) << (low_bits - 1);
        }
        Self { ones, rest, last }
    }
}

impl EliasFano {
    /// Number of offsets.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held: the low bits, the high bits (each with its
    /// padding), the index and the exceptions.
    pub(crate) fn heap_bytes(&self) -> usize {
        (self.low.len() + self.high.len()) * 8 + (self.index.len() + self.exceptions.len()) * 4
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

    /// Position in `high` where group `g` (buckets `64 g ..`) starts
    /// (`g < ceil(buckets / 64)`).
    #[inline]
    fn group_start(&self, g: u64) -> u64 {
        let b = (g / BLOCK_GROUPS) as usize * BLOCK_WORDS;
        let j = g % BLOCK_GROUPS;
        let rec: &[u32; BLOCK_WORDS] = self.index[b..b + BLOCK_WORDS]
            .try_into()
            .expect("a block is five words");
        let head = rec[0];
        if head & EXCEPTION != 0 {
            let e = (head & !EXCEPTION) as usize * BLOCK_GROUPS as usize;
            return u64::from(self.exceptions[e + j as usize]);
        }
        let counts = u128::from(rec[1])
            | u128::from(rec[2]) << 32
            | u128::from(rec[3]) << 64
            | u128::from(rec[4]) << 96;
        let before = counts & BYTES_BELOW[j as usize];
        u64::from(head) + GROUP_BUCKETS * j + byte_sum(before)
    }

    /// The 128 bits of `high` from bit `p` on (`p < n + buckets`; the
    /// padding words make the reads safe).
    #[inline]
    fn high_window(&self, p: u64) -> u128 {
        let w = (p / 64) as usize;
        let s = p % 64;
        let words: &[u64; 3] = self.high[w..w + 3].try_into().expect("three words");
        let lo = (words[0] >> s) | ((words[1] << 1) << (63 - s));
        let hi = (words[1] >> s) | ((words[2] << 1) << (63 - s));
        u128::from(lo) | u128::from(hi) << 64
    }

    /// 64 bits of `low` from the low bits of offset `i` on (`i < len`,
    /// `low_bits > 0`).
    #[inline]
    fn low_window(&self, i: u64) -> u64 {
        let bit = i * u64::from(self.low_bits);
        let w = (bit / 64) as usize;
        let s = bit % 64;
        let words: &[u64; 2] = self.low[w..w + 2].try_into().expect("two words");
        (words[0] >> s) | ((words[1] << 1) << (63 - s))
    }

    /// Position in `high` of the `k`-th zero (0-based, `k < buckets`): the
    /// zero that closes bucket `k`.
    #[inline]
    fn select0(&self, k: u64) -> u64 {
        let p = self.group_start(k / GROUP_BUCKETS);
        let r = k % GROUP_BUCKETS;
        match select0_128(self.high_window(p), r) {
            Some(t) => p + t,
            None => self.select0_scan(p, r),
        }
    }

    /// Position of the `r`-th zero (0-based) at or after `p`, word by word:
    /// for a group with more than about 64 ones.
    #[cold]
    fn select0_scan(&self, p: u64, mut r: u64) -> u64 {
        let mut w = (p / 64) as usize;
        let mut z = !self.high[w] & (u64::MAX << (p % 64));
        loop {
            if let Some(s) = select_in_word(z, r) {
                return w as u64 * 64 + s;
            }
            r -= u64::from(z.count_ones());
            w += 1;
            z = !self.high[w];
        }
    }

    /// Position in `high` where bucket `h` starts (`h < buckets`).
    #[inline]
    fn bucket_start(&self, h: u64) -> u64 {
        if h == 0 { 0 } else { self.select0(h - 1) + 1 }
    }

    /// Whether `offset` is in the sequence.
    ///
    /// One index block, one 128-bit window of `high` (select of the zero
    /// closing bucket `h`; the run of ones below it is the bucket) and one
    /// 64-bit window of `low` holding the bucket's last four offsets,
    /// compared without branches. Larger buckets, wider low parts and
    /// groups with more than about 64 ones take a loop instead.
    #[inline]
    pub(crate) fn contains(&self, offset: u64) -> bool {
        if offset >= self.span {
            return false;
        }
        let h = offset >> self.low_bits;
        let lo = offset & self.low_mask;
        let p = self.group_start(h / GROUP_BUCKETS);
        let r = h % GROUP_BUCKETS;
        let w = self.high_window(p);
        let Some(t) = select0_128(w, r) else {
            return self.bucket_contains(self.select0_scan(p, r), h, lo);
        };
        // The ones right below the closing zero (inside the window, since
        // the bucket starts at or after `p`) are bucket `h`: counted in the
        // window's half holding the zero, and in the lower half too when
        // they reach down past the middle.
        let (w0, w1) = (w as u64, (w >> 64) as u64);
        let upper = u64::from(t >= 64).wrapping_neg();
        let half = w0 ^ ((w0 ^ w1) & upper);
        let s = t % 64;
        let c = u64::from(((half << (63 - s)) << 1).leading_ones());
        let c = c + (u64::from(w0.leading_ones()) & upper & u64::from(c == s).wrapping_neg());
        let end = p + t - h;
        if self.low_bits == 0 {
            return c > 0;
        }
        if c > 4 || end < 4 || self.low_bits > 16 {
            return self.bucket_contains(p + t, h, lo);
        }
        // The four offsets before `end` are in one 64-bit window,
        // `low_bits` each; the last `c` of them are bucket `h`. Fields equal
        // to `lo` are found all at once, without carries between fields.
        let x = self.low_window(end - 4) ^ lo.wrapping_mul(self.lanes.ones);
        let rest = self.lanes.rest;
        let equal = !(((x & rest) + rest) | x);
        equal & self.lanes.last[c as usize] != 0
    }

    /// Whether bucket `h`, closed by the zero at `e`, holds low part `lo`:
    /// a loop back over its ones.
    #[cold]
    fn bucket_contains(&self, e: u64, h: u64, lo: u64) -> bool {
        let mut p = e;
        while p > 0 && self.high_bit(p - 1) {
            p -= 1;
            let v = self.low_of((p - h) as usize);
            if v <= lo {
                return v == lo;
            }
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
    /// (`l = floor(log2(span / len))`) and three words of padding, at most
    /// `len * 66 + 193` bits, so `len` must already be bounded; `len > span`
    /// is refused. The index is allocated by [`EfBuilder::finish`].
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
        // One word of padding after the low bits (when there are any) and
        // two after the high bits: the windows `contains` reads.
        let low_words = if low_bits == 0 {
            0
        } else {
            (len as u64 * u64::from(low_bits)).div_ceil(64) as usize + 1
        };
        let high_words = (len as u64 + buckets).div_ceil(64) as usize + 2;
        Ok(Self {
            ef: EliasFano {
                len,
                span,
                low_bits,
                low_mask,
                lanes: Lanes::new(low_bits),
                low: vec![0; low_words].into_boxed_slice(),
                high: vec![0; high_words].into_boxed_slice(),
                index: Box::default(),
                exceptions: Box::default(),
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

    /// The finished sequence, once exactly `len` offsets were pushed: the
    /// index is built in one pass over `high`.
    pub(crate) fn finish(mut self) -> Result<EliasFano, FilterError> {
        if self.next != self.ef.len {
            return Err(FilterError::Corrupt("fewer offsets than announced".into()));
        }
        let ef = &mut self.ef;
        if ef.len == 0 {
            return Ok(self.ef);
        }
        let buckets = ((ef.span - 1) >> ef.low_bits) + 1;
        let starts = group_starts(&ef.high, buckets.div_ceil(GROUP_BUCKETS) as usize);
        let too_long = || FilterError::Corrupt("sequence too long".into());
        let mut index = Vec::with_capacity(starts.len().div_ceil(BLOCK_GROUPS as usize) * 5);
        let mut exceptions = Vec::new();
        for block in starts.chunks(BLOCK_GROUPS as usize) {
            let head = u32::try_from(block[0])
                .ok()
                .filter(|&h| h & EXCEPTION == 0)
                .ok_or_else(too_long)?;
            // Ones in group j = the distance to the next group's start,
            // less its 64 zeros; the block's last group needs none.
            let mut bytes = [0u8; 16];
            let mut fits = true;
            for (b, w) in bytes.iter_mut().zip(block.windows(2)) {
                let ones = w[1] - w[0] - GROUP_BUCKETS;
                fits &= ones < 255;
                *b = ones.min(255) as u8;
            }
            if fits {
                index.push(head);
                index.extend(
                    bytes
                        .chunks(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            } else {
                let k = u32::try_from(exceptions.len() / BLOCK_GROUPS as usize)
                    .ok()
                    .filter(|&k| k & EXCEPTION == 0)
                    .ok_or_else(too_long)?;
                index.extend([k | EXCEPTION, 0, 0, 0, 0]);
                for j in 0..BLOCK_GROUPS as usize {
                    let s = block.get(j).copied().unwrap_or(0);
                    exceptions.push(u32::try_from(s).map_err(|_| too_long())?);
                }
            }
        }
        ef.index = index.into_boxed_slice();
        ef.exceptions = exceptions.into_boxed_slice();
        Ok(self.ef)
    }
}

/// Where each of the first `groups` groups of 64 buckets starts in `high`:
/// group `g > 0` starts one past the `64 g`-th zero (1-based). The padding
/// bits past the end of `high` are zeros too, but they come after every
/// real zero, and only real zeros are targeted.
fn group_starts(high: &[u64], groups: usize) -> Vec<u64> {
    let mut starts = Vec::with_capacity(groups);
    if groups == 0 {
        return starts;
    }
    starts.push(0);
    let mut target = GROUP_BUCKETS;
    let mut seen = 0u64;
    for (w, &word) in high.iter().enumerate() {
        if starts.len() >= groups {
            break;
        }
        let z = !word;
        let c = u64::from(z.count_ones());
        while starts.len() < groups && seen + c >= target {
            let s = select_in_word(z, target - seen - 1).expect("the zero is in this word");
            starts.push(w as u64 * 64 + s + 1);
            target += GROUP_BUCKETS;
        }
        seen += c;
    }
    starts
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
    use crate::testing::Rng;

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

    /// Positions of the zeros of `high` below `n + buckets`, by testing
    /// every bit.
    fn naive_zeros(ef: &EliasFano) -> Vec<u64> {
        let bits = ef.len as u64 + ((ef.span - 1) >> ef.low_bits) + 1;
        (0..bits).filter(|&p| !ef.high_bit(p)).collect()
    }

    /// `check`, plus: `select0` agrees with a bit-by-bit select for every
    /// bucket, `contains` with the sorted list for random probes, and
    /// `heap_bytes` with the layout's arithmetic.
    fn check_index(span: u64, v: &[u64]) -> EliasFano {
        let ef = build(span, v.len(), v.iter().copied()).unwrap();
        if v.len() <= 2000 {
            check(span, v);
        } else {
            // `check` is quadratic; every offset, its neighbours and a few
            // ranks instead.
            for (i, &x) in v.iter().enumerate() {
                assert!(ef.contains(x), "{x}");
                for y in [x.wrapping_sub(1), x + 1] {
                    assert_eq!(ef.contains(y), v.binary_search(&y).is_ok(), "{y}");
                }
                if i % 97 == 0 {
                    assert_eq!(ef.rank(x), i);
                    assert_eq!(ef.iter_from(x + 1).next(), v.get(i + 1).copied());
                }
            }
        }
        if v.is_empty() {
            assert_eq!(ef.heap_bytes(), 0);
            return ef;
        }
        let zeros = naive_zeros(&ef);
        let buckets = ((span - 1) >> ef.low_bits) + 1;
        assert_eq!(zeros.len() as u64, buckets);
        for (k, &z) in zeros.iter().enumerate() {
            assert_eq!(ef.select0(k as u64), z, "select0({k}) span {span}");
        }
        let mut rng = Rng(span ^ v.len() as u64);
        for _ in 0..2000 {
            let x = rng.next() % span;
            assert_eq!(ef.contains(x), v.binary_search(&x).is_ok(), "{x}");
        }
        let l = u64::from(ef.low_bits);
        let low_words = if l == 0 {
            0
        } else {
            (v.len() as u64 * l).div_ceil(64) + 1
        };
        let high_words = (v.len() as u64 + buckets).div_ceil(64) + 2;
        let blocks = buckets.div_ceil(1024);
        let expected = (low_words + high_words) * 8 + blocks * 20 + ef.exceptions.len() as u64 * 4;
        assert_eq!(ef.heap_bytes() as u64, expected);
        assert_eq!(ef.index.len() as u64, blocks * 5);
        assert_eq!(ef.exceptions.len() % 16, 0);
        ef
    }

    #[test]
    fn index_matches_naive_select() {
        // Empty, one element, low_bits = 0, spans that are not multiples of
        // a group or a block, all elements in one bucket.
        check_index(1, &[0]);
        check_index(1, &[]);
        check_index(7, &[3]);
        check_index(1000, &[999]);
        check_index(65, &(0..65).collect::<Vec<_>>());
        check_index(70_001, &(0..64).map(|x| x + 4096).collect::<Vec<_>>());
        check_index(
            1 << 23,
            &(0..16).map(|x| x + 77 * 65_536).collect::<Vec<_>>(),
        );
        let mut rng = Rng(3);
        // Uniform sets at every low_bits from 0 to 20 and a few densities
        // in between, spans of odd sizes.
        for (span, n) in [
            (3000, 2999),
            (3001, 1500),
            (10_007, 2000),
            (65_537, 1000),
            (100_003, 1000),
            (1_000_003, 10_000),
            (1_048_577, 1),
            (5_000_011, 100),
            (3_000_017, 30),
            (70_000_000, 50),
        ] {
            let v = rng.set(span, n);
            check_index(span, &v);
        }
    }

    #[test]
    fn clumps_take_the_slow_paths() {
        // A group of 64 buckets holding 255 ones or more: its block's group
        // starts are exceptions. Buckets of more than four offsets and
        // groups of more than 64 ones are looked up by the loops.
        let clumped: Vec<u64> = (0..2000).chain(1_000_000..1_000_300).collect();
        let ef = check_index(2_000_000, &clumped);
        // Both clumps (2,000 and 300 ones in a group).
        assert_eq!(ef.exceptions.len(), 32);
        let mut rng = Rng(5);
        let mut v = rng.set(10_000_000, 50_000);
        v.retain(|x| !(4_000_000..4_100_000).contains(x));
        v.extend(4_000_000..4_020_000);
        v.extend((4_050_000..4_060_000).step_by(3));
        v.sort_unstable();
        let ef = check_index(10_000_000, &v);
        assert!(!ef.exceptions.is_empty());
        // Every other index: buckets hold 2^(l-1) offsets each.
        let half: Vec<u64> = (0..40_000).map(|x| x * 2).collect();
        let ef = check_index(80_000, &half);
        assert!(ef.exceptions.is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Random sets, uniform or clumped, of any density: `select0`
        /// agrees with a bit-by-bit select, `contains` and `rank` with the
        /// sorted list, `heap_bytes` with the layout.
        #[test]
        fn index_agrees_with_naive(
            span in 1u64..300_000,
            points in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..1500),
            runs in proptest::collection::vec((proptest::prelude::any::<u64>(), 0u64..700), 0..4),
        ) {
            let mut v: Vec<u64> = points.iter().map(|&p| p % span).collect();
            for (start, len) in runs {
                let start = start % span;
                v.extend(start..(start + len).min(span));
            }
            v.sort_unstable();
            v.dedup();
            check_index(span, &v);
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
