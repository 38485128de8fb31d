//! Rice-coded gap lists: the encoding of strictly increasing status indices
//! that [`RevokedSet`] and [`RevokedDelta`] share, and the cap on how many
//! indices either may hold.
//!
//! [`RevokedSet`]: crate::RevokedSet
//! [`RevokedDelta`]: crate::RevokedDelta

use crate::codec::{Reader, choose_rice_k, rice_decode};
use crate::error::FilterError;

/// Hard cap on the number of revoked indices in one set (and in one delta).
pub const MAX_INDICES: u64 = 16 * 1024 * 1024;

/// Gaps of a strictly increasing sequence starting at or after `start`:
/// first `v[0] - start`, then `v[i] - v[i-1] - 1`.
pub(crate) fn gaps_from(start: u64, v: &[u64]) -> Vec<u64> {
    let mut prev: Option<u64> = None;
    v.iter()
        .map(|&x| {
            let g = match prev {
                None => x - start,
                Some(p) => x - p - 1,
            };
            prev = Some(x);
            g
        })
        .collect()
}

/// Reject a Rice parameter the encoder would not have chosen, so every value
/// has exactly one encoding (replicas and verifiers can compare bytes).
pub(crate) fn check_canonical_k(k: u8, gaps: &[u64]) -> Result<(), FilterError> {
    if k != choose_rice_k(gaps) {
        return Err(FilterError::Corrupt(format!(
            "non-canonical rice parameter {k}"
        )));
    }
    Ok(())
}

/// Decode `count` Rice-coded gaps (see [`gaps_from`]) into absolute indices,
/// checking each with `check`. `count` must already be capped; it is further
/// checked against the input left (every code takes at least `k + 1` bits).
pub(crate) fn decode_indices(
    r: &mut Reader<'_>,
    count: u64,
    k: u8,
    start: u64,
    mut check: impl FnMut(u64) -> Result<(), FilterError>,
) -> Result<Vec<u64>, FilterError> {
    let count_usize = check_count_fits(r, count, k)?;
    let mut out: Vec<u64> = Vec::with_capacity(count_usize);
    decode_gaps(r, count_usize, k, start, |index, _| {
        check(index)?;
        out.push(index);
        Ok(())
    })?;
    Ok(out)
}

/// Refuse a count of Rice codes that the input left cannot hold (every
/// code takes at least `k + 1` bits), so whatever the caller allocates for
/// `count` items is bounded by the input size.
pub(crate) fn check_count_fits(r: &Reader<'_>, count: u64, k: u8) -> Result<usize, FilterError> {
    if count.saturating_mul(u64::from(k) + 1) > (r.remaining() as u64).saturating_mul(8) {
        return Err(FilterError::Truncated);
    }
    usize::try_from(count).map_err(|_| FilterError::Truncated)
}

/// Decode `count` Rice-coded gaps (see [`gaps_from`]), handing `sink` each
/// absolute index and the gap it was coded as; indices that would overflow
/// `u64` are refused. Holds nothing itself.
pub(crate) fn decode_gaps(
    r: &mut Reader<'_>,
    count: usize,
    k: u8,
    start: u64,
    mut sink: impl FnMut(u64, u64) -> Result<(), FilterError>,
) -> Result<(), FilterError> {
    let mut prev: Option<u64> = None;
    rice_decode(r, count, k, |g| {
        let index = match prev {
            None => start.checked_add(g),
            Some(p) => p.checked_add(g).and_then(|x| x.checked_add(1)),
        }
        .ok_or_else(|| FilterError::Corrupt("index overflows u64".into()))?;
        sink(index, g)?;
        prev = Some(index);
        Ok(())
    })
}
