//! Leased index blocks never overlap, and so no status index is issued
//! twice: every lease ever seen on any replica is kept, and a new one may
//! not intersect a different one; every index issued on an attestation is
//! new, and a refresh keeps an index issued before (its chain's).

use std::collections::{BTreeMap, BTreeSet};

use lapse_ledger::LedgerState;

use super::Violation;

pub const NAME: &str = "disjoint_leases";

#[derive(Debug, Default)]
pub struct LeaseBook {
    /// start -> (end, broker)
    leases: BTreeMap<u64, (u64, u64)>,
    issued: BTreeSet<u64>,
}

impl LeaseBook {
    /// Every lease in `state`.
    pub fn observe(&mut self, state: &LedgerState, at_ms: f64) -> Vec<Violation> {
        let mut found = Vec::new();
        for (start, lease) in &state.leases {
            let lease_tuple = (lease.end, lease.broker);
            if self.leases.get(start) == Some(&lease_tuple) {
                continue;
            }
            let before = self.leases.range(..=start).next_back();
            let after = self.leases.range(start + 1..).next();
            for (other_start, (other_end, other_broker)) in before.into_iter().chain(after) {
                if *other_start < lease.end && *start < *other_end {
                    found.push(Violation {
                        invariant: NAME,
                        at_ms,
                        detail: format!(
                            "lease [{start}, {}) of broker {} overlaps [{other_start}, {other_end}) of broker {other_broker}",
                            lease.end, lease.broker
                        ),
                    });
                }
            }
            if found.is_empty() {
                self.leases.insert(*start, lease_tuple);
            }
        }
        found
    }

    /// A credential with status `index` was issued on an attestation.
    pub fn issued(&mut self, index: u64, at_ms: f64) -> Option<Violation> {
        (!self.issued.insert(index)).then(|| Violation {
            invariant: NAME,
            at_ms,
            detail: format!("status index {index} was issued twice"),
        })
    }

    /// A credential with status `index` came from a refresh: its chain's
    /// index, issued before.
    pub fn refreshed(&self, index: u64, at_ms: f64) -> Option<Violation> {
        (!self.issued.contains(&index)).then(|| Violation {
            invariant: NAME,
            at_ms,
            detail: format!("a refresh gave status index {index}, which no attestation was issued"),
        })
    }
}
