//! What survives a crash: the memory store's crash model, the deliberately
//! broken acknowledge-before-flush variant, and sled across a reopen.

use lapse_credential::StatusIndex;
use lapse_ledger::{Command, LedgerState, Proposal, RequestId, Revocation};
use lapse_storage::{Entry, FlushPolicy, MemLogStore, TypeConfig, Vote, open_sled};
use openraft::RaftLogReader;
use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::common::{blank_ent, log_id};

fn proposal_entry(index: u64) -> Entry {
    Entry::new_normal(
        log_id::<TypeConfig>(1, 1, index),
        Proposal {
            request_id: RequestId::new(format!("r{index}")).unwrap(),
            stamped_at_ms: 1000 + index,
            command: Command::Revoke(Revocation::Index(StatusIndex(index))),
        },
    )
}

async fn append_and_wait<S: RaftLogStorage<TypeConfig>>(store: &mut S, entries: Vec<Entry>) {
    store.blocking_append(entries).await.unwrap();
}

async fn indexes<S: RaftLogReader<TypeConfig>>(store: &mut S) -> Vec<u64> {
    store
        .try_get_log_entries(0..100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.index())
        .collect()
}

#[tokio::test]
async fn memory_store_crash_loses_only_unflushed_writes() {
    let mut store = MemLogStore::new(FlushPolicy::FlushBeforeAck);
    let vote = Vote::new(1, 1);
    store.save_vote(&vote).await.unwrap();
    append_and_wait(
        &mut store,
        vec![blank_ent::<TypeConfig>(1, 1, 0), proposal_entry(1)],
    )
    .await;
    // Saving the committed index is not flushed by itself.
    store
        .save_committed(Some(log_id::<TypeConfig>(1, 1, 1)))
        .await
        .unwrap();
    assert_eq!(store.unflushed_writes(), 1);

    store.crash();
    assert_eq!(indexes(&mut store).await, vec![0, 1]);
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), None);
}

#[tokio::test]
async fn acknowledging_before_flushing_loses_acknowledged_entries() {
    let mut store = MemLogStore::new(FlushPolicy::AckWithoutFlush);
    append_and_wait(
        &mut store,
        vec![blank_ent::<TypeConfig>(1, 1, 0), proposal_entry(1)],
    )
    .await;
    assert_eq!(indexes(&mut store).await, vec![0, 1]);
    store.crash();
    assert_eq!(
        indexes(&mut store).await,
        Vec::<u64>::new(),
        "the broken store should lose them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_keeps_acknowledged_entries_and_vote_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new(3, 2);
    {
        let mut store = open_sled(dir.path()).unwrap();
        store.save_vote(&vote).await.unwrap();
        append_and_wait(&mut store, (1..=50).map(proposal_entry).collect()).await;
        store
            .truncate_after(Some(log_id::<TypeConfig>(1, 1, 40)))
            .await
            .unwrap();
        store.purge(log_id::<TypeConfig>(1, 1, 10)).await.unwrap();
    }
    let mut store = open_sled(dir.path()).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(indexes(&mut store).await, (11..=40).collect::<Vec<_>>());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index()), Some(10));
    assert_eq!(state.last_log_id.map(|l| l.index()), Some(40));
    // The entries decode to what was written.
    let entries = store.try_get_log_entries(11..12).await.unwrap();
    let mut ledger = LedgerState::default();
    if let openraft::EntryPayload::Normal(proposal) = &entries[0].payload {
        assert_eq!(proposal.request_id.as_str(), "r11");
        ledger.apply(11, proposal);
    } else {
        panic!("expected a proposal");
    }
}
