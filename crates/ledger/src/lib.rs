//! The replicated state machine of Lapse.
//!
//! Pure and synchronous: no tokio, no tonic, no sled, no clock. The leader
//! stamps time into each [`Proposal`]; [`LedgerState::apply`] turns a
//! proposal at a log index into a [`Response`], the same on every replica.
//! The log index of a revocation is its *epoch*.

mod apply;
mod command;
pub mod evidence;
pub mod feed;
mod snapshot;
pub mod ssf;
mod state;

pub use command::{
    Applied, AttestationKind, Authorization, BREAK_GLASS_KEY_PREFIX, Command, ControlEvent,
    ControlOutcome, Decision, DecisionInputs, DecisionKind, EMPTY_SECRET_SHA256, Grant,
    IssuanceRecord, JoinGrant, JoinUse, MAX_AUDIT_BATCH, MAX_BATCH, MAX_BINDINGS,
    MAX_FOREIGN_KEY_REVOCATIONS, MAX_GRANT_MS, MAX_GRANTS, MAX_JUSTIFICATION_BYTES,
    MAX_LEASE_COUNT, MAX_POLICY_BYTES, MAX_POLICY_NESTING, MAX_PRINCIPAL_BYTES, MAX_REQUEST_ID_LEN,
    NodeId, OperatorRole, Outcome, PresentedToken, Proposal, Refusal, RequestId, RequestIdError,
    Response, Revocation, Seal, Sha256, policy_nesting, policy_text_refusal,
};
pub use evidence::{evidence_bytes, evidence_digest, record_sha256};
pub use snapshot::SnapshotError;
pub use state::{
    EvidenceKey, IssuedBeforeRule, JoinToken, Lease, LedgerParams, LedgerState, MAX_CONTROL_EVENTS,
    MAX_EVIDENCE_KEYS, MAX_POLICY_HISTORY, Policy, RevocationCounts, RevokedAt, SigningKey,
};
