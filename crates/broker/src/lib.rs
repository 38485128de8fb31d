//! The Lapse broker: a cluster member that runs openraft over a tonic peer
//! network with sled storage, serves the client and admin API, forwards
//! writes to the leader, and joins running clusters.
//!
//! Start one with [`Broker::start`]; everything it needs comes from a
//! [`BrokerConfig`] and an [`Env`] (its clock).

pub mod cluster_service;
pub mod config;
pub mod consensus;
pub mod core;
pub mod env;
pub mod feed;
pub mod issuance;
pub mod node;
pub mod peer_service;
pub mod peers;
pub mod replica_check;
pub mod time;

pub use cluster_service::{REFUSAL_HEADER, refusal_status};
pub use config::{BrokerConfig, Member};
pub use env::{Clock, Dialer, Entropy, Env, FaultPoints, SystemClock, TcpDialer};
pub use node::{Broker, MemoryStorage, StartError, Storage};
