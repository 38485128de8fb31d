//! Issuance audit: `RecordIssuances` keeps the audit records a broker ships
//! from its local log, for the retention window.

use crate::command::{
    Applied, IssuanceRecord, MAX_AUDIT_BATCH, MAX_KEPT_AUDIT_RECORDS, NodeId, Outcome, Refusal,
};
use crate::state::LedgerState;

impl LedgerState {
    /// `RecordIssuances`: store each record under `(broker, sequence)`; a
    /// record shipped again replaces the earlier copy.
    pub(crate) fn record_issuances(
        &mut self,
        broker: NodeId,
        records: Vec<IssuanceRecord>,
    ) -> Outcome {
        if records.is_empty() || records.len() > MAX_AUDIT_BATCH {
            return Err(Refusal::BadAuditBatch {
                count: records.len(),
                max: MAX_AUDIT_BATCH,
            });
        }
        let count = records.len();
        for record in records {
            if let (Some(index), Some(tenant)) = (record.index, &record.tenant)
                && index.0 >= self.window_base()
            {
                self.issued_tenants.insert(index.0, tenant.clone());
            }
            self.audit.insert((broker, record.sequence), record);
        }
        self.keep_at_most_audit_records(MAX_KEPT_AUDIT_RECORDS);
        Ok(Applied::IssuancesRecorded { count })
    }

    /// Drop the oldest shipped records until at most `most` are kept. Each
    /// broker's records are in sequence order, so the oldest of all is
    /// the earliest of the brokers' first records (by its time, then by
    /// broker): the same on every replica.
    pub(crate) fn keep_at_most_audit_records(&mut self, most: usize) {
        while self.audit.len() > most {
            let mut oldest: Option<((NodeId, u64), u64)> = None;
            let mut next = self.audit.first_key_value().map(|(key, _)| key.0);
            while let Some(broker) = next {
                let Some((key, record)) = self.audit.range((broker, 0)..).next() else {
                    break;
                };
                if oldest.is_none_or(|(_, at)| record.at_ms < at) {
                    oldest = Some((*key, record.at_ms));
                }
                next = broker
                    .checked_add(1)
                    .and_then(|after| self.audit.range((after, 0)..).next())
                    .map(|(key, _)| key.0);
            }
            match oldest {
                Some((key, _)) => {
                    self.audit.remove(&key);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lapse_credential::StatusIndex;

    use super::super::testing::{Ledger, tenant};
    use crate::command::{
        Applied, Command, Decision, IssuanceRecord, MAX_AUDIT_BATCH, NodeId, Refusal,
    };

    fn record(sequence: u64, allowed: bool) -> IssuanceRecord {
        IssuanceRecord {
            sequence,
            at_ms: 1_000,
            tenant: Some(tenant("acme")),
            workload: None,
            index: allowed.then_some(StatusIndex(sequence)),
            key_id: None,
            scopes: vec![],
            audiences: vec![],
            expires_at_ms: None,
            attestation: None,
            decision: Decision {
                policy_version: 1,
                input_sha256: [0; 32],
                allowed,
                reason: String::new(),
            },
            inputs: None,
            seal: None,
        }
    }

    fn ship(broker: NodeId, records: Vec<IssuanceRecord>) -> Command {
        Command::RecordIssuances { broker, records }
    }

    #[test]
    fn beyond_the_most_kept_the_oldest_records_leave_first() {
        let mut ledger = Ledger::new();
        let at = |sequence: u64, at_ms: u64| IssuanceRecord {
            at_ms,
            ..record(sequence, true)
        };
        // Broker 2's records are older than broker 7's, except its last.
        ledger.run(
            "s1",
            1_000,
            ship(7, vec![at(1, 1_000), at(2, 1_010), at(3, 1_020)]),
        );
        ledger.run(
            "s2",
            1_000,
            ship(2, vec![at(1, 900), at(2, 1_005), at(3, 1_030)]),
        );
        ledger.state.keep_at_most_audit_records(6);
        assert_eq!(ledger.state.audit.len(), 6, "nothing beyond the bound goes");
        ledger.state.keep_at_most_audit_records(3);
        let kept: Vec<(u64, u64)> = ledger.state.audit.keys().copied().collect();
        assert_eq!(kept, [(2, 3), (7, 2), (7, 3)]);
        ledger.state.keep_at_most_audit_records(0);
        assert!(ledger.state.audit.is_empty());
    }

    #[test]
    fn records_are_kept_per_broker_and_sequence() {
        let mut ledger = Ledger::new();
        let shipped = ledger.run(
            "s1",
            1_000,
            ship(7, vec![record(1, true), record(2, false)]),
        );
        assert_eq!(shipped.outcome, Ok(Applied::IssuancesRecorded { count: 2 }));
        assert_eq!(ledger.state.audit.get(&(7, 2)), Some(&record(2, false)));
        // Another broker's sequence numbers are its own.
        ledger.run("s2", 1_000, ship(8, vec![record(1, false)]));
        assert_eq!(ledger.state.audit.len(), 3);
        assert_eq!(ledger.state.audit[&(7, 1)], record(1, true));
        assert_eq!(ledger.state.audit[&(8, 1)], record(1, false));
        // Shipping a sequence again replaces it.
        ledger.run("s3", 1_000, ship(7, vec![record(2, true)]));
        assert_eq!(ledger.state.audit.len(), 3);
        assert_eq!(ledger.state.audit[&(7, 2)], record(2, true));
        assert_eq!(ledger.state.revocation_epoch, 0);
    }

    #[test]
    fn shipping_retried_replays_the_first_answer() {
        let mut ledger = Ledger::new();
        let first = ledger.run("s1", 1_000, ship(7, vec![record(1, true)]));
        let again = ledger.run("s1", 1_100, ship(7, vec![record(1, true)]));
        assert!(again.duplicate);
        assert_eq!(again.outcome, Ok(Applied::IssuancesRecorded { count: 1 }));
        assert_eq!(again.log_index, first.log_index);
        assert_eq!(ledger.state.audit.len(), 1);
    }

    #[test]
    fn an_empty_or_oversized_batch_is_refused() {
        let mut ledger = Ledger::new();
        assert_eq!(
            ledger.run("empty", 1_000, ship(7, vec![])).outcome,
            Err(Refusal::BadAuditBatch {
                count: 0,
                max: MAX_AUDIT_BATCH
            })
        );
        let too_many = (0..=MAX_AUDIT_BATCH as u64)
            .map(|n| record(n, true))
            .collect();
        assert_eq!(
            ledger.run("too-many", 1_000, ship(7, too_many)).outcome,
            Err(Refusal::BadAuditBatch {
                count: MAX_AUDIT_BATCH + 1,
                max: MAX_AUDIT_BATCH
            })
        );
        assert!(ledger.state.audit.is_empty());
    }
}
