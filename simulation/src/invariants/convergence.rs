//! After the faults stop, every verifier converges within the scenario's
//! bound: by the end of the settle time, each holds the cluster's final
//! feed epoch and is not stale, and every broker holds the same state.

use super::Violation;

pub const NAME: &str = "convergence";

/// One verifier's state at the end of the run.
#[derive(Debug, Clone)]
pub struct VerifierEnd {
    pub id: String,
    pub epoch: Option<u64>,
    pub stale: bool,
}

pub fn check(
    cluster_epoch: u64,
    broker_epochs: &[(u64, u64)],
    verifiers: &[VerifierEnd],
    settle_s: u64,
    at_ms: f64,
) -> Vec<Violation> {
    let mut found = Vec::new();
    for (broker, epoch) in broker_epochs {
        if *epoch != cluster_epoch {
            found.push(Violation {
                invariant: NAME,
                at_ms,
                detail: format!(
                    "broker {broker} is at epoch {epoch}, not {cluster_epoch}, {settle_s} s after the faults stopped"
                ),
            });
        }
    }
    for verifier in verifiers {
        if verifier.epoch != Some(cluster_epoch) || verifier.stale {
            found.push(Violation {
                invariant: NAME,
                at_ms,
                detail: format!(
                    "verifier {} is at epoch {:?}{}, not {cluster_epoch}, {settle_s} s after the faults stopped",
                    verifier.id,
                    verifier.epoch,
                    if verifier.stale { " and stale" } else { "" }
                ),
            });
        }
    }
    found
}
