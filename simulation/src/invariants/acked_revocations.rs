//! No acknowledged revocation is lost: once a client was told a revocation
//! committed, every broker's state holds it from then on (checked after
//! the faults stop, on every broker, including restarted ones).
//!
//! A request that timed out or failed without a definite answer is
//! *unknown*: it may or may not have committed, and either is allowed.

use std::collections::BTreeMap;

use lapse_ledger::LedgerState;

use super::Violation;

pub const NAME: &str = "acked_revocations";

/// What a client learned of one revocation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed, at this feed epoch.
    Acked { epoch: u64 },
    /// Timed out or cut off: it may or may not have committed.
    Unknown,
    /// Refused with a definite error: it did not commit.
    Refused,
}

/// Check `state` (one broker's, named `broker`) against every acked
/// revocation.
pub fn check(
    broker: u64,
    state: &LedgerState,
    outcomes: &BTreeMap<u64, Outcome>,
    at_ms: f64,
) -> Vec<Violation> {
    outcomes
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Outcome::Acked { .. }))
        .filter(|(index, _)| !state.revoked_indices.contains_key(index))
        .map(|(index, outcome)| Violation {
            invariant: NAME,
            at_ms,
            detail: format!(
                "broker {broker} does not hold the revocation of index {index}, acknowledged as {outcome:?}"
            ),
        })
        .collect()
}
