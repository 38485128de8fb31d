//! The broker's Prometheus text exposition (`/metrics`): the feed, heartbeat
//! freshness, replica divergence, and propagation delays per region and
//! per verifier, all read from the feed's state at scrape time.

use lapse_metrics::{HistogramSample, Labels, Scrape, Value};

use crate::feed::FeedHub;
use crate::feed::histogram::Histogram;

pub use lapse_metrics::CONTENT_TYPE;

/// Upper bounds of the propagation histogram's buckets, in milliseconds.
const BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

/// A delay histogram as Prometheus buckets, in seconds.
fn buckets(histogram: &Histogram) -> HistogramSample {
    let mut buckets = Vec::with_capacity(BOUNDS_MS.len() + 1);
    let mut below = 0;
    for bound in BOUNDS_MS {
        let at_most = histogram.count_at_most(bound * 1000);
        buckets.push((bound as f64 / 1000.0, at_most - below));
        below = at_most;
    }
    buckets.push((f64::INFINITY, histogram.count() - below));
    HistogramSample {
        buckets,
        sum: histogram.sum_us() as f64 / 1e6,
        count: histogram.count(),
    }
}

/// Everything `/metrics` shows for this broker.
pub fn exposition(hub: &FeedHub, guards: &crate::http::Guards) -> String {
    let mut scrape = Scrape::new();
    feed(&mut scrape, hub);
    limits(&mut scrape, guards);
    freshness(&mut scrape, hub);
    propagation(&mut scrape, hub);
    scrape.finish()
}

/// The listeners' connection caps and the callers' rate limits at work.
fn limits(scrape: &mut Scrape, guards: &crate::http::Guards) {
    let gates: Vec<(&str, lapse_pki::limits::GateStats)> =
        [("grpc", &guards.grpc), ("http", &guards.http)]
            .into_iter()
            .filter_map(|(port, gate)| Some((port, gate.as_ref()?.stats())))
            .collect();
    let by_port = |value: fn(&lapse_pki::limits::GateStats) -> u64| {
        gates
            .iter()
            .map(move |(port, stats)| (Labels::new().with("port", port), value(stats).into()))
            .collect::<Vec<_>>()
    };
    scrape.gauges(
        "lapse_connections_open",
        "Connections open now, per listener.",
        by_port(|s| s.open as u64),
    );
    let refused = gates.iter().flat_map(|(port, stats)| {
        [
            ("listener_full", stats.refused_listener_full),
            ("ip_full", stats.refused_ip_full),
        ]
        .map(|(reason, n)| {
            (
                Labels::new().with("port", port).with("reason", reason),
                n.into(),
            )
        })
    });
    scrape.counters(
        "lapse_connections_refused",
        "Connections closed at once for a full listener (limits.max_grpc_connections, limits.max_http_connections) or a full IP (limits.max_connections_per_ip).",
        refused.collect::<Vec<_>>(),
    );
    scrape.counters(
        "lapse_connections_handshake_timeouts",
        "Connections dropped for not finishing their handshakes within limits.handshake_timeout_ms.",
        by_port(|s| s.handshake_timeouts),
    );
    scrape.counter(
        "lapse_requests_rate_limited",
        "Cluster and Issuer calls refused for their caller's rate (limits.caller_requests_per_second).",
        guards.callers.refused(),
    );
}

fn feed(scrape: &mut Scrape, hub: &FeedHub) {
    let report = hub.local_report();
    let connected = report.verifiers.values().filter(|r| r.connections > 0);
    scrape.gauge(
        "lapse_feed_epoch",
        "The feed epoch of this broker's applied state.",
        report.current_epoch,
    );
    scrape.gauge(
        "lapse_feed_subscribers",
        "Verifiers subscribed to this broker's feed.",
        connected.count(),
    );
    let expiry_ms = crate::api::status::certificate_expiry_ms(&hub.core);
    if expiry_ms > 0 {
        scrape.gauge(
            "lapse_tls_certificate_expiry_timestamp_seconds",
            "When this broker's TLS certificate expires, in seconds since the Unix epoch: replace it before then.",
            expiry_ms / 1000,
        );
    }
    let now = hub.core.cluster_now();
    scrape.gauge(
        "lapse_break_glass_grants_in_force",
        "Break-glass grants in force now (`lapse break-glass list`): each gives an operator a role for a while, and every action under it is tagged in the control-plane audit.",
        hub.core
            .view()
            .read(|a| a.ledger.grants.values().filter(|g| g.in_force(now)).count()),
    );
    scrape.gauge(
        "lapse_replica_divergences",
        "Peers whose state differs from this broker's at the same log index (should be 0).",
        hub.core.replicas().divergences().len(),
    );
    scrape.counter(
        "lapse_feed_heartbeats",
        "Confirmed heartbeats broadcast.",
        hub.heartbeats_sent(),
    );
}

fn freshness(scrape: &mut Scrape, hub: &FeedHub) {
    let fresh = hub.freshness_report();
    scrape.counter(
        "lapse_feed_withheld_heartbeats",
        "Heartbeats not sent because this broker could not confirm its state.",
        fresh.withheld_total,
    );
    let withheld = match &fresh.withheld_reason {
        Some(reason) => (Labels::new().with("reason", reason), Value::from(true)),
        None => (Labels::new().with("reason", ""), Value::from(false)),
    };
    scrape.gauges(
        "lapse_feed_heartbeats_withheld",
        "Whether heartbeats are withheld now, with the reason.",
        [withheld],
    );
    scrape.gauge(
        "lapse_feed_freshness_problem",
        "1 when this broker's configuration or measured round trips cannot keep verifiers fresh (see lapse status).",
        fresh.problem.is_some(),
    );
    scrape.gauge(
        "lapse_feed_slowest_confirmation_seconds",
        "The slowest recent confirmation of this broker's state with the leader.",
        fresh.slowest_confirmation_ms as f64 / 1000.0,
    );
    if let Some(age) = hub.confirmed_age_seconds() {
        scrape.gauge(
            "lapse_feed_confirmed_age_seconds",
            "Time since this broker last confirmed its state current.",
            age,
        );
    }
}

fn propagation(scrape: &mut Scrape, hub: &FeedHub) {
    let report = hub.local_report();
    scrape.histograms(
        "lapse_propagation_delay_seconds",
        "Commit-to-apply delay of revocations at this broker's verifiers.",
        report
            .regions
            .iter()
            .map(|(region, histogram)| (Labels::new().with("region", region), buckets(histogram))),
    );
    let verifier =
        |id: &str, region: &str| Labels::new().with("verifier", id).with("region", region);
    scrape.gauges(
        "lapse_verifier_acked_epoch",
        "The last epoch each verifier acknowledged.",
        report.verifiers.iter().map(|(id, record)| {
            (
                verifier(id, &record.region),
                Value::from(record.acked_epoch),
            )
        }),
    );
    let quantiles = report.verifiers.iter().flat_map(|(id, record)| {
        [(0.5, "0.5"), (0.99, "0.99"), (1.0, "1")].map(|(q, quantile)| {
            let seconds = record.delays.quantile_us(q) as f64 / 1e6;
            let labels = verifier(id, &record.region).with("quantile", quantile);
            (labels, Value::from(seconds))
        })
    });
    scrape.gauges(
        "lapse_verifier_delay_seconds",
        "Commit-to-apply delay per verifier: median, 99th percentile and maximum.",
        quantiles,
    );
    scrape.counters(
        "lapse_verifier_delay_samples",
        "Revocations measured per verifier.",
        report.verifiers.iter().map(|(id, record)| {
            (
                verifier(id, &record.region),
                Value::from(record.delays.count()),
            )
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_histogram_becomes_per_bucket_counts_in_seconds() {
        let mut histogram = Histogram::default();
        histogram.record(3_000);
        histogram.record(20_000_000);
        let sample = buckets(&histogram);
        assert_eq!(sample.count, 2);
        assert_eq!(sample.sum, 20.003);
        assert_eq!(sample.buckets.len(), BOUNDS_MS.len() + 1);
        assert_eq!(sample.buckets[1], (0.002, 0));
        assert_eq!(sample.buckets[2], (0.005, 1));
        assert_eq!(sample.buckets.last(), Some(&(f64::INFINITY, 1)));
    }
}
