//! The broker's Prometheus text exposition (`/metrics`): the feed, heartbeat
//! freshness, replica divergence, and propagation delays per region and
//! per verifier, all read from the feed's state at scrape time.

use std::fmt::Write;

use crate::feed::FeedHub;
use crate::feed::propagation::Histogram;

/// Upper bounds of the propagation histogram's buckets, in milliseconds.
const BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

/// Text in the Prometheus exposition format, built metric by metric.
#[derive(Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    /// A metric's `# HELP` and `# TYPE` lines.
    fn describe(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample; label values are escaped.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
                .collect();
            let _ = write!(self.out, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A metric with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.describe(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A region's delay histogram, in seconds.
    fn histogram(&mut self, name: &str, region: &str, histogram: &Histogram) {
        let bucket = format!("{name}_bucket");
        for bound in BOUNDS_MS {
            let le = (bound as f64 / 1000.0).to_string();
            let count = histogram.count_at_most(bound * 1000);
            self.sample(&bucket, &[("region", region), ("le", &le)], count);
        }
        let count = histogram.count();
        self.sample(&bucket, &[("region", region), ("le", "+Inf")], count);
        let sum = histogram.sum_us() as f64 / 1e6;
        self.sample(&format!("{name}_sum"), &[("region", region)], sum);
        self.sample(&format!("{name}_count"), &[("region", region)], count);
    }
}

/// Escape a Prometheus label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Everything `/metrics` shows for this broker.
pub fn exposition(hub: &FeedHub) -> String {
    let mut text = Exposition::default();
    feed(&mut text, hub);
    freshness(&mut text, hub);
    propagation(&mut text, hub);
    text.out
}

fn feed(text: &mut Exposition, hub: &FeedHub) {
    let report = hub.local_report();
    let connected = report.verifiers.values().filter(|r| r.connections > 0);
    text.single(
        "lapse_feed_epoch",
        "gauge",
        "The feed epoch of this broker's applied state.",
        report.current_epoch,
    );
    text.single(
        "lapse_feed_subscribers",
        "gauge",
        "Verifiers subscribed to this broker's feed.",
        connected.count(),
    );
    text.single(
        "lapse_replica_divergences",
        "gauge",
        "Peers whose state differs from this broker's at the same log index (should be 0).",
        hub.core.replicas().divergences().len(),
    );
    text.single(
        "lapse_feed_heartbeats_total",
        "counter",
        "Confirmed heartbeats broadcast.",
        hub.heartbeats_sent(),
    );
}

fn freshness(text: &mut Exposition, hub: &FeedHub) {
    let fresh = hub.freshness_report();
    text.single(
        "lapse_feed_heartbeats_withheld_total",
        "counter",
        "Heartbeats not sent because this broker could not confirm its state.",
        fresh.withheld_total,
    );
    let name = "lapse_feed_heartbeats_withheld";
    text.describe(
        name,
        "gauge",
        "Whether heartbeats are withheld now, with the reason.",
    );
    match &fresh.withheld_reason {
        Some(reason) => text.sample(name, &[("reason", reason)], 1),
        None => text.sample(name, &[("reason", "")], 0),
    }
    text.single(
        "lapse_feed_freshness_problem",
        "gauge",
        "1 when this broker's configuration or measured round trips cannot keep verifiers fresh (see lapse status).",
        u8::from(fresh.problem.is_some()),
    );
    text.single(
        "lapse_feed_slowest_confirmation_seconds",
        "gauge",
        "The slowest recent confirmation of this broker's state with the leader.",
        format!("{:.3}", fresh.slowest_confirmation_ms as f64 / 1000.0),
    );
    if let Some(age) = hub.confirmed_age_seconds() {
        text.single(
            "lapse_feed_confirmed_age_seconds",
            "gauge",
            "Time since this broker last confirmed its state current.",
            format!("{age:.3}"),
        );
    }
}

fn propagation(text: &mut Exposition, hub: &FeedHub) {
    let report = hub.local_report();
    let delay = "lapse_propagation_delay_seconds";
    text.describe(
        delay,
        "histogram",
        "Commit-to-apply delay of revocations at this broker's verifiers.",
    );
    for (region, histogram) in &report.regions {
        text.histogram(delay, region, histogram);
    }
    let acked = "lapse_verifier_acked_epoch";
    text.describe(acked, "gauge", "The last epoch each verifier acknowledged.");
    for (id, record) in &report.verifiers {
        let labels = [
            ("verifier", id.as_str()),
            ("region", record.region.as_str()),
        ];
        text.sample(acked, &labels, record.acked_epoch);
    }
    let per_verifier = "lapse_verifier_delay_seconds";
    text.describe(
        per_verifier,
        "summary",
        "Commit-to-apply delay per verifier.",
    );
    for (id, record) in &report.verifiers {
        for (q, quantile) in [(0.5, "0.5"), (0.99, "0.99"), (1.0, "1")] {
            let labels = [
                ("verifier", id.as_str()),
                ("region", record.region.as_str()),
                ("quantile", quantile),
            ];
            let seconds = record.delays.quantile_us(q) as f64 / 1e6;
            text.sample(per_verifier, &labels, seconds);
        }
        let labels = [
            ("verifier", id.as_str()),
            ("region", record.region.as_str()),
        ];
        let count = record.delays.count();
        text.sample(&format!("{per_verifier}_count"), &labels, count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_escape_their_label_values_and_histograms_end_at_infinity() {
        let mut text = Exposition::default();
        text.describe("m", "gauge", "A metric.");
        text.sample("m", &[("reason", "a \"b\"\nc\\")], 1);
        assert_eq!(
            text.out,
            "# HELP m A metric.\n# TYPE m gauge\nm{reason=\"a \\\"b\\\"\\nc\\\\\"} 1\n"
        );
        let mut histogram = Histogram::default();
        histogram.record(3_000);
        let mut text = Exposition::default();
        text.histogram("d", "eu", &histogram);
        assert!(
            text.out
                .contains("d_bucket{region=\"eu\",le=\"0.002\"} 0\n")
        );
        assert!(
            text.out
                .contains("d_bucket{region=\"eu\",le=\"0.005\"} 1\n")
        );
        assert!(text.out.contains("d_bucket{region=\"eu\",le=\"+Inf\"} 1\n"));
        assert!(text.out.contains("d_count{region=\"eu\"} 1\n"));
    }
}
