//! The broker's local issuance audit log. Every issuance attempt, granted
//! or refused, is appended and synced to disk before the answer goes back
//! (group commit: one writer thread syncs once for everything queued), then
//! shipped in batches to the replicated ledger.
//!
//! File format: records one after another, each `length: u32 LE`,
//! `crc32: u32 LE` of the payload, payload = postcard of
//! [`IssuanceRecord`]. A torn record at the end (a crash mid-write, never
//! acknowledged) is cut off when the log is opened.
//!
//! The writer seals each record as it assigns its sequence: the hash of the
//! broker's previous record (a chain that continues across restarts, from
//! the last record read on open) and a signature by the broker's committed
//! key, when it has one ([`lapse_ledger::evidence`]).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use lapse_credential::SigningKeyPair;
use lapse_ledger::evidence::{EVIDENCE_DOMAIN, GENESIS_SHA256, record_sha256};
use lapse_ledger::{Applied, Command, IssuanceRecord, MAX_AUDIT_BATCH, RequestId, Seal, Sha256};
use sha2::Digest as _;

use crate::core::SharedCore;

/// The largest record accepted when reading the file back.
const MAX_RECORD_BYTES: u32 = 1 << 20;
const SHIPPED_FILE: &str = "audit.shipped";

type Reply = tokio::sync::oneshot::Sender<io::Result<u64>>;

/// The key a record is signed with, if the broker has a committed one.
pub type Signer = Option<Arc<SigningKeyPair>>;

type Job = (IssuanceRecord, Signer, Reply);

/// Seal `record` as the successor of `previous` (updated to its hash), and
/// return its encoding, seal included: what the file holds and the next
/// record's `previous` hashes.
///
/// The same seal as [`lapse_ledger::evidence::seal`] (the tests check it
/// against [`lapse_ledger::evidence::ChainCheck`]), made with two encodings
/// of the record instead of four and no copy of it: the signature is over
/// the digest of the record with its seal's signature empty, which is how
/// the record stands before it is signed.
fn seal_next(record: &mut IssuanceRecord, signer: &Signer, previous: &mut Sha256) -> Vec<u8> {
    record.seal = Some(Seal {
        previous_sha256: *previous,
        key_id: signer.as_ref().map(|key| key.key_id().clone()),
        signature: Vec::new(),
    });
    if let Some(key) = signer {
        let unsigned = postcard::to_stdvec(record).expect("records always serialise");
        let mut hasher = sha2::Sha256::new();
        hasher.update(EVIDENCE_DOMAIN);
        hasher.update(&unsigned);
        let digest: Sha256 = hasher.finalize().into();
        let signature = key.sign_raw(&digest).to_vec();
        if let Some(seal) = &mut record.seal {
            seal.signature = signature;
        }
    }
    let payload = postcard::to_stdvec(record).expect("records always serialise");
    *previous = sha2::Sha256::digest(&payload).into();
    payload
}

pub struct AuditLog {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    unshipped: Arc<Mutex<VecDeque<IssuanceRecord>>>,
    /// Where the log rests: a directory, or memory for simulation.
    place: Place,
}

enum Place {
    Disk {
        path: PathBuf,
        dir: PathBuf,
    },
    /// Every record, and the next sequence number. A simulated broker's
    /// audit log survives its simulated crashes, as a synced file would.
    Memory(Arc<Mutex<MemoryLog>>),
}

/// The records of an in-memory audit log; keep it to reopen the log after
/// a simulated restart.
#[derive(Debug, Default)]
pub struct MemoryLog {
    records: Vec<IssuanceRecord>,
    shipped: u64,
}

/// Read every whole record from `file`, returning them and the length of
/// the valid prefix.
fn read_records(file: &mut File) -> io::Result<(Vec<IssuanceRecord>, u64)> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if length > MAX_RECORD_BYTES || at + 8 + length as usize > bytes.len() {
            break;
        }
        let payload = &bytes[at + 8..at + 8 + length as usize];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match postcard::from_bytes(payload) {
            Ok(record) => records.push(record),
            Err(_) => break,
        }
        at += 8 + length as usize;
    }
    Ok((records, at as u64))
}

impl AuditLog {
    /// Open (or create) the audit log in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("audit.log");
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let (records, valid) = read_records(&mut file)?;
        if valid < file.metadata()?.len() {
            tracing::warn!(path = %path.display(), "cutting a torn record off the end of the audit log");
            file.set_len(valid)?;
            file.sync_all()?;
        }
        let shipped: u64 = std::fs::read_to_string(dir.join(SHIPPED_FILE))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let mut next_sequence = records.last().map(|r| r.sequence + 1).unwrap_or(1);
        let mut previous = records.last().map_or(GENESIS_SHA256, record_sha256);
        let mut length = valid;
        let unshipped: VecDeque<IssuanceRecord> = records
            .into_iter()
            .filter(|r| r.sequence > shipped)
            .collect();
        let unshipped = Arc::new(Mutex::new(unshipped));

        let (jobs, queue) = mpsc::channel::<Job>();
        let pending = unshipped.clone();
        let thread = std::thread::Builder::new()
            .name("lapse-audit".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    batch.extend(queue.try_iter());
                    let mut bytes = Vec::new();
                    let chain_before = previous;
                    for (record, signer, _) in &mut batch {
                        record.sequence = next_sequence;
                        next_sequence += 1;
                        let payload = seal_next(record, signer, &mut previous);
                        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
                        bytes.extend_from_slice(&payload);
                    }
                    let written = file.write_all(&bytes).and_then(|()| file.sync_data());
                    if written.is_err() {
                        // Nothing of the batch is acknowledged: cut off what
                        // of it may have landed, and reuse its sequences and
                        // its place in the chain. If even that fails, the
                        // log stops taking records.
                        if let Err(error) = file.set_len(length).and_then(|()| file.sync_all()) {
                            tracing::error!(%error, "the audit log cannot cut off a failed write; it takes no more records");
                            break;
                        }
                        next_sequence -= batch.len() as u64;
                        previous = chain_before;
                    } else {
                        length += bytes.len() as u64;
                    }
                    // Kept for shipping (moved, not copied) before anyone
                    // hears its record is written.
                    let mut replies = Vec::with_capacity(batch.len());
                    let mut records = Vec::with_capacity(batch.len());
                    for (record, _, reply) in batch {
                        replies.push((record.sequence, reply));
                        records.push(record);
                    }
                    if written.is_ok() {
                        pending.lock().expect("audit lock").extend(records);
                    }
                    for (sequence, reply) in replies {
                        let _ = reply.send(match &written {
                            Ok(()) => Ok(sequence),
                            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                        });
                    }
                }
            })?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
            unshipped,
            place: Place::Disk {
                path,
                dir: dir.to_owned(),
            },
        })
    }

    /// An audit log held in `memory` instead of a file: appends complete at
    /// once, with no thread and no disk, so a simulation stays
    /// deterministic. Reopening the same `memory` finds every record.
    pub fn in_memory(memory: Arc<Mutex<MemoryLog>>) -> Self {
        let unshipped = {
            let log = memory.lock().expect("audit lock");
            log.records
                .iter()
                .filter(|r| r.sequence > log.shipped)
                .cloned()
                .collect()
        };
        Self {
            jobs: Mutex::new(None),
            thread: Mutex::new(None),
            unshipped: Arc::new(Mutex::new(unshipped)),
            place: Place::Memory(memory),
        }
    }

    /// Append `record`, sealed (and signed by `signer` when given), and wait
    /// until it is on disk. Returns its sequence.
    pub async fn append(&self, mut record: IssuanceRecord, signer: Signer) -> io::Result<u64> {
        if let Place::Memory(memory) = &self.place {
            let mut log = memory.lock().expect("audit lock");
            let last = log.records.last();
            record.sequence = last.map(|r| r.sequence + 1).unwrap_or(1);
            let mut previous = last.map_or(GENESIS_SHA256, record_sha256);
            seal_next(&mut record, &signer, &mut previous);
            log.records.push(record.clone());
            let sequence = record.sequence;
            self.unshipped.lock().expect("audit lock").push_back(record);
            return Ok(sequence);
        }
        let (reply, wait) = tokio::sync::oneshot::channel();
        self.jobs
            .lock()
            .expect("audit lock")
            .as_ref()
            .ok_or_else(|| io::Error::other("the audit log is closed"))?
            .send((record, signer, reply))
            .map_err(|_| io::Error::other("the audit log writer has stopped"))?;
        wait.await
            .map_err(|_| io::Error::other("the audit log writer has stopped"))?
    }

    /// Every record in the local log.
    pub fn read_all(&self) -> io::Result<Vec<IssuanceRecord>> {
        match &self.place {
            Place::Disk { path, .. } => {
                let mut file = File::open(path)?;
                Ok(read_records(&mut file)?.0)
            }
            Place::Memory(memory) => Ok(memory.lock().expect("audit lock").records.clone()),
        }
    }

    /// How many records wait to be shipped.
    pub fn unshipped(&self) -> usize {
        self.unshipped.lock().expect("audit lock").len()
    }

    /// Stop the writer thread after it finishes what is queued.
    pub fn close(&self) {
        self.jobs.lock().expect("audit lock").take();
        if let Some(thread) = self.thread.lock().expect("audit lock").take() {
            let _ = thread.join();
        }
    }

    /// Ship records to the ledger in batches, oldest first, forever.
    pub fn spawn_shipping(
        self: &Arc<Self>,
        core: SharedCore,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                loop {
                    let batch: Vec<IssuanceRecord> = log
                        .unshipped
                        .lock()
                        .expect("audit lock")
                        .iter()
                        .take(MAX_AUDIT_BATCH)
                        .cloned()
                        .collect();
                    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                        break;
                    };
                    let (first, last, count) = (first.sequence, last.sequence, batch.len());
                    let Ok(request_id) =
                        RequestId::new(format!("audit-{}-{first}-{last}", core.id()))
                    else {
                        break;
                    };
                    let command = Command::RecordIssuances {
                        broker: core.id(),
                        records: batch,
                    };
                    match core.propose(request_id, command).await.map(|r| r.outcome) {
                        Ok(Ok(Applied::IssuancesRecorded { .. })) => {
                            log.unshipped.lock().expect("audit lock").drain(..count);
                            log.note_shipped(last);
                        }
                        Ok(other) => {
                            tracing::warn!(?other, "the ledger refused audit records");
                            break;
                        }
                        Err(status) => {
                            tracing::debug!(error = %status, "audit shipping waits for the cluster");
                            break;
                        }
                    }
                }
            }
        })
    }
}

impl AuditLog {
    /// Remember that records up to `last` are in the ledger.
    fn note_shipped(&self, last: u64) {
        match &self.place {
            Place::Disk { dir, .. } => {
                if let Err(error) = std::fs::write(dir.join(SHIPPED_FILE), last.to_string()) {
                    tracing::warn!(%error, "could not note shipped audit records");
                }
            }
            Place::Memory(memory) => memory.lock().expect("audit lock").shipped = last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapse_ledger::Decision;

    fn record(n: u64) -> IssuanceRecord {
        IssuanceRecord {
            sequence: 0,
            at_ms: n,
            tenant: None,
            workload: None,
            index: None,
            key_id: None,
            scopes: vec![format!("s{n}")],
            audiences: vec![],
            expires_at_ms: None,
            attestation: None,
            decision: Decision {
                policy_version: 0,
                input_sha256: [0; 32],
                allowed: false,
                reason: "no".into(),
            },
            inputs: None,
            seal: None,
        }
    }

    #[tokio::test]
    async fn records_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AuditLog::open(dir.path()).unwrap();
            let appended =
                futures::future::join_all((0..5).map(|n| log.append(record(n), None))).await;
            let mut sequences: Vec<u64> = appended.into_iter().map(|r| r.unwrap()).collect();
            sequences.sort_unstable();
            assert_eq!(sequences, vec![1, 2, 3, 4, 5]);
            log.close();
        }
        // A crash mid-write leaves half a record.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("audit.log"))
            .unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(file);

        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.read_all().unwrap().len(), 5);
        assert_eq!(log.unshipped(), 5);
        assert_eq!(log.append(record(9), None).await.unwrap(), 6);
        assert_eq!(log.read_all().unwrap().len(), 6);
        log.close();
    }

    /// Checks `records` as broker 1's chain with `key` as its only key.
    fn check(records: &[IssuanceRecord], key: &SigningKeyPair) -> (u64, u64) {
        let lookup =
            |id: &lapse_credential::KeyId| (id == key.key_id()).then(|| (1, key.public_key()));
        let mut walk = lapse_ledger::evidence::ChainCheck::new(1, false, &lookup);
        for record in records {
            walk.next(record).unwrap();
        }
        (walk.records, walk.unsigned)
    }

    #[tokio::test]
    async fn records_are_chained_across_reopens_and_signed_once_a_key_is_committed() {
        let key = Arc::new(SigningKeyPair::from_seed(
            lapse_credential::KeyId::new("n1-test").unwrap(),
            [5; 32],
        ));
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AuditLog::open(dir.path()).unwrap();
            log.append(record(1), None).await.unwrap();
            log.append(record(2), Some(key.clone())).await.unwrap();
            log.close();
        }
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(record(3), Some(key.clone())).await.unwrap();
        let records = log.read_all().unwrap();
        log.close();
        assert_eq!(check(&records, &key), (3, 1));
        assert_eq!(
            records[0].seal.as_ref().unwrap().previous_sha256,
            lapse_ledger::evidence::GENESIS_SHA256
        );

        // The in-memory log seals the same way, and so across a reopen.
        let memory = Arc::new(Mutex::new(MemoryLog::default()));
        AuditLog::in_memory(memory.clone())
            .append(record(1), Some(key.clone()))
            .await
            .unwrap();
        let reopened = AuditLog::in_memory(memory);
        reopened.append(record(2), None).await.unwrap();
        assert_eq!(check(&reopened.read_all().unwrap(), &key), (2, 1));
    }
}
