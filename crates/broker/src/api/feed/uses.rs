//! Emergency uses verifiers report on their feed stream: break-glass
//! credentials they accepted, and credentials accepted while stale
//! (fail-open). Each is logged, and the first of each report recorded in
//! the replicated control-plane audit.

use std::sync::Arc;

use lapse_wire::feed::{EmergencyUseKind, UseReport};
use tokio::sync::mpsc;

use crate::feed::FeedHub;

/// Uses read from one `UseReport` (verifiers send at most 64); the rest
/// are counted as dropped.
const MAX_USES_PER_REPORT: usize = 256;
/// Longest string of a reported use logged; longer ones are cut.
const MAX_USE_FIELD_BYTES: usize = 512;

/// A verifier's report of emergency uses: break-glass credentials it
/// accepted, and credentials it accepted while stale (fail-open). Logged
/// here, one line per use, with every string cut to
/// [`MAX_USE_FIELD_BYTES`]; never fails the session. `verifier` is the
/// subscription's (checked against its certificate), not the report's
/// word. Returns the uses read.
///
/// Returns the uses read, and the first [`MAX_USES_AUDITED`] as
/// control-plane audit events.
pub(super) fn note_use_report(
    hub: &FeedHub,
    verifier: &str,
    report: UseReport,
    before: u64,
) -> (u64, Vec<AuditedUse>) {
    let cap = |text: &str| {
        let mut end = text.len().min(MAX_USE_FIELD_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    };
    let dropped = report.uses.len().saturating_sub(MAX_USES_PER_REPORT);
    let mut read = 0;
    let mut events = Vec::new();
    for use_ in report.uses.iter().take(MAX_USES_PER_REPORT) {
        read += 1;
        let kind = match EmergencyUseKind::try_from(use_.kind) {
            Ok(EmergencyUseKind::BreakGlass) => "break_glass",
            Ok(EmergencyUseKind::FailOpen) => "fail_open",
            _ => "unknown",
        };
        hub.uses.note(kind, use_.count);
        let audiences: Vec<String> = use_.audiences.iter().take(16).map(|a| cap(a)).collect();
        tracing::warn!(
            broker = hub.core.id(),
            verifier = %verifier,
            claimed_verifier = %cap(&use_.verifier_id),
            kind,
            jti = %cap(&use_.jti),
            sub = %cap(&use_.subject),
            tenant = %cap(&use_.tenant),
            aud = ?audiences,
            key = %cap(&use_.key_id),
            reason = %cap(&use_.reason),
            count = use_.count,
            at_ms = use_.at_ms,
            last_at_ms = use_.last_at_ms,
            reported_by_subscription = before + read,
            "emergency use reported by a verifier"
        );
        // Into the replicated control-plane audit, under the verifier's
        // certified name (the first uses of a report; the rest are logged).
        if read <= MAX_USES_AUDITED {
            let authorization = lapse_ledger::Authorization {
                principal: format!("verifier:{}", cap(verifier)),
                action: format!("{kind}_use"),
                tenant: lapse_credential::TenantId::new(use_.tenant.clone()).ok(),
                bindings_version: 0,
                policy_version: 0,
                justification: Some(cap(&use_.reason)).filter(|r| !r.is_empty()),
                grant: None,
            };
            // A relay reports its leaves' uses under its own name; the leaf
            // it names is its word.
            let relayed = if use_.verifier_id != verifier {
                format!(", by verifier {} (relayed)", cap(&use_.verifier_id))
            } else {
                String::new()
            };
            let outcome = Ok(format!(
                "accepted {} time(s) from {} to {} (verifier clock): jti {}, sub {}, aud {:?}, key {}{relayed}",
                use_.count,
                use_.at_ms,
                use_.last_at_ms,
                cap(&use_.jti),
                cap(&use_.subject),
                audiences,
                cap(&use_.key_id)
            ));
            events.push((authorization, outcome));
        }
    }
    if dropped > 0 {
        tracing::warn!(
            verifier = %verifier,
            dropped,
            "a verifier's use report held more than {MAX_USES_PER_REPORT} uses; the rest were not read"
        );
    }
    (read, events)
}

/// The most uses of one report that become control-plane audit events.
const MAX_USES_AUDITED: u64 = 64;

pub(super) type AuditedUse = (lapse_ledger::Authorization, lapse_ledger::ControlOutcome);

/// Record a report's uses in the replicated audit, then hand its id to the
/// session (`recorded_ids`), which tells the verifier (`UsesRecorded`) so
/// it stops holding them. Each use's request id is
/// derived from the verifier, the report and the use's place in it, so a
/// report sent again after a lost answer is recorded once.
pub(super) async fn record_uses(
    hub: Arc<FeedHub>,
    verifier: String,
    report_id: u64,
    events: Vec<AuditedUse>,
    recorded_ids: mpsc::Sender<u64>,
) {
    use sha2::Digest as _;
    let mut recorded = true;
    for (place, (authorization, outcome)) in events.into_iter().enumerate() {
        let mut hasher = sha2::Sha256::new();
        hasher.update(verifier.as_bytes());
        hasher.update([0]);
        hasher.update(report_id.to_le_bytes());
        hasher.update((place as u64).to_le_bytes());
        let digest = hasher.finalize();
        let id = format!("use-{}", hex::encode(&digest[..20]));
        let Ok(id) = lapse_ledger::RequestId::new(id) else {
            return;
        };
        recorded &= super::super::cluster::record_as(&hub.core, id, authorization, outcome).await;
    }
    // A verifier that sends no report id (0) expects no answer.
    if recorded && report_id != 0 {
        let _ = recorded_ids.send(report_id).await;
    }
}
