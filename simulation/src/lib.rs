//! Lapse's deterministic simulation.
//!
//! Real brokers (openraft over the in-memory crash-model log store, the
//! real tonic services) and real verifiers run as hosts on turmoil's
//! simulated network, with per-host clocks. A scenario file gives the
//! topology, the workload, the faults and the bounds; the harness runs it
//! from a seed and checks the invariants in [`invariants`] as it goes. One
//! seed replays one run exactly.

pub mod clock;
pub mod harness;
pub mod invariants;
pub mod net;
pub mod report;
pub mod scenario;
pub mod swarm;

pub use harness::{RunOutcome, Variant, run};
pub use scenario::{Scenario, ScenarioError};
