//! The in-memory log store with a crash model, for simulation and tests.
//!
//! Every write lands in `current` and is queued as pending; a flush applies
//! the pending writes to `durable`. [`MemLogStore::crash`] throws away
//! `current` and the pending writes, leaving what a disk would have kept.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, RaftTypeConfig};

use crate::types::{Entry, LogId, SnapshotMeta, TypeConfig, Vote};

/// When appends are made durable relative to acknowledging them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// Flush, then acknowledge: what a correct store does.
    #[default]
    FlushBeforeAck,
    /// Acknowledge without flushing: a deliberately broken store, used to
    /// show that the simulation's invariants catch lost acknowledged writes.
    AckWithoutFlush,
}

#[derive(Debug, Clone, Default)]
struct LogData {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

#[derive(Debug, Clone)]
enum Write {
    Vote(Vote),
    Committed(Option<LogId>),
    Append(Vec<Entry>),
    TruncateAfter(u64),
    Purge(LogId),
}

impl LogData {
    fn write(&mut self, write: Write) {
        match write {
            Write::Vote(vote) => self.vote = Some(vote),
            Write::Committed(committed) => self.committed = committed,
            Write::Append(entries) => {
                for entry in entries {
                    self.entries.insert(entry.log_id.index(), entry);
                }
            }
            Write::TruncateAfter(from) => {
                self.entries.split_off(&from);
            }
            Write::Purge(log_id) => {
                self.entries = self.entries.split_off(&(log_id.index() + 1));
                self.last_purged = Some(log_id);
            }
        }
    }
}

#[derive(Default)]
struct MemLog {
    current: LogData,
    durable: LogData,
    pending: Vec<Write>,
    /// Set by [`MemLogStore::hold_flushes`]: appends stay unflushed and
    /// unacknowledged, as on a disk whose flushes stall.
    held: bool,
    /// The acknowledgements of appends made while held; a crash drops them.
    held_callbacks: Vec<IOFlushed<TypeConfig>>,
}

impl Debug for MemLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemLog")
            .field("pending", &self.pending.len())
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl MemLog {
    fn write(&mut self, write: Write) {
        self.current.write(write.clone());
        self.pending.push(write);
    }

    fn flush(&mut self) {
        for write in self.pending.drain(..) {
            self.durable.write(write);
        }
    }

    /// Flush, and acknowledge the appends held until now.
    fn flush_all(&mut self) {
        self.flush();
        for callback in self.held_callbacks.drain(..) {
            callback.io_completed(Ok(()));
        }
    }
}

/// An in-memory Raft log that can be crashed.
#[derive(Debug, Clone, Default)]
pub struct MemLogStore {
    log: Arc<Mutex<MemLog>>,
    policy: FlushPolicy,
}

impl MemLogStore {
    pub fn new(policy: FlushPolicy) -> Self {
        Self {
            log: Arc::default(),
            policy,
        }
    }

    /// Lose everything not yet flushed, as a power cut would. The store can
    /// be handed to a new Raft instance afterwards, as after a reboot.
    pub fn crash(&self) {
        let mut log = self.log.lock().expect("log lock");
        log.pending.clear();
        log.held = false;
        log.held_callbacks.clear();
        log.current = log.durable.clone();
    }

    /// From now until [`crash`](Self::crash) or
    /// [`release_flushes`](Self::release_flushes), appends are written but
    /// neither flushed nor acknowledged, as when a disk's flushes stall.
    /// openraft still replicates them (it sends what was submitted to the
    /// store), so followers can hold entries this store would lose: the
    /// state a leader killed in the middle of appends leaves behind. A vote
    /// or truncation still flushes everything, as sled's flush would.
    pub fn hold_flushes(&self) {
        self.with(|log| log.held = true);
    }

    /// Flush and acknowledge everything held, and stop holding.
    pub fn release_flushes(&self) {
        self.with(|log| {
            log.held = false;
            log.flush_all();
        });
    }

    /// How many writes are waiting for a flush.
    pub fn unflushed_writes(&self) -> usize {
        self.log.lock().expect("log lock").pending.len()
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemLog) -> T) -> T {
        f(&mut self.log.lock().expect("log lock"))
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.with(|log| {
            log.current
                .entries
                .range(range)
                .map(|(_, e)| e.clone())
                .collect()
        }))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.with(|log| log.current.vote))
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        Ok(self.with(|log| {
            let last_purged_log_id = log.current.last_purged;
            let last_log_id = log
                .current
                .entries
                .values()
                .next_back()
                .map(|e| e.log_id)
                .or(last_purged_log_id);
            LogState {
                last_purged_log_id,
                last_log_id,
            }
        }))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.with(|log| {
            log.write(Write::Vote(*vote));
            log.flush_all();
        });
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.with(|log| log.write(Write::Committed(committed)));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.with(|log| log.current.committed))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = <TypeConfig as RaftTypeConfig>::Entry> + OptionalSend,
    {
        let policy = self.policy;
        let callback = self.with(|log| {
            log.write(Write::Append(entries.into_iter().collect()));
            if log.held {
                log.held_callbacks.push(callback);
                return None;
            }
            if policy == FlushPolicy::FlushBeforeAck {
                log.flush();
            }
            Some(callback)
        });
        if let Some(callback) = callback {
            callback.io_completed(Ok(()));
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index() + 1).unwrap_or(0);
        self.with(|log| {
            log.write(Write::TruncateAfter(from));
            log.flush_all();
        });
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.with(|log| log.write(Write::Purge(log_id)));
        Ok(())
    }
}

/// A snapshot's metadata and bytes.
type StoredSnapshot = (SnapshotMeta, Vec<u8>);

/// Keeps the current snapshot in memory; it survives [`MemLogStore::crash`]
/// because snapshots are saved durably before they are used.
#[derive(Debug, Clone, Default)]
pub struct MemSnapshotVault {
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl MemSnapshotVault {
    pub async fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        *self.current.lock().expect("vault lock") = Some((meta.clone(), data.to_vec()));
        Ok(())
    }

    pub async fn load(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        Ok(self.current.lock().expect("vault lock").clone())
    }
}
