//! Why the ledger refused a command: the replicated refusals, each with a
//! stable code clients map to a precise error.

use serde::{Deserialize, Serialize};

/// Why the ledger refused a command. Each maps to a precise client error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("status index {index} was never leased to any broker")]
    IndexNotIssued { index: u64 },
    #[error("status index {index} belongs to credentials that have all expired")]
    IndexExpired { index: u64 },
    #[error("already revoked at epoch {epoch}")]
    AlreadyRevoked { epoch: u64 },
    #[error("issued-before time {issued_before_ms} is after the commit time {now_ms}")]
    IssuedBeforeInFuture { issued_before_ms: u64, now_ms: u64 },
    #[error("no signing key with id {key_id} (an offline break-glass key's id starts with bg-)")]
    UnknownKey { key_id: String },
    #[error("the presented credential does not prove a status index: {0}")]
    BadCredential(String),
    #[error("{max} break-glass keys are revoked already, the most the ledger holds")]
    TooManyForeignKeys { max: usize },
    #[error("a signing key with id {key_id} is already registered")]
    KeyExists { key_id: String },
    #[error("public key must be 32 bytes (Ed25519), got {length}")]
    BadPublicKey { length: usize },
    #[error("validity window is empty or inverted")]
    BadValidity,
    #[error("lease of {count} indices is outside 1..={max}")]
    BadLeaseCount { count: u64, max: u64 },
    #[error("lease of {lease_ms} ms is outside 1..={max_ms} ms")]
    BadLeaseDuration { lease_ms: u64, max_ms: u64 },
    #[error("status indices are exhausted")]
    IndicesExhausted,
    #[error("a batch of {count} revocations is outside 1..={max}")]
    BadBatch { count: usize, max: usize },
    #[error("a join token with this hash already exists")]
    JoinTokenExists,
    #[error("join token is unknown")]
    JoinTokenUnknown,
    #[error("join token was already used at epoch {epoch}")]
    JoinTokenSpent { epoch: u64 },
    #[error("join token expired at {expires_at_ms}")]
    JoinTokenExpired { expires_at_ms: u64 },
    #[error("join token was not made for this use")]
    JoinTokenWrongUse,
    #[error("join token is bound to address {expected}, not {presented}")]
    JoinTokenWrongAddress { expected: String, presented: String },
    #[error("request id was already used for a different command")]
    RequestIdReused,
    #[error("policy is at version {current}, not the expected {expected}")]
    PolicyVersionMismatch { expected: u64, current: u64 },
    #[error("policy text is {length} bytes; the limit is {max}")]
    PolicyTooLarge { length: usize, max: usize },
    #[error("a batch of {count} audit records is outside 1..={max}")]
    BadAuditBatch { count: usize, max: usize },
    #[error("{what} is outside the tenant {tenant} the caller is authorised for")]
    OutsideTenant { tenant: String, what: String },
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0} holds no such role")]
    NoSuchBinding(String),
    #[error("the role bindings are full ({max}); remove some first")]
    TooManyBindings { max: usize },
    #[error("access policy is at version {current}, not the expected {expected}")]
    AccessPolicyVersionMismatch { expected: u64, current: u64 },
    #[error("no break-glass grant {0}")]
    UnknownGrant(u64),
    #[error("break-glass grant {id}: {why}")]
    BadGrant { id: u64, why: String },
    #[error(
        "policy text nests brackets {depth} deep; the limit is {max} (deeper nesting is refused before parsing)"
    )]
    PolicyTooDeep { depth: usize, max: usize },
    #[error(
        "policy text is empty and would deny every request; to deny everything, say so: `forbid(principal, action, resource);`"
    )]
    PolicyEmpty,
    #[error("secret hash is the SHA-256 of the empty string, which is no secret")]
    EmptySecret,
    /// A task revocation whose task is no task id; the reason names the
    /// rule, not the value.
    #[error("bad task id: {0}")]
    BadTask(String),
    #[error("no SSF receiver named {0}")]
    SsfUnknownReceiver(String),
    #[error("an SSF receiver named {0} or with this token already exists")]
    SsfReceiverExists(String),
    #[error("no SSF stream {0} of this receiver")]
    SsfUnknownStream(String),
    #[error("{0}")]
    SsfBadRequest(String),
    #[error("the ledger holds {max} {what} already, the most it holds; remove some first")]
    SsfFull { what: String, max: usize },
    #[error("ack up to event {up_to} is beyond the last event, {last}")]
    SsfAckBeyond { up_to: u64, last: u64 },
}

impl Refusal {
    /// A stable machine-readable name for the refusal, for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::IndexNotIssued { .. } => "index-not-issued",
            Refusal::IndexExpired { .. } => "index-expired",
            Refusal::AlreadyRevoked { .. } => "already-revoked",
            Refusal::IssuedBeforeInFuture { .. } => "issued-before-in-future",
            Refusal::UnknownKey { .. } => "unknown-key",
            Refusal::KeyExists { .. } => "key-exists",
            Refusal::BadPublicKey { .. } => "bad-public-key",
            Refusal::BadValidity => "bad-validity",
            Refusal::BadLeaseCount { .. } => "bad-lease-count",
            Refusal::BadLeaseDuration { .. } => "bad-lease-duration",
            Refusal::IndicesExhausted => "indices-exhausted",
            Refusal::BadBatch { .. } => "bad-batch",
            Refusal::JoinTokenExists => "join-token-exists",
            Refusal::JoinTokenUnknown => "join-token-unknown",
            Refusal::JoinTokenSpent { .. } => "join-token-spent",
            Refusal::JoinTokenExpired { .. } => "join-token-expired",
            Refusal::JoinTokenWrongUse => "join-token-wrong-use",
            Refusal::JoinTokenWrongAddress { .. } => "join-token-wrong-address",
            Refusal::RequestIdReused => "request-id-reused",
            Refusal::PolicyVersionMismatch { .. } => "policy-version-mismatch",
            Refusal::PolicyTooLarge { .. } => "policy-too-large",
            Refusal::BadAuditBatch { .. } => "bad-audit-batch",
            Refusal::OutsideTenant { .. } => "outside-tenant",
            Refusal::NotAllowed(_) => "not-allowed",
            Refusal::NoSuchBinding(_) => "no-such-binding",
            Refusal::TooManyBindings { .. } => "too-many-bindings",
            Refusal::TooManyForeignKeys { .. } => "too-many-foreign-keys",
            Refusal::BadCredential(_) => "bad-credential",
            Refusal::AccessPolicyVersionMismatch { .. } => "access-policy-version-mismatch",
            Refusal::UnknownGrant(_) => "unknown-grant",
            Refusal::BadGrant { .. } => "bad-grant",
            Refusal::PolicyTooDeep { .. } => "policy-too-deep",
            Refusal::PolicyEmpty => "policy-empty",
            Refusal::EmptySecret => "empty-secret",
            Refusal::BadTask(_) => "bad-task",
            Refusal::SsfUnknownReceiver(_) => "ssf-unknown-receiver",
            Refusal::SsfReceiverExists(_) => "ssf-receiver-exists",
            Refusal::SsfUnknownStream(_) => "ssf-unknown-stream",
            Refusal::SsfBadRequest(_) => "ssf-bad-request",
            Refusal::SsfFull { .. } => "ssf-full",
            Refusal::SsfAckBeyond { .. } => "ssf-ack-beyond",
        }
    }
}
