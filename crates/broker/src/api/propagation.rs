//! `Propagation`: how long revocations took to reach verifiers, merged
//! from every broker's report; `WaitPropagated`: wait for an epoch to
//! reach them (the waiting itself is [`crate::feed::wait`]).

use std::collections::BTreeMap;
use std::time::Duration;

use lapse_wire::cluster as pb;
use tonic::{Request, Response, Status};

use super::{ClusterService, invalid};
use crate::feed::histogram::Histogram;
use crate::feed::propagation::VerifierRecord;
use crate::feed::wait::{MAX_WAIT, Share, Waited};

fn delay_summary(region: &str, histogram: &Histogram, verifiers: u32) -> pb::DelaySummary {
    let ms = |us: u64| us as f64 / 1000.0;
    pb::DelaySummary {
        region: region.to_owned(),
        samples: histogram.count(),
        p50_ms: ms(histogram.quantile_us(0.5)),
        p99_ms: ms(histogram.quantile_us(0.99)),
        max_ms: ms(histogram.max_us()),
        verifiers,
    }
}

/// Verifiers a summary report names at most.
const SUMMARY_LISTED: usize = 100;

impl ClusterService {
    pub(super) async fn propagation_report(
        &self,
        request: Request<pb::PropagationRequest>,
    ) -> Result<Response<pb::PropagationResponse>, Status> {
        self.permit(&request, crate::access::Action::ReadPropagation, None)?;
        let asked = request.into_inner();
        let epoch = match asked.epoch {
            0 => self.feed.current_epoch(),
            asked => asked,
        };
        let (report, unreachable_brokers) = self.feed.cluster_report().await;
        let mut per_region: BTreeMap<&str, u32> = BTreeMap::new();
        for record in report.verifiers.values() {
            *per_region.entry(record.region.as_str()).or_default() += 1;
        }
        let mut overall = Histogram::default();
        let regions = report
            .regions
            .iter()
            .map(|(region, histogram)| {
                overall.merge(histogram);
                let verifiers = per_region.get(region.as_str()).copied().unwrap_or(0);
                delay_summary(region, histogram, verifiers)
            })
            .collect();
        let holds = |acked: u64| acked >= epoch;
        let holding = report
            .verifiers
            .values()
            .filter(|record| holds(record.acked_epoch))
            .count();
        let connected = report
            .verifiers
            .values()
            .filter(|record| record.connections > 0)
            .count();
        // With `summary`, the lagging and the gone only, a bounded number.
        let listed = |record: &&VerifierRecord| {
            !asked.summary || !holds(record.acked_epoch) || record.connections == 0
        };
        let most = if asked.summary {
            SUMMARY_LISTED
        } else {
            usize::MAX
        };
        let unlisted = report
            .verifiers
            .values()
            .filter(listed)
            .count()
            .saturating_sub(most);
        let verifiers = report
            .verifiers
            .iter()
            .filter(|(_, record)| listed(record))
            .take(most)
            .map(|(id, record)| pb::VerifierProgress {
                verifier_id: id.clone(),
                region: record.region.clone(),
                broker_id: record.broker_id,
                acked_epoch: record.acked_epoch,
                connected: record.connections > 0,
                since_ack_ms: report.now_ms.saturating_sub(record.last_seen_ms),
                delay: Some(delay_summary(&record.region, &record.delays, 1)),
                last_ms: record.last_us as f64 / 1000.0,
            })
            .collect();
        Ok(Response::new(pb::PropagationResponse {
            epoch,
            current_epoch: self.feed.current_epoch(),
            verifiers,
            overall: Some(delay_summary("", &overall, report.verifiers.len() as u32)),
            regions,
            unreachable_brokers,
            verifier_count: report.verifiers.len() as u32,
            holding: holding as u32,
            connected: connected as u32,
            unlisted: unlisted as u32,
        }))
    }
}

/// Waits asked for with no timeout.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// Verifiers named in a `WaitPropagated` answer.
const NAMED: usize = 20;

impl ClusterService {
    pub(super) async fn wait(
        &self,
        request: Request<pb::WaitPropagatedRequest>,
    ) -> Result<Response<pb::WaitPropagatedResponse>, Status> {
        self.permit(&request, crate::access::Action::ReadPropagation, None)?;
        let request = request.into_inner();
        let share = match request.share_percent {
            0.0 => Share::All,
            p if p > 0.0 && p <= 100.0 => Share::Percent(p),
            p => return Err(invalid("share_percent", format!("{p} is not in (0, 100]"))),
        };
        let timeout = match request.timeout_ms {
            0 => DEFAULT_WAIT,
            ms if ms > MAX_WAIT.as_millis() as u64 => {
                return Err(invalid(
                    "timeout_ms",
                    format!("at most {}", MAX_WAIT.as_millis()),
                ));
            }
            ms => Duration::from_millis(ms),
        };
        let waited = self
            .feed
            .wait_propagated(request.epoch, share, timeout)
            .await;
        let (reached, progress, waited, after_commit, reason) = match waited {
            Waited::Reached {
                progress,
                waited,
                after_commit,
            } => (true, progress, waited, after_commit, String::new()),
            Waited::NotReached {
                progress,
                waited,
                reason,
            } => (false, progress, waited, None, reason),
        };
        Ok(Response::new(pb::WaitPropagatedResponse {
            reached,
            holding: progress.holding as u32,
            subscribed: progress.subscribed as u32,
            waited_ms: waited.as_millis() as u64,
            after_commit_ms: after_commit.map(|d| d.as_millis() as u64),
            missing_count: progress.missing.len() as u32,
            missing: progress.missing.into_iter().take(NAMED).collect(),
            unreachable_brokers: progress.unreachable,
            reason,
        }))
    }
}
