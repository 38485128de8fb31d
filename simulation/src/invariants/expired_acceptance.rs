//! Expired acceptance: no verifier accepts a credential after its lifetime
//! has passed in true time, beyond the verifiers' leeway and the skew the
//! scenario declares. Cluster time, which `exp` is written and checked in,
//! must stay close enough to true time across clock steps and leader
//! changes for this to hold.

use super::Violation;

pub const NAME: &str = "expired_acceptance";

/// When a credential answered at `issued_ms` and living `ttl_ms` must be
/// refused by: its lifetime, the leeway, the skew allowance on each side
/// (issuer and verifier), and a second for whole-second claims.
pub fn deadline_ms(issued_ms: f64, ttl_ms: u64, leeway_ms: u64, skew_ms: u64) -> f64 {
    issued_ms + (ttl_ms + leeway_ms + 2 * skew_ms + 1_000) as f64
}

/// A verifier accepted credential `index` at `at_ms`.
pub fn check(verifier: &str, index: u64, at_ms: f64, deadline_ms: f64) -> Option<Violation> {
    (at_ms > deadline_ms).then(|| Violation {
        invariant: NAME,
        at_ms,
        detail: format!(
            "verifier {verifier} accepted index {index} {:.1} s after it must have expired",
            (at_ms - deadline_ms) / 1000.0
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptance_after_the_deadline_counts() {
        let deadline = deadline_ms(1_000.0, 20_000, 30_000, 500);
        assert_eq!(deadline, 53_000.0);
        assert!(check("v", 1, 52_000.0, deadline).is_none());
        assert!(check("v", 1, 53_001.0, deadline).is_some());
    }
}
