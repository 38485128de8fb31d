//! What a signed heartbeat vouches for, and how a verifier uses it: the
//! check of a broker's voucher, the state it covered, and the keys a
//! credential may be signed with when the vouched state and the state
//! received must both agree (see ARCHITECTURE.md, *Signed freshness*).

use std::time::SystemTime;

use lapse_credential::KeyLookup;
use lapse_filter::{KeyAlgorithm, PublicKey, Snapshot, Statement};
use lapse_pki::SignatureChecker;
use lapse_wire::feed::Voucher;

use crate::event::{FeedError, MAX_HEARTBEAT_INTERVAL_MS};

/// The last state a heartbeat vouched for, with the cluster time and
/// maximum credential lifetime it named.
pub(crate) struct Vouched {
    pub state: Snapshot,
    pub at_ms: u64,
    pub max_ttl_ms: u64,
}

/// Public keys by id, from the feed: a key counts only when the vouched
/// state and the state received agree on it.
pub(crate) struct FeedKeys<'a> {
    pub vouched: &'a Snapshot,
    pub current: Option<&'a Snapshot>,
}

impl FeedKeys<'_> {
    pub fn get(&self, key_id: &str) -> Option<PublicKey> {
        let vouched = self.vouched.keys.get(key_id)?;
        let Some(current) = self.current else {
            return Some(vouched.clone());
        };
        let other = current.keys.get(key_id)?;
        if other.algorithm != vouched.algorithm || other.bytes != vouched.bytes {
            return None;
        }
        // The narrower window of the two.
        Some(PublicKey {
            algorithm: vouched.algorithm,
            bytes: vouched.bytes.clone(),
            not_before_ms: vouched.not_before_ms.max(other.not_before_ms),
            not_after_ms: vouched.not_after_ms.min(other.not_after_ms),
        })
    }
}

impl KeyLookup for FeedKeys<'_> {
    fn public_key(&self, key_id: &str) -> Option<[u8; 32]> {
        let key = self.get(key_id)?;
        match key.algorithm {
            KeyAlgorithm::Ed25519 => key.bytes.as_slice().try_into().ok(),
        }
    }
}

/// Check a heartbeat's voucher at wall time `now`: a broker certificate of
/// the CA signed exactly this statement, in its own name, with a sane
/// interval. Says nothing yet of whether it covers the state held.
pub(crate) fn check_voucher(
    checker: &SignatureChecker,
    voucher: Option<Voucher>,
    now: SystemTime,
) -> Result<Statement, FeedError> {
    let voucher = voucher.ok_or(FeedError::Unsigned)?;
    let statement = Statement::decode(&voucher.statement)?;
    let scheme = u16::try_from(voucher.scheme)
        .map_err(|_| FeedError::Signature("unknown signature scheme".into()))?;
    let signed = lapse_pki::Signed {
        scheme,
        signature: voucher.signature,
        chain: voucher.chain,
    };
    let signer = checker
        .check_broker(&voucher.statement, &signed, now)
        .map_err(|e| FeedError::Signature(e.to_string()))?;
    if signer != statement.broker_id {
        return Err(FeedError::Signature(format!(
            "broker {signer} signed a statement in the name of broker {}",
            statement.broker_id
        )));
    }
    if statement.interval_ms == 0 || statement.interval_ms > MAX_HEARTBEAT_INTERVAL_MS {
        return Err(FeedError::BadInterval(statement.interval_ms));
    }
    Ok(statement)
}
