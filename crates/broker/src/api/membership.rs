//! `AddLearner`, `Promote` and `RemoveNode`: admin membership changes,
//! made by the leader through [`crate::core::Core::change_membership`].

use lapse_wire::cluster as pb;
use tonic::{Request, Response, Status};

use super::ClusterService;
use crate::access::Action;
use crate::membership::{MembershipChange, MembershipView};

/// Voters and learners on the wire.
pub(super) fn members(view: &MembershipView) -> (Vec<pb::Member>, Vec<pb::Member>) {
    let wire = |members: &[(u64, String)]| {
        members
            .iter()
            .map(|(id, address)| pb::Member {
                node_id: *id,
                address: address.clone(),
            })
            .collect()
    };
    (wire(&view.voters), wire(&view.learners))
}

fn reply(view: MembershipView) -> Response<pb::MembershipResponse> {
    let (voters, learners) = members(&view);
    Response::new(pb::MembershipResponse {
        log_index: view.log_index,
        voters,
        learners,
    })
}

impl ClusterService {
    async fn change(
        &self,
        change: MembershipChange,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        Ok(reply(self.core.change_membership(change).await?))
    }

    pub(super) async fn add_learner_node(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let authorization = self.permit(&request, Action::Membership, None)?;
        let request = request.into_inner();
        let what = format!(
            "add learner {} at {}",
            request.node_id,
            if request.address.len() <= crate::membership::MAX_ADDRESS_BYTES {
                request.address.as_str()
            } else {
                "(an address too long to record)"
            }
        );
        let result = async {
            // Before the probe, so nothing is dialled that could not be a
            // member; a learner already at this address is a change too
            // (an admin's add is not a retried join).
            let membership = self.core.membership();
            if let Some(refused) = membership.refuse_learner(request.node_id, &request.address) {
                return Err(refused.into());
            }
            if membership.is_learner(request.node_id) {
                return Err(Status::already_exists(format!(
                    "node {} is already a learner at {}",
                    request.node_id, request.address
                )));
            }
            if self.core.tls().is_some() {
                // Raft traffic goes only to a broker whose certificate
                // names the node being added.
                super::join::probe(&self.core, request.node_id, &request.address).await?;
            }
            self.change(MembershipChange::AddLearner {
                node_id: request.node_id,
                address: request.address,
            })
            .await
        }
        .await;
        self.audited(authorization, what, result).await
    }

    pub(super) async fn promote_node(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let authorization = self.permit(&request, Action::Membership, None)?;
        let node_id = request.into_inner().node_id;
        let result = self.change(MembershipChange::Promote { node_id }).await;
        self.audited(authorization, format!("promote {node_id}"), result)
            .await
    }

    pub(super) async fn remove(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let authorization = self.permit(&request, Action::Membership, None)?;
        let node_id = request.into_inner().node_id;
        let result = self.change(MembershipChange::Remove { node_id }).await;
        self.audited(authorization, format!("remove {node_id}"), result)
            .await
    }

    /// Record a membership change in the control-plane audit, then answer.
    async fn audited<T>(
        &self,
        authorization: lapse_ledger::Authorization,
        what: String,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let outcome = match &result {
            Ok(_) => Ok(what),
            Err(status) => Err(format!("{what}: {}", status.message())),
        };
        self.record_action(authorization, outcome).await;
        result
    }
}
