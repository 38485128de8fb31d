//! The broker's one error type. Domain code (the write path, issuance,
//! leases, keys, the feed) returns it; only [`crate::api`] turns it into a
//! gRPC status and only [`crate::http`] into an HTTP status.
//!
//! Three kinds matter most to a caller, and each has its own variant:
//! a replicated refusal (the ledger said no: the same answer on every
//! broker, forever), "not now" (no leader, no quorum, a timeout: retry
//! with the same request id), and "this node is broken" (a bug or a failed
//! disk: go elsewhere). The rest say what was wrong with the request
//! before anything was proposed.

use lapse_ledger::{Applied, Refusal};

/// Why a broker operation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The ledger refused the command; every replica gives the same answer.
    #[error("{0}")]
    Refused(Refusal),
    /// The request is malformed; nothing was proposed.
    #[error("{0}")]
    Invalid(String),
    /// The caller did not prove who it is.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but not allowed this.
    #[error("{0}")]
    Forbidden(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// What the request would create exists already.
    #[error("{0}")]
    Exists(String),
    /// The cluster is not in a state where the request can succeed.
    #[error("{0}")]
    Precondition(String),
    /// A bounded resource is used up.
    #[error("{0}")]
    Exhausted(String),
    /// Not now: no leader, no quorum, or a deadline passed. Retrying with
    /// the same request id is safe.
    #[error("{0}")]
    Unavailable(String),
    /// This node cannot serve the request (a bug, storage failure).
    #[error("{0}")]
    Broken(String),
    /// A DPoP proof without a nonce this broker accepts: make it again
    /// with `nonce` (RFC 9449 §8, `use_dpop_nonce`).
    #[error(
        "use_dpop_nonce: this broker takes DPoP proofs only with a nonce it handed out; make the proof again with the one in the dpop-nonce metadata"
    )]
    DpopNonce { nonce: String },
}

impl BrokerError {
    /// A request field that failed validation.
    pub fn invalid(field: &str, error: impl std::fmt::Display) -> Self {
        Self::Invalid(format!("{field}: {error}"))
    }

    /// A ledger answer that does not fit the command: a bug, never a
    /// client's fault.
    pub fn unexpected(answer: &Applied) -> Self {
        Self::Broken(format!("unexpected ledger answer {answer:?}"))
    }

    /// Whether retrying the same request may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The ledger's answer to a proposal, picked by `pick`, or the error it
/// stands for: its refusal, or a bug when the answer does not fit the
/// command (`pick` hands back what it did not expect).
pub fn answer<T>(
    outcome: std::result::Result<Applied, Refusal>,
    pick: impl FnOnce(Applied) -> std::result::Result<T, Applied>,
) -> Result<T> {
    match outcome {
        Ok(applied) => pick(applied).map_err(|other| BrokerError::unexpected(&other)),
        Err(refusal) => Err(BrokerError::Refused(refusal)),
    }
}

impl From<Refusal> for BrokerError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

/// Shorthand for results of broker operations.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
