//! Pieces of the kill soak (`tests/kill_soak.rs`): a client oracle for
//! revocations sent while brokers are being killed, leader agreement with
//! its timing, and reads of one broker's own revoked set.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lapse_filter::{Message, decode_message};
use lapse_wire::cluster::{self as pb, cluster_client::ClusterClient};
use lapse_wire::feed::feed_client::FeedClient;
use lapse_wire::feed::{FeedRequest, Hello, feed_event, feed_request};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::{TestCluster, authorised, rand_suffix, revoke_anywhere, revoke_index};

/// How long a writer waits for one answer before calling it unknown.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(3);
/// Attempts (with the same request id) a writer makes before leaving a
/// request unknown and moving on; the end of the soak settles it.
pub const MAX_ATTEMPTS: u32 = 5;

/// What a client may conclude from one answer to a `Revoke`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Committed at `epoch`. `duplicate`: the answer to a retry of a request
    /// that had already taken effect.
    Acknowledged { epoch: u64, duplicate: bool },
    /// A definite refusal: the cluster did not and will not apply it.
    Refused { code: Code, message: String },
    /// May or may not take effect (a timeout, a lost connection, a write
    /// interrupted by an election). Never a failure by itself.
    Unknown(String),
}

/// Sort an answer into the oracle's three kinds.
pub fn classify(result: Result<pb::RevokeResponse, tonic::Status>) -> Answer {
    match result {
        Ok(reply) => Answer::Acknowledged {
            epoch: reply.epoch,
            duplicate: reply.duplicate,
        },
        Err(status) => match status.code() {
            Code::AlreadyExists
            | Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::OutOfRange => Answer::Refused {
                code: status.code(),
                message: status.message().to_owned(),
            },
            code => Answer::Unknown(format!("{code:?}: {}", status.message())),
        },
    }
}

/// The epoch in an "already revoked at epoch N" refusal.
pub fn already_revoked_epoch(message: &str) -> Option<u64> {
    let rest = message.split("already revoked at epoch ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// One revocation a writer sent, with what it finally learned.
#[derive(Debug, Clone)]
pub struct Record {
    pub index: u64,
    pub request_id: String,
    /// Requests actually sent (connections refused are not counted).
    pub attempts: u32,
    pub answer: Answer,
}

impl Record {
    pub fn epoch(&self) -> Option<u64> {
        match self.answer {
            Answer::Acknowledged { epoch, .. } => Some(epoch),
            _ => None,
        }
    }
}

/// A writer: revokes `indices` one at a time through whichever broker
/// answers, until `stop` is set.
pub struct Writer {
    pub id: u64,
    pub addresses: Vec<String>,
    pub indices: Range<u64>,
    pub stop: Arc<AtomicBool>,
}

pub fn request_id(writer: u64, index: u64) -> String {
    format!("soak-w{writer}-{index}")
}

/// A connection to one broker, or `None` when it is down.
pub async fn connect(address: &str) -> Option<ClusterClient<Channel>> {
    Endpoint::from_shared(format!("http://{address}"))
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(REQUEST_DEADLINE)
        .connect()
        .await
        .ok()
        .map(ClusterClient::new)
}

/// Send one `Revoke` with the client deadline.
pub async fn send_revoke(
    client: &mut ClusterClient<Channel>,
    message: pb::RevokeRequest,
) -> Answer {
    let mut request = authorised(message);
    request.set_timeout(REQUEST_DEADLINE);
    match tokio::time::timeout(
        REQUEST_DEADLINE + Duration::from_millis(500),
        client.revoke(request),
    )
    .await
    {
        Ok(result) => classify(result.map(|r| r.into_inner())),
        Err(_) => Answer::Unknown("client deadline passed".into()),
    }
}

impl Writer {
    /// Revoke fresh indices until told to stop; the records of every
    /// request sent at least once.
    pub async fn run(self) -> Vec<Record> {
        let mut records = Vec::new();
        let mut turn = self.id as usize;
        for index in self.indices.clone() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let request_id = request_id(self.id, index);
            let mut attempts = 0;
            let mut refused_connections = 0;
            let mut unknown = None;
            let answer = loop {
                let stopping = self.stop.load(Ordering::SeqCst);
                if stopping && attempts == 0 {
                    // Never sent: nothing to record.
                    return records;
                }
                if stopping && let Some(reason) = unknown.take() {
                    break Answer::Unknown(reason);
                }
                let address = &self.addresses[turn % self.addresses.len()];
                turn += 1;
                let Some(mut client) = connect(address).await else {
                    refused_connections += 1;
                    if refused_connections % self.addresses.len() == 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                };
                attempts += 1;
                match send_revoke(&mut client, revoke_index(&request_id, index)).await {
                    Answer::Unknown(reason) => {
                        if attempts >= MAX_ATTEMPTS {
                            break Answer::Unknown(reason);
                        }
                        unknown = Some(reason);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    // Only this request ever targets `index`: after an
                    // unknown attempt, "already revoked" means it took effect.
                    Answer::Refused {
                        code: Code::AlreadyExists,
                        message,
                    } if unknown.is_some() => {
                        break match already_revoked_epoch(&message) {
                            Some(epoch) => Answer::Acknowledged {
                                epoch,
                                duplicate: true,
                            },
                            None => Answer::Unknown(message),
                        };
                    }
                    answer => break answer,
                }
            };
            records.push(Record {
                index,
                request_id,
                attempts,
                answer,
            });
        }
        records
    }
}

/// Retry `record` (same request id, same index) on the healthy cluster until
/// its answer is definite; whether it had taken effect before.
pub async fn settle(cluster: &TestCluster, record: &mut Record) -> Option<bool> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        record.attempts += 1;
        let answer = classify(
            revoke_anywhere(cluster, revoke_index(&record.request_id, record.index)).await,
        );
        match answer {
            Answer::Acknowledged { epoch, duplicate } => {
                record.answer = Answer::Acknowledged { epoch, duplicate };
                return Some(duplicate);
            }
            Answer::Refused {
                code: Code::AlreadyExists,
                ref message,
            } if already_revoked_epoch(message).is_some() => {
                record.answer = Answer::Acknowledged {
                    epoch: already_revoked_epoch(message).unwrap(),
                    duplicate: true,
                };
                return Some(true);
            }
            Answer::Refused { .. } => {
                record.answer = answer;
                return None;
            }
            Answer::Unknown(reason) => assert!(
                Instant::now() < deadline,
                "{} (index {}) still unknown after 30 s on a healthy cluster: {reason}\n{}",
                record.request_id,
                record.index,
                cluster.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The running broker that says it leads, with its term (the highest term
/// if several do).
pub async fn current_leader(cluster: &TestCluster) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    for id in cluster.running() {
        if let Some(status) = cluster.status(id).await
            && status.role == "leader"
            && best.is_none_or(|(term, _)| status.term > term)
        {
            best = Some((status.term, id));
        }
    }
    best.map(|(term, id)| (id, term))
}

/// Wait until every running broker answers and names the same running
/// leader, which itself says it leads; that leader, its term, and the time
/// since `since`.
pub async fn wait_for_agreed_leader(
    cluster: &TestCluster,
    since: Instant,
    limit: Duration,
) -> (u64, u64, Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let running = cluster.running();
        let mut statuses = Vec::new();
        for id in &running {
            if let Some(status) = cluster.status(*id).await {
                statuses.push(status);
            }
        }
        if statuses.len() == running.len()
            && let Some(Some(leader)) = statuses.first().map(|s| s.leader_id)
            && statuses.iter().all(|s| s.leader_id == Some(leader))
            && let Some(own) = statuses.iter().find(|s| s.node_id == leader)
            && own.role == "leader"
        {
            return (leader, own.term, since.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader within {limit:?}: {:?}\n{}",
            statuses
                .iter()
                .map(|s| (s.node_id, s.role.as_str(), s.term, s.leader_id))
                .collect::<Vec<_>>(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nearest-rank percentile `p` (0 to 100) of a small sample.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Every status is at the same applied index with the same state digest.
pub fn assert_same_digest(cluster: &TestCluster, statuses: &[pb::StatusResponse]) {
    let first = &statuses[0];
    for status in statuses {
        assert_eq!(
            (status.applied_index, status.state_digest.as_str()),
            (first.applied_index, first.state_digest.as_str()),
            "REPLICAS DIVERGED: node {} and node {} differ at applied index {} \
             (applied/committed/last log/term: {:?})\n{}",
            status.node_id,
            first.node_id,
            first.applied_index,
            statuses
                .iter()
                .map(|s| (
                    s.node_id,
                    s.applied_index,
                    s.committed_index,
                    s.last_log_index,
                    s.term
                ))
                .collect::<Vec<_>>(),
            cluster.logs()
        );
        // The brokers' own background comparison found nothing either.
        assert!(
            status.divergences.is_empty(),
            "node {} reports diverged peers: {:?}",
            status.node_id,
            status.divergences
        );
    }
}

/// Broker `id`'s own revoked status indices in `range`, read from the
/// snapshot its revocation feed serves from its applied state (no leader is
/// involved), with the revocation epoch of that snapshot.
pub async fn revoked_on(cluster: &TestCluster, id: u64, range: Range<u64>) -> (u64, BTreeSet<u64>) {
    let channel = Endpoint::from_shared(format!("http://{}", cluster.address(id)))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("feed of broker {id}: {e}\n{}", cluster.logs()));
    let mut client = FeedClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(FeedRequest {
        kind: Some(feed_request::Kind::Hello(Hello {
            verifier_id: format!("soak-check-{id}-{}", rand_suffix()),
            region: "soak".into(),
            resume_epoch: None,
        })),
    })
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        let mut events = client
            .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        events.message().await
    })
    .await
    .unwrap_or_else(|_| panic!("no feed snapshot from broker {id} in 10 s"))
    .unwrap_or_else(|e| panic!("feed of broker {id}: {e:?}"))
    .unwrap_or_else(|| panic!("feed of broker {id} ended at once"));
    drop(tx);
    let Some(feed_event::Kind::Snapshot(bytes)) = first.kind else {
        panic!("broker {id} began its feed with {:?}", first.kind);
    };
    let Message::Full(snapshot) = decode_message(&bytes)
        .unwrap_or_else(|e| panic!("broker {id} sent an undecodable snapshot: {e}"))
    else {
        panic!("broker {id} sent a delta for a snapshot");
    };
    let held = snapshot
        .set
        .iter()
        .filter(|index| range.contains(index))
        .collect();
    (snapshot.epoch, held)
}

/// The leader's view: re-revoking each acknowledged index (in batches, one
/// log entry each) is refused as already revoked at the acknowledged epoch.
/// Returns the mismatches as (index, acknowledged epoch, answer).
pub async fn recheck_on_leader(
    cluster: &TestCluster,
    acknowledged: &BTreeMap<u64, u64>,
) -> Vec<(u64, u64, String)> {
    let mut wrong = Vec::new();
    let entries: Vec<(u64, u64)> = acknowledged.iter().map(|(i, e)| (*i, *e)).collect();
    for (n, chunk) in entries.chunks(lapse_ledger::MAX_BATCH).enumerate() {
        let message = pb::RevokeManyRequest {
            request_id: format!("soak-check-{n}-{}", rand_suffix()),
            revocations: chunk
                .iter()
                .map(|(index, _)| pb::Revocation {
                    target: Some(pb::revocation::Target::Index(*index)),
                })
                .collect(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let reply = loop {
            let mut answer = None;
            for id in cluster.running() {
                let Some(mut client) = cluster.client(id).await else {
                    continue;
                };
                match client.revoke_many(authorised(message.clone())).await {
                    Ok(reply) => {
                        answer = Some(reply.into_inner());
                        break;
                    }
                    Err(status) if matches!(status.code(), Code::Unavailable) => {}
                    Err(status) => panic!("re-revoking through broker {id}: {status:?}"),
                }
            }
            if let Some(reply) = answer {
                break reply;
            }
            assert!(
                Instant::now() < deadline,
                "no broker took the check within 30 s\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(reply.items.len(), chunk.len(), "{reply:?}");
        for ((index, epoch), item) in chunk.iter().zip(&reply.items) {
            if already_revoked_epoch(&item.refusal) != Some(*epoch) {
                let answer = if item.refusal.is_empty() {
                    format!("revoked anew at epoch {}: it had been lost", reply.epoch)
                } else {
                    item.refusal.clone()
                };
                wrong.push((*index, *epoch, answer));
            }
        }
    }
    wrong
}
