//! Starting and stopping a broker: open storage, start Raft and the gRPC
//! server, then start a new cluster or join a running one.

mod open;
mod run;
mod serve;

use std::sync::Arc;
use std::time::Duration;

use lapse_storage::{FlushPolicy, MemLogStore, MemSnapshotVault, Raft};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::config::{BrokerConfig, ConfigError};
use crate::core::SharedCore;
use crate::env::Env;
use crate::feed::FeedHub;
use crate::issuance::audit::{AuditLog, MemoryLog};
use crate::issuance::keys::KeyRing;

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
    #[error("TLS: {0}")]
    Tls(String),
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

/// An accepted connection the broker's gRPC server can serve: a TCP
/// stream, or the simulation's.
pub trait Connection:
    tokio::io::AsyncRead
    + tokio::io::AsyncWrite
    + tonic::transport::server::Connected<ConnectInfo: Clone + Send + Sync + 'static>
    + Unpin
    + Send
    + 'static
{
}

impl<T> Connection for T where
    T: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected<ConnectInfo: Clone + Send + Sync + 'static>
        + Unpin
        + Send
        + 'static
{
}

/// A TLS broker's certificate must name it: `spiffe://<trust domain>/broker/<node_id>`.
fn check_identity(config: &BrokerConfig, tls: &lapse_pki::Tls) -> Result<(), StartError> {
    let credentials = tls.credentials();
    match credentials.principal.as_ref().map(|p| &p.role) {
        Some(lapse_pki::Role::Broker(id)) if *id == config.node_id => Ok(()),
        Some(other) => Err(StartError::Tls(format!(
            "{}: the certificate names {other}, but this broker is node {}",
            tls.files()
                .cert
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string()),
            config.node_id
        ))),
        None => Err(StartError::Tls("the certificate names no broker".into())),
    }
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
        config.check_plaintext_on_loopback()?;
        config.validate()?;
        // Every connection holds a place under the port's caps, and has
        // `limits.handshake_timeout_ms` to start speaking HTTP/2.
        let gate = lapse_pki::ConnectionGate::new(config.limits.grpc_connections());
        match &config.tls {
            None => {
                let incoming = lapse_pki::limits::admit_stream(gate.clone(), incoming);
                Self::start_inner(
                    config,
                    env,
                    Storage::Disk,
                    incoming,
                    local_address,
                    None,
                    Some(gate),
                )
                .await
            }
            Some(tls) => {
                let now = std::time::UNIX_EPOCH + Duration::from_millis(env.now_ms());
                let tls = lapse_pki::Tls::open(tls.files(), now)
                    .map_err(|e| StartError::Tls(e.to_string()))?;
                check_identity(&config, &tls)?;
                let incoming = lapse_pki::TlsIncoming::stream(
                    tls.clone(),
                    lapse_pki::tls::ALPN_H2,
                    incoming,
                    gate.clone(),
                );
                Self::start_inner(
                    config,
                    env,
                    Storage::Disk,
                    incoming,
                    local_address,
                    Some(tls),
                    Some(gate),
                )
                .await
            }
        }
    }

    /// Start a broker on any stream of accepted [`Connection`]s, keeping its
    /// log, snapshots and audit log in `storage`. Simulation uses this with
    /// its own network and [`Storage::Memory`].
    ///
    /// The steps, each in its own file: open storage ([`open`]), start Raft
    /// over it, build the services and serve gRPC and HTTP ([`serve`]),
    /// then bootstrap or join the cluster and start background work
    /// ([`run`]).
    ///
    /// Connections here are plaintext: a configuration with `[tls]` is
    /// refused (TLS needs real sockets, [`Broker::start_on`]).
    pub async fn start_with<I, IO, IE>(
        config: BrokerConfig,
        env: Env,
        storage: Storage,
        incoming: I,
        local_address: std::net::SocketAddr,
    ) -> Result<Self, StartError>
    where
        I: futures::Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: Connection,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        if config.tls.is_some() {
            return Err(StartError::Tls(
                "a broker with [tls] serves on real sockets only (Broker::start_on)".into(),
            ));
        }
        Self::start_inner(config, env, storage, incoming, local_address, None, None).await
    }

    async fn start_inner<I, IO, IE>(
        config: BrokerConfig,
        env: Env,
        storage: Storage,
        incoming: I,
        local_address: std::net::SocketAddr,
        tls: Option<Arc<lapse_pki::Tls>>,
        grpc_gate: Option<Arc<lapse_pki::ConnectionGate>>,
    ) -> Result<Self, StartError>
    where
        I: futures::Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: Connection,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        config.validate()?;
        let opened = open::open(&config, &env, &storage, tls)?;
        let core = open::start_core(config, env, &storage, opened).await?;
        let started = match serve::Parts::new(&core, &storage) {
            Ok(parts) => serve::serve(&core, &parts, incoming, grpc_gate)
                .await
                .map(|servers| (parts, servers)),
            Err(error) => Err(error),
        };
        let (parts, servers) = match started {
            Ok(started) => started,
            Err(error) => {
                if let Err(stop) = core.raft().shutdown().await {
                    tracing::warn!(error = %stop, "raft did not shut down cleanly");
                }
                return Err(error);
            }
        };
        let mut broker = Self {
            core,
            server: servers.grpc,
            stop: servers.grpc_stop,
            local_address,
            http_address: servers.http_address,
            http_stop: servers.http_stop,
            background: Vec::new(),
            audit: parts.audit.clone(),
            keys: parts.keys.clone(),
            feed: parts.feed.clone(),
        };
        if let Err(error) = broker.bootstrap_or_join().await {
            broker.shutdown().await;
            return Err(error);
        }
        broker.background = run::background(&broker.core, &parts);
        Ok(broker)
    }

    /// The address the broker actually listens on (useful with port 0).
    pub fn local_address(&self) -> std::net::SocketAddr {
        self.local_address
    }

    pub fn core(&self) -> &SharedCore {
        &self.core
    }

    pub fn raft(&self) -> &Raft {
        self.core.raft()
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
        if let Err(error) = self.core.raft().shutdown().await {
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
