//! gRPC over turmoil's simulated TCP: the server side accepts turmoil
//! connections, the client side dials them. Everything else (tonic, hyper,
//! h2, the services) is the production code.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

/// The port every broker listens on.
pub const BROKER_PORT: u16 = 7000;

/// An accepted simulated connection, as tonic's server wants it.
pub struct Accepted(pub turmoil::net::TcpStream);

impl Connected for Accepted {
    type ConnectInfo = Option<SocketAddr>;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.peer_addr().ok()
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accept connections on `listener` forever, as a stream for tonic.
pub fn incoming(
    listener: turmoil::net::TcpListener,
) -> impl futures::Stream<Item = io::Result<Accepted>> + Send + 'static {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| Accepted(stream));
        Some((accepted, listener))
    })
}

/// A lazily connected channel to `address` (`host:port`) over the
/// simulated network. Every request on it has a deadline, because the
/// simulated TCP never retransmits a lost segment.
pub fn channel(address: &str, timeout: Duration) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .expect("simulation addresses are valid URIs")
        .connect_timeout(timeout)
        .timeout(timeout);
    dial(endpoint)
}

/// One lazily dialled channel per address in `config.brokers`, set up as
/// the follower sets up its own (timeouts, keepalive pings), over the
/// simulated network.
pub fn dial_feeds(config: &lapse_verifier::FollowConfig) -> Vec<Channel> {
    config
        .brokers
        .iter()
        .map(|address| {
            dial(
                lapse_verifier::feed_endpoint(address, config)
                    .expect("simulation addresses are valid URIs"),
            )
        })
        .collect()
}

/// Turn an endpoint into a channel that dials through turmoil.
pub fn dial(endpoint: Endpoint) -> Channel {
    endpoint.connect_with_connector_lazy(tower::service_fn(|uri: Uri| async move {
        let host = uri
            .host()
            .ok_or_else(|| io::Error::other("an address without a host"))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
        Ok::<_, io::Error>(TokioIo::new(stream))
    }))
}

/// The broker's dialer in simulation.
#[derive(Debug, Clone, Copy)]
pub struct SimDialer;

impl lapse_broker::Dialer for SimDialer {
    fn channel(&self, endpoint: Endpoint, _node: Option<u64>) -> Channel {
        dial(endpoint)
    }
}

/// Random bytes from the run's seed, one stream per host.
#[derive(Debug)]
pub struct SeededEntropy(Mutex<rand::rngs::StdRng>);

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)))
    }
}

impl lapse_broker::Entropy for SeededEntropy {
    fn fill(&self, bytes: &mut [u8]) {
        self.0.lock().expect("entropy lock").fill_bytes(bytes);
    }
}
