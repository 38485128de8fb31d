//! TLS for tonic and axum: a reloading [`Tls`] context, a stream of
//! accepted and handshaken connections that carry the peer's
//! [`PeerIdentity`] into every request, and a connector for clients.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;

use crate::PkiError;
use crate::files::{Reloading, TlsFiles};
use crate::limits::{ConnectionGate, ConnectionPermit, Handshake};
use crate::name::Principal;
use crate::tls::{ALPN_H2, ALPN_HTTP1, Credentials, Expect};

/// How often certificate files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// How long a TLS handshake may take before the connection is dropped,
/// unless the listener's [`crate::limits::ConnectionLimits`] say otherwise.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on one listener; more wait in the
/// accept queue.
pub const MAX_HANDSHAKES: usize = 256;

/// The configurations built from one set of credentials.
struct Built {
    credentials: Arc<Credentials>,
    grpc: Option<Arc<ServerConfig>>,
    http: Option<Arc<ServerConfig>>,
    /// Client configurations by the server they accept; at most one per
    /// peer broker, rebuilt on reload.
    clients: Mutex<BTreeMap<Expect, Arc<ClientConfig>>>,
}

/// The most client configurations kept (one per peer broker dialled).
const MAX_CLIENT_CONFIGS: usize = 1024;

impl Built {
    fn new(credentials: Arc<Credentials>) -> Result<Self, PkiError> {
        let (grpc, http) = if credentials.identity.is_some() {
            (
                Some(Arc::new(credentials.server_config(ALPN_H2)?)),
                Some(Arc::new(credentials.server_config(ALPN_HTTP1)?)),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            credentials,
            grpc,
            http,
            clients: Mutex::new(BTreeMap::new()),
        })
    }
}

/// A process's TLS: its credentials, read again when the files change, and
/// the server and client configurations built from them.
pub struct Tls {
    source: Reloading,
    built: RwLock<Arc<Built>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", self.source.files())
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Read `files` and build the configurations; refuses expired or
    /// mismatched files with a message naming the file.
    pub fn open(files: TlsFiles, now: SystemTime) -> Result<Arc<Self>, PkiError> {
        let source = Reloading::open(files, now)?;
        let built = Built::new(source.current())?;
        Ok(Arc::new(Self {
            source,
            built: RwLock::new(Arc::new(built)),
        }))
    }

    fn built(&self) -> Arc<Built> {
        self.built.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn credentials(&self) -> Arc<Credentials> {
        self.built().credentials.clone()
    }

    pub fn files(&self) -> &TlsFiles {
        self.source.files()
    }

    /// Read the files again if they changed (or if `force`). New
    /// connections use the new credentials; open ones keep theirs.
    pub fn reload(&self, now: SystemTime, force: bool) -> Result<bool, PkiError> {
        if !self.source.reload(now, force)? {
            return Ok(false);
        }
        let built = Built::new(self.source.current())?;
        *self.built.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(built);
        Ok(true)
    }

    /// Watch the files: read them again when they change (checked every
    /// `every`) or when the process gets SIGHUP. A failed reload is logged
    /// and the credentials in use stay.
    pub fn spawn_reload(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let forced = match hangup.as_mut() {
                    Some(signal) => tokio::select! {
                        _ = signal.recv() => true,
                        _ = tokio::time::sleep(every) => false,
                    },
                    None => {
                        tokio::time::sleep(every).await;
                        false
                    }
                };
                #[cfg(not(unix))]
                let forced = {
                    tokio::time::sleep(every).await;
                    false
                };
                match tls.reload(SystemTime::now(), forced) {
                    Ok(true) => {
                        let credentials = tls.credentials();
                        tracing::info!(
                            identity = ?credentials.principal.as_ref().map(|p| p.to_string()),
                            expires = ?credentials.cert.as_ref().map(|c| humantime::format_rfc3339_seconds(c.not_after).to_string()),
                            "TLS certificate reloaded"
                        );
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, "TLS files changed but could not be used; keeping the current certificate")
                    }
                }
            }
        })
    }

    fn client(&self, expect: Expect) -> io::Result<Arc<ClientConfig>> {
        let built = self.built();
        let mut clients = built.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(config) = clients.get(&expect) {
            return Ok(config.clone());
        }
        let config = Arc::new(
            built
                .credentials
                .client_config(expect, ALPN_H2)
                .map_err(io::Error::other)?,
        );
        if clients.len() >= MAX_CLIENT_CONFIGS {
            clients.clear();
        }
        clients.insert(expect, config.clone());
        Ok(config)
    }
}

/// Who is on the other end of an accepted connection, as its verified
/// certificate says: in every request's extensions.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// `None`: the client presented no certificate.
    pub principal: Option<Principal>,
    pub remote: Option<SocketAddr>,
}

impl PeerIdentity {
    /// The verifier name the client certificate of `request`'s connection
    /// proves, for a feed subscription (a broker's or a relay's); else
    /// PERMISSION_DENIED for another role's certificate and
    /// UNAUTHENTICATED for none.
    pub fn certified_verifier<T>(request: &tonic::Request<T>) -> Result<String, tonic::Status> {
        let principal = request
            .extensions()
            .get::<PeerIdentity>()
            .and_then(|identity| identity.principal.as_ref());
        match principal.map(|p| &p.role) {
            Some(crate::Role::Verifier(name)) => Ok(name.clone()),
            Some(other) => Err(tonic::Status::permission_denied(format!(
                "the feed is for verifiers; the client certificate names {other}"
            ))),
            None => Err(tonic::Status::unauthenticated(
                "the feed needs a verifier certificate of this cluster (lapse certs verifier)",
            )),
        }
    }
}

/// An accepted connection after its TLS handshake.
pub struct Secured {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    identity: PeerIdentity,
    /// The HTTP handshake's deadline, running on from the TLS one.
    handshake: Handshake,
    _permit: ConnectionPermit,
}

impl std::fmt::Debug for Secured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secured")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Secured {
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }
}

impl Connected for Secured {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.identity.clone()
    }
}

impl AsyncRead for Secured {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        crate::limits::poll_read_under(&mut this.handshake, &mut this.stream, cx, buf)
    }
}

impl AsyncWrite for Secured {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            crate::limits::note_write(&mut self.handshake);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            crate::limits::note_write(&mut self.handshake);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepted TCP connections, admitted by `gate` (the others are closed
/// at once) and handshaken concurrently (a slow or silent client holds up
/// no one else): a stream of [`Secured`] connections. Failed or late
/// handshakes are logged and dropped. The stream ends when `accepted`
/// does.
pub struct TlsIncoming;

impl TlsIncoming {
    pub fn stream<S>(
        tls: Arc<Tls>,
        alpn: &'static [u8],
        accepted: S,
        gate: Arc<ConnectionGate>,
    ) -> impl Stream<Item = io::Result<Secured>> + Send + 'static
    where
        S: Stream<Item = io::Result<TcpStream>> + Send + 'static,
    {
        let accepted = Box::pin(accepted);
        accepted
            .filter_map(move |next| {
                let admitted = match next {
                    Ok(stream) => crate::limits::admit(&gate, stream),
                    Err(error) => {
                        tracing::debug!(%error, "accept failed");
                        None
                    }
                };
                std::future::ready(admitted)
            })
            .map(move |admitted| {
                let tls = tls.clone();
                async move { handshake(&tls, alpn, admitted).await }
            })
            .buffer_unordered(MAX_HANDSHAKES)
            .filter_map(|secured| async move { secured.map(Ok) })
    }
}

async fn handshake(
    tls: &Tls,
    alpn: &[u8],
    admitted: crate::limits::Admitted<TcpStream>,
) -> Option<Secured> {
    let (stream, permit, mut deadline) = admitted.into_parts();
    let remote = stream.peer_addr().ok();
    // One set of credentials for the handshake and for naming the peer.
    let built = tls.built();
    let config = if alpn == ALPN_H2 {
        &built.grpc
    } else {
        &built.http
    };
    let Some(config) = config.clone() else {
        tracing::warn!("cannot serve TLS: this process has no certificate to serve with");
        return None;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let until = deadline
        .deadline()
        .unwrap_or_else(|| tokio::time::Instant::now() + HANDSHAKE_TIMEOUT);
    let stream = match tokio::time::timeout_at(until, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::info!(?remote, %error, "TLS handshake refused");
            return None;
        }
        Err(_) => {
            deadline.expire();
            tracing::info!(?remote, "TLS handshake timed out");
            return None;
        }
    };
    let credentials = &built.credentials;
    let principal = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| credentials.peer(chain));
    Some(Secured {
        stream,
        identity: PeerIdentity { principal, remote },
        handshake: deadline,
        _permit: permit,
    })
}

/// Accept TLS connections for axum: [`TlsIncoming`] behind axum's
/// `Listener`.
pub struct TlsListener {
    incoming: Pin<Box<dyn Stream<Item = io::Result<Secured>> + Send>>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(
        tls: Arc<Tls>,
        listener: tokio::net::TcpListener,
        gate: Arc<ConnectionGate>,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let accepted = tokio_stream::wrappers::TcpListenerStream::new(listener);
        Ok(Self {
            incoming: Box::pin(TlsIncoming::stream(tls, ALPN_HTTP1, accepted, gate)),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Secured;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Secured, SocketAddr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(secured)) => {
                    let remote = secured.identity.remote.unwrap_or(self.local);
                    return (secured, remote);
                }
                Some(Err(_)) => continue,
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for PeerIdentity
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.io().identity.clone()
    }
}

/// Dials a broker over TLS for tonic, accepting only the server `expect`
/// names. Give it an `http://host:port` endpoint (tonic must not add TLS
/// of its own).
#[derive(Clone)]
pub struct TlsConnector {
    tls: Arc<Tls>,
    expect: Expect,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("expect", &self.expect)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    pub fn new(tls: Arc<Tls>, expect: Expect) -> Self {
        Self { tls, expect }
    }

    /// A lazily connecting channel to `endpoint` through this connector.
    pub fn channel(&self, endpoint: tonic::transport::Endpoint) -> tonic::transport::Channel {
        endpoint.connect_with_connector_lazy(self.clone())
    }

    /// A channel to `endpoint`, connected now.
    pub async fn connect(
        &self,
        endpoint: tonic::transport::Endpoint,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        endpoint.connect_with_connector(self.clone()).await
    }
}

type Connecting =
    Pin<Box<dyn std::future::Future<Output = io::Result<TokioIo<ClientStream>>> + Send>>;
type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<ClientStream>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (tls, expect) = (self.tls.clone(), self.expect);
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let config = tls.client(expect)?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|_| io::Error::other(format!("{host}: not a host name")))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|error| io::Error::other(describe(&host, port, expect, error)))?;
            if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
                return Err(io::Error::other(format!(
                    "{host}:{port} did not agree to HTTP/2 over TLS"
                )));
            }
            Ok(TokioIo::new(stream))
        })
    }
}

/// A handshake failure in words an operator can act on.
fn describe(host: &str, port: u16, expect: Expect, error: io::Error) -> String {
    let wanted = match expect {
        Expect::AnyBroker => "a broker of this cluster".to_owned(),
        Expect::FeedSource => "a broker or relay of this cluster".to_owned(),
        Expect::Broker(id) => format!("broker {id}"),
    };
    let reason = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(|e| match e {
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ) => {
                format!("its certificate does not name {wanted}")
            }
            rustls::Error::InvalidCertificate(cert) => {
                format!("its certificate is not valid: {cert:?}")
            }
            rustls::Error::AlertReceived(alert) => {
                format!("it refused our certificate ({alert:?})")
            }
            other => other.to_string(),
        })
        .unwrap_or_else(|| error.to_string());
    format!("TLS with {host}:{port} failed: {reason}")
}

/// A TLS client connection to a server outside the cluster (an SSF
/// receiver's push endpoint): its certificate must chain to the public
/// web PKI (Mozilla's roots, as `webpki-roots` carries them) or to
/// `extra` (the cluster's own CA, for receivers inside the trust domain),
/// and name `host`. No client certificate is presented.
pub async fn connect_public(
    host: &str,
    port: u16,
    extra: Option<&rustls::RootCertStore>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(extra) = extra {
        roots.roots.extend(extra.roots.iter().cloned());
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
    .map_err(|e| invalid(format!("{host}: {e}")))?;
    let tcp =
        tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}
