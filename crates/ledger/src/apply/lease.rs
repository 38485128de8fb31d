//! Leasing: `LeaseIndices` grants a broker the next block of status indices
//! to issue credentials from.

use crate::command::{Applied, MAX_LEASE_COUNT, NodeId, Outcome, Refusal};
use crate::state::{Lease, LedgerState};

impl LedgerState {
    /// `LeaseIndices`: grant `broker` the next `count` indices for `lease_ms`.
    pub(super) fn lease_indices(
        &mut self,
        now_ms: u64,
        broker: NodeId,
        count: u64,
        lease_ms: u64,
    ) -> Outcome {
        if count == 0 || count > MAX_LEASE_COUNT {
            return Err(Refusal::BadLeaseCount {
                count,
                max: MAX_LEASE_COUNT,
            });
        }
        if lease_ms == 0 || lease_ms > self.params.max_lease_ms {
            return Err(Refusal::BadLeaseDuration {
                lease_ms,
                max_ms: self.params.max_lease_ms,
            });
        }
        let start = self.next_index;
        let end = start.checked_add(count).ok_or(Refusal::IndicesExhausted)?;
        let lease_expires_at_ms = now_ms.saturating_add(lease_ms);
        let credentials_expire_by_ms =
            lease_expires_at_ms.saturating_add(self.params.max_credential_ttl_ms);
        self.next_index = end;
        self.leases.insert(
            start,
            Lease {
                broker,
                start,
                end,
                granted_at_ms: now_ms,
                lease_expires_at_ms,
                credentials_expire_by_ms,
            },
        );
        Ok(Applied::Leased {
            start,
            end,
            lease_expires_at_ms,
            credentials_expire_by_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Ledger, MAX_LEASE_MS, TTL_MS};
    use crate::command::{Applied, Command, MAX_LEASE_COUNT, Refusal};
    use crate::state::Lease;

    fn lease(broker: u64, count: u64, lease_ms: u64) -> Command {
        Command::LeaseIndices {
            broker,
            count,
            lease_ms,
        }
    }

    #[test]
    fn leases_are_consecutive_blocks() {
        let mut ledger = Ledger::new();
        assert_eq!(
            ledger.run("a", 1_000, lease(1, 10, 2_000)).outcome,
            Ok(Applied::Leased {
                start: 0,
                end: 10,
                lease_expires_at_ms: 3_000,
                credentials_expire_by_ms: 3_000 + TTL_MS,
            })
        );
        assert_eq!(
            ledger.run("b", 1_500, lease(2, 5, MAX_LEASE_MS)).outcome,
            Ok(Applied::Leased {
                start: 10,
                end: 15,
                lease_expires_at_ms: 1_500 + MAX_LEASE_MS,
                credentials_expire_by_ms: 1_500 + MAX_LEASE_MS + TTL_MS,
            })
        );
        assert_eq!(ledger.state.next_index, 15);
        assert_eq!(
            ledger.state.lease_of(12),
            Some(&Lease {
                broker: 2,
                start: 10,
                end: 15,
                granted_at_ms: 1_500,
                lease_expires_at_ms: 1_500 + MAX_LEASE_MS,
                credentials_expire_by_ms: 1_500 + MAX_LEASE_MS + TTL_MS,
            })
        );
        assert_eq!(ledger.state.lease_of(9).map(|l| l.broker), Some(1));
        assert_eq!(ledger.state.lease_of(15), None);
        // Leasing does not change what verifiers hold.
        assert_eq!(ledger.state.revocation_epoch, 0);
    }

    #[test]
    fn lease_retried_does_not_grant_a_second_block() {
        let mut ledger = Ledger::new();
        let first = ledger.run("a", 1_000, lease(1, 10, 2_000));
        let again = ledger.run("a", 1_100, lease(1, 10, 2_000));
        assert!(again.duplicate);
        assert_eq!(again.outcome, first.outcome);
        assert_eq!(again.log_index, first.log_index);
        assert_eq!(ledger.state.next_index, 10);
        assert_eq!(ledger.state.leases.len(), 1);
    }

    #[test]
    fn lease_count_outside_bounds_is_refused() {
        let mut ledger = Ledger::new();
        for (id, count) in [("none", 0), ("too-many", MAX_LEASE_COUNT + 1)] {
            assert_eq!(
                ledger.run(id, 1_000, lease(1, count, 1_000)).outcome,
                Err(Refusal::BadLeaseCount {
                    count,
                    max: MAX_LEASE_COUNT
                })
            );
        }
        assert!(matches!(
            ledger
                .run("most", 1_000, lease(1, MAX_LEASE_COUNT, 1_000))
                .outcome,
            Ok(Applied::Leased { .. })
        ));
    }

    #[test]
    fn lease_duration_outside_bounds_is_refused() {
        let mut ledger = Ledger::new();
        for (id, lease_ms) in [("instant", 0), ("too-long", MAX_LEASE_MS + 1)] {
            assert_eq!(
                ledger.run(id, 1_000, lease(1, 1, lease_ms)).outcome,
                Err(Refusal::BadLeaseDuration {
                    lease_ms,
                    max_ms: MAX_LEASE_MS
                })
            );
        }
        assert_eq!(ledger.state.next_index, 0);
        assert!(ledger.state.leases.is_empty());
    }

    #[test]
    fn exhausted_indices_are_refused() {
        let mut ledger = Ledger::new();
        ledger.state.next_index = u64::MAX - 1;
        assert_eq!(
            ledger.run("overflow", 1_000, lease(1, 2, 1_000)).outcome,
            Err(Refusal::IndicesExhausted)
        );
        assert_eq!(ledger.state.next_index, u64::MAX - 1);
        assert!(matches!(
            ledger.run("last", 1_000, lease(1, 1, 1_000)).outcome,
            Ok(Applied::Leased { end: u64::MAX, .. })
        ));
    }
}
