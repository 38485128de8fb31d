//! The sled-backed Raft log store.
//!
//! sled buffers writes in memory; they are durable only after `flush()`.
//! Appends are handed to one dedicated flusher thread, which drains every
//! append queued so far, calls the blocking `flush()` once (group commit) and
//! only then tells openraft the entries are durable.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::mpsc;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, RaftTypeConfig};

use crate::io_error;
use crate::types::{Entry, LogId, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Open (or create) the sled database under `path` and return the log store
/// on it, with its flush thread.
pub fn open_sled(path: &Path) -> io::Result<SledLogStore> {
    let db = sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        // Every append is flushed by our own flush thread; sled's periodic
        // background flush would only compete with it.
        .flush_every_ms(None)
        .open()
        .map_err(io_error)?;
    let logs = db.open_tree("raft_log").map_err(io_error)?;
    Ok(SledLogStore {
        meta: db.open_tree("raft_meta").map_err(io_error)?,
        flusher: Flusher::start(db.clone(), logs.clone())?,
        logs,
    })
}

enum FlushJob {
    Appended(IOFlushed<TypeConfig>),
    Barrier(tokio::sync::oneshot::Sender<io::Result<()>>),
}

/// The handle to the one thread that calls `flush()`. When the last handle
/// is dropped the thread finishes its queue and exits, releasing the
/// database (and its file lock) before the drop returns.
#[derive(Clone)]
struct Flusher {
    inner: std::sync::Arc<FlusherInner>,
}

struct FlusherInner {
    jobs: Option<mpsc::Sender<FlushJob>>,
    purges: Option<mpsc::Sender<u64>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for FlusherInner {
    fn drop(&mut self) {
        self.jobs.take();
        self.purges.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Delete log entries at or below each requested index, in chunks, off the
/// append path.
fn purge_loop(logs: sled::Tree, requests: mpsc::Receiver<u64>) {
    while let Ok(mut upto) = requests.recv() {
        upto = requests.try_iter().fold(upto, u64::max);
        let keys: Vec<_> = logs.range(..=upto.to_be_bytes()).keys().flatten().collect();
        for chunk in keys.chunks(1024) {
            let mut batch = sled::Batch::default();
            for key in chunk {
                batch.remove(key.clone());
            }
            if let Err(error) = logs.apply_batch(batch) {
                tracing::warn!(%error, "purging old log entries failed; the next purge retries");
                break;
            }
        }
    }
}

impl Flusher {
    fn start(db: sled::Db, logs: sled::Tree) -> io::Result<Self> {
        let (purges, purge_requests) = mpsc::channel::<u64>();
        let purger = std::thread::Builder::new()
            .name("lapse-sled-purge".into())
            .spawn(move || purge_loop(logs, purge_requests))?;
        let (jobs, queue) = mpsc::channel::<FlushJob>();
        let flusher = std::thread::Builder::new()
            .name("lapse-sled-flush".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    batch.extend(queue.try_iter());
                    let result = db.flush().map(|_| ());
                    for job in batch {
                        let result = match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(io_error(e)),
                        };
                        match job {
                            FlushJob::Appended(callback) => callback.io_completed(result),
                            FlushJob::Barrier(done) => {
                                let _ = done.send(result);
                            }
                        }
                    }
                }
            })?;
        Ok(Self {
            inner: std::sync::Arc::new(FlusherInner {
                jobs: Some(jobs),
                purges: Some(purges),
                threads: vec![flusher, purger],
            }),
        })
    }

    fn purge(&self, upto: u64) -> io::Result<()> {
        self.inner
            .purges
            .as_ref()
            .and_then(|purges| purges.send(upto).ok())
            .ok_or_else(|| io_error("the sled purge thread has stopped"))
    }

    fn send(&self, job: FlushJob) -> io::Result<()> {
        self.inner
            .jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| io_error("the sled flush thread has stopped"))
    }

    /// Wait until everything written so far is on disk.
    async fn barrier(&self) -> io::Result<()> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(FlushJob::Barrier(done))?;
        wait.await
            .map_err(|_| io_error("the sled flush thread has stopped"))?
    }
}

/// The Raft log on sled: one tree of entries keyed by big-endian index, one
/// tree of metadata (vote, committed, last purged).
#[derive(Clone)]
pub struct SledLogStore {
    logs: sled::Tree,
    meta: sled::Tree,
    flusher: Flusher,
}

impl SledLogStore {
    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.meta.get(key).map_err(io_error)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(io_error),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        let bytes = postcard::to_stdvec(value).map_err(io_error)?;
        self.meta.insert(key, bytes).map_err(io_error)?;
        Ok(())
    }

    fn decode_entry(bytes: &[u8]) -> io::Result<Entry> {
        postcard::from_bytes(bytes).map_err(io_error)
    }
}

impl RaftLogReader<TypeConfig> for SledLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        use std::ops::Bound;
        let requested = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let first_live = self
            .get_meta::<LogId>(KEY_LAST_PURGED)?
            .map(|purged| purged.index() + 1)
            .unwrap_or(0);
        let start = requested.max(first_live);
        let mut entries = Vec::new();
        for item in self.logs.range(start.to_be_bytes()..) {
            let (key, value) = item.map_err(io_error)?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(io_error)?);
            if !range.contains(&index) {
                break;
            }
            let entry = Self::decode_entry(&value)?;
            assert_eq!(
                entry.log_id.index(),
                index,
                "log entry stored under the wrong index"
            );
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for SledLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = match self.logs.last().map_err(io_error)? {
            Some((_, value)) => Some(Self::decode_entry(&value)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(KEY_VOTE, vote)?;
        self.flusher.barrier().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Written without waiting for a flush: after a crash, openraft
        // re-applies from the last snapshot up to whatever was saved.
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = <TypeConfig as RaftTypeConfig>::Entry> + OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = postcard::to_stdvec(&entry).map_err(io_error)?;
            batch.insert(&entry.log_id.index().to_be_bytes(), bytes);
        }
        self.logs.apply_batch(batch).map_err(io_error)?;
        self.flusher.send(FlushJob::Appended(callback))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index() + 1).unwrap_or(0);
        let mut batch = sled::Batch::default();
        for key in self.logs.range(from.to_be_bytes()..).keys() {
            batch.remove(key.map_err(io_error)?);
        }
        self.logs.apply_batch(batch).map_err(io_error)?;
        self.flusher.barrier().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point; entries at or below it are dead from now
        // on and are deleted in the background, so a large purge never holds
        // up appends. A crash before they are gone leaves dead entries that
        // the next purge removes.
        let upto = log_id.index();
        self.put_meta(KEY_LAST_PURGED, &log_id)?;
        self.flusher.purge(upto)
    }
}
