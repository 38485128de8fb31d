//! `GET /metrics`: the verifiers of this process in Prometheus text.

use super::*;

/// One sample per verifier in this process, from its status; a verifier
/// for which `value` says nothing has no sample.
fn per_verifier(
    statuses: &[(Labels, VerifierStatus)],
    value: impl Fn(&VerifierStatus) -> Option<Sample>,
) -> Vec<(Labels, Sample)> {
    statuses
        .iter()
        .filter_map(|(labels, status)| Some((labels.clone(), value(status)?)))
        .collect()
}

/// A counter's samples per verifier, one per `result`.
fn by_result(
    statuses: &[(Labels, VerifierStatus)],
    results: impl Fn(&VerifierStatus) -> [(&'static str, u64); 2],
) -> Vec<(Labels, Sample)> {
    statuses
        .iter()
        .flat_map(|(labels, status)| {
            results(status).map(|(result, n)| (labels.clone().with("result", result), n.into()))
        })
        .collect()
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let expiry = state.tls.as_ref().and_then(|tls| {
        tls.credentials().cert.as_ref().map(|c| {
            c.not_after
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        })
    });
    let mut text = exposition(&state.verifiers, expiry);
    // The API's own limits, before the end marker.
    if let Some(body) = text.strip_suffix("# EOF\n") {
        text = format!("{body}{}# EOF\n", limits(&state.guards));
    }
    ([(header::CONTENT_TYPE, lapse_metrics::CONTENT_TYPE)], text).into_response()
}

/// Rejections for another reason than staleness. The two counters are
/// read one after the other while verifications go on, so a stale
/// rejection can be counted in one and not yet in the other: never less
/// than zero.
pub(super) fn other_rejections(rejected: u64, stale_rejections: u64) -> u64 {
    rejected.saturating_sub(stale_rejections)
}

/// The API's connection caps and rate limits at work, as exposition lines.
fn limits(guards: &ApiGuards) -> String {
    let stats = guards.gate.stats();
    let mut scrape = Scrape::new();
    scrape.gauge(
        "lapse_verifier_api_connections_open",
        "Connections open now on the verify API.",
        stats.open,
    );
    scrape.counters(
        "lapse_verifier_api_connections_refused",
        "Connections closed at once for a full listener (--http-max-connections) or a full IP (--http-max-connections-per-ip).",
        [
            ("listener_full", stats.refused_listener_full),
            ("ip_full", stats.refused_ip_full),
        ]
        .map(|(reason, n)| (Labels::new().with("reason", reason), n.into())),
    );
    scrape.counter(
        "lapse_verifier_api_handshake_timeouts",
        "Connections dropped for not sending a request within --http-handshake-timeout.",
        stats.handshake_timeouts,
    );
    scrape.counter(
        "lapse_verifier_api_rate_limited",
        "Requests refused for their caller's rate (--http-rate-per-ip).",
        guards.refused.load(std::sync::atomic::Ordering::Relaxed),
    );
    let text = scrape.finish();
    text.strip_suffix("# EOF\n").unwrap_or(&text).to_owned()
}

/// Everything `/metrics` shows for the verifiers of this process, and
/// when its certificate expires (seconds since the Unix epoch), if it has one.
pub(super) fn exposition(
    verifiers: &BTreeMap<String, Served>,
    certificate_expiry: Option<u64>,
) -> String {
    let statuses: Vec<(Labels, VerifierStatus)> = verifiers
        .iter()
        .map(|(id, served)| {
            let labels = Labels::new()
                .with("verifier", id)
                .with("region", &served.region);
            (labels, served.verifier.status())
        })
        .collect();
    let mut scrape = Scrape::new();
    scrape.gauges(
        "lapse_verifier_epoch",
        "Epoch of the revocation state held.",
        per_verifier(&statuses, |s| s.epoch.map(Sample::from)),
    );
    scrape.gauges(
        "lapse_verifier_fresh",
        "1 when a confirmed heartbeat arrived within the staleness bound.",
        per_verifier(&statuses, |s| Some(s.fresh.into())),
    );
    scrape.gauges(
        "lapse_verifier_heartbeat_age_seconds",
        "Time since the last confirmed heartbeat.",
        per_verifier(&statuses, |s| {
            s.since_heartbeat_ms
                .map(|ms| Sample::from(ms as f64 / 1000.0))
        }),
    );
    scrape.gauges(
        "lapse_verifier_heartbeat_broker",
        "The broker whose confirmed heartbeat came last.",
        per_verifier(&statuses, |s| s.heartbeat_broker_id.map(Sample::from)),
    );
    let withheld = statuses.iter().map(|(labels, s)| match &s.withheld {
        Some(notice) => (
            labels
                .clone()
                .with("broker", notice.broker_id)
                .with("reason", &notice.reason),
            Sample::from(true),
        ),
        None => (labels.clone(), Sample::from(false)),
    });
    scrape.gauges(
        "lapse_verifier_heartbeats_withheld",
        "1 when the followed broker said, since the last heartbeat, that it withholds them (reason in the label).",
        withheld,
    );
    scrape.gauges(
        "lapse_verifier_clock_offset_seconds",
        "Estimated cluster time minus local time.",
        per_verifier(&statuses, |s| {
            s.clock_offset_ms.map(|ms| Sample::from(ms as f64 / 1000.0))
        }),
    );
    scrape.gauges(
        "lapse_verifier_clock_drift_ppm",
        "Local clock drift against cluster time.",
        per_verifier(&statuses, |s| s.clock_drift_ppm.map(Sample::from)),
    );
    let mut verifications = by_result(&statuses, |s| {
        [
            ("accepted", s.accepted),
            ("rejected", other_rejections(s.rejected, s.stale_rejections)),
        ]
    });
    verifications.extend(
        per_verifier(&statuses, |s| Some(s.stale_rejections.into()))
            .into_iter()
            .map(|(labels, n)| (labels.with("result", "stale"), n)),
    );
    scrape.counters(
        "lapse_verifier_verifications",
        "Credentials checked, by result.",
        verifications,
    );
    scrape.counters(
        "lapse_verifier_feed_events",
        "Feed events, by whether they were applied.",
        by_result(&statuses, |s| {
            [
                ("applied", s.applied_events),
                ("rejected", s.rejected_events),
            ]
        }),
    );
    scrape.counters(
        "lapse_verifier_unvouched_drops",
        "Times the state received was dropped back to the last one a signed heartbeat vouched for, because a broker vouched for another.",
        per_verifier(&statuses, |s| Some(s.unvouched_drops.into())),
    );
    scrape.gauges(
        "lapse_verifier_fail_open",
        "1 when this verifier accepts credentials while stale (--fail-open).",
        per_verifier(&statuses, |s| Some(s.fail_open.into())),
    );
    scrape.counters(
        "lapse_verifier_accepted_while_stale",
        "Credentials accepted while stale: fail-open acceptances and break-glass ones.",
        per_verifier(&statuses, |s| Some(s.accepted_while_stale.into())),
    );
    scrape.counters(
        "lapse_verifier_break_glass_verifications",
        "Break-glass credentials checked, by result.",
        by_result(&statuses, |s| {
            [
                ("accepted", s.break_glass_accepted),
                ("rejected", s.break_glass_rejected),
            ]
        }),
    );
    scrape.gauges(
        "lapse_verifier_emergency_uses_pending",
        "Credentials whose emergency use (break-glass or fail-open) waits to be reported to a broker.",
        per_verifier(&statuses, |s| Some((s.emergency_uses_pending as u64).into())),
    );
    scrape.gauges(
        "lapse_verifier_emergency_uses_unconfirmed",
        "Credentials whose emergency use was reported to a broker that has not yet confirmed recording it.",
        per_verifier(&statuses, |s| Some((s.emergency_uses_unconfirmed as u64).into())),
    );
    scrape.counters(
        "lapse_verifier_emergency_uses",
        "Emergency uses, by whether they were handed to a broker or dropped from a full queue.",
        by_result(&statuses, |s| {
            [
                ("reported", s.emergency_uses_reported),
                ("dropped", s.emergency_uses_dropped),
            ]
        }),
    );
    let relays: Vec<(Labels, Sample)> = verifiers
        .iter()
        .filter_map(|(id, served)| {
            let relay = served.relay.as_ref()?;
            let labels = Labels::new()
                .with("verifier", id)
                .with("region", &served.region);
            Some((labels, (relay.leaves() as u64).into()))
        })
        .collect();
    if !relays.is_empty() {
        scrape.gauges(
            "lapse_verifier_relay_leaves",
            "Verifiers subscribed to this relay now (at most --relay-max-leaves).",
            relays,
        );
    }
    if let Some(seconds) = certificate_expiry {
        scrape.gauge(
            "lapse_tls_certificate_expiry_timestamp_seconds",
            "When this verifier process's TLS certificate expires, in seconds since the Unix epoch: replace it before then.",
            seconds,
        );
    }
    scrape.finish()
}
