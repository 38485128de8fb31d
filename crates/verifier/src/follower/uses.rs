//! Emergency uses reported up a subscription: each report held until the
//! broker says it recorded it, and given back to the verifier's queue if
//! the subscription ends first.

use super::*;

/// Most reports one subscription waits on the broker to record; more
/// wait in the queue.
pub(crate) const MAX_REPORTS_IN_FLIGHT: usize = 16;

/// Reports a subscription sent whose uses the broker has not yet said it
/// recorded. Whatever is left when the subscription ends goes back to the
/// queue, to be sent again on the next one.
pub(super) struct InFlight<'a> {
    pub(super) verifier: &'a Verifier,
    pub(super) reports: Vec<(u64, Vec<EmergencyUse>)>,
}

impl InFlight<'_> {
    pub(super) fn recorded(&mut self, report_id: u64) {
        if let Some(at) = self.reports.iter().position(|(id, _)| *id == report_id) {
            let (_, uses) = self.reports.swap_remove(at);
            self.verifier.emergency_uses_recorded(uses.len());
            tracing::info!(uses = uses.len(), "emergency uses recorded by the cluster");
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        for (_, uses) in self.reports.drain(..) {
            self.verifier.give_back_emergency_uses(uses);
        }
    }
}

/// A report's id: a digest of the verifier and the uses, so the same
/// report sent again is recorded once.
fn report_id(verifier_id: &str, uses: &[EmergencyUse]) -> u64 {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(verifier_id.as_bytes());
    for use_ in uses {
        hasher.update([0, use_.kind as u8]);
        hasher.update(use_.jti.as_bytes());
        hasher.update([0]);
        hasher.update(use_.at_ms.to_le_bytes());
        hasher.update(use_.last_at_ms.to_le_bytes());
        hasher.update(use_.count.to_le_bytes());
    }
    let digest = hasher.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    // 0 means "no answer wanted".
    u64::from_le_bytes(id).max(1)
}

/// Hand the pending emergency uses to the subscription, in reports of at
/// most [`MAX_USES_PER_REPORT`], and hold them until the broker says they
/// are recorded. What the stream cannot take now is given back for the
/// next try. Whether everything pending was handed over.
pub(super) fn report_uses(
    in_flight: &mut InFlight<'_>,
    config: &FollowConfig,
    stats: &FollowStats,
    requests: &mpsc::Sender<FeedRequest>,
) -> bool {
    let verifier = in_flight.verifier;
    loop {
        if in_flight.reports.len() >= MAX_REPORTS_IN_FLIGHT {
            return false;
        }
        let uses = verifier.take_emergency_uses(MAX_USES_PER_REPORT);
        if uses.is_empty() {
            return true;
        }
        let report_id = report_id(&config.verifier_id, &uses);
        let report = FeedRequest {
            kind: Some(RequestKind::UseReport(UseReport {
                uses: uses
                    .iter()
                    .map(|u| u.to_wire(&config.verifier_id))
                    .collect(),
                report_id,
            })),
        };
        if requests.try_send(report).is_err() {
            verifier.give_back_emergency_uses(uses);
            return false;
        }
        stats.use_reports.fetch_add(1, Ordering::Relaxed);
        tracing::info!(uses = uses.len(), "emergency uses reported to the broker");
        in_flight.reports.push((report_id, uses));
    }
}
