//! Limits every listener shares, plaintext or TLS: a [`ConnectionGate`]
//! that caps open connections per listener and per remote IP and gives each
//! admitted connection a handshake deadline, and a [`RateLimiter`] of token
//! buckets per caller with a hard bound on the callers it remembers.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::Connected;

use crate::transport::PeerIdentity;

/// What one listener admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once on the listener; more are closed at once.
    pub max_connections: usize,
    /// Connections open at once from one remote IP address.
    pub max_per_ip: usize,
    /// How long a new connection may take to finish its handshakes (TLS,
    /// then the HTTP/2 preface or the first HTTP/1 request) before it is
    /// dropped.
    pub handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// 1,024 connections, 256 from one IP, 10 s to finish the handshakes.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_per_ip: 256,
            handshake_timeout: crate::transport::HANDSHAKE_TIMEOUT,
        }
    }
}

impl ConnectionLimits {
    /// Why these limits cannot work, if they cannot.
    pub fn problem(&self) -> Option<&'static str> {
        if self.max_connections == 0 {
            Some("the connection cap must be at least 1")
        } else if self.max_per_ip == 0 {
            Some("the per-IP connection cap must be at least 1")
        } else if self.handshake_timeout.is_zero() {
            Some("the handshake timeout must be positive")
        } else {
            None
        }
    }
}

/// What a [`ConnectionGate`] has seen, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Connections open now.
    pub open: usize,
    /// Connections closed at once because the listener was full.
    pub refused_listener_full: u64,
    /// Connections closed at once because their IP held its share.
    pub refused_ip_full: u64,
    /// Connections dropped for not finishing their handshakes in time.
    pub handshake_timeouts: u64,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// Only IPs with a connection open: never more entries than `total`.
    per_ip: BTreeMap<IpAddr, usize>,
}

/// One listener's connection cap. Each admitted connection holds a
/// [`ConnectionPermit`] until it is dropped.
pub struct ConnectionGate {
    limits: ConnectionLimits,
    open: Mutex<Open>,
    refused_listener_full: AtomicU64,
    refused_ip_full: AtomicU64,
    handshake_timeouts: AtomicU64,
}

impl std::fmt::Debug for ConnectionGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionGate")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ConnectionGate {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::default(),
            refused_listener_full: AtomicU64::new(0),
            refused_ip_full: AtomicU64::new(0),
            handshake_timeouts: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    pub fn stats(&self) -> GateStats {
        GateStats {
            open: self.open.lock().unwrap_or_else(|e| e.into_inner()).total,
            refused_listener_full: self.refused_listener_full.load(Relaxed),
            refused_ip_full: self.refused_ip_full.load(Relaxed),
            handshake_timeouts: self.handshake_timeouts.load(Relaxed),
        }
    }

    /// A permit for a connection from `remote`, or `None` (counted) when
    /// the listener or the IP holds its cap.
    pub fn admit(self: &Arc<Self>, remote: Option<IpAddr>) -> Option<ConnectionPermit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.limits.max_connections {
            self.refused_listener_full.fetch_add(1, Relaxed);
            return None;
        }
        if let Some(ip) = remote {
            let held = open.per_ip.entry(ip).or_insert(0);
            if *held >= self.limits.max_per_ip {
                self.refused_ip_full.fetch_add(1, Relaxed);
                return None;
            }
            *held += 1;
        }
        open.total += 1;
        Some(ConnectionPermit {
            gate: self.clone(),
            remote,
        })
    }

    /// The handshake deadline for a connection admitted now.
    pub fn handshake(self: &Arc<Self>) -> Handshake {
        Handshake {
            deadline: Some(Box::pin(tokio::time::sleep(self.limits.handshake_timeout))),
            read: false,
            expired: false,
            gate: self.clone(),
        }
    }
}

/// A connection's place on its listener, given back on drop.
pub struct ConnectionPermit {
    gate: Arc<ConnectionGate>,
    remote: Option<IpAddr>,
}

impl std::fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPermit")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.remote
            && let Some(held) = open.per_ip.get_mut(&ip)
        {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.per_ip.remove(&ip);
            }
        }
    }
}

/// A connection's handshake deadline. It ends the first time the server
/// writes after having read something: the TLS server hello, the HTTP/2
/// settings acknowledgement, or an HTTP/1 response. Until then, a read
/// after the deadline fails, which closes the connection.
pub struct Handshake {
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    read: bool,
    expired: bool,
    gate: Arc<ConnectionGate>,
}

impl Handshake {
    /// When the deadline is, if it is still running.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline.as_ref().map(|sleep| sleep.deadline())
    }

    /// Count a connection whose handshake ran out of time elsewhere (TLS).
    pub fn expire(&mut self) {
        if !self.expired {
            self.expired = true;
            self.deadline = None;
            self.gate.handshake_timeouts.fetch_add(1, Relaxed);
        }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(sleep) = self.deadline.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            self.expire();
        }
        self.expired
    }

    fn timed_out() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the connection did not finish its handshake in time",
        )
    }

    fn poll_read<IO: AsyncRead + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.poll_expired(cx) {
            return Poll::Ready(Err(Self::timed_out()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.read = true;
        }
        polled
    }

    fn wrote(&mut self) {
        if self.read {
            self.deadline = None;
        }
    }
}

/// An accepted connection holding its [`ConnectionPermit`], under its
/// [`Handshake`] deadline.
pub struct Admitted<IO> {
    io: IO,
    handshake: Handshake,
    _permit: ConnectionPermit,
}

impl<IO> Admitted<IO> {
    pub fn new(io: IO, permit: ConnectionPermit, handshake: Handshake) -> Self {
        Self {
            io,
            handshake,
            _permit: permit,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The connection without its permit and deadline, which go with the
    /// returned parts (for a TLS handshake on top).
    pub fn into_parts(self) -> (IO, ConnectionPermit, Handshake) {
        (self.io, self._permit, self.handshake)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Admitted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.handshake.poll_read(&mut this.io, cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Admitted<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            this.handshake.wrote();
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Admitted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The part of a TLS connection that keeps the handshake deadline running
/// after the TLS handshake (for the HTTP handshake above it).
pub(crate) fn poll_read_under<IO: AsyncRead + Unpin>(
    handshake: &mut Handshake,
    io: &mut IO,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    handshake.poll_read(io, cx, buf)
}

pub(crate) fn note_write(handshake: &mut Handshake) {
    handshake.wrote();
}

/// Accepted TCP connections that the gate admits, each holding its
/// permit; the others are closed at once. Accept errors pass through.
pub fn admit_stream<S>(
    gate: Arc<ConnectionGate>,
    accepted: S,
) -> impl Stream<Item = io::Result<Admitted<TcpStream>>> + Send + 'static
where
    S: Stream<Item = io::Result<TcpStream>> + Send + 'static,
{
    Box::pin(accepted).filter_map(move |next| {
        let admitted = match next {
            Ok(stream) => admit(&gate, stream).map(Ok),
            Err(error) => Some(Err(error)),
        };
        std::future::ready(admitted)
    })
}

/// `stream` with its permit and deadline, or `None` (it is closed) when
/// the gate is full.
pub fn admit(gate: &Arc<ConnectionGate>, stream: TcpStream) -> Option<Admitted<TcpStream>> {
    let remote = stream.peer_addr().ok().map(|a| a.ip());
    match gate.admit(remote) {
        Some(permit) => Some(Admitted::new(stream, permit, gate.handshake())),
        None => {
            tracing::debug!(?remote, "connection over the cap closed");
            None
        }
    }
}

/// A plaintext axum listener behind a [`ConnectionGate`]. Requests carry
/// a [`PeerIdentity`] with no principal and the remote address.
pub struct LimitedListener {
    listener: TcpListener,
    gate: Arc<ConnectionGate>,
}

impl LimitedListener {
    pub fn new(listener: TcpListener, gate: Arc<ConnectionGate>) -> Self {
        Self { listener, gate }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = Admitted<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, remote)) => {
                    if let Some(admitted) = admit(&self.gate, stream) {
                        return (admitted, remote);
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "accept failed");
                    // As axum does: a full descriptor table clears slowly.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener>>
    for PeerIdentity
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener>) -> Self {
        PeerIdentity {
            principal: None,
            remote: Some(*stream.remote_addr()),
        }
    }
}

/// A caller's allowance: `per_second` requests on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// 0: no limit.
    pub per_second: u64,
    pub burst: u64,
    /// Callers remembered at once; beyond it, idle ones are forgotten
    /// first, then the longest unseen.
    pub max_callers: usize,
}

impl RateLimits {
    pub fn problem(&self) -> Option<&'static str> {
        if self.per_second > 0 && self.burst == 0 {
            Some("the burst must be at least 1 when there is a rate limit")
        } else if self.per_second > 0 && self.max_callers == 0 {
            Some("at least one caller must be remembered when there is a rate limit")
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: f64,
}

/// Token buckets per caller, on a clock the caller gives (milliseconds on
/// any monotonic scale), so a simulation can drive it.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    buckets: BTreeMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: BTreeMap::new(),
        }
    }

    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    /// Callers remembered now.
    pub fn callers(&self) -> usize {
        self.buckets.len()
    }

    /// Take one request's token from `caller`'s bucket: `false` when it
    /// has none left.
    pub fn allow(&mut self, caller: &str, now_ms: f64) -> bool {
        if self.limits.per_second == 0 {
            return true;
        }
        let burst = self.limits.burst as f64;
        let rate_per_ms = self.limits.per_second as f64 / 1000.0;
        if let Some(bucket) = self.buckets.get_mut(caller) {
            let elapsed = (now_ms - bucket.at_ms).max(0.0);
            bucket.tokens = (bucket.tokens + elapsed * rate_per_ms).min(burst);
            bucket.at_ms = bucket.at_ms.max(now_ms);
            if bucket.tokens < 1.0 {
                return false;
            }
            bucket.tokens -= 1.0;
            return true;
        }
        if self.buckets.len() >= self.limits.max_callers {
            self.forget(now_ms, burst, rate_per_ms);
        }
        self.buckets.insert(
            caller.to_owned(),
            Bucket {
                tokens: burst - 1.0,
                at_ms: now_ms,
            },
        );
        true
    }

    /// Make room: forget every caller whose bucket has refilled (it is as
    /// if new), or else the one unseen the longest.
    fn forget(&mut self, now_ms: f64, burst: f64, rate_per_ms: f64) {
        self.buckets
            .retain(|_, b| b.tokens + (now_ms - b.at_ms).max(0.0) * rate_per_ms < burst);
        while self.buckets.len() >= self.limits.max_callers {
            let oldest = self
                .buckets
                .iter()
                .min_by(|a, b| a.1.at_ms.total_cmp(&b.1.at_ms))
                .map(|(caller, _)| caller.clone());
            match oldest {
                Some(caller) => self.buckets.remove(&caller),
                None => break,
            };
        }
    }
}

/// Who a request comes from, for rate limits: its certificate's principal,
/// else its remote IP; `None` when neither is known.
pub fn caller_key(identity: Option<&PeerIdentity>, remote: Option<SocketAddr>) -> Option<String> {
    if let Some(principal) = identity.and_then(|i| i.principal.as_ref()) {
        return Some(principal.to_string());
    }
    identity
        .and_then(|i| i.remote)
        .or(remote)
        .map(|address| address.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            max_per_ip,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_gate_caps_each_ip_and_the_listener_and_frees_slots_on_drop() {
        let gate = ConnectionGate::new(limits(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = gate.admit(Some(a)).unwrap();
        let _second = gate.admit(Some(a)).unwrap();
        assert!(gate.admit(Some(a)).is_none(), "a third from one IP");
        let _third = gate.admit(Some(b)).unwrap();
        assert!(gate.admit(Some(b)).is_none(), "the listener is full");
        drop(first);
        assert!(gate.admit(Some(a)).is_some(), "a slot came back");
        let stats = gate.stats();
        assert_eq!((stats.refused_ip_full, stats.refused_listener_full), (1, 1));
    }

    #[test]
    fn a_caller_over_its_rate_is_refused_until_its_bucket_refills() {
        let mut limiter = RateLimiter::new(RateLimits {
            per_second: 10,
            burst: 3,
            max_callers: 8,
        });
        assert!((0..3).all(|_| limiter.allow("a", 0.0)));
        assert!(!limiter.allow("a", 0.0));
        assert!(limiter.allow("b", 0.0), "another caller has its own bucket");
        assert!(limiter.allow("a", 100.0), "one token per 100 ms");
        assert!(!limiter.allow("a", 100.0));
    }

    #[test]
    fn the_rate_limiter_remembers_a_bounded_number_of_callers() {
        let mut limiter = RateLimiter::new(RateLimits {
            per_second: 1,
            burst: 2,
            max_callers: 4,
        });
        for i in 0..1000 {
            limiter.allow(&format!("caller-{i}"), i as f64);
            assert!(limiter.callers() <= 4);
        }
        // The most recent callers are the ones kept.
        assert!(limiter.buckets.contains_key("caller-999"));
        assert!(!limiter.buckets.contains_key("caller-0"));
    }

    #[tokio::test]
    async fn a_silent_connection_fails_its_first_read_after_the_deadline() {
        let gate = ConnectionGate::new(ConnectionLimits {
            handshake_timeout: Duration::from_millis(50),
            ..limits(4, 4)
        });
        let (client, server) = tokio::io::duplex(64);
        let mut admitted = Admitted::new(server, gate.admit(None).unwrap(), gate.handshake());
        let mut buf = [0u8; 8];
        let read = tokio::io::AsyncReadExt::read(&mut admitted, &mut buf);
        let error = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the read ends at the deadline")
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(gate.stats().handshake_timeouts, 1);
        drop(client);
    }
}
