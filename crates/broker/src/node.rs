//! Starting and stopping a broker: open storage, start Raft and the gRPC
//! server, then start a new cluster or join a running one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lapse_ledger::LedgerState;
use lapse_storage::{
    FileSnapshotVault, FlushPolicy, MemLogStore, MemSnapshotVault, Node, Raft, SnapshotVault,
    StateMachineStore, open_sled, start_raft_scope,
};
use lapse_wire::cluster::JoinRequest;
use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::cluster::cluster_server::ClusterServer;
use lapse_wire::feed::feed_server::FeedServer;
use lapse_wire::peer::raft_peer_server::RaftPeerServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;

use crate::cluster_service::ClusterService;
use crate::config::{BrokerConfig, ConfigError};
use crate::consensus::{LeaderRestart, raft_config};
use crate::core::{Core, SharedCore};
use crate::env::Env;
use crate::feed::{FeedHub, FeedService};
use crate::issuance::audit::{AuditLog, MemoryLog};
use crate::issuance::http;
use crate::issuance::keys::KeyRing;
use crate::issuance::leases::IndexLeases;
use crate::issuance::service::IssuerService;
use crate::peer_service::{PeerService, check_secret};
use crate::peers::{ClusterSecret, PeerChannels, PeerNetworkFactory};
use lapse_credential::{ExternalIssuer, ReplayCache};
use lapse_wire::issuer::issuer_server::IssuerServer;

const SECRET_FILE: &str = "cluster-secret";
/// How long a new broker keeps trying to reach the cluster it joins.
const JOIN_PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage under {path}: {source}")]
    Storage {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("raft failed to start: {0}")]
    Raft(String),
    #[error(
        "this broker has no cluster secret: set cluster.secret, or join a cluster with cluster.join"
    )]
    NoSecret,
    #[error("joining through {address} was refused: {message}")]
    JoinRefused { address: String, message: String },
    #[error("could not reach {address} to join within {seconds} s: {message}")]
    JoinUnreachable {
        address: String,
        seconds: u64,
        message: String,
    },
}

/// Where a broker keeps its Raft log, snapshots and audit log.
pub enum Storage {
    /// sled, snapshot files and the audit file under `data_dir`.
    Disk,
    /// Memory, for simulation: keep the [`MemoryStorage`] to start the
    /// broker again after a simulated crash.
    Memory(MemoryStorage),
}

/// A simulated broker's durable state. The log store loses what it had not
/// flushed when [`MemoryStorage::crash`] is called.
#[derive(Clone)]
pub struct MemoryStorage {
    pub log: MemLogStore,
    pub vault: MemSnapshotVault,
    pub audit: Arc<std::sync::Mutex<MemoryLog>>,
}

impl MemoryStorage {
    pub fn new(policy: FlushPolicy) -> Self {
        Self {
            log: MemLogStore::new(policy),
            vault: MemSnapshotVault::default(),
            audit: Arc::default(),
        }
    }

    /// What a process crash does to the disk: unflushed log writes vanish.
    pub fn crash(&self) {
        self.log.crash();
    }
}

/// A running broker. Dropping it does not stop it: call [`Broker::shutdown`].
pub struct Broker {
    core: SharedCore,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    stop: tokio::sync::oneshot::Sender<()>,
    local_address: std::net::SocketAddr,
    http_address: Option<std::net::SocketAddr>,
    http_stop: Option<tokio::sync::oneshot::Sender<()>>,
    background: Vec<JoinHandle<()>>,
    audit: Arc<AuditLog>,
    keys: Arc<KeyRing>,
    feed: Arc<FeedHub>,
}

impl Broker {
    /// Start a broker on `config.listen`.
    pub async fn start(config: BrokerConfig, env: Env) -> Result<Self, StartError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    address: config.listen.to_string(),
                    source,
                })?;
        Self::start_on(config, env, listener).await
    }

    /// Start a broker serving on an already bound listener.
    pub async fn start_on(
        config: BrokerConfig,
        env: Env,
        listener: TcpListener,
    ) -> Result<Self, StartError> {
        let local_address = listener.local_addr().map_err(|source| StartError::Listen {
            address: config.listen.to_string(),
            source,
        })?;
        // Accepted sockets get no-delay here: the server builder's setting
        // applies only to listeners it binds itself.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        Self::start_with(config, env, Storage::Disk, incoming, local_address).await
    }

    /// Start a broker on any stream of accepted connections, keeping its
    /// log, snapshots and audit log in `storage`. Simulation uses this with
    /// its own network and [`Storage::Memory`].
    pub async fn start_with<I, IO, IE>(
        config: BrokerConfig,
        env: Env,
        storage: Storage,
        incoming: I,
        local_address: std::net::SocketAddr,
    ) -> Result<Self, StartError>
    where
        I: futures::Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + tonic::transport::server::Connected
            + Unpin
            + Send
            + 'static,
        IO::ConnectInfo: Clone + Send + Sync + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        config.validate()?;
        let data_dir = config.data_dir.clone();
        let storage_error = |source| StartError::Storage {
            path: data_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&data_dir).map_err(storage_error)?;
        let secret = ClusterSecret::new(match &config.cluster.secret {
            Some(secret) => Some(secret.clone()),
            None => read_secret(&data_dir).map_err(storage_error)?,
        });
        if secret.get().is_none() && config.cluster.join.is_none() {
            return Err(StartError::NoSecret);
        }

        let initial = LedgerState::new(config.ledger_params());
        let mut state_machine = match &storage {
            Storage::Disk => StateMachineStore::new(
                initial,
                SnapshotVault::File(
                    FileSnapshotVault::open(&data_dir.join("snapshots")).map_err(storage_error)?,
                ),
            ),
            Storage::Memory(memory) => {
                StateMachineStore::new(initial, SnapshotVault::Memory(memory.vault.clone()))
            }
        };
        state_machine = state_machine.with_checkpoints(config.raft.checkpoint_every_entries);
        if let Some(faults) = env.faults.clone() {
            state_machine = state_machine.with_apply_delay(Arc::new(move || faults.apply_delay()));
        }
        let view = state_machine.view();
        let channels = PeerChannels::new(
            secret.clone(),
            Duration::from_millis(config.raft.rpc_timeout_ms),
            config.limits.max_peer_message_bytes,
            env.dialer.clone(),
        );
        let leader_restart = match &env.faults {
            Some(faults) if faults.restore_leadership_without_vote() => {
                LeaderRestart::RestoreWithoutVote
            }
            _ => LeaderRestart::Elect,
        };
        let raft_config = raft_config(&config.raft, leader_restart)
            .validate()
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let network = PeerNetworkFactory {
            channels: channels.clone(),
        };
        let raft_seed = u64::from_le_bytes(env.random_bytes::<8>());
        let raft_config = Arc::new(raft_config);
        let raft: Raft = match &storage {
            Storage::Disk => {
                let log_store = open_sled(&data_dir.join("raft")).map_err(storage_error)?;
                start_raft_scope(
                    raft_seed,
                    openraft::Raft::new(
                        config.node_id,
                        raft_config,
                        network,
                        log_store,
                        state_machine,
                    ),
                )
                .await
            }
            Storage::Memory(memory) => {
                start_raft_scope(
                    raft_seed,
                    openraft::Raft::new(
                        config.node_id,
                        raft_config,
                        network,
                        memory.log.clone(),
                        state_machine,
                    ),
                )
                .await
            }
        }
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let faults = env.faults.clone();
        let core: SharedCore = Arc::new(Core::new(
            config.clone(),
            raft.clone(),
            view,
            env,
            channels,
            secret.clone(),
        ));

        let feed = FeedHub::new(core.clone());
        let feed_service = FeedServer::new(FeedService { hub: feed.clone() });
        let peer = RaftPeerServer::new(PeerService {
            core: core.clone(),
            feed: feed.clone(),
        })
        .max_decoding_message_size(config.limits.max_peer_message_bytes)
        .max_encoding_message_size(config.limits.max_peer_message_bytes);
        let peer = InterceptedService::new(peer, check_secret(&secret));
        let issuance = &config.issuance;
        let keys = Arc::new(KeyRing::default());
        let leases = Arc::new(IndexLeases::new(
            issuance.lease_block,
            Duration::from_secs(issuance.lease_seconds),
        ));
        let audit = Arc::new(match &storage {
            Storage::Disk => AuditLog::open(&data_dir.join("audit")).map_err(storage_error)?,
            Storage::Memory(memory) => AuditLog::in_memory(memory.audit.clone()),
        });
        let cluster = ClusterServer::new(ClusterService {
            core: core.clone(),
            keys: keys.clone(),
            audit: audit.clone(),
            feed: feed.clone(),
        })
        .max_decoding_message_size(config.limits.max_request_bytes);
        let mut external = Vec::new();
        for issuer in &issuance.external_issuers {
            let text = std::fs::read_to_string(&issuer.jwks_file).map_err(|source| {
                StartError::Storage {
                    path: issuer.jwks_file.display().to_string(),
                    source,
                }
            })?;
            let verifier = ExternalIssuer::from_jwks_json(
                issuer.issuer.clone(),
                issuer.audience.clone(),
                &text,
            )
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", issuer.jwks_file.display())))?;
            external.push((issuer.clone(), verifier));
        }
        let issuer_service = IssuerServer::new(IssuerService {
            core: core.clone(),
            keys: keys.clone(),
            leases: leases.clone(),
            audit: audit.clone(),
            settings: issuance.clone(),
            external,
            policies: Default::default(),
            replay: std::sync::Mutex::new(ReplayCache::new(
                100_000,
                issuance.dpop_max_age_seconds + 2 * issuance.leeway_seconds,
            )),
        })
        .max_decoding_message_size(config.limits.max_request_bytes);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .concurrency_limit_per_connection(1024)
                .add_service(peer)
                .add_service(cluster)
                .add_service(issuer_service)
                .add_service(feed_service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        let (http_address, http_stop) = match issuance.http_listen {
            Some(address) => {
                let listener =
                    TcpListener::bind(address)
                        .await
                        .map_err(|source| StartError::Listen {
                            address: address.to_string(),
                            source,
                        })?;
                let bound = listener.local_addr().map_err(|source| StartError::Listen {
                    address: address.to_string(),
                    source,
                })?;
                let base_url = http::base_url(issuance.http_advertise.as_deref(), bound);
                let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
                let http_core = core.clone();
                let http_feed = feed.clone();
                tokio::spawn(async move {
                    let stopped = async {
                        let _ = http_stopped.await;
                    };
                    if let Err(error) =
                        http::serve(http_core, http_feed, listener, base_url, stopped).await
                    {
                        tracing::warn!(%error, "HTTP server stopped");
                    }
                });
                (Some(bound), Some(http_stop))
            }
            None => (None, None),
        };
        let mut broker = Self {
            core,
            server,
            stop,
            local_address,
            http_address,
            http_stop,
            background: Vec::new(),
            audit: audit.clone(),
            keys: keys.clone(),
            feed: feed.clone(),
        };

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            if let Some(lowest) = config.cluster.members.iter().map(|m| m.id).min()
                && lowest == config.node_id
            {
                let members: BTreeMap<u64, Node> = config
                    .cluster
                    .members
                    .iter()
                    .map(|m| {
                        (
                            m.id,
                            Node {
                                addr: m.address.clone(),
                            },
                        )
                    })
                    .collect();
                if let Err(error) = raft.initialize(members).await {
                    tracing::info!(%error, "cluster already initialised");
                }
            }
            if let (Some(address), Some(token)) = (&config.cluster.join, &config.cluster.join_token)
                && let Err(error) = broker.join(address, token).await
            {
                broker.shutdown().await;
                return Err(error);
            }
        }
        let core = broker.core.clone();
        let mut background = feed.spawn();
        background.extend([
            keys.spawn_rotation(
                core.clone(),
                Duration::from_secs(issuance.key_rotation_seconds),
                Duration::from_secs(issuance.key_overlap_seconds),
            ),
            leases.spawn_refill(core.clone()),
            audit.spawn_shipping(core.clone(), Duration::from_millis(issuance.audit_ship_ms)),
        ]);
        if core.config.raft.replica_check_ms > 0 {
            let every = Duration::from_millis(core.config.raft.replica_check_ms);
            background.push(tokio::spawn(core.replicas.clone().run(core, every)));
        }
        if let Some(faults) = faults {
            let raft = broker.core.raft.clone();
            background.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(crate::env::FAULT_POLL).await;
                    if faults.force_snapshot()
                        && let Err(error) = raft.trigger().snapshot().await
                    {
                        tracing::debug!(%error, "a forced snapshot did not start");
                    }
                }
            }));
        }
        broker.background = background;
        broker.feed = feed;
        Ok(broker)
    }

    /// Ask the broker at `address` to add this one as a learner.
    async fn join(&self, address: &str, token: &str) -> Result<(), StartError> {
        let config = &self.core.config;
        let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
        let request = JoinRequest {
            token: token.to_owned(),
            node_id: config.node_id,
            address: config.advertise_address(),
        };
        let channel =
            self.core
                .channels
                .channel(address)
                .map_err(|message| StartError::JoinRefused {
                    address: address.to_owned(),
                    message,
                })?;
        loop {
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(Duration::from_secs(15));
            match ClusterClient::new(channel.clone()).join(call).await {
                Ok(reply) => {
                    let secret = reply.into_inner().cluster_secret;
                    write_secret(&config.data_dir, &secret).map_err(|source| {
                        StartError::Storage {
                            path: config.data_dir.display().to_string(),
                            source,
                        }
                    })?;
                    self.core.secret.set(secret);
                    tracing::info!(address, "joined the cluster as a learner");
                    return Ok(());
                }
                Err(status)
                    if matches!(
                        status.code(),
                        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
                    ) =>
                {
                    if tokio::time::Instant::now() > deadline {
                        return Err(StartError::JoinUnreachable {
                            address: address.to_owned(),
                            seconds: JOIN_PATIENCE.as_secs(),
                            message: status.message().to_owned(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(status) => {
                    return Err(StartError::JoinRefused {
                        address: address.to_owned(),
                        message: format!("{:?}: {}", status.code(), status.message()),
                    });
                }
            }
        }
    }

    /// The address the broker actually listens on (useful with port 0).
    pub fn local_address(&self) -> std::net::SocketAddr {
        self.local_address
    }

    pub fn core(&self) -> &SharedCore {
        &self.core
    }

    pub fn raft(&self) -> &Raft {
        &self.core.raft
    }

    /// The address the JWKS and issuer metadata are served on, if enabled.
    pub fn http_address(&self) -> Option<std::net::SocketAddr> {
        self.http_address
    }

    /// This broker's revocation feed.
    pub fn feed(&self) -> &Arc<FeedHub> {
        &self.feed
    }

    /// The signing keys of this broker.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// Stop background work, Raft, then the servers, and wait for them.
    pub async fn shutdown(mut self) {
        for task in self.background.drain(..) {
            task.abort();
        }
        if let Some(http_stop) = self.http_stop.take() {
            let _ = http_stop.send(());
        }
        if let Err(error) = self.core.raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(5), self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "server stopped with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "server task failed"),
            Err(_) => tracing::warn!("server did not stop within 5 s"),
        }
        self.audit.close();
    }
}

fn read_secret(data_dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(data_dir.join(SECRET_FILE)) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_secret(data_dir: &Path, secret: &str) -> std::io::Result<()> {
    let path = data_dir.join(SECRET_FILE);
    let temporary = data_dir.join(format!("{SECRET_FILE}.new"));
    std::fs::write(&temporary, secret)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(temporary, path)
}
