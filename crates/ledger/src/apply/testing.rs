//! Test support for the command families: a ledger with small parameters
//! that applies proposals at successive log indices.

use lapse_credential::{KeyId, TenantId, WorkloadId};

use crate::{Applied, Command, LedgerParams, LedgerState, Proposal, RequestId, Response};

/// No credential lives longer than this in the test ledger.
pub(super) const TTL_MS: u64 = 10_000;
/// The longest lease the test ledger grants.
pub(super) const MAX_LEASE_MS: u64 = 5_000;

/// A ledger and the log index its next proposal is applied at.
pub(super) struct Ledger {
    pub(super) state: LedgerState,
    next_log_index: u64,
}

impl Ledger {
    pub(super) fn new() -> Self {
        Self {
            state: LedgerState::new(LedgerParams {
                max_credential_ttl_ms: TTL_MS,
                max_lease_ms: MAX_LEASE_MS,
                request_dedup_ms: 60_000,
                prune_interval_ms: 1_000,
                audit_retention_ms: 100_000,
            }),
            next_log_index: 1,
        }
    }

    /// The log index the next proposal will be applied at.
    pub(super) fn next_log_index(&self) -> u64 {
        self.next_log_index
    }

    /// Apply `command` under request id `id`, stamped at `at_ms`, at the
    /// next log index.
    pub(super) fn run(&mut self, id: &str, at_ms: u64, command: Command) -> Response {
        let log_index = self.next_log_index;
        self.next_log_index += 1;
        self.state.apply(
            log_index,
            &Proposal {
                request_id: RequestId::new(id).unwrap(),
                stamped_at_ms: at_ms,
                command,
            },
        )
    }

    /// Lease `count` indices to broker 1 for the longest lease allowed;
    /// returns the block `(start, end)`.
    pub(super) fn lease(&mut self, id: &str, at_ms: u64, count: u64) -> (u64, u64) {
        let response = self.run(
            id,
            at_ms,
            Command::LeaseIndices {
                broker: 1,
                count,
                lease_ms: MAX_LEASE_MS,
            },
        );
        match response.outcome {
            Ok(Applied::Leased { start, end, .. }) => (start, end),
            other => panic!("lease refused: {other:?}"),
        }
    }
}

pub(super) fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

pub(super) fn workload(path: &str) -> WorkloadId {
    WorkloadId::new(format!("spiffe://example.org/{path}")).unwrap()
}

pub(super) fn key_id(name: &str) -> KeyId {
    KeyId::new(name).unwrap()
}
