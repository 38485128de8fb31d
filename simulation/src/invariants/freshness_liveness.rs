//! Freshness liveness: with no fault active, verifiers stay fresh. In a
//! scenario with no faults, once its declared settle time
//! (`bounds.fresh_after_s`) has passed, no verification may be refused as
//! stale: a healthy cluster confirms heartbeats whatever its round trips,
//! as long as they fit in the staleness bound.

use super::Violation;

pub const NAME: &str = "freshness_liveness";

/// A verification by `verifier` was refused as stale at `at_ms`; `faults`
/// says whether the scenario has any.
pub fn check(verifier: &str, at_ms: f64, fresh_after_ms: f64, faults: bool) -> Option<Violation> {
    (!faults && at_ms >= fresh_after_ms).then(|| Violation {
        invariant: NAME,
        at_ms,
        detail: format!(
            "verifier {verifier} refused a verification as stale with no fault active, {:.1} s after the settle time",
            (at_ms - fresh_after_ms) / 1000.0
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_refusals_count_only_after_settling_in_a_scenario_without_faults() {
        assert!(check("v", 1_000.0, 5_000.0, false).is_none());
        assert!(check("v", 6_000.0, 5_000.0, false).is_some());
        assert!(check("v", 6_000.0, 5_000.0, true).is_none());
    }
}
