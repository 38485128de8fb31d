//! `RevokedSet`: the exact set of revoked status indices inside a live window,
//! with a Golomb-Rice gap-coded compact encoding, plus the information-theoretic
//! size bound it is measured against.

use crate::codec::{Reader, choose_rice_k, put_varint, rice_encode};
use crate::delta::RevokedDelta;
use crate::error::FilterError;
use crate::gaps::{MAX_INDICES, check_canonical_k, decode_indices, gaps_from};

/// The exact set of revoked status indices within `[base, base + universe)`.
///
/// Held in memory as a sorted `Vec<u64>` (lookups are binary searches); the
/// wire form produced by [`RevokedSet::encode`] is Rice-coded gaps:
/// `varint base, varint universe, varint count, u8 k, rice(gaps)` where the
/// first gap is `index - base` and later gaps are `index - previous - 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSet {
    base: u64,
    universe: u64,
    indices: Vec<u64>,
}

fn check_window(base: u64, universe: u64) -> Result<(), FilterError> {
    base.checked_add(universe)
        .map(|_| ())
        .ok_or(FilterError::InvalidParameter(
            "base + universe overflows u64",
        ))
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
        Ok(Self {
            base,
            universe,
            indices: v,
        })
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
    pub fn contains(&self, index: u64) -> bool {
        self.indices.binary_search(&index).is_ok()
    }

    /// Number of revoked indices.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether no index is revoked.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The revoked indices in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.indices.iter().copied()
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
        put_varint(out, self.indices.len() as u64);
        let gaps = gaps_from(self.base, &self.indices);
        let k = choose_rice_k(&gaps);
        out.push(k);
        rice_encode(out, &gaps, k);
    }

    /// Decode a complete encoding produced by [`RevokedSet::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, FilterError> {
        let mut r = Reader::new(bytes);
        let s = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(s)
    }

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
        let indices = decode_indices(r, count, k, base, |index| {
            if index - base >= universe {
                Err(FilterError::OutOfWindow {
                    index,
                    base,
                    universe,
                })
            } else {
                Ok(())
            }
        })?;
        check_canonical_k(k, &gaps_from(base, &indices))?;
        Ok(Self {
            base,
            universe,
            indices,
        })
    }

    /// Apply a delta: first slide the window forward to `removed_below` (if
    /// set), dropping every index below it, then add `added`. The universe
    /// (window length) is unchanged. Atomic: on error `self` is untouched.
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
        let keep_from = self.indices.partition_point(|&i| i < new_base);
        let kept = &self.indices[keep_from..];
        for &index in delta.added() {
            if index < new_base || index - new_base >= self.universe {
                return Err(FilterError::OutOfWindow {
                    index,
                    base: new_base,
                    universe: self.universe,
                });
            }
            if kept.binary_search(&index).is_ok() {
                return Err(FilterError::AlreadyPresent(index));
            }
        }
        let total = (kept.len() + delta.added().len()) as u64;
        if total > MAX_INDICES {
            return Err(FilterError::TooLarge {
                what: "revoked set",
                len: total,
                max: MAX_INDICES,
            });
        }
        let mut merged = Vec::with_capacity(total as usize);
        let (mut a, mut b) = (kept.iter().peekable(), delta.added().iter().peekable());
        while let (Some(&&x), Some(&&y)) = (a.peek(), b.peek()) {
            if x < y {
                merged.push(x);
                a.next();
            } else {
                merged.push(y);
                b.next();
            }
        }
        merged.extend(a);
        merged.extend(b);
        self.base = new_base;
        self.indices = merged;
        Ok(())
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
