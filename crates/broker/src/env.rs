//! The broker's environment: the one place it reads the wall clock (a
//! [`Clock`], defined with the rest of time in [`crate::time`]) or the OS
//! random source, dials peers, and (in simulation only) meets injected
//! faults. The leader stamps this time into every proposal; the ledger
//! never reads a clock. Simulation substitutes its own implementation.

use std::sync::Arc;

use crate::time::{Clock, StepGuard, SystemClock};

/// A source of random bytes (key seeds, key ids, join tokens).
pub trait Entropy: Send + Sync + 'static {
    fn fill(&self, bytes: &mut [u8]);
}

/// The operating system's random source.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, bytes: &mut [u8]) {
        use rand::RngCore;
        rand::rngs::OsRng.fill_bytes(bytes);
    }
}

/// How a broker turns a peer's endpoint into a gRPC channel. Production
/// dials TCP lazily, with TLS when configured; simulation dials over its
/// simulated network. `node` is the broker that must answer (checked
/// against its certificate with TLS); `None` accepts any broker of the
/// cluster.
pub trait Dialer: Send + Sync + 'static {
    fn channel(
        &self,
        endpoint: tonic::transport::Endpoint,
        node: Option<u64>,
    ) -> tonic::transport::Channel;
}

/// Dial peers over the operating system's TCP, in plaintext, connecting on
/// first use (`insecure_plaintext` brokers, on loopback only).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn channel(
        &self,
        endpoint: tonic::transport::Endpoint,
        _node: Option<u64>,
    ) -> tonic::transport::Channel {
        endpoint.connect_lazy()
    }
}

/// Dial peers over TCP with mutual TLS: this broker presents its
/// certificate and accepts only the broker it meant to reach.
#[derive(Debug, Clone)]
pub struct TlsDialer(pub Arc<lapse_pki::Tls>);

impl Dialer for TlsDialer {
    fn channel(
        &self,
        endpoint: tonic::transport::Endpoint,
        node: Option<u64>,
    ) -> tonic::transport::Channel {
        let expect = match node {
            Some(id) => lapse_pki::Expect::Broker(id),
            None => lapse_pki::Expect::AnyBroker,
        };
        lapse_pki::TlsConnector::new(self.0.clone(), expect).channel(endpoint)
    }
}

/// Places inside a broker where a simulation injects faults. A broker
/// started with `Env::faults` unset (every production broker) never
/// consults them.
pub trait FaultPoints: Send + Sync + 'static {
    /// Whether to lose this feed event to `verifier` instead of sending it
    /// (the verifier sees the gap in epochs at the next event).
    fn drop_feed_message(&self, _verifier: &str) -> bool {
        false
    }
    /// How long to hold the next batch of committed entries before the
    /// state machine applies it.
    fn apply_delay(&self) -> Option<std::time::Duration> {
        None
    }
    /// Whether to build a Raft snapshot now; polled every
    /// [`FAULT_POLL`](crate::env::FAULT_POLL).
    fn force_snapshot(&self) -> bool {
        false
    }
    /// Whether this broker runs openraft with leader restore on (a leader
    /// that restarts resumes its old term without a vote): the unsafe
    /// setting the simulation's broken build uses to show that
    /// `replicas_agree` catches it. Read once, at start.
    fn restore_leadership_without_vote(&self) -> bool {
        false
    }
    /// Whether a leader skips the `ConfirmLeadership` entry that completes
    /// a read index Raft heartbeats cannot (the simulation's broken build
    /// showing `freshness_liveness` catch verifiers that go stale across
    /// long round trips).
    fn skip_leadership_confirmation(&self) -> bool {
        false
    }
    /// Whether cluster time reads the raw wall clock, steps and all (the
    /// simulation's broken build showing `valid_acceptance` catch it).
    fn raw_wall_clock(&self) -> bool {
        false
    }
    /// Whether a token exchange leaves the parent's status index (and its
    /// ancestors') out of the delegated credential (the simulation's broken
    /// build showing `delegated_acceptance` catch it).
    fn forget_ancestors(&self) -> bool {
        false
    }
    /// Something a simulation's trace should show (heartbeats withheld and
    /// resumed, with their reason).
    fn note(&self, _event: &str) {}
}

/// How often a broker with fault points polls `force_snapshot`.
pub const FAULT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// What a broker is given instead of reaching for globals.
#[derive(Clone)]
pub struct Env {
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub dialer: Arc<dyn Dialer>,
    pub faults: Option<Arc<dyn FaultPoints>>,
    /// Takes the clock's steps out of [`Env::now_ms`].
    pub steps: Arc<StepGuard>,
    /// The certificate and key feed heartbeats are signed with when the
    /// broker runs without `[tls]` (a simulation's brokers). A broker with
    /// `[tls]` signs with its TLS certificate and ignores this.
    pub feed_identity: Option<Arc<lapse_pki::Credentials>>,
}

impl Env {
    /// Local time: the wall clock with its steps taken out (see
    /// [`crate::time`]).
    pub fn now_ms(&self) -> u64 {
        if self.faults.as_ref().is_some_and(|f| f.raw_wall_clock()) {
            return self.clock.now_ms();
        }
        self.steps.now_ms(&*self.clock)
    }

    /// The monotonic clock, ms since an arbitrary origin.
    pub fn monotonic_ms(&self) -> f64 {
        self.clock.monotonic_ms()
    }

    pub fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0u8; N];
        self.entropy.fill(&mut bytes);
        bytes
    }
}

impl Default for Env {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
            dialer: Arc::new(TcpDialer),
            faults: None,
            steps: Arc::default(),
            feed_identity: None,
        }
    }
}
