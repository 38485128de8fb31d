//! Lapse's public-key infrastructure: a cluster CA per trust domain, leaf
//! certificates naming brokers, verifiers and operators by SPIFFE id, the
//! rustls configurations every link uses, and the TLS transport for tonic.
//!
//! Who trusts whom: every process trusts the cluster CA bundle and nothing
//! else. A broker is whoever holds a key certified as
//! `spiffe://<trust domain>/broker/<node id>`; peers check that id against
//! the member they meant to reach.

pub mod authority;
pub mod files;
pub mod inspect;
pub mod limits;
pub mod name;
pub mod tls;
pub mod transport;
pub mod vouch;

pub use authority::{Authority, LeafRequest, Pair};
pub use files::{Reloading, TlsFiles};
pub use inspect::CertInfo;
pub use limits::{ConnectionGate, ConnectionLimits, RateLimiter, RateLimits};
pub use name::{NameError, Principal, Role};
pub use rustls::RootCertStore;
pub use tls::{Credentials, Expect};
pub use transport::{PeerIdentity, Tls, TlsConnector, TlsIncoming, TlsListener};
pub use vouch::{SignatureChecker, Signed};

/// Whether `address` (`host:port`, `[v6]:port` or a bare host) names a
/// loopback interface: where plaintext is allowed.
pub fn is_loopback(address: &str) -> bool {
    if let Ok(socket) = address.parse::<std::net::SocketAddr>() {
        return socket.ip().is_loopback();
    }
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why a certificate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}")]
    Name(#[from] NameError),
    #[error("{0}")]
    Invalid(String),
    #[error("{what} expired at {at}; issue a new one (lapse certs ...)")]
    Expired { what: String, at: String },
    #[error("{0} exists; refusing to overwrite it")]
    Exists(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
