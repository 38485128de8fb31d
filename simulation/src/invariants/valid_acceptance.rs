//! Valid acceptance: a fresh verifier accepts every credential that is
//! unrevoked and within its lifetime in true (simulated) time. Refusing
//! one is a violation, with the verifier's reason: failing closed is safe
//! but it is an outage, and a clock step or a skewed issuer must not cause
//! one.
//!
//! The window judged is narrowed by what the scenario declares: from the
//! issuance plus the staleness bound and the allowances (the signing key
//! must have reached the verifier), to the earliest moment the credential
//! could have been signed plus its lifetime, less a second (`iat` is whole
//! seconds) and the skew allowance.

use super::Violation;

pub const NAME: &str = "valid_acceptance";

/// A credential's life in true ms: its request left at `sent_ms`, the
/// answer came at `issued_ms`, and it lives `ttl_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Life {
    pub sent_ms: f64,
    pub issued_ms: f64,
    pub ttl_ms: u64,
}

/// The true-time window in which a fresh verifier must accept it.
pub fn window(life: Life, settle_ms: u64, skew_ms: u64) -> (f64, f64) {
    (
        life.issued_ms + settle_ms as f64,
        life.sent_ms + life.ttl_ms as f64 - 1_000.0 - skew_ms as f64,
    )
}

/// A fresh verifier refused the unrevoked credential `index` at `at_ms`
/// for `reason`.
pub fn check(
    verifier: &str,
    index: u64,
    at_ms: f64,
    (from_ms, until_ms): (f64, f64),
    reason: &str,
) -> Option<Violation> {
    (from_ms <= at_ms && at_ms <= until_ms).then(|| Violation {
        invariant: NAME,
        at_ms,
        detail: format!(
            "fresh verifier {verifier} refused unrevoked index {index}, {:.1} s into its valid window: {reason}",
            (at_ms - from_ms) / 1000.0
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_inside_the_window_count() {
        let life = Life {
            sent_ms: 1_000.0,
            issued_ms: 1_050.0,
            ttl_ms: 20_000,
        };
        let w = window(life, 2_500, 500);
        assert_eq!(w, (3_550.0, 19_500.0));
        assert!(check("v", 7, 3_000.0, w, "invalid").is_none());
        assert!(check("v", 7, 10_000.0, w, "invalid").is_some());
        assert!(check("v", 7, 19_600.0, w, "expired").is_none());
    }
}
