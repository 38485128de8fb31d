//! Waiting for an epoch to reach the verifiers (`lapse revoke --wait`):
//! what counts as a subscribed verifier, what share is enough, and what to
//! say when the wait ends without it. Decided by the broker, so every
//! client gets the same answer.

use std::time::Duration;

use super::FeedHub;
use super::propagation::LocalReport;

/// A verifier that dropped its subscription this recently still counts as
/// subscribed: it is most likely moving to another broker.
pub const FAILOVER_GRACE_MS: u64 = 5_000;
/// Longest wait a caller may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// Verifiers named in an answer; the rest are counted.
const NAMED: usize = 20;
/// How often the cluster-wide report is taken while waiting.
const POLL: Duration = Duration::from_millis(20);

/// How much of the verifier fleet to wait for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Share {
    All,
    /// A percentage in (0, 100].
    Percent(f64),
}

/// Who holds an epoch, from one cluster-wide report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub holding: usize,
    pub subscribed: usize,
    /// Subscribed verifiers that do not hold it, in id order.
    pub missing: Vec<String>,
    /// Brokers that did not answer: their verifiers are unknown.
    pub unreachable: Vec<u64>,
}

impl Progress {
    /// Who of `report`'s subscribed verifiers holds `epoch`.
    pub fn of(report: &LocalReport, unreachable: Vec<u64>, epoch: u64) -> Self {
        let subscribed: Vec<_> = report
            .verifiers
            .iter()
            .filter(|(_, v)| {
                v.connections > 0
                    || report.now_ms.saturating_sub(v.last_seen_ms) < FAILOVER_GRACE_MS
            })
            .collect();
        Self {
            holding: subscribed
                .iter()
                .filter(|(_, v)| v.acked_epoch >= epoch)
                .count(),
            subscribed: subscribed.len(),
            missing: subscribed
                .iter()
                .filter(|(_, v)| v.acked_epoch < epoch)
                .map(|(id, _)| (*id).clone())
                .collect(),
            unreachable,
        }
    }

    /// Whether the wanted share holds the epoch and every broker answered.
    pub fn enough(&self, share: Share) -> bool {
        let share_holds = match share {
            Share::All => self.holding == self.subscribed,
            Share::Percent(p) => self.holding as f64 * 100.0 >= p * self.subscribed as f64,
        };
        share_holds && self.unreachable.is_empty()
    }
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Waited {
    Reached {
        progress: Progress,
        waited: Duration,
        /// From the epoch's commit stamp to when the wait saw it reached,
        /// on the cluster's clock: at least every holding verifier's
        /// delay, however late the wait itself began. `None` when the
        /// epoch is no revocation this broker still knows the time of.
        after_commit: Option<Duration>,
    },
    /// Not reached; `reason` says what is missing.
    NotReached {
        progress: Progress,
        waited: Duration,
        reason: String,
    },
}

impl FeedHub {
    /// Wait until `share` of the subscribed verifiers hold `epoch`, up to
    /// `timeout` (at most [`MAX_WAIT`]).
    ///
    /// With no verifier at all, "every one of them" would hold the epoch
    /// vacuously, and "0 of 0" would hide a missing fleet: that ends the
    /// wait at once, not reached (brokers that did not answer may have
    /// verifiers, so then the wait goes on).
    pub async fn wait_propagated(&self, epoch: u64, share: Share, timeout: Duration) -> Waited {
        let timeout = timeout.min(MAX_WAIT);
        let started = tokio::time::Instant::now();
        loop {
            let (report, unreachable) = self.cluster_report().await;
            let progress = Progress::of(&report, unreachable, epoch);
            let waited = started.elapsed();
            if progress.subscribed == 0 && progress.unreachable.is_empty() {
                let reason = format!(
                    "epoch {epoch} is committed, but no verifier is subscribed to the feed, so --wait cannot confirm that any applied it; start verifiers (`lapse verifier --brokers ...`) or leave out --wait"
                );
                return Waited::NotReached {
                    progress,
                    waited,
                    reason,
                };
            }
            if progress.enough(share) {
                let after_commit = self.commit_ms(epoch).map(|committed| {
                    Duration::from_millis(self.cluster_now().saturating_sub(committed))
                });
                return Waited::Reached {
                    progress,
                    waited,
                    after_commit,
                };
            }
            if waited >= timeout {
                let reason = shortfall(epoch, &progress, timeout);
                return Waited::NotReached {
                    progress,
                    waited,
                    reason,
                };
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl FeedHub {
    /// When the revocation that made `epoch` was committed (cluster time).
    fn commit_ms(&self, epoch: u64) -> Option<u64> {
        self.core.view().read(|a| {
            lapse_ledger::feed::revocations_since(&a.ledger, epoch.saturating_sub(1))
                .get(&epoch)
                .copied()
        })
    }
}

/// Who is missing when a wait timed out.
fn shortfall(epoch: u64, progress: &Progress, timeout: Duration) -> String {
    let shown = progress
        .missing
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = match progress.missing.len().saturating_sub(NAMED) {
        0 => String::new(),
        more => format!(" and {more} more"),
    };
    let brokers = if progress.unreachable.is_empty() {
        String::new()
    } else {
        format!(
            "; brokers {:?} did not answer, so their verifiers are unknown",
            progress.unreachable
        )
    };
    format!(
        "epoch {epoch} is committed but held by only {} of {} subscribed verifiers after {} s; missing: {shown}{more}{brokers}",
        progress.holding,
        progress.subscribed,
        timeout.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::propagation::VerifierRecord;

    fn report(verifiers: &[(&str, u64, u32, u64)]) -> LocalReport {
        LocalReport {
            now_ms: 100_000,
            verifiers: verifiers
                .iter()
                .map(|(id, acked, connections, last_seen_ms)| {
                    let record = VerifierRecord {
                        acked_epoch: *acked,
                        connections: *connections,
                        last_seen_ms: *last_seen_ms,
                        ..VerifierRecord::default()
                    };
                    (id.to_string(), record)
                })
                .collect(),
            ..LocalReport::default()
        }
    }

    #[test]
    fn a_verifier_gone_longer_than_the_grace_does_not_count_and_shares_are_judged_on_the_rest() {
        let report = report(&[
            ("a", 7, 1, 99_000),
            ("b", 6, 1, 99_000),
            // Gone for 1 s: moving to another broker, still counted.
            ("c", 7, 0, 99_000),
            // Gone for 10 s: not counted.
            ("d", 1, 0, 90_000),
        ]);
        let progress = Progress::of(&report, Vec::new(), 7);
        assert_eq!(progress.subscribed, 3);
        assert_eq!(progress.holding, 2);
        assert_eq!(progress.missing, vec!["b".to_string()]);
        assert!(!progress.enough(Share::All));
        assert!(progress.enough(Share::Percent(66.0)));
        assert!(!progress.enough(Share::Percent(67.0)));
        let unknown = Progress::of(&report, vec![3], 6);
        assert_eq!(unknown.holding, 3);
        assert!(!unknown.enough(Share::All), "a broker that did not answer");
    }

    #[test]
    fn a_shortfall_names_twenty_and_counts_the_rest() {
        let progress = Progress {
            holding: 1,
            subscribed: 26,
            missing: (0..25).map(|i| format!("v{i}")).collect(),
            unreachable: vec![2],
        };
        let text = shortfall(9, &progress, Duration::from_secs(30));
        assert!(text.starts_with("epoch 9 is committed but held by only 1 of 26"));
        assert!(text.contains("v19 and 5 more"));
        assert!(!text.contains("v20"));
        assert!(text.ends_with("brokers [2] did not answer, so their verifiers are unknown"));
    }
}
