//! `AddLearner`, `Promote` and `RemoveNode`: admin membership changes,
//! made by the leader through [`crate::core::Core::change_membership`].

use lapse_wire::cluster as pb;
use tonic::{Request, Response, Status};

use super::ClusterService;
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
        self.authorize(&request)?;
        let request = request.into_inner();
        if self.core.tls().is_some() {
            // Raft traffic goes only to a broker whose certificate names
            // the node being added.
            super::join::probe(&self.core, request.node_id, &request.address).await?;
        }
        self.change(MembershipChange::AddLearner {
            node_id: request.node_id,
            address: request.address,
        })
        .await
    }

    pub(super) async fn promote_node(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.authorize(&request)?;
        let node_id = request.into_inner().node_id;
        self.change(MembershipChange::Promote { node_id }).await
    }

    pub(super) async fn remove(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.authorize(&request)?;
        let node_id = request.into_inner().node_id;
        self.change(MembershipChange::Remove { node_id }).await
    }
}
