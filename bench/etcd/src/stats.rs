//! Percentiles over measured delays (nearest-rank), and millisecond helpers.

use std::time::Duration;

/// Count, median, 99th percentile and maximum of a set of delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    /// Summarizes `v`; an empty set gives zeros.
    pub fn of(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        Self {
            count: v.len(),
            p50: percentile(&v, 50.0),
            p99: percentile(&v, 99.0),
            max: v.last().copied().unwrap_or_default(),
        }
    }
}

/// Nearest-rank percentile of sorted `v`: the smallest value with at least
/// `q` percent of the samples at or below it.
pub fn percentile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
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

    #[test]
    fn nearest_rank() {
        let v = d(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&d(&[7]), 99.0), Duration::from_millis(7));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn summary_sorts() {
        let s = Summary::of(d(&[5, 1, 3, 2, 4]));
        assert_eq!(s.count, 5);
        assert_eq!(s.p50, Duration::from_millis(3));
        assert_eq!(s.p99, Duration::from_millis(5));
        assert_eq!(s.max, Duration::from_millis(5));
    }
}
