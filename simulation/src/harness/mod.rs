//! One run of one scenario from one seed: real brokers and verifiers on
//! turmoil's network, clients that issue and revoke, the fault schedule
//! applied between simulation steps, and the invariants checked as the run
//! goes.
//!
//! - `driver`: builds the simulation and steps it to the end, applying
//!   faults and sampling between steps.
//! - `hosts`: what runs on each host (a broker, a verifier host, a
//!   region's client) and the registry of what is running.
//! - `oracle`: what must be true: the facts the invariants judge and
//!   the checks that judge them.
//! - `faults`: the fault schedule applied to the simulation, and the
//!   fault points brokers consult.
//! - `observe`: the record of the run (trace, counts, violations,
//!   propagation samples).
//!
//! Each part's state is one struct behind one lock, held in `World` and
//! locked only inside that part's module. Turmoil runs every host on one
//! thread, so the locks are never contended; they are there because broker
//! code needs `Send`.

mod driver;
mod faults;
mod hosts;
mod observe;
mod oracle;
mod pki;

use std::collections::BTreeMap;

use lapse_broker::MemoryStorage;

use crate::invariants::Violation;
use crate::scenario::{FaultSpan, Scenario};

pub use driver::run;
pub use observe::{Counts, PropagationSample};

/// A deliberately broken build, to show the invariants catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// Lapse as it ships.
    #[default]
    Correct,
    /// Verifiers accept credentials while stale (ignoring the bound).
    VerifierIgnoresStaleness,
    /// The Raft log store acknowledges appends before flushing them.
    AckBeforeFlush,
    /// Brokers run openraft with leader restore on: a restarted leader
    /// resumes its old term without a vote, even with a shorter log.
    LeaderRestoreWithoutVote,
    /// Leaders confirm reads with Raft heartbeats only, which never answer
    /// in time when a round trip is longer than the heartbeat interval.
    HeartbeatOnlyReads,
    /// Brokers take cluster time from the raw wall clock, steps and all.
    WallClockTime,
    /// Verifiers take heartbeats without checking the broker's signature
    /// and digest, so a relay on the path can hide revocations from them.
    VerifierSkipsSignatures,
    /// Brokers leave a delegated credential's ancestors out of it, so
    /// revoking a credential no longer revokes what was delegated from it.
    ExchangeForgetsAncestors,
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub scenario: String,
    pub seed: u64,
    pub trace: Vec<String>,
    pub violations: Vec<Violation>,
    /// Revocation propagation delays (first apply on a broker to apply on
    /// a verifier), ms: the `delay_ms` of `propagation`, in its order.
    pub propagation_ms: Vec<f64>,
    /// The same delays with the verifier's region and the time of the
    /// first apply.
    pub propagation: Vec<PropagationSample>,
    /// The scenario's faults: when each started and ended.
    pub fault_spans: Vec<FaultSpan>,
    pub simulated_s: f64,
    pub wall_s: f64,
    pub counts: Counts,
    /// Set when the simulation itself failed (a host's software errored).
    pub error: Option<String>,
}

impl RunOutcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.error.is_none()
    }
}

/// What the hosts of a run and its driver share, by owner.
struct World {
    scenario: Scenario,
    seed: u64,
    variant: Variant,
    /// Each broker's storage, kept across its crashes and restarts.
    storage: BTreeMap<u64, MemoryStorage>,
    /// The trace, counts, violations and propagation samples.
    observer: observe::Observer,
    /// The facts the invariants judge.
    oracle: oracle::Oracle,
    /// The fault points' settings and which faults are in force.
    faults: faults::Faults,
    /// What runs where: brokers, verifiers, incarnations, clock steps.
    hosts: hosts::Hosts,
    /// The CA and the brokers' certificates heartbeats are signed with.
    pki: pki::SimPki,
}

impl World {
    fn note(&self, host: &str, event: impl std::fmt::Display) {
        self.observer.note(host, event);
    }

    fn violate(&self, violation: Violation) {
        self.observer.violate(violation);
    }

    /// The latest a verifier may accept a credential after its revocation
    /// was first applied: staleness bound plus the scenario's allowances.
    fn accept_bound_ms(&self) -> u64 {
        self.scenario.verifier.staleness_ms
            + self.scenario.bounds.skew_allowance_ms
            + self.scenario.bounds.delivery_allowance_ms
    }

    /// The seed of one incarnation of one host (or of one verifier).
    fn host_seed(&self, host: &str, incarnation: u64) -> u64 {
        let mut h = self.seed ^ 0x9e37_79b9_7f4a_7c15;
        for byte in host.bytes().chain(incarnation.to_le_bytes()) {
            h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}
