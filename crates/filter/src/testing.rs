//! What the crate's unit tests share: a reproducible source of random
//! inputs.

/// splitmix64, for reproducible random inputs.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A word with about `density / 64` of its bits set.
    pub(crate) fn word(&mut self, density: u64) -> u64 {
        (0..64).fold(0, |w, b| w | u64::from(self.next() % 64 < density) << b)
    }

    /// `n` distinct sorted values below `span`.
    pub(crate) fn set(&mut self, span: u64, n: usize) -> Vec<u64> {
        let mut v = std::collections::BTreeSet::new();
        while v.len() < n {
            v.insert(self.next() % span);
        }
        v.into_iter().collect()
    }
}
