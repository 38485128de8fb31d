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

#[derive(Debug, Default)]
struct MemLog {
    current: LogData,
    durable: LogData,
    pending: Vec<Write>,
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
        log.current = log.durable.clone();
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
            log.flush();
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
        self.with(|log| {
            log.write(Write::Append(entries.into_iter().collect()));
            if policy == FlushPolicy::FlushBeforeAck {
                log.flush();
            }
        });
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index() + 1).unwrap_or(0);
        self.with(|log| {
            log.write(Write::TruncateAfter(from));
            log.flush();
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
