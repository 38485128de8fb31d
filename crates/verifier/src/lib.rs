//! The Lapse edge verifier.
//!
//! A [`Verifier`] holds the cluster's revocation state (revoked status
//! indices, leaked-secret hashes, rules, public keys) and verifies
//! credentials offline against it, in cluster time. [`follow`] keeps it
//! current from a list of brokers' feeds, with failover and acks;
//! [`http::serve`] offers the same verification to other languages on
//! loopback; [`daemon::run`] is a whole verifier process; a [`relay`]
//! serves the feed it follows on to other verifiers.
//!
//! Staleness: the verifier counts as fresh only for a bounded time after a
//! heartbeat that its broker confirmed with the leader. When stale it
//! rejects every credential (unless configured to fail open), so an
//! acknowledged revocation is enforced within its commit time plus the
//! staleness bound, whatever the network does.
//!
//! Emergencies: a verifier configured with offline break-glass keys
//! ([`BreakGlassConfig`]) accepts credentials they signed within tight
//! limits, stale or not; every such acceptance, and every acceptance while
//! stale and failing open, is an [`EmergencyUse`], logged, counted and
//! reported to a broker by [`follow`].

pub mod break_glass;
pub mod clock;
pub mod daemon;
pub mod event;
pub mod follower;
pub mod http;
pub mod relay;
mod verifier;
mod vouched;

pub use break_glass::{BreakGlassConfig, EmergencyUse, UseKind};
pub use clock::{Clock, OffsetEstimator, SystemClock};
pub use event::{Body, Decoded, FeedError, MAX_EVENT_BYTES, decode_event, decode_event_bytes};
pub use follower::{
    ACK_INTERVAL, Downstream, FollowConfig, FollowStats, FollowedBroker, OnApply, OnEvent,
    broker_uri, feed_endpoint, follow,
};
pub use verifier::{
    Accepted, AcceptedAgent, BreakGlassAccepted, CheckedSignature, Expect, Proof, Rejection,
    Verifier, VerifierStatus, VerifyConfig, WithheldNotice,
};
