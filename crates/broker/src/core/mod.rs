//! The heart of a running broker: its Raft handle, its view of the ledger,
//! and the operations every service builds on. Its fields are private;
//! services reach Raft only through what it offers:
//!
//! - [`write`]: propose a command, forwarded to the leader over the peer link;
//! - [`read`]: confirm this broker is current, and cluster time;
//! - [`membership`]: membership changes, made by the leader, forwarded like
//!   writes.

mod membership;
mod read;
mod replicas;
mod write;

pub use replicas::check_replicas;

use std::sync::{Arc, Mutex};

use lapse_storage::{LedgerView, NodeId, Raft, Sha256Digest};
use openraft::async_runtime::WatchReceiver;

use crate::config::BrokerConfig;
use crate::env::Env;
use crate::link::{ClusterSecret, PeerChannels};
use crate::replica_check::ReplicaCheck;
use crate::time::ClusterClock;

/// The Raft metrics a broker publishes about itself.
pub type RaftMetrics = openraft::RaftMetrics<lapse_storage::TypeConfig>;

/// Everything the services of one broker share.
pub struct Core {
    id: NodeId,
    address: String,
    raft: Raft,
    view: LedgerView,
    env: Env,
    channels: PeerChannels,
    secret: ClusterSecret,
    tls: Option<Arc<lapse_pki::Tls>>,
    config: BrokerConfig,
    /// Divergences from peers found by comparing checkpoint digests.
    replicas: Arc<ReplicaCheck>,
    /// Cluster time as this broker knows it (see [`crate::time`]).
    clock: ClusterClock,
    /// A `ConfirmLeadership` entry is being written.
    confirming: Arc<std::sync::atomic::AtomicBool>,
    digest_cache: Mutex<Option<(Option<u64>, Sha256Digest)>>,
}

impl Core {
    pub fn new(
        config: BrokerConfig,
        raft: Raft,
        view: LedgerView,
        env: Env,
        channels: PeerChannels,
        secret: ClusterSecret,
        tls: Option<Arc<lapse_pki::Tls>>,
    ) -> Self {
        Self {
            id: config.node_id,
            address: config.advertise_address(),
            raft,
            view,
            env,
            channels,
            secret,
            tls,
            config,
            replicas: Arc::default(),
            clock: Default::default(),
            confirming: Arc::default(),
            digest_cache: Mutex::new(None),
        }
    }

    /// This broker's node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address other brokers and clients reach this broker at.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The applied ledger, to read and to wait on.
    pub fn view(&self) -> &LedgerView {
        &self.view
    }

    /// Clock, entropy, dialer and fault points.
    pub fn env(&self) -> &Env {
        &self.env
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The secret brokers present to each other.
    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// This broker's TLS credentials; `None` for an `insecure_plaintext`
    /// broker (loopback only) or in simulation.
    pub fn tls(&self) -> Option<&Arc<lapse_pki::Tls>> {
        self.tls.as_ref()
    }

    /// Channels to peers, for the calls of the peer link.
    pub fn channels(&self) -> &PeerChannels {
        &self.channels
    }

    /// Divergences from peers found by comparing checkpoint digests.
    pub fn replicas(&self) -> &Arc<ReplicaCheck> {
        &self.replicas
    }

    /// The Raft handle, for the Raft protocol's own messages (the peer
    /// service) and for starting and stopping the broker. Services ask
    /// [`Core`] for what they need instead.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// What Raft says of this broker now: role, term, leader, indices.
    pub fn raft_metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Every other member: `(node id, address)`.
    pub fn peers(&self) -> Vec<(NodeId, String)> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
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

/// Shared handle type used by services.
pub type SharedCore = Arc<Core>;
