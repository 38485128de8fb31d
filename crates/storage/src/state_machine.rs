//! The state-machine store: the ledger in memory, snapshots in a vault.
//!
//! Applying does not touch the disk. Snapshots do: one is saved durably
//! before it is used, and on restart openraft installs the saved snapshot and
//! re-applies the log from there up to the saved committed index.

use std::io;
use std::sync::{Arc, RwLock};

use futures::{Stream, TryStreamExt};
use lapse_ledger::LedgerState;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};

use crate::file_vault::FileSnapshotVault;
use crate::io_error;
use crate::mem::MemSnapshotVault;
use crate::types::{LogId, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// Where snapshots rest.
#[derive(Clone)]
pub enum SnapshotVault {
    File(FileSnapshotVault),
    Memory(MemSnapshotVault),
}

impl SnapshotVault {
    async fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        match self {
            Self::File(vault) => vault.save(meta, data).await,
            Self::Memory(vault) => vault.save(meta, data).await,
        }
    }

    async fn load(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        match self {
            Self::File(vault) => vault.load().await,
            Self::Memory(vault) => vault.load().await,
        }
    }
}

/// What the state machine holds: the ledger, plus what openraft needs.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub ledger: LedgerState,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Digests of this replica's state at recent checkpoint indices.
    pub checkpoints: Checkpoints,
}

/// How many checkpoint digests a replica keeps.
pub const CHECKPOINTS_KEPT: usize = 32;

/// The digest of the applied state at every log index that is a multiple
/// of the checkpoint interval, the last [`CHECKPOINTS_KEPT`] of them. Every
/// replica that applies the same log computes the same digests at the same
/// indices, so brokers compare them to detect a replica that diverged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoints {
    digests: std::collections::BTreeMap<u64, crate::types::Sha256Digest>,
}

impl Checkpoints {
    pub fn record(&mut self, index: u64, digest: crate::types::Sha256Digest) {
        self.digests.insert(index, digest);
        while self.digests.len() > CHECKPOINTS_KEPT {
            self.digests.pop_first();
        }
    }

    /// (index, digest), oldest first.
    pub fn list(&self) -> Vec<(u64, crate::types::Sha256Digest)> {
        self.digests.iter().map(|(i, d)| (*i, *d)).collect()
    }
}

/// A read handle on the applied state, for status and the feed. Cheap to
/// clone; `changes()` wakes watchers after every applied batch.
#[derive(Clone)]
pub struct LedgerView {
    applied: Arc<RwLock<Applied>>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl LedgerView {
    /// Run `f` on the applied state under the read lock.
    pub fn read<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        f(&self.applied.read().expect("state lock"))
    }

    /// A receiver that sees the last applied log index change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

pub use Applied as AppliedState;

/// The openraft state machine for the ledger.
#[derive(Clone)]
pub struct StateMachineStore {
    view: LedgerView,
    vault: SnapshotVault,
    initial: LedgerState,
    apply_delay: Option<ApplyDelay>,
    /// Record a checkpoint digest at every index divisible by this; 0: none.
    checkpoint_every: u64,
}

/// Asked before each batch of committed entries is applied; an answer
/// holds the batch that long. Only simulation sets one.
pub type ApplyDelay = Arc<dyn Fn() -> Option<std::time::Duration> + Send + Sync>;

impl StateMachineStore {
    /// A state machine that starts from `initial` (empty ledger with the
    /// cluster's parameters) until a snapshot or the log says otherwise.
    pub fn new(initial: LedgerState, vault: SnapshotVault) -> Self {
        let (changes, _) = tokio::sync::watch::channel(0);
        Self {
            view: LedgerView {
                applied: Arc::new(RwLock::new(Applied {
                    ledger: initial.clone(),
                    ..Applied::default()
                })),
                changes,
            },
            vault,
            initial,
            apply_delay: None,
            checkpoint_every: 0,
        }
    }

    /// Record the state's digest at every log index divisible by `every`
    /// (0 records none), for comparing replicas.
    pub fn with_checkpoints(mut self, every: u64) -> Self {
        self.checkpoint_every = every;
        self
    }

    /// Hold each batch before applying it for as long as `delay` says: a
    /// fault point for simulation.
    pub fn with_apply_delay(mut self, delay: ApplyDelay) -> Self {
        self.apply_delay = Some(delay);
        self
    }

    pub fn view(&self) -> LedgerView {
        self.view.clone()
    }

    /// Forget the in-memory state, as a process restart would; used by the
    /// in-memory crash model. The vault keeps its snapshot.
    pub fn crash(&self) {
        *self.view.applied.write().expect("state lock") = Applied {
            ledger: self.initial.clone(),
            ..Applied::default()
        };
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (ledger, last_log_id, last_membership) = self.view.read(|applied| {
            (
                applied.ledger.clone(),
                applied.last_applied,
                applied.membership.clone(),
            )
        });
        let data = ledger.to_snapshot();
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
        };
        self.vault.save(&meta, &data).await?;
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok(self
            .view
            .read(|applied| (applied.last_applied, applied.membership.clone())))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        if let Some(delay) = self.apply_delay.as_ref().and_then(|hook| hook()) {
            tokio::time::sleep(delay).await;
        }
        let mut last_index = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            let (log_id, index) = (entry.log_id, entry.log_id.index());
            let response = {
                let mut applied = self.view.applied.write().expect("state lock");
                // The entry is ours: what it carries moves into the state.
                let response = match entry.payload {
                    EntryPayload::Blank => {
                        applied.ledger.apply_internal(index);
                        None
                    }
                    EntryPayload::Normal(proposal) => {
                        Some(applied.ledger.apply_owned(index, proposal))
                    }
                    EntryPayload::Membership(membership) => {
                        applied.ledger.apply_internal(index);
                        applied.membership = StoredMembership::new(Some(log_id), membership);
                        None
                    }
                };
                applied.last_applied = Some(log_id);
                if self.checkpoint_every > 0 && index % self.checkpoint_every == 0 {
                    let digest = applied.ledger.digest();
                    applied.checkpoints.record(index, digest);
                }
                response
            };
            last_index = Some(index);
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        if let Some(index) = last_index {
            self.view.changes.send_replace(index);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let ledger = LedgerState::from_snapshot(&snapshot).map_err(io_error)?;
        let index = meta.last_log_id.as_ref().map(|id| id.index());
        if ledger.last_applied_index != index {
            return Err(io_error(format!(
                "snapshot holds ledger state at index {:?} but its metadata says {index:?}",
                ledger.last_applied_index
            )));
        }
        self.vault.save(meta, &snapshot).await?;
        {
            let mut applied = self.view.applied.write().expect("state lock");
            applied.ledger = ledger;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
        }
        self.view.changes.send_replace(index.unwrap_or(0));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .vault
            .load()
            .await?
            .map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}
