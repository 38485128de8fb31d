//! The ledger's snapshot format and state digest.
//!
//! A snapshot is `MAGIC`, a format version (u16, little endian), the postcard
//! encoding of [`LedgerState`], and the sha256 of everything before it. The
//! digest of a state is the sha256 of its postcard encoding, so two replicas
//! at the same log index have the same digest exactly when their states match.

use sha2::{Digest, Sha256 as Hasher};

use crate::command::Sha256;
use crate::state::LedgerState;

const MAGIC: &[u8; 8] = b"LAPSESNP";
/// 2: operator roles, the access policy, the control-plane audit,
/// break-glass grants, issued tenants and revoked break-glass keys.
/// 3: audit records with their decision inputs and seals, tenants' policy
/// history, and the signing keys kept for checking evidence.
/// 4: task revocation rules.
/// 5: revocations counted by kind.
/// 6: SSF receivers, streams and revocation events.
const FORMAT_VERSION: u16 = 6;
const HEADER_LEN: usize = MAGIC.len() + 2;
const CHECKSUM_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is {0} bytes, too short to hold a header and checksum")]
    Truncated(usize),
    #[error("snapshot does not start with the Lapse snapshot magic")]
    BadMagic,
    #[error("snapshot format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    #[error("snapshot checksum does not match its contents")]
    BadChecksum,
    #[error("snapshot body does not decode: {0}")]
    Decode(String),
}

impl LedgerState {
    /// Serialise the whole state into a self-checking snapshot.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1024);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let bytes = postcard::to_extend(self, bytes).expect("ledger state always serialises");
        let checksum = Hasher::digest(&bytes);
        let mut bytes = bytes;
        bytes.extend_from_slice(&checksum);
        bytes
    }

    /// Restore a state from snapshot bytes, checking format and checksum.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, SnapshotError> {
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(SnapshotError::Truncated(bytes.len()));
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u16::from_le_bytes([bytes[MAGIC.len()], bytes[MAGIC.len() + 1]]);
        if version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let (content, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Hasher::digest(content).as_slice() != checksum {
            return Err(SnapshotError::BadChecksum);
        }
        let mut state: LedgerState = postcard::from_bytes(&content[HEADER_LEN..])
            .map_err(|e| SnapshotError::Decode(e.to_string()))?;
        state.rebuild_derived();
        Ok(state)
    }

    /// The sha256 of the canonical encoding of the state.
    pub fn digest(&self) -> Sha256 {
        let bytes = postcard::to_stdvec(self).expect("ledger state always serialises");
        Hasher::digest(bytes).into()
    }
}
