//! The verifier's clocks: its own wall and monotonic clocks (injected, so
//! simulation can skew, drift and step them), and its estimate of the
//! cluster's time from heartbeats.
//!
//! Each heartbeat says what the cluster's time was when the broker sent it.
//! It arrives a little later, so `cluster time - local monotonic time` read
//! at arrival underestimates the true offset by the delivery delay. The
//! estimate is the largest such sample over a recent window: the sample
//! that travelled fastest. Cluster time is then the monotonic clock plus
//! that offset, so a step of the verifier's wall clock (an NTP correction)
//! changes nothing. Drift is the slope of the offset against the monotonic
//! clock, over a longer window, in parts per million.

use std::collections::VecDeque;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
    /// A clock that never steps: ms since an arbitrary origin.
    fn monotonic_ms(&self) -> f64 {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
            * 1000.0
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Samples kept for the offset (the fastest of these wins).
const OFFSET_WINDOW: usize = 16;
/// Samples kept for drift.
const DRIFT_WINDOW: usize = 512;
/// Drift needs at least this much local time between its ends.
const MIN_DRIFT_SPAN_MS: f64 = 5_000.0;

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Local monotonic time of arrival, ms.
    mono_ms: f64,
    /// Cluster time minus local monotonic time, ms.
    offset_ms: i64,
}

/// The estimate of cluster time from heartbeats.
#[derive(Debug, Default, Clone)]
pub struct OffsetEstimator {
    recent: VecDeque<Sample>,
    long: VecDeque<Sample>,
}

impl OffsetEstimator {
    /// A heartbeat with `cluster_ms` arrived when the monotonic clock read
    /// `mono_ms`.
    pub fn observe(&mut self, cluster_ms: u64, mono_ms: f64) {
        let sample = Sample {
            mono_ms,
            offset_ms: cluster_ms as i64 - mono_ms as i64,
        };
        self.recent.push_back(sample);
        if self.recent.len() > OFFSET_WINDOW {
            self.recent.pop_front();
        }
        self.long.push_back(sample);
        if self.long.len() > DRIFT_WINDOW {
            self.long.pop_front();
        }
    }

    /// Cluster time minus monotonic time, in ms; `None` before any
    /// heartbeat.
    pub fn offset_ms(&self) -> Option<i64> {
        self.recent.iter().map(|s| s.offset_ms).max()
    }

    /// The local clock's drift against the cluster's, in ppm (positive: the
    /// local clock runs slow). `None` until the window spans long enough.
    pub fn drift_ppm(&self) -> Option<f64> {
        let n = self.long.len() as f64;
        let (first, last) = (self.long.front()?, self.long.back()?);
        if last.mono_ms - first.mono_ms < MIN_DRIFT_SPAN_MS {
            return None;
        }
        // Least-squares slope of offset over monotonic time.
        let mean_x = self.long.iter().map(|s| s.mono_ms).sum::<f64>() / n;
        let mean_y = self.long.iter().map(|s| s.offset_ms as f64).sum::<f64>() / n;
        let (mut num, mut den) = (0.0, 0.0);
        for s in &self.long {
            let dx = s.mono_ms - mean_x;
            num += dx * (s.offset_ms as f64 - mean_y);
            den += dx * dx;
        }
        (den > 0.0).then(|| num / den * 1e6)
    }

    /// The cluster's time now, given the monotonic clock.
    pub fn cluster_now(&self, mono_ms: f64) -> Option<u64> {
        self.offset_ms()
            .map(|offset| (mono_ms as i64 + offset).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_takes_the_fastest_sample() {
        let mut e = OffsetEstimator::default();
        assert_eq!(e.offset_ms(), None);
        // Cluster is 5 s ahead; deliveries take 1..=9 ms.
        for i in 0..10u64 {
            let delay = 1 + (i * 7) % 9;
            e.observe(100_000 + i * 200, (95_000 + i * 200 + delay) as f64);
        }
        assert_eq!(e.offset_ms(), Some(4_999));
        assert_eq!(e.cluster_now(1_000.0), Some(5_999));
    }

    #[test]
    fn drift_is_measured_in_ppm() {
        let mut e = OffsetEstimator::default();
        // The local clock loses 200 µs per second against the cluster.
        for i in 0..100u64 {
            let t = i * 200;
            let local = t - t / 5_000;
            e.observe(1_000_000 + t, local as f64);
        }
        let ppm = e.drift_ppm().unwrap();
        assert!((ppm - 200.0).abs() < 20.0, "{ppm}");
    }
}
