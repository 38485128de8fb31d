//! Freshness liveness: with no fault active, verifiers stay fresh. Once the
//! scenario's settle time (`bounds.fresh_after_s`) has passed since the
//! start, or since the last fault began or ended (a heal, a restart), and
//! while no fault is in force, no verification may be refused as stale: a
//! healthy cluster confirms heartbeats whatever its round trips, as long as
//! they fit in the staleness bound, and whatever its clocks do (a clock
//! step is given no settle time at all).

use super::Violation;

pub const NAME: &str = "freshness_liveness";

/// A verification by `verifier` was refused as stale at `at_ms`; no fault
/// has been active since `calm_since_ms` (`None`: one is active now).
pub fn check(
    verifier: &str,
    at_ms: f64,
    calm_since_ms: Option<f64>,
    settle_ms: f64,
) -> Option<Violation> {
    let calm = calm_since_ms?;
    (at_ms >= calm + settle_ms).then(|| Violation {
        invariant: NAME,
        at_ms,
        detail: format!(
            "verifier {verifier} refused a verification as stale with no fault active for {:.1} s (settle time {:.1} s)",
            (at_ms - calm) / 1000.0,
            settle_ms / 1000.0
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_refusals_count_only_when_calm_for_the_settle_time() {
        assert!(check("v", 1_000.0, Some(0.0), 5_000.0).is_none());
        assert!(check("v", 6_000.0, Some(0.0), 5_000.0).is_some());
        assert!(check("v", 6_000.0, None, 5_000.0).is_none());
        assert!(check("v", 6_000.0, Some(2_000.0), 5_000.0).is_none());
        assert!(check("v", 7_000.0, Some(2_000.0), 5_000.0).is_some());
    }
}
