//! The Lapse broker: a cluster member that runs openraft over a tonic peer
//! network with sled storage, serves the client and admin API, forwards
//! writes to the leader, and joins running clusters.
//!
//! Start one with [`Broker::start`]; everything it needs comes from a
//! [`BrokerConfig`] and an [`Env`] (its clock).
//!
//! Layers, from the wire inwards: [`api`] serves gRPC and [`http`] serves
//! HTTP; [`link`] calls peers. Both turn [`BrokerError`] into what their
//! callers see, and nothing else in the broker knows gRPC. Below them,
//! [`core`] (the write path, reads, membership) and the domain modules
//! ([`issuance`], [`feed`], [`replica_check`], [`time`]) return
//! [`BrokerError`]. [`node`] assembles a broker and runs it.

pub mod access;
pub mod api;
pub mod config;
pub mod consensus;
pub mod core;
pub mod env;
pub mod error;
pub mod feed;
pub mod http;
pub mod issuance;
pub mod link;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod replica_check;
pub mod ssf;
pub mod time;

pub use api::{REFUSAL_HEADER, refusal_status};
pub use config::{BrokerConfig, LocalTransport, Member, TlsConfig};
pub use env::{Dialer, Entropy, Env, FaultPoints, TcpDialer, TlsDialer};
pub use error::BrokerError;
pub use node::{Broker, MemoryStorage, StartError, Storage};
pub use time::{Clock, SystemClock};
