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
        AsyncRuntime = Runtime,
);

/// Tokio, with openraft's own random choices (election timeouts, first
/// tick waits) drawn from a seed instead of the thread's OS-seeded
/// generator. Production seeds it from the OS random source; simulation
/// seeds it from the run's seed, so elections replay exactly. Start Raft
/// inside [`Runtime::scope`] (see [`start_raft_scope`]).
pub type Runtime = openraft::rt::deterministic_rng::DeterministicRng<openraft::impls::TokioRuntime>;

/// Run `future` (which starts Raft) with openraft's random choices seeded
/// by `seed`. Every task Raft spawns inherits a seed derived from it.
pub async fn start_raft_scope<F: std::future::Future>(seed: u64, future: F) -> F::Output {
    Runtime::scope(seed, future).await
}

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
