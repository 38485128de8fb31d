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
pub mod name;
pub mod tls;
pub mod transport;

pub use authority::{Authority, LeafRequest, Pair};
pub use files::{Reloading, TlsFiles};
pub use inspect::CertInfo;
pub use name::{NameError, Principal, Role};
pub use tls::{Credentials, Expect};
pub use transport::{PeerIdentity, Tls, TlsConnector, TlsIncoming, TlsListener};

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
