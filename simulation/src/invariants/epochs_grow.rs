//! The epochs a verifier applies only grow.

use super::Violation;

pub const NAME: &str = "epochs_grow";

/// Verifier `verifier` moved from epoch `previous` to `next`.
pub fn check(verifier: &str, previous: u64, next: u64, at_ms: f64) -> Option<Violation> {
    (next < previous).then(|| Violation {
        invariant: NAME,
        at_ms,
        detail: format!("verifier {verifier} went back from epoch {previous} to {next}"),
    })
}
