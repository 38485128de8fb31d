//! Broadword (SIMD-within-a-register) bit selection for the succinct
//! structures: the position of the `r`-th one or zero of a word or a
//! 128-bit window, and byte sums, with no data-dependent branch (a 2 KiB
//! static table picks the bit within a byte).

/// `SELECT_IN_BYTE[b * 8 + r]`: position of the `r`-th set bit of byte `b`
/// (0 where `b` has `r` or fewer ones). A static table (2 KiB, shared by
/// every sequence), not held per sequence.
static SELECT_IN_BYTE: [u8; 2048] = select_in_byte_table();

const fn select_in_byte_table() -> [u8; 2048] {
    let mut t = [0u8; 2048];
    let mut b = 0;
    while b < 256 {
        let mut r = 0;
        let mut bit = 0;
        while bit < 8 {
            if (b >> bit) & 1 == 1 {
                t[b * 8 + r] = bit as u8;
                r += 1;
            }
            bit += 1;
        }
        b += 1;
    }
    t
}

/// `BYTES_BELOW[j]`: the low `j` bytes of a `u128` set (a table rather
/// than a variable shift, which a `u128` makes a few instructions long).
pub(crate) static BYTES_BELOW: [u128; 16] = {
    let mut t = [0u128; 16];
    let mut j = 1;
    while j < 16 {
        t[j] = (t[j - 1] << 8) | 0xff;
        j += 1;
    }
    t
};

const L8: u64 = 0x0101_0101_0101_0101;
const H8: u64 = 0x8080_8080_8080_8080;

/// Byte `i` of the result holds the number of ones in bytes `0..=i` of `x`
/// (so its top byte is `x.count_ones()`).
#[inline]
fn byte_prefix_counts(x: u64) -> u64 {
    let mut s = x - ((x >> 1) & 0x5555_5555_5555_5555);
    s = (s & 0x3333_3333_3333_3333) + ((s >> 2) & 0x3333_3333_3333_3333);
    s = (s + (s >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    s.wrapping_mul(L8)
}

/// Position (0-based) of the `r`-th set bit of `x` (0-based `r`), given
/// `prefix = byte_prefix_counts(x)`; requires `r < x.count_ones()`. No
/// data-dependent branch: the byte-wise prefix counts locate the byte, a
/// table the bit in it.
#[inline]
fn select_with_prefix(x: u64, prefix: u64, r: u64) -> u64 {
    // High bit of byte i set where prefix[i] <= r: those bytes come before.
    let before = ((r * L8) | H8).wrapping_sub(prefix) & H8;
    let byte = ((before >> 7).wrapping_mul(L8) >> 56) * 8;
    let below = ((prefix << 8) >> byte) & 0xff;
    let b = (x >> byte) & 0xff;
    let k = ((b << 3) | (r.wrapping_sub(below) & 7)) as usize;
    byte + u64::from(SELECT_IN_BYTE[k])
}

/// Position (0-based) of the `r`-th set bit of `x` (0-based `r`), or `None`
/// if `x` has `r` or fewer ones.
#[inline]
pub(crate) fn select_in_word(x: u64, r: u64) -> Option<u64> {
    let prefix = byte_prefix_counts(x);
    (r < prefix >> 56).then(|| select_with_prefix(x, prefix, r))
}

/// Position of the `r`-th zero (0-based) of the 128-bit window `w`, or
/// `None` if it holds `r` or fewer zeros. Both halves are counted at once,
/// then one is picked without a branch.
#[inline]
pub(crate) fn select0_128(w: u128, r: u64) -> Option<u64> {
    let z0 = !(w as u64);
    let z1 = !((w >> 64) as u64);
    let p0 = byte_prefix_counts(z0);
    let p1 = byte_prefix_counts(z1);
    let c0 = p0 >> 56;
    // All ones when the zero is in the upper half: a mask rather than a
    // branch, which would be mispredicted about a third of the time.
    let upper = u64::from(r >= c0).wrapping_neg();
    let z = z0 ^ ((z0 ^ z1) & upper);
    let p = p0 ^ ((p0 ^ p1) & upper);
    let r = r - (c0 & upper);
    (r < p >> 56).then(|| (upper & 64) + select_with_prefix(z, p, r))
}

/// The sum of the sixteen bytes of `x`.
#[inline]
pub(crate) fn byte_sum(x: u128) -> u64 {
    const M: u128 = 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    // Eight 16-bit lanes of pair sums, folded to four lanes (each <= 1020).
    let pairs = (x & M) + ((x >> 8) & M);
    let lanes = (pairs as u64) + ((pairs >> 64) as u64);
    lanes.wrapping_mul(0x0001_0001_0001_0001) >> 48
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    #[test]
    fn select_in_word_matches_naive() {
        let mut rng = Rng(7);
        let mut words = vec![
            0u64,
            1,
            0x8000_0000_0000_0000,
            u64::MAX,
            0xf0f0_0f0f_1234_8001,
        ];
        for density in [1, 8, 25, 32, 40, 56, 63] {
            words.extend((0..50).map(|_| rng.word(density)));
        }
        for x in words {
            let ones: Vec<u64> = (0..64).filter(|b| x >> b & 1 == 1).collect();
            for r in 0..=64u64 {
                assert_eq!(
                    select_in_word(x, r),
                    ones.get(r as usize).copied(),
                    "{x:#x} r={r}"
                );
            }
        }
    }

    #[test]
    fn select0_128_and_byte_sum_match_naive() {
        let mut rng = Rng(11);
        for density in [0, 10, 25, 40, 60, 64] {
            for _ in 0..50 {
                let w = u128::from(rng.word(density)) | u128::from(rng.word(density)) << 64;
                let zeros: Vec<u64> = (0..128).filter(|b| w >> b & 1 == 0).collect();
                for r in 0..=128u64 {
                    assert_eq!(
                        select0_128(w, r),
                        zeros.get(r as usize).copied(),
                        "{w:#x} r={r}"
                    );
                }
                let bytes = w.to_le_bytes();
                for j in 0..16 {
                    let sum: u64 = bytes[..j].iter().map(|&b| u64::from(b)).sum();
                    assert_eq!(byte_sum(w & BYTES_BELOW[j]), sum, "{w:#x} j={j}");
                }
            }
        }
    }
}
