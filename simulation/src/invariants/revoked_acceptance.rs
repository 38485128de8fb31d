//! No verifier accepts a revoked credential later than the revocation's
//! commit time plus the staleness bound, plus the allowances the scenario
//! declares (clock skew, and the time a heartbeat spends between its
//! read-index confirmation and its arrival).
//!
//! The commit time is the true (simulated) time at which the first broker
//! applied the revocation.

use super::Violation;

pub const NAME: &str = "revoked_acceptance";

/// A verifier accepted the credential with status `index` at `at_ms`;
/// `revoked_ms` is when its revocation was first applied, if it was.
pub fn check(
    verifier: &str,
    index: u64,
    at_ms: f64,
    revoked_ms: Option<f64>,
    bound_ms: u64,
) -> Option<Violation> {
    let revoked_ms = revoked_ms?;
    (at_ms > revoked_ms + bound_ms as f64).then(|| Violation {
        invariant: NAME,
        at_ms,
        detail: format!(
            "verifier {verifier} accepted index {index} {:.0} ms after its revocation committed (bound {bound_ms} ms)",
            at_ms - revoked_ms
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_late_acceptances_of_revoked_credentials_count() {
        assert!(check("v", 1, 10_000.0, None, 2_500).is_none());
        assert!(check("v", 1, 10_000.0, Some(8_000.0), 2_500).is_none());
        assert!(check("v", 1, 10_600.0, Some(8_000.0), 2_500).is_some());
    }
}
