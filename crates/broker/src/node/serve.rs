//! A broker's services and servers: the domain parts every service shares
//! (feed, keys, leases, audit log, issuer), the gRPC server with the peer,
//! cluster, issuer and feed services, and the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use lapse_credential::ReplayCache;
use lapse_wire::cluster::cluster_server::ClusterServer;
use lapse_wire::frames::FeedFrameServer;
use lapse_wire::issuer::issuer_server::IssuerServer;
use lapse_wire::peer::raft_peer_server::RaftPeerServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;

use super::open::storage_error;
use super::{StartError, Storage};
use crate::api::auth::check_peer;
use crate::api::feed::FeedService;
use crate::api::guard::{CallerLimits, Guarded};
use crate::api::peer::PeerService;
use crate::api::{ClusterService, IssuerService};
use crate::config::{ConfigError, IssuanceConfig};
use crate::core::SharedCore;
use crate::feed::FeedHub;
use crate::http;
use crate::issuance::audit::AuditLog;
use crate::issuance::external::{ExternalKeys, JwksError};
use crate::issuance::issuer::Issuer;
use crate::issuance::keys::KeyRing;
use crate::issuance::leases::IndexLeases;

/// How often an idle gRPC connection is pinged, and how long its answer
/// may take before the connection is closed.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The domain parts behind the services.
pub(super) struct Parts {
    pub feed: Arc<FeedHub>,
    pub keys: Arc<KeyRing>,
    pub leases: Arc<IndexLeases>,
    pub audit: Arc<AuditLog>,
    pub issuer: Arc<Issuer>,
}

impl Parts {
    pub fn new(core: &SharedCore, storage: &Storage) -> Result<Self, StartError> {
        let issuance = &core.config().issuance;
        let data_dir = &core.config().data_dir;
        let feed = FeedHub::new(core.clone());
        let keys = Arc::new(KeyRing::default());
        let leases = Arc::new(IndexLeases::new(
            issuance.lease_block,
            Duration::from_secs(issuance.lease_seconds),
        ));
        let audit = Arc::new(match storage {
            Storage::Disk => {
                AuditLog::open(&data_dir.join("audit")).map_err(storage_error(data_dir))?
            }
            Storage::Memory(memory) => AuditLog::in_memory(memory.audit.clone()),
        });
        let issuer = Arc::new(Issuer {
            core: core.clone(),
            keys: keys.clone(),
            leases: leases.clone(),
            audit: audit.clone(),
            settings: issuance.clone(),
            external: external_issuers(issuance, core.env().monotonic_ms())?,
            policies: Default::default(),
            replay: std::sync::Mutex::new(ReplayCache::new(
                100_000,
                issuance.dpop_max_age_seconds + 2 * issuance.leeway_seconds,
            )),
            nonces: crate::issuance::nonce::DpopNonces::new(core.env().random_bytes()),
            stats: Default::default(),
        });
        Ok(Self {
            feed,
            keys,
            leases,
            audit,
            issuer,
        })
    }
}

/// The configured external JWT issuers, each with the keys it is trusted
/// for, as read now.
fn external_issuers(
    issuance: &IssuanceConfig,
    monotonic_ms: f64,
) -> Result<Vec<ExternalKeys>, StartError> {
    issuance
        .external_issuers
        .iter()
        .map(|config| {
            ExternalKeys::open(config.clone(), monotonic_ms).map_err(|error| match error {
                JwksError::Read { path, source } => StartError::Storage { path, source },
                invalid @ JwksError::Invalid { .. } => {
                    ConfigError::Invalid(invalid.to_string()).into()
                }
            })
        })
        .collect()
}

/// The running servers and how to stop them.
pub(super) struct Servers {
    pub grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    pub grpc_stop: oneshot::Sender<()>,
    pub http_address: Option<std::net::SocketAddr>,
    pub http_stop: Option<oneshot::Sender<()>>,
}

/// Serve every gRPC service on `incoming`, and HTTP if configured.
pub(super) async fn serve<I, IO, IE>(
    core: &SharedCore,
    parts: &Parts,
    incoming: I,
    grpc_gate: Option<Arc<lapse_pki::ConnectionGate>>,
) -> Result<Servers, StartError>
where
    I: futures::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: super::Connection,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let limits = &core.config().limits;
    let peer = RaftPeerServer::new(PeerService {
        core: core.clone(),
        feed: parts.feed.clone(),
    })
    .max_decoding_message_size(limits.max_peer_message_bytes)
    .max_encoding_message_size(limits.max_peer_message_bytes);
    // Every unary call has a server-side deadline; clients and operators
    // have a rate per caller, brokers do not.
    let deadline = Duration::from_millis(limits.request_timeout_ms);
    let callers = CallerLimits::new(core);
    let peer = InterceptedService::new(Guarded::new(peer, None, deadline), check_peer(core));
    let cluster = ClusterServer::new(ClusterService {
        core: core.clone(),
        keys: parts.keys.clone(),
        audit: parts.audit.clone(),
        feed: parts.feed.clone(),
    })
    .max_decoding_message_size(limits.max_request_bytes);
    let cluster = Guarded::new(cluster, Some(callers.clone()), deadline);
    let issuer = IssuerServer::new(IssuerService {
        issuer: parts.issuer.clone(),
    })
    .max_decoding_message_size(limits.max_request_bytes);
    let issuer = Guarded::new(issuer, Some(callers.clone()), deadline);
    let feed = FeedFrameServer::new(FeedService {
        hub: parts.feed.clone(),
    });
    let feed = Guarded::new(feed, None, deadline);
    let (grpc_stop, stopped) = oneshot::channel::<()>();
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .concurrency_limit_per_connection(limits.max_streams_per_connection as usize)
            .max_concurrent_streams(limits.max_streams_per_connection)
            // A connection whose client stopped answering (a half-open
            // socket) is closed within 40 s, and gives its place back.
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
            .add_service(peer)
            .add_service(cluster)
            .add_service(issuer)
            .add_service(feed)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    let guards = http::Guards {
        grpc: grpc_gate,
        http: None,
        callers,
    };
    let (http_address, http_stop) = match serve_http(core, parts, guards).await {
        Ok(Some((address, stop))) => (Some(address), Some(stop)),
        Ok(None) => (None, None),
        Err(error) => {
            let _ = grpc_stop.send(());
            return Err(error);
        }
    };
    Ok(Servers {
        grpc,
        grpc_stop,
        http_address,
        http_stop,
    })
}

/// Serve JWKS, issuer metadata and metrics over HTTP, if configured.
async fn serve_http(
    core: &SharedCore,
    parts: &Parts,
    mut guards: http::Guards,
) -> Result<Option<(std::net::SocketAddr, oneshot::Sender<()>)>, StartError> {
    let issuance = &core.config().issuance;
    let Some(address) = issuance.http_listen else {
        return Ok(None);
    };
    let listen_error = |source| StartError::Listen {
        address: address.to_string(),
        source,
    };
    if !issuance.issuer.starts_with("https://") && !issuance.issuer.starts_with("http://") {
        tracing::warn!(
            issuer = %issuance.issuer,
            "issuance.issuer is not a URL: credentials' status list URIs will not resolve; set it to the HTTPS URL relying parties reach this listener at"
        );
    }
    let listener = TcpListener::bind(address).await.map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    let base_url = http::base_url(
        issuance.http_advertise.as_deref(),
        bound,
        core.tls().is_some(),
    );
    guards.http = Some(lapse_pki::ConnectionGate::new(
        core.config().limits.http_connections(),
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    let served = http::HttpParts {
        core: core.clone(),
        feed: parts.feed.clone(),
        issuer: parts.issuer.clone(),
        guards,
        base_url,
    };
    tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        if let Err(error) = http::serve(served, listener, stopped).await {
            tracing::warn!(%error, "HTTP server stopped");
        }
    });
    Ok(Some((bound, stop)))
}
