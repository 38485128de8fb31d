//! Summaries of many runs: a table, a propagation histogram and CDF as an
//! SVG picture, and a JSON report.

use serde::Serialize;

use crate::harness::{Counts, RunOutcome};
use crate::invariants::Violation;

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

/// The `p`th percentile (0..=1) of sorted `values`, by nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

pub fn summarize(scenario: &str, outcomes: &[RunOutcome]) -> ScenarioSummary {
    let mut delays: Vec<f64> = outcomes
        .iter()
        .flat_map(|o| o.propagation_ms.iter().copied())
        .collect();
    delays.sort_by(f64::total_cmp);
    ScenarioSummary {
        scenario: scenario.to_owned(),
        runs: outcomes.len(),
        failed_runs: outcomes.iter().filter(|o| !o.passed()).count(),
        violations: outcomes.iter().map(|o| o.violations.len()).sum(),
        propagation_samples: delays.len(),
        propagation_p50_ms: percentile(&delays, 0.50),
        propagation_p99_ms: percentile(&delays, 0.99),
        propagation_max_ms: delays.last().copied(),
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

/// A histogram of `delays` (ms) with their CDF over it, as an SVG picture.
pub fn propagation_svg(title: &str, delays: &[f64]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 360.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 60.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    const BINS: usize = 40;
    let mut sorted: Vec<f64> = delays.to_vec();
    sorted.sort_by(f64::total_cmp);
    let max = sorted.last().copied().unwrap_or(0.0).max(1.0);
    let width = max / BINS as f64;
    let mut counts = [0usize; BINS];
    for d in &sorted {
        counts[((d / width) as usize).min(BINS - 1)] += 1;
    }
    let tallest = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |ms: f64| LEFT + ms / max * plot_w;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">{} — revocation propagation ({} samples)</text>
"#,
        W / 2.0,
        escape(title),
        sorted.len()
    );
    for (n, count) in counts.iter().enumerate() {
        let h = *count as f64 / tallest * plot_h;
        svg.push_str(&format!(
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#8fb3d9"/>
"##,
            x(n as f64 * width),
            TOP + plot_h - h,
            (plot_w / BINS as f64 - 1.0).max(1.0),
            h
        ));
    }
    if !sorted.is_empty() {
        let mut points = String::new();
        for (n, d) in sorted.iter().enumerate() {
            let y = TOP + plot_h - (n + 1) as f64 / sorted.len() as f64 * plot_h;
            points.push_str(&format!("{:.1},{:.1} ", x(*d), y));
        }
        svg.push_str(&format!(
            r##"<polyline points="{points}" fill="none" stroke="#c0392b" stroke-width="2"/>
"##
        ));
    }
    // Axes and labels.
    svg.push_str(&format!(
        r##"<line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}" stroke="black"/>
<line x1="{r}" y1="{TOP}" x2="{r}" y2="{b}" stroke="#c0392b"/>
<text x="{cx}" y="{lx}" text-anchor="middle">delay from first commit to verifier apply (ms)</text>
<text x="{LEFT}" y="{ty}" text-anchor="middle">0</text>
<text x="{r}" y="{ty}" text-anchor="middle">{max:.0}</text>
<text x="{lxl}" y="{TOP}" text-anchor="end">{tallest:.0}</text>
<text x="{lxl}" y="{b}" text-anchor="end">0</text>
<text x="{rxl}" y="{TOP}" fill="#c0392b">100%</text>
<text x="{rxl}" y="{b}" fill="#c0392b">0%</text>
<text x="{LEFT}" y="{TOP}" dy="-6" fill="#4a6fa5">count</text>
<text x="{r}" y="{TOP}" dy="-6" text-anchor="end" fill="#c0392b">CDF</text>
</svg>
"##,
        b = TOP + plot_h,
        r = LEFT + plot_w,
        cx = LEFT + plot_w / 2.0,
        lx = H - 12.0,
        ty = TOP + plot_h + 16.0,
        lxl = LEFT - 6.0,
        rxl = LEFT + plot_w + 6.0,
    ));
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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
    let mut delays = outcome.propagation_ms.clone();
    delays.sort_by(f64::total_cmp);
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
        propagation_p50_ms: percentile(&delays, 0.5),
        propagation_max_ms: delays.last().copied(),
        trace_sha256: hex::encode(hasher.finalize()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn the_picture_is_an_svg_with_a_bar_per_bin_and_a_cdf() {
        let svg = propagation_svg("x", &[1.0, 2.0, 30.0, 400.0]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("<polyline"));
        assert_eq!(svg.matches("fill=\"#8fb3d9\"").count(), 40);
    }
}
