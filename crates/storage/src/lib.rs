//! openraft storage for Lapse.
//!
//! Two log stores, [`SledLogStore`] (production: sled 0.34, acknowledged only
//! after a blocking `flush()` on one dedicated thread) and [`MemLogStore`]
//! (simulation: in memory, loses unflushed writes on [`MemLogStore::crash`]),
//! and one state-machine store, [`StateMachineStore`], that keeps the ledger
//! in memory and its snapshots in a [`SnapshotVault`] (files or memory).

mod file_vault;
mod mem;
mod sled_store;
mod state_machine;
mod types;

pub use file_vault::FileSnapshotVault;
pub use mem::{FlushPolicy, MemLogStore, MemSnapshotVault};
pub use sled_store::{SledLogStore, open_sled};
pub use state_machine::{
    AppliedState, ApplyDelay, CHECKPOINTS_KEPT, Checkpoints, LedgerView, SnapshotVault,
    StateMachineStore,
};
pub use types::{
    Entry, LogId, Membership, Node, NodeId, Raft, Runtime, Sha256Digest, SnapshotData,
    SnapshotMeta, StoredMembership, TypeConfig, Vote, start_raft_scope,
};

/// Wrap any error as an `io::Error`, the error type openraft's storage traits use.
pub(crate) fn io_error(error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(error.to_string())
}
