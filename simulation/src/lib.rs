//! Lapse's deterministic simulation.
//!
//! Real brokers (openraft over the in-memory crash-model log store, the
//! real tonic services) and real verifiers run as hosts on turmoil's
//! simulated network, with per-host clocks. A scenario file gives the
//! topology, the workload, the faults and the bounds; the harness runs it
//! from a seed and checks the invariants in [`invariants`] as it goes. One
//! seed replays one run exactly.

// turmoil seeds each simulated host's tokio runtime only through tokio's
// unstable API; without it a seed would not replay.
#[cfg(not(tokio_unstable))]
compile_error!(
    "the simulation needs `--cfg tokio_unstable` (see .cargo/config.toml); build the `lapse` binary without it using --no-default-features"
);

pub mod clock;
pub mod harness;
pub mod invariants;
pub mod net;
pub mod relay;
pub mod report;
pub mod scenario;
pub mod swarm;

pub use harness::{RunOutcome, Variant, run};
pub use scenario::{Scenario, ScenarioError};
