//! The openraft type configuration shared by the stores and the broker.

use openraft::BasicNode;

openraft::declare_raft_types!(
    /// Lapse's Raft types: log entries carry ledger proposals, and applying
    /// one answers with the ledger's response (none for blank and membership
    /// entries).
    pub TypeConfig:
        D = lapse_ledger::Proposal,
        R = Option<lapse_ledger::Response>,
        NodeId = u64,
        Node = BasicNode,
);

pub type NodeId = u64;
pub type Node = BasicNode;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, Node>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot travels and rests as the ledger's self-checking snapshot bytes.
pub type SnapshotData = Vec<u8>;
pub type Raft = openraft::Raft<TypeConfig, crate::StateMachineStore>;
pub type Sha256Digest = lapse_ledger::Sha256;
