//! Membership changes. The leader makes them through Raft; any other
//! broker forwards them to the leader over the peer link, as it forwards
//! writes.

use std::collections::BTreeSet;

use lapse_storage::Node;
use openraft::ChangeMembers;

use super::Core;
use crate::error::BrokerError;
use crate::membership::{MembershipChange, MembershipView};

impl Core {
    /// The membership this broker has applied.
    pub fn membership(&self) -> MembershipView {
        let metrics = self.raft_metrics();
        let leader = metrics.current_leader.unwrap_or_default();
        MembershipView::of(
            metrics.membership_config.log_id().map_or(0, |l| l.index()),
            leader,
            metrics.membership_config.membership(),
        )
    }

    /// Make `change` on the leader, wherever it is, and return the
    /// membership once the change is committed.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<MembershipView, BrokerError> {
        match self.leader() {
            (Some(id), _) if id == self.id => self.change_membership_here(change).await,
            (Some(leader), Some(address)) => {
                self.channels
                    .change_membership(
                        crate::link::Peer::member(leader, &address),
                        &change,
                        self.config.write_timeout(),
                    )
                    .await
            }
            _ => Err(BrokerError::Unavailable(
                "no leader is known; retry shortly".into(),
            )),
        }
    }

    /// Make `change` on this broker, which must be the leader. Used for
    /// changes forwarded from peers, so a change is never forwarded twice.
    pub async fn change_membership_here(
        &self,
        change: MembershipChange,
    ) -> Result<MembershipView, BrokerError> {
        let current = self.membership();
        let written = match change {
            MembershipChange::AddLearner { node_id, address } => {
                if let Some(refused) = current.refuse_learner(node_id, &address) {
                    return Err(refused);
                }
                self.raft
                    .add_learner(node_id, Node { addr: address }, false)
                    .await
                    .map_err(|e| match e.forward_to_leader() {
                        Some(_) => BrokerError::Unavailable(format!(
                            "leadership moved during the change; retry ({e})"
                        )),
                        None => BrokerError::Precondition(e.to_string()),
                    })?
            }
            MembershipChange::Promote { node_id } => {
                if current.is_voter(node_id) {
                    return Err(BrokerError::Exists(format!(
                        "node {node_id} is already a voter"
                    )));
                }
                if !current.is_learner(node_id) {
                    return Err(BrokerError::NotFound(format!(
                        "node {node_id} is not a learner of this cluster; add or join it first"
                    )));
                }
                self.change(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])))
                    .await?
            }
            MembershipChange::Remove { node_id } => {
                let ids = BTreeSet::from([node_id]);
                if current.is_voter(node_id) {
                    if current.voters.len() == 1 {
                        return Err(BrokerError::Precondition(
                            "cannot remove the last voter".into(),
                        ));
                    }
                    self.change(ChangeMembers::RemoveVoters(ids)).await?
                } else if current.is_learner(node_id) {
                    self.change(ChangeMembers::RemoveNodes(ids)).await?
                } else {
                    return Err(BrokerError::NotFound(format!(
                        "node {node_id} is not a member"
                    )));
                }
            }
        };
        Ok(match written.membership {
            Some(membership) => MembershipView::of(written.log_id.index(), self.id, &membership),
            None => MembershipView {
                log_index: written.log_id.index(),
                leader_id: self.id,
                ..self.membership()
            },
        })
    }

    async fn change(
        &self,
        change: ChangeMembers<u64, Node>,
    ) -> Result<openraft::raft::ClientWriteResponse<lapse_storage::TypeConfig>, BrokerError> {
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| match e.forward_to_leader() {
                Some(_) => {
                    BrokerError::Unavailable("leadership moved during the change; retry".into())
                }
                None => BrokerError::Precondition(e.to_string()),
            })
    }
}
