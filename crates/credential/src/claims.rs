//! The claims of a Lapse credential: standard JWT claims, the tenant and
//! scopes, the status index in the IETF Token Status List shape
//! (`status.status_list.idx`), and `cnf.jkt` for key-bound credentials.

use serde::{Deserialize, Serialize};

use crate::ids::{StatusIndex, TenantId, WorkloadId};

/// Where a credential's revocation status lives (Token Status List draft).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListRef {
    pub idx: u64,
    pub uri: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusClaim {
    pub status_list: StatusListRef,
}

/// The refresh chain a credential belongs to: every credential refreshed
/// from one attestation shares its status index `idx`, so revoking any of
/// them revokes them all (verifiers check the index, offline), and `iat`
/// is when that attestation was, so a chain can be held to a maximum age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub idx: u64,
    /// Seconds since the Unix epoch.
    pub iat: u64,
}

/// RFC 9449 confirmation: the thumbprint of the key the credential is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: WorkloadId,
    pub aud: Vec<String>,
    /// Seconds since the Unix epoch.
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
    pub tenant: TenantId,
    pub scopes: Vec<String>,
    pub status: StatusClaim,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cnf: Option<Confirmation>,
    /// The refresh chain; absent on credentials issued before chains.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub chain: Option<Chain>,
}

impl Claims {
    pub fn status_index(&self) -> StatusIndex {
        StatusIndex(self.status.status_list.idx)
    }
}
