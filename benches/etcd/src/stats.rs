//! Percentiles over measured delays, from an HdrHistogram, and millisecond
//! helpers.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Significant decimal figures the histogram keeps.
const SIGNIFICANT_FIGURES: u8 = 3;

/// The largest delay told apart, in microseconds (one hour); anything
/// longer is recorded as one hour.
const HIGHEST_US: u64 = 3_600_000_000;

/// Count, median, 99th percentile and maximum of a set of delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    /// Summarizes `delays`; an empty set gives zeros.
    ///
    /// The delays go into an HdrHistogram in whole microseconds, from 1 µs
    /// to one hour, to 3 significant figures (the same configuration as
    /// the Lapse side of the benchmark): below 2,048 µs every microsecond
    /// is its own bucket, above, a value is kept within 0.1 %. Percentiles
    /// are nearest-rank (the smallest recorded value with at least that
    /// share of the samples at or below it), read back as the highest
    /// value of its bucket.
    pub fn of(delays: impl IntoIterator<Item = Duration>) -> Self {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_FIGURES)
            .expect("1 µs to one hour at 3 significant figures is a valid histogram");
        for delay in delays {
            histogram.saturating_record(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX));
        }
        let us = Duration::from_micros;
        Self {
            count: histogram.len() as usize,
            p50: us(histogram.value_at_quantile(0.5)),
            p99: us(histogram.value_at_quantile(0.99)),
            max: us(histogram.max()),
        }
    }
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_millis(x)).collect()
    }

    /// Within the histogram's 0.1 % of `expected` milliseconds.
    fn near(got: Duration, expected: u64) -> bool {
        (ms(got) - expected as f64).abs() <= expected as f64 * 0.001
    }

    #[test]
    fn nearest_rank() {
        let s = Summary::of(d(&(1..=100).collect::<Vec<_>>()));
        assert!(near(s.p50, 50), "{:?}", s.p50);
        assert!(near(s.p99, 99), "{:?}", s.p99);
        let one = Summary::of(d(&[7]));
        assert!(near(one.p99, 7) && near(one.max, 7), "{one:?}");
        let none = Summary::of(Vec::new());
        assert_eq!(
            (none.count, none.p50, none.max),
            (0, Duration::ZERO, Duration::ZERO)
        );
    }

    #[test]
    fn summary_of_unsorted_delays() {
        let s = Summary::of(d(&[5, 1, 3, 2, 4]));
        assert_eq!(s.count, 5);
        assert!(near(s.p50, 3), "{:?}", s.p50);
        assert!(near(s.p99, 5), "{:?}", s.p99);
        assert!(near(s.max, 5), "{:?}", s.max);
    }

    #[test]
    fn small_delays_are_exact_to_the_microsecond() {
        let s = Summary::of([780, 0, 1320].map(Duration::from_micros));
        assert_eq!(s.p50, Duration::from_micros(780));
        assert_eq!(s.max, Duration::from_micros(1320));
    }
}
