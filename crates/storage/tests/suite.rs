//! openraft's storage test suite, run against both log stores.

use lapse_ledger::LedgerState;
use lapse_storage::{
    FileSnapshotVault, FlushPolicy, MemLogStore, MemSnapshotVault, SledLogStore, SnapshotVault,
    StateMachineStore, TypeConfig, open_sled, start_raft_scope,
};
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

struct SledBuilder;

impl StoreBuilder<TypeConfig, SledLogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, SledLogStore, StateMachineStore), StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = open_sled(&dir.path().join("log")).expect("open sled");
        let vault = FileSnapshotVault::open(&dir.path().join("snapshots")).expect("vault");
        let machine = StateMachineStore::new(LedgerState::default(), SnapshotVault::File(vault));
        Ok((dir, log, machine))
    }
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachineStore, ()> for MemBuilder {
    async fn build(
        &self,
    ) -> Result<((), MemLogStore, StateMachineStore), StorageError<TypeConfig>> {
        let machine = StateMachineStore::new(
            LedgerState::default(),
            SnapshotVault::Memory(MemSnapshotVault::default()),
        );
        Ok(((), MemLogStore::new(FlushPolicy::FlushBeforeAck), machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_passes_the_openraft_suite() -> Result<(), StorageError<TypeConfig>> {
    // The stores run under Lapse's seeded runtime, as in the broker.
    start_raft_scope(7, Suite::test_all(SledBuilder)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_openraft_suite() -> Result<(), StorageError<TypeConfig>> {
    // The stores run under Lapse's seeded runtime, as in the broker.
    start_raft_scope(7, Suite::test_all(MemBuilder)).await
}
