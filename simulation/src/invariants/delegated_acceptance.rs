//! No verifier accepts a delegated credential later than the staleness
//! bound (with the scenario's allowances) after the revocation of any
//! credential it was delegated from committed: revoking a credential
//! revokes everything exchanged from it, offline, because a delegated
//! credential carries its ancestors' status indices.
//!
//! The commit time is the true (simulated) time at which the first broker
//! applied the ancestor's revocation.

use super::Violation;

pub const NAME: &str = "delegated_acceptance";

/// A verifier accepted the credential with status `index` at `at_ms`;
/// `ancestors` are the indices it was delegated from, each with when its
/// revocation was first applied, if it was.
pub fn check(
    verifier: &str,
    index: u64,
    ancestors: &[(u64, Option<f64>)],
    at_ms: f64,
    bound_ms: u64,
) -> Option<Violation> {
    let (ancestor, revoked_ms) = ancestors
        .iter()
        .filter_map(|(ancestor, revoked)| Some((*ancestor, (*revoked)?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    (at_ms > revoked_ms + bound_ms as f64).then(|| Violation {
        invariant: NAME,
        at_ms,
        detail: format!(
            "verifier {verifier} accepted index {index}, delegated from index {ancestor}, {:.0} ms after that revocation committed (bound {bound_ms} ms)",
            at_ms - revoked_ms
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_late_acceptances_under_a_revoked_ancestor_count() {
        assert!(check("v", 9, &[], 10_000.0, 2_500).is_none());
        assert!(check("v", 9, &[(1, None), (2, None)], 10_000.0, 2_500).is_none());
        assert!(check("v", 9, &[(1, None), (2, Some(8_000.0))], 10_000.0, 2_500).is_none());
        let late = check(
            "v",
            9,
            &[(1, Some(7_000.0)), (2, Some(5_000.0))],
            10_000.0,
            2_500,
        )
        .expect("late");
        assert!(
            late.detail.contains("delegated from index 2"),
            "{}",
            late.detail
        );
    }
}
