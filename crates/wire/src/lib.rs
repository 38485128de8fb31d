//! Protobuf messages and gRPC services generated from `proto/`.

/// Broker-to-broker Raft traffic.
pub mod peer {
    tonic::include_proto!("lapse.peer.v1");
}

/// The client and admin API every broker serves.
pub mod cluster {
    tonic::include_proto!("lapse.cluster.v1");
}

/// Credential issuance and refresh.
pub mod issuer {
    tonic::include_proto!("lapse.issuer.v1");
}

/// The revocation feed verifiers follow.
pub mod feed {
    tonic::include_proto!("lapse.feed.v1");
}

/// The server side of `Feed`, sending events encoded once for every
/// subscriber.
pub mod frames;

/// The names feed subscribers give, checked alike by brokers and relays.
pub mod names;
