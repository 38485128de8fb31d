//! The peer link: the calling side of the broker-to-broker protocol. One
//! cached gRPC channel per peer address, the cluster-secret header on every
//! call, a timeout on every RPC, the openraft network built on top, and the
//! typed calls the rest of the broker makes on peers (forwarded writes and
//! membership changes, read indices, checkpoints, propagation reports).
//! Like [`crate::api`], this is gRPC code; what it returns to the rest of
//! the broker is a [`BrokerError`], never a status.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lapse_storage::{Node, NodeId, SnapshotData, TypeConfig, Vote};
use lapse_wire::peer::raft_peer_client::RaftPeerClient;
use lapse_wire::peer::{RaftMessage, SnapshotChunk};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use tonic::transport::{Channel, Endpoint};

use crate::env::Dialer;
use crate::error::BrokerError;
use crate::membership::{MembershipChange, MembershipView};
use lapse_ledger::{Command, RequestId, Response};
use lapse_storage::Sha256Digest;
use lapse_wire::peer::{CheckpointsRequest, LocalPropagationRequest, ReadIndexRequest};

/// The metadata key that carries the cluster secret between brokers.
pub const SECRET_HEADER: &str = "x-lapse-cluster-secret";
/// Snapshots travel in chunks of this size.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// The cluster secret, which a joining broker learns only once it has joined.
#[derive(Clone, Default)]
pub struct ClusterSecret(Arc<RwLock<Option<String>>>);

impl ClusterSecret {
    pub fn new(secret: Option<String>) -> Self {
        Self(Arc::new(RwLock::new(secret)))
    }

    pub fn get(&self) -> Option<String> {
        self.0.read().expect("secret lock").clone()
    }

    pub fn set(&self, secret: String) {
        *self.0.write().expect("secret lock") = Some(secret);
    }

    /// Whether `presented` is the secret, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        self.get()
            .is_some_and(|secret| constant_time_eq(secret.as_bytes(), presented.as_bytes()))
    }
}

/// Compare two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A broker to call: where, and which node must answer there. With TLS
/// the answering broker's certificate must name `node`; `None` accepts
/// any broker of the cluster (a joining broker does not know who answers
/// at its join address).
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub node: Option<NodeId>,
    pub address: &'a str,
}

impl<'a> Peer<'a> {
    /// Member `node` at `address`.
    pub fn member(node: NodeId, address: &'a str) -> Self {
        Self {
            node: Some(node),
            address,
        }
    }

    /// Whichever broker answers at `address`.
    pub fn any(address: &'a str) -> Self {
        Self {
            node: None,
            address,
        }
    }
}

/// The most peer channels kept; past it the least recently used is
/// dropped (addresses come from the membership and from join requests, so
/// they are few, but a bound keeps a stream of joins from growing the
/// cache, and the members in use stay cached through it).
pub const MAX_PEER_CHANNELS: usize = 256;

/// A cached channel's address and the node that must answer there.
type ChannelKey = (String, Option<NodeId>);

#[derive(Default)]
struct Cached {
    channels: BTreeMap<ChannelKey, (Channel, u64)>,
    tick: u64,
}

/// One lazily connected channel per peer, shared by Raft traffic and
/// forwarded writes.
#[derive(Clone)]
pub struct PeerChannels {
    /// Each channel with the tick it was last used at: when full, the
    /// least recently used goes.
    channels: Arc<Mutex<Cached>>,
    dialer: Arc<dyn Dialer>,
    secret: ClusterSecret,
    rpc_timeout: Duration,
    max_message_bytes: usize,
}

impl PeerChannels {
    pub fn new(
        secret: ClusterSecret,
        rpc_timeout: Duration,
        max_message_bytes: usize,
        dialer: Arc<dyn Dialer>,
    ) -> Self {
        Self {
            channels: Arc::default(),
            dialer,
            secret,
            rpc_timeout,
            max_message_bytes,
        }
    }

    /// The channel to `peer`, created on first use. Connecting happens
    /// lazily, so this never blocks on the network.
    pub fn channel(&self, peer: Peer<'_>) -> Result<Channel, BrokerError> {
        let address = peer.address;
        let key = (address.to_owned(), peer.node);
        let mut cached = self.channels.lock().expect("channel lock");
        cached.tick += 1;
        let tick = cached.tick;
        if let Some((channel, used)) = cached.channels.get_mut(&key) {
            *used = tick;
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| BrokerError::Invalid(format!("bad peer address {address:?}: {e}")))?
            .connect_timeout(self.rpc_timeout)
            .tcp_nodelay(true)
            // A connection that stopped carrying anything (a path that
            // broke mid-stream) is found by its missing ping answer and
            // replaced within two RPC deadlines, idle or not: Raft and the
            // heartbeats' confirmations depend on every peer connection.
            .http2_keep_alive_interval(self.rpc_timeout.max(Duration::from_secs(1)))
            .keep_alive_timeout(self.rpc_timeout.max(Duration::from_secs(1)))
            .keep_alive_while_idle(true);
        let channel = self.dialer.channel(endpoint, peer.node);
        if cached.channels.len() >= MAX_PEER_CHANNELS {
            let least_recent = cached
                .channels
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone());
            if let Some(key) = least_recent {
                cached.channels.remove(&key);
            }
        }
        cached.channels.insert(key, (channel.clone(), tick));
        Ok(channel)
    }

    /// Whether a channel to `peer` is cached.
    pub fn is_cached(&self, peer: Peer<'_>) -> bool {
        let key = (peer.address.to_owned(), peer.node);
        let cached = self.channels.lock().expect("channel lock");
        cached.channels.contains_key(&key)
    }

    pub fn peer_client(&self, peer: Peer<'_>) -> Result<RaftPeerClient<Channel>, BrokerError> {
        Ok(RaftPeerClient::new(self.channel(peer)?)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    /// Wrap `message` in a request with the secret and a deadline.
    pub fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        if let Some(secret) = self.secret.get()
            && let Ok(value) = secret.parse()
        {
            request.metadata_mut().insert(SECRET_HEADER, value);
        }
        request
    }

    pub fn rpc_timeout(&self) -> Duration {
        self.rpc_timeout
    }

    fn client(&self, peer: Peer<'_>) -> Result<RaftPeerClient<Channel>, BrokerError> {
        // An address from the membership that does not parse is this
        // cluster's fault, not the caller's.
        self.peer_client(peer)
            .map_err(|e| BrokerError::Broken(e.to_string()))
    }

    /// Forward a write to the leader at `address`; its answer is the
    /// ledger's response.
    pub async fn propose(
        &self,
        peer: Peer<'_>,
        request_id: &RequestId,
        command: &Command,
        timeout: Duration,
    ) -> Result<Response, BrokerError> {
        let message = RaftMessage {
            payload: encode(&(request_id, command)),
        };
        let reply = self
            .client(peer)?
            .propose(self.request(message, timeout))
            .await;
        leader_answer(reply)
    }

    /// Forward a membership change to the leader at `address`.
    pub async fn change_membership(
        &self,
        peer: Peer<'_>,
        change: &MembershipChange,
        timeout: Duration,
    ) -> Result<MembershipView, BrokerError> {
        let message = RaftMessage {
            payload: encode(change),
        };
        let reply = self
            .client(peer)?
            .change_membership(self.request(message, timeout))
            .await;
        leader_answer(reply)
    }

    /// Ask the leader at `address` for a read index: the commit index to
    /// wait for, and the leader's clock when it answered.
    pub async fn read_index(
        &self,
        peer: Peer<'_>,
        patience: Duration,
    ) -> Result<(u64, u64), BrokerError> {
        let reply = self
            .client(peer)?
            .read_index(self.request(ReadIndexRequest {}, patience))
            .await
            .map_err(|status| {
                BrokerError::Unavailable(format!("leader {}: {}", peer.address, status.message()))
            })?
            .into_inner();
        Ok((reply.read_index, reply.leader_time_ms))
    }

    /// A peer's recent checkpoints: `(index, digest of the applied state)`.
    pub async fn checkpoints(
        &self,
        peer: Peer<'_>,
        timeout: Duration,
    ) -> Result<Vec<(u64, Sha256Digest)>, BrokerError> {
        let reply = self
            .client(peer)?
            .checkpoints(self.request(CheckpointsRequest {}, timeout))
            .await
            .map_err(|status| from_status(&status))?;
        Ok(reply
            .into_inner()
            .checkpoints
            .into_iter()
            .filter_map(|c| Some((c.index, c.digest.try_into().ok()?)))
            .collect())
    }

    /// Ask a cluster member at `address` to take this broker in as a
    /// learner, presenting a join token. This broker is not a member yet,
    /// so the call goes to the member's public `Join`; the answer is the
    /// cluster secret.
    pub async fn join(
        &self,
        address: &str,
        token: &str,
        node_id: u64,
        own_address: String,
    ) -> Result<String, BrokerError> {
        use lapse_wire::cluster::JoinRequest;
        use lapse_wire::cluster::cluster_client::ClusterClient;
        let mut call = tonic::Request::new(JoinRequest {
            token: token.to_owned(),
            node_id,
            address: own_address,
        });
        call.set_timeout(Duration::from_secs(15));
        let reply = ClusterClient::new(self.channel(Peer::any(address))?)
            .join(call)
            .await
            .map_err(|status| from_status(&status))?;
        Ok(reply.into_inner().cluster_secret)
    }

    /// A peer's own propagation report, still encoded.
    pub async fn local_propagation(
        &self,
        peer: Peer<'_>,
        timeout: Duration,
    ) -> Result<Vec<u8>, BrokerError> {
        let reply = self
            .client(peer)?
            .local_propagation(self.request(LocalPropagationRequest {}, timeout))
            .await
            .map_err(|status| from_status(&status))?;
        Ok(reply.into_inner().report)
    }
}

/// The leader's answer to a forwarded call, decoded.
fn leader_answer<T: serde::de::DeserializeOwned>(
    reply: Result<tonic::Response<RaftMessage>, tonic::Status>,
) -> Result<T, BrokerError> {
    let reply = reply.map_err(|status| from_status(&status))?;
    decode(&reply.into_inner().payload)
        .map_err(|e| BrokerError::Broken(format!("leader sent an undecodable answer: {e}")))
}

/// What a peer's gRPC error means here. Whether a forwarded call is worth
/// retrying is decided on this: a connection that failed or a deadline
/// that passed is [`BrokerError::Unavailable`].
pub fn from_status(status: &tonic::Status) -> BrokerError {
    use tonic::Code;
    let message = status.message().to_owned();
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {
            BrokerError::Unavailable(message)
        }
        Code::InvalidArgument | Code::OutOfRange => BrokerError::Invalid(message),
        Code::Unauthenticated => BrokerError::Unauthenticated(message),
        Code::PermissionDenied => BrokerError::Forbidden(message),
        Code::NotFound => BrokerError::NotFound(message),
        Code::AlreadyExists => BrokerError::Exists(message),
        Code::FailedPrecondition | Code::Aborted => BrokerError::Precondition(message),
        Code::ResourceExhausted => BrokerError::Exhausted(message),
        _ => BrokerError::Broken(message),
    }
}

/// Encode a peer message. Encoding our own in-memory types cannot fail.
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("peer messages always serialise")
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Builds openraft network clients on top of [`PeerChannels`].
#[derive(Clone)]
pub struct PeerNetworkFactory {
    pub channels: PeerChannels,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerNetwork {
            target,
            address: node.addr.clone(),
            channels: self.channels.clone(),
        }
    }
}

/// The openraft client for one peer.
pub struct PeerNetwork {
    target: NodeId,
    address: String,
    channels: PeerChannels,
}

fn unreachable<E: std::fmt::Display>(error: E) -> Unreachable<TypeConfig> {
    Unreachable::from_string(error.to_string())
}

/// Map a gRPC failure: a peer we cannot reach is `Unreachable` (openraft
/// backs off); anything else is a network error worth retrying promptly.
fn rpc_error(target: NodeId, status: tonic::Status) -> RPCError<TypeConfig> {
    let text = format!("node {target}: {}: {}", status.code(), status.message());
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unauthenticated => {
            RPCError::Unreachable(Unreachable::from_string(text))
        }
        _ => RPCError::Network(NetworkError::from_string(text)),
    }
}

impl PeerNetwork {
    /// openraft gives appends and heartbeats a time to live of one
    /// heartbeat interval; between regions a round trip can take longer
    /// than that, and an append that always times out never replicates.
    /// So an RPC gets at least `raft.rpc_timeout_ms`.
    fn timeout(&self, option: &RPCOption) -> Duration {
        option.hard_ttl().max(self.channels.rpc_timeout())
    }

    /// Send one encoded Raft message with `send` and decode the answer.
    async fn unary<Req, Resp, Call, Sent>(
        &self,
        rpc: &Req,
        option: &RPCOption,
        send: Call,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        Call: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftMessage>) -> Sent,
        Sent: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let client = self
            .channels
            .peer_client(Peer::member(self.target, &self.address))
            .map_err(|e| RPCError::Unreachable(unreachable(e)))?;
        let request = self.channels.request(
            RaftMessage {
                payload: encode(rpc),
            },
            self.timeout(option),
        );
        let reply = send(client, request)
            .await
            .map_err(|s| rpc_error(self.target, s))?;
        decode(&reply.into_inner().payload)
            .map_err(|e| RPCError::Network(NetworkError::from_string(e.to_string())))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&rpc, &option, |mut client, request| async move {
            client.append_entries(request).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&rpc, &option, |mut client, request| async move {
            client.vote(request).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&rpc, &option, |mut client, request| async move {
            client.pre_vote(request).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self
            .channels
            .peer_client(Peer::member(self.target, &self.address))
            .map_err(|e| StreamingError::Unreachable(unreachable(e)))?;
        let header = encode(&(vote, snapshot.meta));
        let data = snapshot.snapshot;
        let mut chunks = vec![SnapshotChunk {
            header,
            data: Vec::new(),
        }];
        chunks.extend(
            data.chunks(SNAPSHOT_CHUNK_BYTES)
                .map(|piece| SnapshotChunk {
                    header: Vec::new(),
                    data: piece.to_vec(),
                }),
        );
        // Large snapshots get a deadline that grows with their size.
        let timeout = self.channels.rpc_timeout()
            + Duration::from_millis((data.len() / SNAPSHOT_CHUNK_BYTES) as u64 * 200);
        let request = self
            .channels
            .request(futures::stream::iter(chunks), timeout);
        let target = self.target;
        let send = async move {
            let reply = client
                .install_snapshot(request)
                .await
                .map_err(|s| StreamingError::from(rpc_error(target, s)))?;
            decode::<SnapshotResponse<TypeConfig>>(&reply.into_inner().payload)
                .map_err(|e| StreamingError::Network(NetworkError::from_string(e.to_string())))
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            reply = send => reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_peer_connection_cache_evicts() {
        let channels = PeerChannels::new(
            ClusterSecret::default(),
            Duration::from_secs(1),
            1 << 20,
            Arc::new(crate::env::TcpDialer),
        );
        let member = Peer::member(1, "127.0.0.1:7001");
        channels.channel(member).unwrap();
        // A stream of join requests naming new addresses, while the
        // member stays in use.
        let addresses: Vec<String> = (0..MAX_PEER_CHANNELS * 2)
            .map(|port| format!("127.0.0.1:{}", 20_000 + port))
            .collect();
        for address in &addresses {
            channels.channel(Peer::any(address)).unwrap();
            channels.channel(member).unwrap();
            let cached = channels.channels.lock().unwrap().channels.len();
            assert!(cached <= MAX_PEER_CHANNELS, "{cached} channels cached");
        }
        assert!(channels.is_cached(member), "the member in use was evicted");
        assert!(
            !channels.is_cached(Peer::any(&addresses[0])),
            "the least recently used stayed"
        );
        assert!(channels.is_cached(Peer::any(addresses.last().unwrap())));
    }
}
