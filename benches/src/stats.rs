//! Statistics of the benchmarks: one latency histogram type for every
//! percentile they report, and the rate of a loop on one thread.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Significant decimal figures every latency histogram keeps.
const SIGNIFICANT_FIGURES: u8 = 3;

/// The largest latency a histogram tells apart, in microseconds (one hour);
/// anything longer is recorded as one hour.
const HIGHEST_US: u64 = 3_600_000_000;

/// Latencies in an HdrHistogram: recorded in whole microseconds, from 1 µs
/// to one hour, to 3 significant figures. Below 2,048 µs every microsecond
/// is its own bucket; above, a value is kept within 0.1 % (a bucket's width
/// is at most a thousandth of its values), and a percentile reads back as
/// the highest value of its bucket. Delays under a microsecond count as 0.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_FIGURES)
                .expect("1 µs to one hour at 3 significant figures is a valid histogram"),
        )
    }

    /// Record one latency.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us);
    }

    /// Add every latency recorded in `other`.
    pub fn add(&mut self, other: &Latencies) {
        self.0
            .add(&other.0)
            .expect("histograms of the same bounds add up");
    }

    /// How many latencies were recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether none was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The latency at quantile `q` (0.5 for the median) in milliseconds;
    /// 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest latency in milliseconds; 0 when empty.
    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }

    /// Median, 99th percentile and maximum, in milliseconds.
    pub fn summary_ms(&self) -> (f64, f64, f64) {
        (self.quantile_ms(0.5), self.quantile_ms(0.99), self.max_ms())
    }
}

/// How many times `f` runs in `duration` on this thread, per second; `f`
/// is given the number of the run.
pub fn rate(duration: Duration, mut f: impl FnMut(usize)) -> f64 {
    let started = Instant::now();
    let mut runs = 0usize;
    while started.elapsed() < duration {
        for _ in 0..64 {
            f(runs);
            runs += 1;
        }
    }
    runs as f64 / started.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_latencies() {
        let mut latencies = Latencies::new();
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        assert_eq!(latencies.len(), 100);
        let (p50, p99, max) = latencies.summary_ms();
        // Within the histogram's 0.1 %.
        assert!((p50 - 50.0).abs() <= 0.05, "{p50}");
        assert!((p99 - 99.0).abs() <= 0.1, "{p99}");
        assert!((max - 100.0).abs() <= 0.1, "{max}");
    }

    #[test]
    fn small_latencies_are_exact_and_empty_is_zero() {
        let mut latencies = Latencies::new();
        assert!(latencies.is_empty());
        assert_eq!(latencies.summary_ms(), (0.0, 0.0, 0.0));
        latencies.record(Duration::from_micros(780));
        latencies.record(Duration::ZERO);
        let mut more = Latencies::new();
        more.record(Duration::from_micros(1320));
        latencies.add(&more);
        assert_eq!(latencies.len(), 3);
        assert_eq!(latencies.quantile_ms(0.5), 0.78);
        assert_eq!(latencies.max_ms(), 1.32);
    }
}
