//! `Status`: what this broker knows of itself and the cluster. For brokers
//! (a joining broker is probed with it) and operators the access policy
//! lets read the status.

use lapse_wire::cluster as pb;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use super::ClusterService;
use crate::feed::freshness::FreshnessReport;

impl ClusterService {
    pub(super) async fn node_status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.permit_read(&request, crate::access::Action::ReadStatus)?;
        let core = &self.core;
        let metrics = core.raft_metrics();
        let view = core.membership();
        let (voters, learners) = super::membership::members(&view);
        let (applied_index, digest) = core.digest();
        let (cluster_time_ms, revocation_epoch) = core
            .view()
            .read(|a| (a.ledger.cluster_time_ms, a.ledger.revocation_epoch));
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let replication = metrics
            .replication
            .iter()
            .flatten()
            .map(|(id, matched)| pb::Replication {
                node_id: *id,
                matched_index: matched.as_ref().map(|l| l.index()),
            })
            .collect();
        Ok(Response::new(pb::StatusResponse {
            node_id: core.id(),
            address: core.address().to_owned(),
            role: role.into(),
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            leader_address: metrics
                .current_leader
                .and_then(|id| view.address_of(id).map(str::to_owned))
                .unwrap_or_default(),
            voters,
            learners,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            committed_index: metrics.local_committed.map(|l| l.index()).unwrap_or(0),
            applied_index: applied_index.unwrap_or(0),
            state_digest: hex::encode(digest),
            cluster_time_ms,
            revocation_epoch,
            replication,
            snapshot_index: metrics.snapshot.map(|l| l.index()).unwrap_or(0),
            divergences: core
                .replicas()
                .divergences()
                .into_iter()
                .map(|d| pb::Divergence {
                    peer_id: d.peer,
                    index: d.index,
                    own_digest: hex::encode(d.own_digest),
                    peer_digest: hex::encode(d.peer_digest),
                    detected_at_ms: d.detected_at_ms,
                })
                .collect(),
            freshness: Some(freshness(self.feed.freshness_report())),
            certificate_expires_at_ms: certificate_expiry_ms(core),
            break_glass: {
                let now = core.cluster_now();
                core.view().read(|a| {
                    a.ledger
                        .grants
                        .iter()
                        .filter(|(_, g)| g.in_force(now))
                        .map(|(id, g)| super::roles::grant_info(*id, g, now))
                        .collect()
                })
            },
        }))
    }
}

/// When this broker's TLS certificate expires (ms since the epoch), 0
/// without TLS.
pub fn certificate_expiry_ms(core: &crate::core::Core) -> u64 {
    core.tls()
        .and_then(|tls| tls.credentials().cert.as_ref().map(|c| c.not_after))
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn freshness(report: FreshnessReport) -> pb::Freshness {
    pb::Freshness {
        problem: report.problem.unwrap_or_default(),
        withheld_reason: report.withheld_reason.unwrap_or_default(),
        withheld_for_ms: report.withheld_for_ms,
        withheld_total: report.withheld_total,
        slowest_confirmation_ms: report.slowest_confirmation_ms,
        heartbeat_ms: report.heartbeat_ms,
        verifier_staleness_ms: report.verifier_staleness_ms,
    }
}
