//! Credential issuance on a broker: ephemeral signing keys, leased status
//! indices, Cedar policy, the durable audit log, and the issuing itself
//! (served over gRPC by [`crate::api`]).

mod attest;
pub mod audit;
pub mod exchange;
pub mod external;
pub mod issuer;
pub mod keys;
pub mod leases;
pub mod nonce;
pub mod policy;
mod requests;
pub mod signed;
pub mod stats;
