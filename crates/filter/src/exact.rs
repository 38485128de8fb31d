//! `RevokedSet`: the exact set of revoked status indices inside a live window,
//! with a Golomb-Rice gap-coded compact encoding, plus the information-theoretic
//! size bound it is measured against.

use std::fmt;
use std::iter::Peekable;

use crate::codec::{Reader, RiceStats, choose_rice_k_streamed, put_varint, rice_encode};
use crate::delta::RevokedDelta;
use crate::error::FilterError;
use crate::gaps::{MAX_INDICES, check_count_fits, decode_gaps};
use crate::succinct::{self, EfBuilder, EliasFano};

/// Pending additions are merged into the packed form once there are more
/// than `max(PENDING_MIN, len / PENDING_SHARE)` of them.
const PENDING_MIN: usize = 32;
/// See [`PENDING_MIN`].
const PENDING_SHARE: usize = 1024;
/// Indices that fell below the window but are still in the packed form are
/// dropped (by a rebuild) once there are more than `len / DEAD_SHARE`.
const DEAD_SHARE: usize = 256;
/// The packed form is rebuilt at the window's base once the base has moved
/// more than `universe / DRIFT_SHARE` past the base it was built at.
const DRIFT_SHARE: u64 = 64;

/// The exact set of revoked status indices within `[base, base + universe)`.
///
/// The wire form produced by [`RevokedSet::encode`] is Rice-coded gaps:
/// `varint base, varint universe, varint count, u8 k, rice(gaps)` where the
/// first gap is `index - base` and later gaps are `index - previous - 1`.
///
/// In memory the set is succinct: an Elias-Fano sequence of offsets from
/// `origin` (the base it was last built at) over a span of `universe`, with
/// `l = floor(log2(universe / n))` low bits per index packed, the high parts
/// in unary in an `n + (universe >> l) + 1` bit vector, and a select0
/// index of 20 bytes per 1024 high buckets (where each block of 1024
/// starts, and a one-byte count of the indices in each group of 64
/// buckets); about `n (2 + l)` bits. For a uniform set of 100,000 in
/// 10,000,000 that is 6% above `log2 C(universe, n)`
/// ([`information_bound_bits`]), and 3% more for the index (1.090x in
/// all). Beside it:
///
/// - a sorted buffer of pending additions, at most
///   `max(32, len / 1024)` indices (8 bytes each) after any
///   [`apply`](RevokedSet::apply); more, and the buffer is merged into a
///   rebuilt packed form, so a merge (`O(len)`) happens at most once per
///   `len / 1024` single additions (amortised `O(1024)` per addition);
/// - window moves are lazy: the indices that fell below the base stay in the
///   packed form, skipped by `contains` (which checks the window first) and
///   `iter`, until more than `len / 256` of them are held or the base has
///   moved more than `universe / 64` past `origin`; then the packed form is
///   rebuilt at the current base.
///
/// So the heap held ([`RevokedSet::heap_bytes`]) is the packed form's size
/// for the live indices plus at most `len / 1024` 8-byte pending indices,
/// `len / 256` dead indices and `universe / 64 >> l` dead bucket bits:
/// under 1.1x the information bound at `universe = 10^7, len = 10^5`
/// (1.090x fresh, 1.098x at worst under a stream of deltas in
/// `tests/revoked_model.rs`). The packed size depends only on `universe`
/// and `len`, not on how the indices are spread, except that a block of
/// 1024 buckets with a group of 64 buckets holding 255 indices or more
/// (only a tightly clumped set has one) takes 64 bytes more.
/// Lookups read one index block, two or three words of the high bits and
/// two low-bit words, with no data-dependent branch for a bucket of up to
/// four indices, plus a binary search of the (usually empty) buffer.
#[derive(Clone)]
pub struct RevokedSet {
    base: u64,
    universe: u64,
    /// The base the packed form was built at: it holds `index - origin`.
    /// `origin <= base`.
    origin: u64,
    /// How many of the packed indices lie below `base` (dropped lazily).
    dead: usize,
    packed: EliasFano,
    /// Added since the last build: sorted, inside the window, none packed.
    pending: Vec<u64>,
}

fn check_window(base: u64, universe: u64) -> Result<(), FilterError> {
    base.checked_add(universe)
        .map(|_| ())
        .ok_or(FilterError::InvalidParameter(
            "base + universe overflows u64",
        ))
}

/// Two increasing sequences merged into one (they must be disjoint).
struct Merge<A: Iterator<Item = u64>, B: Iterator<Item = u64>> {
    a: Peekable<A>,
    b: Peekable<B>,
}

fn merge<A: Iterator<Item = u64>, B: Iterator<Item = u64>>(a: A, b: B) -> Merge<A, B> {
    Merge {
        a: a.peekable(),
        b: b.peekable(),
    }
}

impl<A: Iterator<Item = u64>, B: Iterator<Item = u64>> Iterator for Merge<A, B> {
    type Item = u64;

    #[inline]
    fn next(&mut self) -> Option<u64> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if x < y => self.a.next(),
            (Some(_), Some(_)) | (None, _) => self.b.next(),
            (Some(_), None) => self.a.next(),
        }
    }
}

impl RevokedSet {
    /// An empty set over `[base, base + universe)`.
    pub fn empty(base: u64, universe: u64) -> Result<Self, FilterError> {
        Self::from_sorted(base, universe, [])
    }

    /// Build from strictly increasing indices, all inside the window.
    pub fn from_sorted(
        base: u64,
        universe: u64,
        indices: impl IntoIterator<Item = u64>,
    ) -> Result<Self, FilterError> {
        check_window(base, universe)?;
        let mut v: Vec<u64> = Vec::new();
        for index in indices {
            if index < base || index - base >= universe {
                return Err(FilterError::OutOfWindow {
                    index,
                    base,
                    universe,
                });
            }
            if v.last().is_some_and(|&p| p >= index) {
                return Err(FilterError::NotSorted);
            }
            if v.len() as u64 >= MAX_INDICES {
                return Err(FilterError::TooLarge {
                    what: "revoked set",
                    len: v.len() as u64 + 1,
                    max: MAX_INDICES,
                });
            }
            v.push(index);
        }
        let packed = succinct::build(universe, v.len(), v.iter().map(|&i| i - base))?;
        Ok(Self::packed(base, universe, packed))
    }

    fn packed(base: u64, universe: u64, packed: EliasFano) -> Self {
        Self {
            base,
            universe,
            origin: base,
            dead: 0,
            packed,
            pending: Vec::new(),
        }
    }

    /// First index of the live window.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Length of the live window.
    pub fn universe(&self) -> u64 {
        self.universe
    }

    /// Whether `index` is revoked.
    #[inline]
    pub fn contains(&self, index: u64) -> bool {
        if index < self.base || index - self.base >= self.universe {
            return false;
        }
        // Packed indices at or above the base are live.
        self.packed.contains(index - self.origin)
            || (!self.pending.is_empty() && self.pending.binary_search(&index).is_ok())
    }

    /// Number of revoked indices.
    pub fn len(&self) -> usize {
        self.packed.len() - self.dead + self.pending.len()
    }

    /// Whether no index is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revoked indices in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let origin = self.origin;
        merge(
            self.packed
                .iter_from(self.base - origin)
                .map(move |o| o + origin),
            self.pending.iter().copied(),
        )
    }

    /// Bytes of heap memory the set holds: the packed form (low bits, high
    /// bits, select index and its exceptions, each allocated at its exact
    /// size) and the capacity of the pending-additions buffer. The struct
    /// itself (208 bytes on a 64-bit target) is not counted.
    pub fn heap_bytes(&self) -> usize {
        self.packed.heap_bytes() + self.pending.capacity() * std::mem::size_of::<u64>()
    }

    /// Gaps of the wire form: `index - base` first, then
    /// `index - previous - 1`.
    fn gaps(&self) -> impl Iterator<Item = u64> + '_ {
        let mut prev = None;
        let base = self.base;
        self.iter().map(move |x| {
            let g = match prev {
                None => x - base,
                Some(p) => x - p - 1,
            };
            prev = Some(x);
            g
        })
    }

    /// The compact Rice-coded encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.base);
        put_varint(out, self.universe);
        put_varint(out, self.len() as u64);
        let k = choose_rice_k_streamed(|| self.gaps());
        out.push(k);
        rice_encode(out, self.gaps(), k);
    }

    /// Decode a complete encoding produced by [`RevokedSet::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, FilterError> {
        let mut r = Reader::new(bytes);
        let s = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(s)
    }

    /// Decodes straight into the packed form: no intermediate list of
    /// indices or gaps. What it allocates (about `count * (l + 2)` bits) is
    /// bounded by the input, since every index takes at least `k + 1` bits
    /// of it.
    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, FilterError> {
        let base = r.varint()?;
        let universe = r.varint()?;
        check_window(base, universe)
            .map_err(|_| FilterError::Corrupt("window overflows".into()))?;
        let count = r.varint()?;
        if count > MAX_INDICES {
            return Err(FilterError::TooLarge {
                what: "revoked set",
                len: count,
                max: MAX_INDICES,
            });
        }
        if count > universe {
            return Err(FilterError::Corrupt(
                "more indices than the window holds".into(),
            ));
        }
        let k = r.u8()?;
        let n = check_count_fits(r, count, k)?;
        let mut builder = EfBuilder::new(universe, n)?;
        let mut stats = RiceStats::new(k);
        decode_gaps(r, n, k, base, |index, gap| {
            if index - base >= universe {
                return Err(FilterError::OutOfWindow {
                    index,
                    base,
                    universe,
                });
            }
            stats.add(gap);
            builder.push(index - base)
        })?;
        if !stats.is_canonical() {
            return Err(FilterError::Corrupt(format!(
                "non-canonical rice parameter {k}"
            )));
        }
        Ok(Self::packed(base, universe, builder.finish()?))
    }

    /// Apply a delta: first slide the window forward to `removed_below` (if
    /// set), dropping every index below it, then add `added`. The universe
    /// (window length) is unchanged. Atomic: on error `self` is untouched.
    ///
    /// Cost: `O(a log len)` to check the `a` additions, plus merging them into
    /// the pending buffer (`O(a + max(32, len / 1024))`); when the buffer
    /// outgrows `max(32, len / 1024)`, or the window has moved far enough
    /// (see [`RevokedSet`]), one `O(len + a)` rebuild of the packed form.
    pub fn apply(&mut self, delta: &RevokedDelta) -> Result<(), FilterError> {
        let new_base = match delta.removed_below() {
            Some(nb) if nb < self.base => {
                return Err(FilterError::WindowBackwards {
                    current: self.base,
                    requested: nb,
                });
            }
            Some(nb) => nb,
            None => self.base,
        };
        check_window(new_base, self.universe)?;
        let dead = self.packed.rank(new_base - self.origin);
        let kept = &self.pending[self.pending.partition_point(|&i| i < new_base)..];
        for &index in delta.added() {
            if index < new_base || index - new_base >= self.universe {
                return Err(FilterError::OutOfWindow {
                    index,
                    base: new_base,
                    universe: self.universe,
                });
            }
            if self.packed.contains(index - self.origin) || kept.binary_search(&index).is_ok() {
                return Err(FilterError::AlreadyPresent(index));
            }
        }
        let total = (self.packed.len() - dead + kept.len() + delta.added().len()) as u64;
        if total > MAX_INDICES {
            return Err(FilterError::TooLarge {
                what: "revoked set",
                len: total,
                max: MAX_INDICES,
            });
        }
        let total = total as usize;
        let pending_len = kept.len() + delta.added().len();
        let rebuild = pending_len > PENDING_MIN.max(total / PENDING_SHARE)
            || dead.saturating_mul(DEAD_SHARE) > total
            || new_base - self.origin > self.universe / DRIFT_SHARE;
        if rebuild {
            let origin = self.origin;
            let live = self
                .packed
                .iter_from(new_base - origin)
                .map(move |o| o + origin);
            let all = merge(
                live,
                merge(kept.iter().copied(), delta.added().iter().copied()),
            );
            let packed = succinct::build(self.universe, total, all.map(|i| i - new_base))?;
            *self = Self::packed(new_base, self.universe, packed);
        } else {
            if kept.len() != self.pending.len() || !delta.added().is_empty() {
                let mut pending = Vec::with_capacity(pending_len);
                pending.extend(merge(kept.iter().copied(), delta.added().iter().copied()));
                self.pending = pending;
            }
            self.base = new_base;
            self.dead = dead;
        }
        Ok(())
    }
}

impl PartialEq for RevokedSet {
    /// Equal when the windows and the indices are: how each is held (what
    /// is pending, what is dropped lazily) does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base
            && self.universe == other.universe
            && self.len() == other.len()
            && self.iter().eq(other.iter())
    }
}

impl Eq for RevokedSet {}

impl fmt::Debug for RevokedSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Indices<'a>(&'a RevokedSet);
        impl fmt::Debug for Indices<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list().entries(self.0.iter()).finish()
            }
        }
        f.debug_struct("RevokedSet")
            .field("base", &self.base)
            .field("universe", &self.universe)
            .field("indices", &Indices(self))
            .finish()
    }
}

/// `ln(n!)`: exact summation for small `n`, Stirling series otherwise.
fn ln_factorial(n: u64) -> f64 {
    if n < 256 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x * x)
}

/// `log2 C(universe, count)`: the minimum number of bits any encoding needs
/// to tell apart every `count`-subset of a `universe`-sized window. Returns
/// `0.0` for `count == 0` and for `count >= universe` (only one subset).
///
/// Exact summation when `min(count, universe - count) <= 65536`; otherwise a
/// Stirling form arranged to avoid cancellation (relative error far below
/// 0.1%).
pub fn information_bound_bits(universe: u64, count: u64) -> f64 {
    if count >= universe {
        return 0.0;
    }
    let r = count.min(universe - count);
    if r == 0 {
        return 0.0;
    }
    let ln = if r <= 65536 {
        (0..r)
            .map(|i| ((universe - i) as f64 / (r - i) as f64).ln())
            .sum::<f64>()
    } else {
        // ln U! - ln (U-r)! = (V + 0.5) * ln(U/V) + r * (ln U - 1) + tiny,
        // with V = U - r and ln(U/V) = -ln(1 - r/U) computed stably.
        let u = universe as f64;
        let v = (universe - r) as f64;
        let rf = r as f64;
        let ln_u_over_v = -(-rf / u).ln_1p();
        let falling =
            (v + 0.5) * ln_u_over_v + rf * (u.ln() - 1.0) + 1.0 / (12.0 * u) - 1.0 / (12.0 * v);
        falling - ln_factorial(r)
    };
    ln / std::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_small_exact() {
        assert!((information_bound_bits(10, 3) - 120f64.log2()).abs() < 1e-9);
        assert_eq!(information_bound_bits(10, 0), 0.0);
        assert_eq!(information_bound_bits(10, 10), 0.0);
        assert!((information_bound_bits(64, 1) - 6.0).abs() < 1e-9);
    }

    #[test]
    fn bound_stirling_matches_summation() {
        for (u, r) in [
            (1_000_000u64, 70_000u64),
            (10_000_000, 200_000),
            (1 << 40, 100_000),
        ] {
            let exact: f64 = (0..r)
                .map(|i| ((u - i) as f64 / (r - i) as f64).ln())
                .sum::<f64>()
                / std::f64::consts::LN_2;
            let approx = information_bound_bits(u, r);
            assert!(
                ((approx - exact) / exact).abs() < 1e-4,
                "u={u} r={r} exact={exact} approx={approx}"
            );
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            RevokedSet::from_sorted(10, 5, [10, 15]),
            Err(FilterError::OutOfWindow {
                index: 15,
                base: 10,
                universe: 5
            })
        );
        assert!(matches!(
            RevokedSet::from_sorted(10, 5, [9]),
            Err(FilterError::OutOfWindow { .. })
        ));
        assert_eq!(
            RevokedSet::from_sorted(0, 5, [2, 1]),
            Err(FilterError::NotSorted)
        );
        assert_eq!(
            RevokedSet::from_sorted(0, 5, [2, 2]),
            Err(FilterError::NotSorted)
        );
        assert!(RevokedSet::from_sorted(u64::MAX, 2, []).is_err());
    }

    #[test]
    fn edges_round_trip() {
        let s = RevokedSet::from_sorted(u64::MAX - 3, 3, [u64::MAX - 3, u64::MAX - 1]).unwrap();
        assert_eq!(RevokedSet::decode(&s.encode()).unwrap(), s);
        let e = RevokedSet::empty(0, 0).unwrap();
        assert_eq!(RevokedSet::decode(&e.encode()).unwrap(), e);
        let full = RevokedSet::from_sorted(5, 4, 5..9).unwrap();
        assert_eq!(RevokedSet::decode(&full.encode()).unwrap(), full);
        let mut bytes = full.encode();
        bytes.push(0);
        assert_eq!(
            RevokedSet::decode(&bytes),
            Err(FilterError::TrailingBytes(1))
        );
    }

    #[test]
    fn apply_delta() {
        let mut s = RevokedSet::from_sorted(0, 50, [3, 10, 11, 20]).unwrap();
        let d = RevokedDelta::new(1, 2, vec![12, 55], Some(11)).unwrap();
        s.apply(&d).unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![11, 12, 20, 55]);
        assert_eq!(s.base(), 11);

        let before = s.clone();
        let back = RevokedDelta::new(2, 3, vec![], Some(5)).unwrap();
        assert!(matches!(
            s.apply(&back),
            Err(FilterError::WindowBackwards { .. })
        ));
        let dup = RevokedDelta::new(2, 3, vec![13, 20], None).unwrap();
        assert_eq!(s.apply(&dup), Err(FilterError::AlreadyPresent(20)));
        let out = RevokedDelta::new(2, 3, vec![61], None).unwrap();
        assert!(matches!(
            s.apply(&out),
            Err(FilterError::OutOfWindow { .. })
        ));
        assert_eq!(s, before, "failed applies must not mutate");
    }
}
