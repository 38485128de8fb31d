//! The heart of a running broker: its Raft handle, its view of the ledger,
//! and the write path that stamps, proposes and forwards to the leader.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapse_ledger::{Command, Proposal, RequestId, Response};
use lapse_storage::{LedgerView, NodeId, Raft, Sha256Digest};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, ForwardToLeader, RaftError};
use tonic::{Code, Status};

use crate::config::BrokerConfig;
use crate::env::Env;
use crate::peers::{ClusterSecret, PeerChannels, decode, encode};
use lapse_wire::peer::{RaftMessage, ReadIndexRequest};

/// Everything the services of one broker share.
pub struct Core {
    pub id: NodeId,
    pub address: String,
    pub raft: Raft,
    pub view: LedgerView,
    pub env: Env,
    pub channels: PeerChannels,
    pub secret: ClusterSecret,
    pub config: BrokerConfig,
    /// Divergences from peers found by comparing checkpoint digests.
    pub replicas: Arc<crate::replica_check::ReplicaCheck>,
    /// Cluster time as this broker knows it (see [`crate::time`]).
    pub clock: crate::time::ClusterClock,
    /// A `ConfirmLeadership` entry is being written.
    confirming: Arc<std::sync::atomic::AtomicBool>,
    digest_cache: Mutex<Option<(Option<u64>, Sha256Digest)>>,
}

/// How a local proposal ended when it did not produce a ledger response.
enum LocalWrite {
    /// Not the leader; here is who is, if known.
    Forward {
        leader_id: Option<NodeId>,
        address: Option<String>,
    },
    /// The entry may or may not have been committed: retry with the same
    /// request id, which deduplicates.
    Unknown(String),
    /// This node cannot take writes at all (shutting down, storage failed).
    Broken(String),
}

impl Core {
    pub fn new(
        config: BrokerConfig,
        raft: Raft,
        view: LedgerView,
        env: Env,
        channels: PeerChannels,
        secret: ClusterSecret,
    ) -> Self {
        Self {
            id: config.node_id,
            address: config.advertise_address(),
            raft,
            view,
            env,
            channels,
            secret,
            config,
            replicas: Arc::default(),
            clock: Default::default(),
            confirming: Arc::default(),
            digest_cache: Mutex::new(None),
        }
    }

    /// Propose `command` and wait for the ledger's answer, forwarding to the
    /// leader when this broker is not it. Retries through elections and
    /// forwarding failures until the write timeout; retries are safe because
    /// the request id deduplicates.
    pub async fn propose(
        &self,
        request_id: RequestId,
        command: Command,
    ) -> Result<Response, Status> {
        let deadline = tokio::time::Instant::now() + self.config.write_timeout();
        let mut last_problem = String::from("no leader is known yet");
        let mut pause = Duration::from_millis(20);
        loop {
            match self
                .propose_local(request_id.clone(), command.clone())
                .await
            {
                Ok(response) => return Ok(response),
                Err(LocalWrite::Broken(message)) => return Err(Status::unavailable(message)),
                Err(LocalWrite::Unknown(message)) => last_problem = message,
                Err(LocalWrite::Forward {
                    leader_id: Some(leader),
                    address: Some(address),
                }) if leader != self.id => {
                    match self.forward(&address, &request_id, &command).await {
                        Ok(response) => return Ok(response),
                        Err(status) if retriable(&status) => {
                            last_problem =
                                format!("leader {leader} at {address}: {}", status.message());
                        }
                        Err(status) => return Err(status),
                    }
                }
                Err(LocalWrite::Forward { .. }) => {}
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(Status::unavailable(format!(
                    "the write did not complete within {} ms ({last_problem}); \
                     it may or may not have been applied: retry with the same request id",
                    self.config.limits.write_timeout_ms
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Propose on this node only. Used for writes forwarded from peers, so
    /// a forwarded write is never forwarded again.
    pub async fn propose_here(
        &self,
        request_id: RequestId,
        command: Command,
    ) -> Result<Response, Status> {
        match self.propose_local(request_id, command).await {
            Ok(response) => Ok(response),
            Err(LocalWrite::Forward { leader_id, .. }) => Err(Status::unavailable(format!(
                "node {} is not the leader (leader: {leader_id:?})",
                self.id
            ))),
            Err(LocalWrite::Unknown(message)) | Err(LocalWrite::Broken(message)) => {
                Err(Status::unavailable(message))
            }
        }
    }

    async fn propose_local(
        &self,
        request_id: RequestId,
        command: Command,
    ) -> Result<Response, LocalWrite> {
        let proposal = Proposal {
            request_id,
            stamped_at_ms: self.cluster_now(),
            command,
        };
        // The write runs in its own task: a client that disconnects cannot
        // abandon it halfway.
        let raft = self.raft.clone();
        let outcome = tokio::spawn(async move { raft.client_write(proposal).await })
            .await
            .map_err(|e| LocalWrite::Broken(format!("write task failed: {e}")))?;
        match outcome {
            Ok(written) => written.data.ok_or_else(|| {
                LocalWrite::Broken("the ledger gave no answer for a proposal".into())
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader {
                leader_id,
                leader_node,
                ..
            }))) => Err(LocalWrite::Forward {
                leader_id,
                address: leader_node.map(|node| node.addr),
            }),
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => Err(
                LocalWrite::Unknown("leadership changed before the write committed".into()),
            ),
            Err(RaftError::APIError(other)) => Err(LocalWrite::Broken(other.to_string())),
            Err(RaftError::Fatal(fatal)) => {
                Err(LocalWrite::Broken(format!("broker is stopping: {fatal}")))
            }
        }
    }

    async fn forward(
        &self,
        address: &str,
        request_id: &RequestId,
        command: &Command,
    ) -> Result<Response, Status> {
        let mut client = self
            .channels
            .peer_client(address)
            .map_err(Status::internal)?;
        let request = self.channels.request(
            RaftMessage {
                payload: encode(&(request_id, command)),
            },
            self.config.write_timeout(),
        );
        let reply = client.propose(request).await?;
        decode(&reply.into_inner().payload)
            .map_err(|e| Status::internal(format!("leader sent an undecodable answer: {e}")))
    }

    /// The ledger digest at the applied index, computed once per index.
    pub fn digest(&self) -> (Option<u64>, Sha256Digest) {
        let applied = self.view.read(|a| a.ledger.last_applied_index);
        let mut cache = self.digest_cache.lock().expect("digest lock");
        if let Some((index, digest)) = *cache
            && index == applied
        {
            return (index, digest);
        }
        let (index, digest) = self
            .view
            .read(|a| (a.ledger.last_applied_index, a.ledger.digest()));
        *cache = Some((index, digest));
        (index, digest)
    }

    /// Confirm that this broker's applied state holds everything committed
    /// before now: on the leader a read index, elsewhere the leader's read
    /// index and then waiting to apply up to it. Keeps the leader's local
    /// time, estimated from the round trip, for cluster time.
    pub async fn confirm_current(&self, patience: Duration) -> Result<(), String> {
        let (leader, address) = self.leader();
        if leader == Some(self.id) {
            self.leader_read_index(patience).await?;
            self.clock.set_leader_offset(0);
            return Ok(());
        }
        let address = address.ok_or("no leader known")?;
        let mut client = self.channels.peer_client(&address)?;
        let sent = tokio::time::Instant::now();
        let reply = client
            .read_index(self.channels.request(ReadIndexRequest {}, patience))
            .await
            .map_err(|status| format!("leader {address}: {}", status.message()))?
            .into_inner();
        let rtt = sent.elapsed().as_millis() as i64;
        let local = self.env.now_ms() as i64;
        let offset = reply.leader_time_ms as i64 + rtt / 2 - local;
        let mut applied = self.view.changes();
        tokio::time::timeout(
            patience.saturating_sub(sent.elapsed()),
            applied.wait_for(|index| *index >= reply.read_index),
        )
        .await
        .map_err(|_| format!("did not apply up to {} in time", reply.read_index))?
        .map_err(|_| "state machine stopped".to_string())?;
        self.clock.set_leader_offset(offset);
        Ok(())
    }

    /// Cluster time for what is stamped with it (credentials, keys, join
    /// tokens): a broker that has not yet measured the leader's clock
    /// confirms with the leader first, so a broker whose own clock is off
    /// never stamps its own time in the first moments after it starts.
    /// Like a write, this waits through elections up to the write timeout.
    pub async fn confirmed_cluster_now(&self) -> Result<u64, Status> {
        let deadline = tokio::time::Instant::now() + self.config.write_timeout();
        let patience = Duration::from_millis(self.config.raft.rpc_timeout_ms);
        let mut pause = Duration::from_millis(20);
        while !self.clock.measured() {
            let Err(problem) = self.confirm_current(patience).await else {
                break;
            };
            if tokio::time::Instant::now() + pause > deadline {
                return Err(Status::unavailable(format!(
                    "cluster time is not known yet (cannot confirm with the leader: {problem}); retry shortly"
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
        Ok(self.cluster_now())
    }

    /// Cluster time now (see [`crate::time`]): the leader's local time as
    /// this broker last measured it, never behind the ledger's stamps.
    pub fn cluster_now(&self) -> u64 {
        let stamped = self.view.read(|a| a.ledger.cluster_time_ms);
        self.clock
            .now_ms(self.env.now_ms(), self.env.monotonic_ms(), stamped)
    }

    /// As the leader: a read index (a quorum acknowledged an RPC sent after
    /// now, and this broker applied up to what was committed then), the
    /// index returned.
    ///
    /// openraft cuts each Raft heartbeat off after one heartbeat interval,
    /// so where a round trip to a quorum is longer than that, heartbeats
    /// never bring the acknowledgement, and an idle cluster could never
    /// confirm a read. If none came within one heartbeat interval, this
    /// proposes a [`Command::ConfirmLeadership`], which changes nothing: its
    /// replication (whose deadline is `raft.rpc_timeout_ms`) brings it.
    pub async fn leader_read_index(&self, patience: Duration) -> Result<u64, String> {
        let read = self
            .raft
            .ensure_linearizable(openraft::ReadPolicy::ReadIndex);
        tokio::pin!(read);
        let nudge_after = Duration::from_millis(self.config.raft.heartbeat_ms).min(patience);
        let done = match tokio::time::timeout(nudge_after, &mut read).await {
            Ok(done) => done,
            Err(_) => {
                let skip = self
                    .env
                    .faults
                    .as_ref()
                    .is_some_and(|f| f.skip_leadership_confirmation());
                if !skip {
                    self.confirm_leadership_in_background();
                }
                tokio::time::timeout(patience.saturating_sub(nudge_after), read)
                    .await
                    .map_err(|_| "read index timed out".to_string())?
            }
        };
        done.map(|read| read.log_id().index())
            .map_err(|e| e.to_string())
    }

    /// Propose a `ConfirmLeadership` entry unless one is already on its way.
    /// Its request id is fixed per broker, so the ledger remembers one.
    fn confirm_leadership_in_background(&self) {
        use std::sync::atomic::Ordering;
        if self.confirming.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(request_id) = RequestId::new(format!("confirm-leadership-{}", self.id)) else {
            self.confirming.store(false, Ordering::Release);
            return;
        };
        let proposal = Proposal {
            request_id,
            stamped_at_ms: self.cluster_now(),
            command: Command::ConfirmLeadership,
        };
        let raft = self.raft.clone();
        let confirming = self.confirming.clone();
        tokio::spawn(async move {
            if let Err(error) = raft.client_write(proposal).await {
                tracing::debug!(%error, "a leadership confirmation entry was not written");
            }
            confirming.store(false, Ordering::Release);
        });
    }

    /// The current leader's id and address, as this node believes.
    pub fn leader(&self) -> (Option<NodeId>, Option<String>) {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let address = metrics.current_leader.and_then(|id| {
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        });
        (metrics.current_leader, address)
    }
}

/// Whether a failed forward is worth retrying (the leader moved or was
/// briefly unreachable), as opposed to a definite answer.
fn retriable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
    )
}

/// Shared handle type used by services.
pub type SharedCore = Arc<Core>;
