//! Credential issuance on a broker: ephemeral signing keys, leased status
//! indices, Cedar policy, the durable audit log, and the issuing itself
//! (served over gRPC by [`crate::api`]).

pub mod audit;
pub mod issuer;
pub mod keys;
pub mod leases;
pub mod policy;
