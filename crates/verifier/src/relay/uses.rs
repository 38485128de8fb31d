//! Leaves' emergency-use reports on their way up a relay's subscription.
//!
//! A report is taken only when every use in it names the leaf that sent
//! it and it holds no more uses than a verifier sends; the relay holds at
//! most [`MAX_FORWARDED_REPORTS`] unanswered, and no more from one leaf
//! than a verifier waits on itself. Each goes up once per subscription
//! (all again on a new one, and again with the next reports when the
//! subscription could not take it), until the broker's `UsesRecorded`
//! releases it.

use std::collections::VecDeque;

use lapse_wire::feed::feed_request::Kind as RequestKind;
use lapse_wire::feed::{FeedRequest, UseReport};
use tonic::Status;

use crate::break_glass::MAX_USES_PER_REPORT;
use crate::follower::MAX_REPORTS_IN_FLIGHT;

/// Leaves' use reports forwarded and not yet recorded; a leaf whose report
/// finds no room is told to try another source.
pub const MAX_FORWARDED_REPORTS: usize = 64;
/// Of those, from one leaf: as many as a verifier waits on itself, so one
/// leaf cannot take every place.
const MAX_FORWARDED_PER_LEAF: usize = MAX_REPORTS_IN_FLIGHT;

/// One leaf's report, held until recorded.
struct Forwarded {
    leaf: String,
    report: UseReport,
    /// Sent on the current subscription.
    sent: bool,
}

/// The reports a relay forwards and holds, oldest first.
#[derive(Default)]
pub(super) struct ForwardedUses(VecDeque<Forwarded>);

impl ForwardedUses {
    /// Take `report` from `leaf`: whether it is new (the same report again
    /// is held once). Refused when a use names another verifier, when it
    /// holds more uses than a verifier sends, and when there is no room.
    pub(super) fn admit(&mut self, leaf: &str, report: UseReport) -> Result<bool, Status> {
        if report.uses.len() > MAX_USES_PER_REPORT {
            return Err(Status::invalid_argument(format!(
                "a use report holds at most {MAX_USES_PER_REPORT} uses"
            )));
        }
        if report.uses.iter().any(|use_| use_.verifier_id != leaf) {
            return Err(Status::invalid_argument(
                "a leaf reports only its own emergency uses",
            ));
        }
        if report.report_id == 0 || report.uses.is_empty() {
            return Ok(false);
        }
        if self
            .0
            .iter()
            .any(|held| held.leaf == leaf && held.report.report_id == report.report_id)
        {
            return Ok(false);
        }
        let from_leaf = self.0.iter().filter(|held| held.leaf == leaf).count();
        if self.0.len() >= MAX_FORWARDED_REPORTS || from_leaf >= MAX_FORWARDED_PER_LEAF {
            return Err(Status::resource_exhausted(format!(
                "this relay holds {} use reports not yet recorded ({from_leaf} of them this verifier's); report to another relay or a broker",
                self.0.len()
            )));
        }
        self.0.push_back(Forwarded {
            leaf: leaf.to_owned(),
            report,
            sent: false,
        });
        Ok(true)
    }

    /// Reports held.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The reports to send: on `all` (a new subscription) every one, else
    /// those not yet sent on this one.
    pub(super) fn requests(&mut self, all: bool) -> Vec<FeedRequest> {
        self.0
            .iter_mut()
            .filter(|held| all || !held.sent)
            .map(|held| {
                held.sent = true;
                FeedRequest {
                    kind: Some(RequestKind::UseReport(held.report.clone())),
                }
            })
            .collect()
    }

    /// Of `requests`, the use reports the subscription could not take are
    /// sent with the next ones.
    pub(super) fn unsent(&mut self, requests: Vec<FeedRequest>) {
        for request in requests {
            let Some(RequestKind::UseReport(unsent)) = request.kind else {
                continue;
            };
            // Admitted reports name their leaf in every use.
            let leaf = unsent.uses.first().map(|u| u.verifier_id.as_str());
            for held in &mut self.0 {
                if held.report.report_id == unsent.report_id && Some(held.leaf.as_str()) == leaf {
                    held.sent = false;
                }
            }
        }
    }

    /// A broker recorded report `report_id`.
    pub(super) fn recorded(&mut self, report_id: u64) {
        self.0.retain(|held| held.report.report_id != report_id);
    }
}

#[cfg(test)]
mod tests {
    use lapse_wire::feed::EmergencyUse;

    use super::super::*;
    use super::*;
    use crate::VerifyConfig;
    use crate::follower::Downstream as _;

    fn report(leaf: &str, id: u64, uses: usize) -> UseReport {
        UseReport {
            uses: (0..uses)
                .map(|n| EmergencyUse {
                    verifier_id: leaf.into(),
                    jti: format!("{leaf}-{id}-{n}"),
                    ..Default::default()
                })
                .collect(),
            report_id: id,
        }
    }

    fn queued(relay: &Relay) -> Vec<u64> {
        relay
            .report(true)
            .into_iter()
            .filter_map(|request| match request.kind {
                Some(RequestKind::UseReport(report)) => Some(report.report_id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn forwarded_use_reports_are_bounded_per_leaf_and_in_all_and_leave_when_recorded() {
        let relay = Relay::new(
            Verifier::new(VerifyConfig::default()),
            RelayConfig::default(),
        );
        // A leaf's own uses are forwarded, once per report id.
        for id in 1..=MAX_FORWARDED_PER_LEAF as u64 {
            relay.forward_uses("a", report("a", id, 1)).unwrap();
        }
        relay.forward_uses("a", report("a", 1, 1)).unwrap();
        assert_eq!(relay.forwarded_uses(), MAX_FORWARDED_PER_LEAF);
        // One leaf cannot take every place.
        let refused = relay.forward_uses("a", report("a", 100, 1)).unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        // Others still can, up to the relay's bound.
        let mut id = 1_000;
        for leaf in ["b", "c", "d"] {
            for _ in 0..MAX_FORWARDED_PER_LEAF {
                id += 1;
                relay.forward_uses(leaf, report(leaf, id, 1)).unwrap();
            }
        }
        assert_eq!(relay.forwarded_uses(), MAX_FORWARDED_REPORTS);
        let refused = relay.forward_uses("e", report("e", 5_000, 1)).unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        // Another verifier's uses, or more than a verifier sends: refused.
        let foreign = relay.forward_uses("e", report("a", 2, 1)).unwrap_err();
        assert_eq!(foreign.code(), tonic::Code::InvalidArgument, "{foreign:?}");
        let oversized = relay
            .forward_uses(
                "e",
                report("e", 3, crate::break_glass::MAX_USES_PER_REPORT + 1),
            )
            .unwrap_err();
        assert_eq!(
            oversized.code(),
            tonic::Code::InvalidArgument,
            "{oversized:?}"
        );
        // Each goes up once per subscription, and all again on a new one.
        assert_eq!(queued(&relay).len(), MAX_FORWARDED_REPORTS);
        assert!(
            relay
                .report(false)
                .iter()
                .all(|r| !matches!(r.kind, Some(RequestKind::UseReport(_))))
        );
        // What the subscription could not take is offered again.
        let first = relay.report(false);
        assert!(first.is_empty());
        let all = relay.report(true);
        relay.unsent(all.into_iter().skip(60).collect());
        assert_eq!(
            relay
                .report(false)
                .iter()
                .filter(|r| matches!(r.kind, Some(RequestKind::UseReport(_))))
                .count(),
            MAX_FORWARDED_REPORTS - 60
        );
        assert!(relay.report(false).is_empty());
        // Recorded upstream: it leaves, and makes room.
        relay.passed(&FeedEvent {
            kind: Some(Kind::UsesRecorded(lapse_wire::feed::UsesRecorded {
                report_id: 1,
            })),
            ..Default::default()
        });
        assert_eq!(relay.forwarded_uses(), MAX_FORWARDED_REPORTS - 1);
        assert!(!queued(&relay).contains(&1));
        relay.forward_uses("a", report("a", 100, 1)).unwrap();
    }
}
