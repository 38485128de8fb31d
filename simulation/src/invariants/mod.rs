//! The invariants a run must keep, one per file. Each is checked as the
//! run goes (at the moment the harness observes the fact it judges) or,
//! for convergence and durability, once the faults have stopped.

pub mod acked_revocations;
pub mod committed_keys;
pub mod convergence;
pub mod delegated_acceptance;
pub mod disjoint_leases;
pub mod epochs_grow;
pub mod expired_acceptance;
pub mod freshness_liveness;
pub mod replicas_agree;
pub mod revoked_acceptance;
pub mod valid_acceptance;

use serde::Serialize;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// The invariant's name (its file name).
    pub invariant: &'static str,
    /// Simulated ms since the start when it was seen.
    pub at_ms: f64,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {:.3} s: {}",
            self.invariant,
            self.at_ms / 1000.0,
            self.detail
        )
    }
}
