//! Every gRPC service the broker serves, and the only code in the broker
//! that knows gRPC: status codes, metadata, requests and responses.
//!
//! One file per service area. Each validates its input, converts it with
//! [`convert`], calls the domain code (which returns
//! [`BrokerError`]) and converts the answer back. This module holds what
//! they share: the single mapping from [`BrokerError`] to a gRPC status,
//! admin authentication, and the reading of request ids.

mod audit;
pub mod auth;
mod cluster;
pub mod convert;
pub mod feed;
pub mod guard;
mod issue;
mod join;
mod keys;
mod lease;
mod membership;
pub mod peer;
mod policy;
mod propagation;
mod revoke;
mod roles;
mod ssf;
pub(crate) mod status;

pub use cluster::ClusterService;
pub use issue::IssuerService;

use lapse_ledger::{Refusal, RequestId};
use tonic::{Code, Status};

use crate::error::BrokerError;

/// The metadata key a refused request carries its refusal code under.
pub const REFUSAL_HEADER: &str = "x-lapse-refusal";

/// The gRPC code for a ledger refusal.
fn refusal_code(refusal: &Refusal) -> Code {
    match refusal {
        Refusal::IndexNotIssued { .. } | Refusal::UnknownKey { .. } | Refusal::JoinTokenUnknown => {
            Code::NotFound
        }
        Refusal::AlreadyRevoked { .. } | Refusal::KeyExists { .. } | Refusal::JoinTokenExists => {
            Code::AlreadyExists
        }
        Refusal::IndexExpired { .. }
        | Refusal::JoinTokenSpent { .. }
        | Refusal::JoinTokenExpired { .. }
        | Refusal::RequestIdReused
        | Refusal::PolicyVersionMismatch { .. }
        | Refusal::IndicesExhausted => Code::FailedPrecondition,
        Refusal::JoinTokenWrongUse
        | Refusal::JoinTokenWrongAddress { .. }
        | Refusal::OutsideTenant { .. }
        | Refusal::NotAllowed(_) => Code::PermissionDenied,
        Refusal::NoSuchBinding(_)
        | Refusal::UnknownGrant(_)
        | Refusal::SsfUnknownReceiver(_)
        | Refusal::SsfUnknownStream(_) => Code::NotFound,
        Refusal::SsfReceiverExists(_) => Code::AlreadyExists,
        Refusal::SsfFull { .. } => Code::ResourceExhausted,
        Refusal::SsfBadRequest(_) | Refusal::SsfAckBeyond { .. } => Code::InvalidArgument,
        Refusal::BadGrant { .. } => Code::FailedPrecondition,
        Refusal::TooManyBindings { .. } | Refusal::TooManyForeignKeys { .. } => {
            Code::ResourceExhausted
        }
        Refusal::AccessPolicyVersionMismatch { .. } => Code::FailedPrecondition,
        Refusal::IssuedBeforeInFuture { .. }
        | Refusal::BadPublicKey { .. }
        | Refusal::BadCredential(_)
        | Refusal::BadValidity
        | Refusal::BadLeaseCount { .. }
        | Refusal::BadLeaseDuration { .. }
        | Refusal::BadBatch { .. }
        | Refusal::PolicyTooLarge { .. }
        | Refusal::PolicyTooDeep { .. }
        | Refusal::PolicyEmpty
        | Refusal::EmptySecret
        | Refusal::BadTask(_)
        | Refusal::BadAuditBatch { .. } => Code::InvalidArgument,
    }
}

/// The one mapping from a broker error to what a gRPC caller sees. A
/// refusal carries its code in the [`REFUSAL_HEADER`] metadata.
impl From<BrokerError> for Status {
    fn from(error: BrokerError) -> Self {
        let code = match &error {
            BrokerError::Refused(refusal) => refusal_code(refusal),
            BrokerError::Invalid(_) => Code::InvalidArgument,
            BrokerError::Unauthenticated(_) => Code::Unauthenticated,
            BrokerError::Forbidden(_) => Code::PermissionDenied,
            BrokerError::NotFound(_) => Code::NotFound,
            BrokerError::Exists(_) => Code::AlreadyExists,
            BrokerError::Precondition(_) => Code::FailedPrecondition,
            BrokerError::Exhausted(_) => Code::ResourceExhausted,
            BrokerError::Unavailable(_) => Code::Unavailable,
            BrokerError::Broken(_) => Code::Internal,
            BrokerError::DpopNonce { .. } => Code::Unauthenticated,
        };
        let mut status = Status::new(code, error.to_string());
        if let BrokerError::DpopNonce { nonce } = &error
            && let Ok(value) = nonce.parse()
        {
            status
                .metadata_mut()
                .insert(crate::issuance::nonce::NONCE_HEADER, value);
        }
        if let BrokerError::Refused(refusal) = &error
            && let Ok(value) = refusal.code().parse()
        {
            status.metadata_mut().insert(REFUSAL_HEADER, value);
        }
        status
    }
}

/// The gRPC status for a ledger refusal, tagged with its code.
pub fn refusal_status(refusal: &Refusal) -> Status {
    BrokerError::Refused(refusal.clone()).into()
}

/// A caller-supplied request id, validated.
fn request_id(value: String) -> Result<RequestId, Status> {
    RequestId::new(value).map_err(|e| BrokerError::invalid("request_id", e).into())
}

/// An invalid-argument status naming the field at fault.
fn invalid(field: &str, error: impl std::fmt::Display) -> Status {
    BrokerError::invalid(field, error).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_its_code_in_metadata_and_other_errors_carry_none() {
        let status = Status::from(BrokerError::Refused(Refusal::JoinTokenUnknown));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.metadata().get(REFUSAL_HEADER).unwrap(),
            Refusal::JoinTokenUnknown.code()
        );
        let status = Status::from(BrokerError::Unavailable("no leader".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "no leader");
        assert!(status.metadata().get(REFUSAL_HEADER).is_none());
        assert_eq!(
            Status::from(BrokerError::Broken("bug".into())).code(),
            Code::Internal
        );
    }

    #[test]
    fn a_peer_status_maps_back_to_the_same_kind_of_error() {
        for error in [
            BrokerError::Invalid("x".into()),
            BrokerError::Unauthenticated("x".into()),
            BrokerError::Forbidden("x".into()),
            BrokerError::NotFound("x".into()),
            BrokerError::Exists("x".into()),
            BrokerError::Precondition("x".into()),
            BrokerError::Exhausted("x".into()),
            BrokerError::Unavailable("x".into()),
            BrokerError::Broken("x".into()),
        ] {
            assert_eq!(
                crate::link::from_status(&Status::from(error.clone())),
                error
            );
        }
        assert!(crate::link::from_status(&Status::deadline_exceeded("slow")).is_retriable());
    }
}
