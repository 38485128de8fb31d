//! Credential issuance on a broker: ephemeral signing keys, leased status
//! indices, Cedar policy, the durable audit log, the `Issuer` gRPC service
//! and the JWKS over HTTP.

pub mod audit;
pub mod http;
pub mod keys;
pub mod leases;
pub mod policy;
pub mod service;
