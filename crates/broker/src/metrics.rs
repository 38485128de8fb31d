//! The broker's Prometheus text exposition (`/metrics`): the feed, heartbeat
//! freshness, replica divergence, propagation delays per region and per
//! verifier, time to revoke per region, revocations by kind, issuance
//! (latency, grants, refusals, credential lifetimes) and emergency uses,
//! all read at scrape time from state the broker already keeps.

use lapse_metrics::{HistogramSample, Labels, Scrape, Value};

use crate::feed::FeedHub;
use crate::feed::histogram::Histogram;
use crate::issuance::issuer::Issuer;
use crate::issuance::stats::RequestKind;

pub use lapse_metrics::{CONTENT_TYPE, TEXT_CONTENT_TYPE};

/// Upper bounds of the delay and latency histograms' buckets, in
/// milliseconds.
const BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

/// Upper bounds of the credential lifetime histogram's buckets, in
/// seconds (one minute to the one day a histogram holds).
const LIFETIME_BOUNDS_S: [u64; 10] = [60, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400];

/// A delay histogram as Prometheus buckets, in seconds.
fn buckets(histogram: &Histogram) -> HistogramSample {
    buckets_us(histogram, BOUNDS_MS.map(|ms| ms * 1000))
}

/// A histogram of microseconds as Prometheus buckets under `bounds_us`,
/// in seconds.
fn buckets_us<const N: usize>(histogram: &Histogram, bounds_us: [u64; N]) -> HistogramSample {
    let mut buckets = Vec::with_capacity(N + 1);
    let mut below = 0;
    for bound in bounds_us {
        let at_most = histogram.count_at_most(bound);
        buckets.push((bound as f64 / 1e6, at_most - below));
        below = at_most;
    }
    buckets.push((f64::INFINITY, histogram.count() - below));
    HistogramSample {
        buckets,
        sum: histogram.sum_us() as f64 / 1e6,
        count: histogram.count(),
    }
}

/// The broker's own median and 99th percentile of histograms of
/// microseconds, as two gauges `<prefix>_p50_seconds` and
/// `<prefix>_p99_seconds` (a `quantile` label belongs to summaries only).
fn median_and_p99<'a>(
    scrape: &mut Scrape,
    prefix: &str,
    what: &str,
    histograms: impl Iterator<Item = (Labels, &'a Histogram)> + Clone,
) {
    for (q, name, title) in [(0.5, "p50", "median"), (0.99, "p99", "99th percentile")] {
        scrape.gauges(
            &format!("{prefix}_{name}_seconds"),
            &format!("{what}, as this broker measured it: the {title}."),
            histograms.clone().map(|(labels, histogram)| {
                let seconds = histogram.quantile_us(q) as f64 / 1e6;
                (labels, Value::from(seconds))
            }),
        );
    }
}

/// How `/metrics` is written: OpenMetrics, or the classic Prometheus text
/// format (version 0.0.4) for a client that asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics unless it names
    /// only other types (Prometheus asks for OpenMetrics first; `curl`
    /// asks for anything and gets it).
    pub fn accepted(accept: Option<&str>) -> Self {
        match accept {
            Some(accept)
                if !accept.contains("application/openmetrics-text")
                    && accept.contains("text/plain") =>
            {
                Self::Text
            }
            _ => Self::OpenMetrics,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => CONTENT_TYPE,
            Self::Text => TEXT_CONTENT_TYPE,
        }
    }
}

/// Everything `/metrics` shows for this broker.
pub fn exposition(
    hub: &FeedHub,
    issuer: &Issuer,
    guards: &crate::http::Guards,
    format: Format,
) -> String {
    let mut scrape = Scrape::new();
    feed(&mut scrape, hub);
    limits(&mut scrape, guards);
    freshness(&mut scrape, hub);
    propagation(&mut scrape, hub);
    revocations(&mut scrape, hub);
    issuance(&mut scrape, issuer);
    match format {
        Format::OpenMetrics => scrape.finish(),
        Format::Text => scrape.finish_text(),
    }
}

/// Revocations by kind (from the ledger, so every broker agrees), time to
/// revoke per region, stale verifiers and emergency uses reported.
fn revocations(scrape: &mut Scrape, hub: &FeedHub) {
    let counts = hub.core.view().read(|a| a.ledger.revocations);
    scrape.counters(
        "lapse_revocations",
        "Revocations that took effect, by kind, since the cluster began (from the replicated ledger: the same on every broker).",
        counts
            .by_kind()
            .map(|(kind, n)| (Labels::new().with("kind", kind), Value::from(n))),
    );
    let regions = hub.revoke_times();
    scrape.histograms(
        "lapse_time_to_revoke_seconds",
        "Time to revoke: from a revocation's commit to its application by the last verifier of a region subscribed to this broker.",
        regions
            .iter()
            .map(|(region, r)| (Labels::new().with("region", region), buckets(&r.times))),
    );
    median_and_p99(
        scrape,
        "lapse_time_to_revoke",
        "Time to revoke per region",
        regions
            .iter()
            .map(|(region, r)| (Labels::new().with("region", region), &r.times)),
    );
    scrape.gauges(
        "lapse_time_to_revoke_pending_seconds",
        "Age of the oldest revocation some verifier of the region subscribed here has not applied yet (0 when none).",
        regions.iter().map(|(region, r)| {
            (
                Labels::new().with("region", region),
                Value::from(r.oldest_pending_ms as f64 / 1000.0),
            )
        }),
    );
    scrape.gauge(
        "lapse_feed_stale_verifiers",
        "Verifiers subscribed here that are stale: behind a revocation committed longer than feed.verifier_staleness_ms ago, or all of them while heartbeats have been withheld that long.",
        hub.stale_verifiers(),
    );
    scrape.counters(
        "lapse_emergency_uses_reported",
        "Emergency acceptances verifiers reported to this broker: break-glass credentials, and credentials accepted while stale (fail_open).",
        hub.uses
            .by_kind()
            .map(|(kind, n)| (Labels::new().with("kind", kind), Value::from(n))),
    );
}

/// The issuer: latency, grants and refusals per request kind, lifetimes
/// per tenant.
fn issuance(scrape: &mut Scrape, issuer: &Issuer) {
    let report = issuer.stats.report();
    let empty = Histogram::default();
    let kind = |k: RequestKind| Labels::new().with("kind", k.name());
    let latency = |k: RequestKind| report.latency.get(&k).unwrap_or(&empty);
    scrape.histograms(
        "lapse_issuance_duration_seconds",
        "Issuance latency: from a request (issue, refresh, exchange) received to its answer, granted or refused.",
        RequestKind::ALL.map(|k| (kind(k), buckets(latency(k)))),
    );
    median_and_p99(
        scrape,
        "lapse_issuance_duration",
        "Issuance latency per request kind",
        RequestKind::ALL.into_iter().map(|k| (kind(k), latency(k))),
    );
    scrape.counters(
        "lapse_issuance_granted",
        "Credentials granted, per request kind.",
        RequestKind::ALL.map(|k| {
            let n = report.granted.get(&k).copied().unwrap_or(0);
            (kind(k), Value::from(n))
        }),
    );
    scrape.counters(
        "lapse_issuance_refused",
        "Requests refused, per request kind and reason: policy (the tenant's policy), forbidden (Lapse's own rules: narrowing, depth, a revoked task or credential, a tenant mismatch), attestation, dpop_nonce, invalid, unavailable, exhausted, ledger, internal.",
        RequestKind::ALL.into_iter().flat_map(|k| {
            crate::issuance::stats::REASONS.map(|reason| {
                let n = report.refused.get(&(k, reason)).copied().unwrap_or(0);
                (kind(k).with("reason", reason), Value::from(n))
            })
        }),
    );
    let lifetime_bounds = LIFETIME_BOUNDS_S.map(|s| s * 1_000_000);
    scrape.histograms(
        "lapse_credential_lifetime_seconds",
        "Lifetime of the credentials granted (exp - iat), per tenant (the first 31 tenants seen; the rest as other).",
        report.lifetimes.iter().map(|(tenant, histogram)| {
            (
                Labels::new().with("tenant", tenant),
                buckets_us(histogram, lifetime_bounds),
            )
        }),
    );
    median_and_p99(
        scrape,
        "lapse_credential_lifetime",
        "Lifetime of the credentials granted per tenant",
        report
            .lifetimes
            .iter()
            .map(|(tenant, histogram)| (Labels::new().with("tenant", tenant), histogram)),
    );
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
    median_and_p99(
        scrape,
        "lapse_verifier_delay",
        "Commit-to-apply delay per verifier",
        report
            .verifiers
            .iter()
            .map(|(id, record)| (verifier(id, &record.region), &record.delays)),
    );
    scrape.gauges(
        "lapse_verifier_delay_max_seconds",
        "Commit-to-apply delay per verifier: the maximum.",
        report.verifiers.iter().map(|(id, record)| {
            let seconds = record.delays.max_us() as f64 / 1e6;
            (verifier(id, &record.region), Value::from(seconds))
        }),
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
