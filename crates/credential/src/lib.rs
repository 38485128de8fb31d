//! Identifiers shared by every part of Lapse: tenants, SPIFFE workload ids,
//! status indices and signing key ids. Each is validated once, when it is
//! parsed, so the rest of the system can hold it without checking again.

mod ids;

pub use ids::{IdError, KeyId, StatusIndex, TenantId, WorkloadId};
