//! Conversions between wire messages and the ledger's and broker's types,
//! one file per message family. Conversions from the wire validate every
//! identifier and name the field at fault; conversions to the wire cannot
//! fail.
//!
//! They live here rather than in `lapse-wire` because `lapse-wire` depends
//! on no other Lapse crate: the verifier uses it, and must not depend on
//! the ledger (see `tests/tidy.rs`).

mod audit;
mod keys;
mod revocation;

pub use audit::audit_record;
pub use keys::{evidence_key_info, signing_key_info};
pub use revocation::revocation;
