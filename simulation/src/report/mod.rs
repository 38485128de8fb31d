//! Summaries of many runs: a table, a JSON report, and a picture of
//! propagation delays (drawn in `chart`). Percentiles come from an HDR
//! histogram ([`DelayHistogram`]).

mod chart;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::harness::{Counts, RunOutcome};
use crate::invariants::Violation;

pub use chart::{propagation_chart, propagation_svg};

/// What the runs of one scenario add up to.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioSummary {
    pub scenario: String,
    pub runs: usize,
    pub failed_runs: usize,
    pub violations: usize,
    pub propagation_samples: usize,
    pub propagation_p50_ms: Option<f64>,
    pub propagation_p99_ms: Option<f64>,
    pub propagation_max_ms: Option<f64>,
    pub simulated_s: f64,
    pub wall_s: f64,
    pub failing_seeds: Vec<u64>,
}

impl ScenarioSummary {
    pub fn sim_per_wall(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.simulated_s / self.wall_s
        } else {
            0.0
        }
    }
}

/// Propagation delays in an HDR histogram of whole microseconds, from
/// 1 µs to one hour, with 3 significant figures: a delay is held exactly
/// to the microsecond up to 2.048 ms, and above that within 1/1024 of
/// itself (under 0.1%: about 0.5 ms near 1 s, 0.5 s near 10 minutes).
/// A percentile read from it is the highest delay its bucket holds, so it
/// is at most that much above the delay at that rank. Longer delays are
/// counted as one hour.
#[derive(Debug, Clone)]
pub struct DelayHistogram(Histogram<u64>);

/// The longest delay the histogram tells apart: one hour, in µs.
const HIGHEST_US: u64 = 3_600_000_000;

impl DelayHistogram {
    pub fn new() -> Self {
        Self(Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds"))
    }

    pub fn of(delays_ms: impl IntoIterator<Item = f64>) -> Self {
        let mut histogram = Self::new();
        for ms in delays_ms {
            histogram.record(ms);
        }
        histogram
    }

    pub fn record(&mut self, ms: f64) {
        self.0.saturating_record(ms_to_us(ms));
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The delay (ms) at or below which `quantile` (0..=1) of the samples
    /// fall; `None` without samples.
    pub fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        (!self.is_empty()).then(|| us_to_ms(self.0.value_at_quantile(quantile)))
    }

    /// The CDF at log steps of `step` (> 1) from 0.1 ms: (delay ms, share
    /// of samples at or below it), one point per delay.
    pub fn cdf(&self, step: f64) -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = Vec::new();
        if self.is_empty() {
            return points;
        }
        for v in self.0.iter_log(100, step) {
            let point = (us_to_ms(v.value_iterated_to()), v.quantile());
            match points.last_mut() {
                Some(last) if last.0 == point.0 => *last = point,
                _ => points.push(point),
            }
        }
        points
    }
}

impl Default for DelayHistogram {
    fn default() -> Self {
        Self::new()
    }
}

fn ms_to_us(ms: f64) -> u64 {
    (ms.max(0.0) * 1000.0).round() as u64
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The longest of `delays`, exactly.
fn max_ms(delays: impl IntoIterator<Item = f64>) -> Option<f64> {
    delays.into_iter().reduce(f64::max)
}

pub fn summarize(scenario: &str, outcomes: &[RunOutcome]) -> ScenarioSummary {
    let delays = || {
        outcomes
            .iter()
            .flat_map(|o| o.propagation_ms.iter().copied())
    };
    let histogram = DelayHistogram::of(delays());
    ScenarioSummary {
        scenario: scenario.to_owned(),
        runs: outcomes.len(),
        failed_runs: outcomes.iter().filter(|o| !o.passed()).count(),
        violations: outcomes.iter().map(|o| o.violations.len()).sum(),
        propagation_samples: histogram.len() as usize,
        propagation_p50_ms: histogram.quantile_ms(0.50),
        propagation_p99_ms: histogram.quantile_ms(0.99),
        propagation_max_ms: max_ms(delays()),
        simulated_s: outcomes.iter().map(|o| o.simulated_s).sum(),
        wall_s: outcomes.iter().map(|o| o.wall_s).sum(),
        failing_seeds: outcomes
            .iter()
            .filter(|o| !o.passed())
            .map(|o| o.seed)
            .collect(),
    }
}

/// A plain-text table, one row per scenario.
pub fn table(summaries: &[ScenarioSummary]) -> String {
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
    let mut out = format!(
        "{:<28} {:>5} {:>10} {:>9} {:>9} {:>9} {:>10}\n",
        "scenario", "runs", "violations", "p50 ms", "p99 ms", "max ms", "sim s/s"
    );
    for s in summaries {
        out.push_str(&format!(
            "{:<28} {:>5} {:>10} {:>9} {:>9} {:>9} {:>10.1}\n",
            s.scenario,
            s.runs,
            s.violations,
            ms(s.propagation_p50_ms),
            ms(s.propagation_p99_ms),
            ms(s.propagation_max_ms),
            s.sim_per_wall()
        ));
    }
    out
}

/// One run, as the JSON report lists it.
#[derive(Debug, Serialize)]
pub struct RunReport<'a> {
    pub scenario: &'a str,
    pub seed: u64,
    pub passed: bool,
    pub violations: &'a [Violation],
    pub error: Option<&'a str>,
    pub simulated_s: f64,
    pub wall_s: f64,
    pub counts: &'a Counts,
    pub propagation_p50_ms: Option<f64>,
    pub propagation_max_ms: Option<f64>,
    /// sha256 of the run's trace: equal for equal seeds.
    pub trace_sha256: String,
}

pub fn run_report(outcome: &RunOutcome) -> RunReport<'_> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for line in &outcome.trace {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    RunReport {
        scenario: &outcome.scenario,
        seed: outcome.seed,
        passed: outcome.passed(),
        violations: &outcome.violations,
        error: outcome.error.as_deref(),
        simulated_s: outcome.simulated_s,
        wall_s: outcome.wall_s,
        counts: &outcome.counts,
        propagation_p50_ms: DelayHistogram::of(outcome.propagation_ms.iter().copied())
            .quantile_ms(0.5),
        propagation_max_ms: max_ms(outcome.propagation_ms.iter().copied()),
        trace_sha256: hex::encode(hasher.finalize()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_a_thousandth_of_the_nearest_rank() {
        let histogram = DelayHistogram::of((1..=100).map(f64::from));
        let p50 = histogram.quantile_ms(0.5).unwrap();
        let p99 = histogram.quantile_ms(0.99).unwrap();
        assert!((50.0..=50.0 * 1.001).contains(&p50), "{p50}");
        assert!((99.0..=99.0 * 1.001).contains(&p99), "{p99}");
        assert_eq!(DelayHistogram::new().quantile_ms(0.5), None);
        // Exact to the microsecond below 2 ms.
        let small = DelayHistogram::of([0.25, 1.5]);
        assert_eq!(small.quantile_ms(0.5), Some(0.25));
        assert_eq!(small.quantile_ms(1.0), Some(1.5));
    }

    #[test]
    fn the_cdf_rises_to_one_at_the_longest_delay() {
        let histogram = DelayHistogram::of([1.0, 2.0, 30.0, 400.0]);
        let cdf = histogram.cdf(1.05);
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        let (last_ms, last_share) = *cdf.last().unwrap();
        assert_eq!(last_share, 1.0);
        assert!((400.0..400.0 * 1.06).contains(&last_ms), "{last_ms}");
        assert!(cdf.iter().any(|(ms, share)| *ms < 30.0 && *share == 0.5));
    }
}
