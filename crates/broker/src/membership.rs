//! Membership changes as the broker's services ask for them, and the
//! membership that results: plain values, carried to the leader over the
//! peer link like any other write.

use serde::{Deserialize, Serialize};

/// One change to the cluster's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a broker that will receive the log but not vote.
    AddLearner { node_id: u64, address: String },
    /// Make a learner a voter.
    Promote { node_id: u64 },
    /// Remove a voter or a learner.
    Remove { node_id: u64 },
}

/// The membership after a change, with the log index it was committed at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    pub log_index: u64,
    /// The broker that made the change: the leader at the time.
    pub leader_id: u64,
    /// `(node id, address)` of each voter.
    pub voters: Vec<(u64, String)>,
    /// `(node id, address)` of each learner.
    pub learners: Vec<(u64, String)>,
}

impl MembershipView {
    /// The view of an openraft membership.
    pub fn of(log_index: u64, leader_id: u64, membership: &lapse_storage::Membership) -> Self {
        let member = |id: u64| {
            let address = membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            (id, address)
        };
        Self {
            log_index,
            leader_id,
            voters: membership.voter_ids().map(member).collect(),
            learners: membership.learner_ids().map(member).collect(),
        }
    }

    pub fn is_voter(&self, node_id: u64) -> bool {
        self.voters.iter().any(|(id, _)| *id == node_id)
    }

    pub fn is_learner(&self, node_id: u64) -> bool {
        self.learners.iter().any(|(id, _)| *id == node_id)
    }

    /// The address of a member, voter or learner.
    pub fn address_of(&self, node_id: u64) -> Option<&str> {
        self.voters
            .iter()
            .chain(&self.learners)
            .find(|(id, _)| *id == node_id)
            .map(|(_, address)| address.as_str())
    }
}
