//! The propagation delay histogram: HdrHistogram, in microseconds, kept per
//! verifier and per region and merged across brokers.
//!
//! One significant digit (32 sub-buckets per power of two, so a recorded
//! delay is known to within 3 to 6 %) keeps a verifier's histogram near
//! 2 KiB while its delays stay under a second; the array grows only as far
//! as the largest delay recorded, and delays are clamped at
//! [`HIGHEST_US`]. The exact count, sum and maximum are kept beside it, so
//! `max` and the mean are not rounded.
//!
//! On the wire (the peer `LocalPropagation` report) a histogram is its
//! recorded buckets as (value, count) pairs: a sparse list a receiving
//! broker replays into its own histogram.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Significant decimal digits kept per value.
const SIGNIFICANT_DIGITS: u8 = 1;

/// The largest delay recorded; longer ones count as this (one day).
pub const HIGHEST_US: u64 = 86_400 * 1_000_000;

/// Buckets a histogram from the wire may carry: far more than a one-digit
/// histogram up to [`HIGHEST_US`] has (about 540).
const MAX_WIRE_BUCKETS: usize = 4_096;

/// A histogram of delays in microseconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: hdrhistogram::Histogram<u64>,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: hdrhistogram::Histogram::new(SIGNIFICANT_DIGITS)
                .expect("one significant digit is a valid precision"),
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

impl PartialEq for Histogram {
    fn eq(&self, other: &Self) -> bool {
        (self.count, self.sum_us, self.max_us) == (other.count, other.sum_us, other.max_us)
            && self.buckets().eq(other.buckets())
    }
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        self.record_n(us, 1);
    }

    fn record_n(&mut self, us: u64, n: u64) {
        let us = us.min(HIGHEST_US);
        add(&mut self.counts, us, n);
        self.count = self.count.saturating_add(n);
        self.sum_us = self.sum_us.saturating_add(us.saturating_mul(n));
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (value, count) in other.buckets() {
            add(&mut self.counts, value, count);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The value below which a share `q` (0..=1) of samples lie; never
    /// above the largest sample.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        self.counts
            .value_at_quantile(q.clamp(0.0, 1.0))
            .min(self.max_us)
    }

    /// How many samples are at most `us` (to the histogram's precision).
    pub fn count_at_most(&self, us: u64) -> u64 {
        self.counts.count_between(0, us.min(HIGHEST_US))
    }

    /// The recorded buckets: (a value in the bucket, its count).
    fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
    }
}

/// Count `n` samples of `us` (clamped to [`HIGHEST_US`]), growing the
/// array as far as that value. Growing cannot fail below `HIGHEST_US`,
/// and counts saturate, so nothing is lost but beyond-range precision.
fn add(counts: &mut hdrhistogram::Histogram<u64>, us: u64, n: u64) {
    let grown = counts.record_n(us.min(HIGHEST_US), n);
    debug_assert!(grown.is_ok(), "{grown:?}");
}

/// A histogram as it travels between brokers.
#[derive(Serialize, Deserialize)]
struct Wire {
    buckets: Vec<(u64, u64)>,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

impl Serialize for Histogram {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            buckets: self.buckets().collect(),
            count: self.count,
            sum_us: self.sum_us,
            max_us: self.max_us,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Histogram {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        if wire.buckets.len() > MAX_WIRE_BUCKETS {
            return Err(serde::de::Error::custom("too many histogram buckets"));
        }
        let mut histogram = Histogram::default();
        for (value, count) in wire.buckets {
            add(&mut histogram.counts, value, count);
        }
        histogram.count = wire.count;
        histogram.sum_us = wire.sum_us;
        histogram.max_us = wire.max_us.min(HIGHEST_US);
        Ok(histogram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_precision_and_never_above_the_maximum() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(ms * 1000);
        }
        let p50 = h.quantile_us(0.5) as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.07, "{p50}");
        assert_eq!(h.quantile_us(1.0), 100_000);
        assert_eq!(h.max_us(), 100_000);
        assert_eq!(h.count(), 100);
        assert_eq!(h.sum_us(), 5_050_000);
        assert_eq!(Histogram::default().quantile_us(0.99), 0);
        assert_eq!(h.count_at_most(10_000), 10);
        assert_eq!(h.count_at_most(HIGHEST_US), 100);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        let mut both = Histogram::default();
        for us in [3, 700, 7_000, 7_100, 2_000_000] {
            a.record(us);
            both.record(us);
        }
        for us in [5, 7_050, 90_000_000_000] {
            b.record(us);
            both.record(us);
        }
        a.merge(&b);
        assert_eq!(a, both);
        assert_eq!(a.max_us(), HIGHEST_US, "clamped");
    }

    #[test]
    fn a_histogram_survives_the_wire_and_a_hostile_one_is_refused() {
        let mut h = Histogram::default();
        for us in [1, 2, 1_000, 1_000, 65_000, 3_000_000] {
            h.record(us);
        }
        let bytes = postcard::to_stdvec(&h).unwrap();
        let back: Histogram = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.quantile_us(0.5), h.quantile_us(0.5));
        let hostile = Wire {
            buckets: vec![(1, 1); MAX_WIRE_BUCKETS + 1],
            count: 1,
            sum_us: 1,
            max_us: 1,
        };
        let bytes = postcard::to_stdvec(&hostile).unwrap();
        assert!(postcard::from_bytes::<Histogram>(&bytes).is_err());
    }
}
