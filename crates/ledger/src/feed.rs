//! What verifiers hold, derived from the ledger: the feed's snapshots and
//! deltas.
//!
//! Every broker derives the same feed from its applied state. Each revoked
//! index, secret, rule and key carries the epoch that last changed it, so a
//! delta from any earlier epoch is a filter over the state, and a verifier
//! can resume on any broker, not only the one it started on.
//!
//! Rules and keys that age out of the ledger are not sent as removals: a
//! verifier ages them out by cluster time itself (see
//! [`LedgerParams::max_credential_ttl_ms`](crate::LedgerParams)). Revoked
//! indices leave by the window base moving up, which deltas carry.

use std::collections::{BTreeMap, BTreeSet};

use lapse_filter::{
    DeltaMessage, FilterError, KeyAlgorithm, KeySet, MIN_PLANNED_ITEMS, PublicKey, RevokedDelta,
    RevokedSet, RuleSet, SecretSet, Snapshot,
};

use crate::state::LedgerState;

/// Length of the status-index window every feed set covers. The window
/// slides with its base; nothing the cluster leases comes near this span.
pub const FEED_UNIVERSE: u64 = 1 << 40;

/// False-positive rate of the leaked-secret Bloom filter (every hit is
/// confirmed against the exact set, so this is only a speed setting).
pub const SECRET_FP_RATE: f64 = 1e-6;

/// The whole feed state at the ledger's current epoch. `seed` keys the
/// leaked-secret Bloom filter; it is the broker's own and need not match
/// other brokers'.
pub fn snapshot(state: &LedgerState, seed: [u8; 32]) -> Result<Snapshot, FilterError> {
    let base = state.window_base();
    let set = RevokedSet::from_sorted(base, FEED_UNIVERSE, state.revoked_indices.keys().copied())?;
    let planned = (state.revoked_secrets.len() as u64 * 2).max(MIN_PLANNED_ITEMS);
    let mut secrets = SecretSet::new(planned, SECRET_FP_RATE, seed)?;
    for hash in state.revoked_secrets.keys() {
        secrets.insert(*hash)?;
    }
    Ok(Snapshot {
        epoch: state.revocation_epoch,
        set,
        secrets,
        rules: rules_since(state, None)?,
        keys: keys_since(state, None)?,
    })
}

/// Everything that changed after `from_epoch`, up to the current epoch.
/// `None` when the state is still at `from_epoch`. A `from_epoch` beyond the
/// current epoch is an error: this replica has not caught up with it.
pub fn delta_since(
    state: &LedgerState,
    from_epoch: u64,
) -> Result<Option<DeltaMessage>, FilterError> {
    let to = state.revocation_epoch;
    if from_epoch == to {
        return Ok(None);
    }
    if from_epoch > to {
        return Err(FilterError::EpochMismatch {
            state: to,
            from: from_epoch,
            to: from_epoch,
        });
    }
    let added = state.indices_revoked_after(from_epoch);
    let revoked = RevokedDelta::new(from_epoch, to, added, Some(state.window_base()))?;
    let added_secrets: BTreeSet<_> = state
        .revoked_secrets
        .iter()
        .filter(|(_, at)| at.epoch > from_epoch)
        .map(|(hash, _)| *hash)
        .collect();
    Ok(Some(DeltaMessage {
        revoked,
        added_secrets,
        rules: rules_since(state, Some(from_epoch))?,
        keys: keys_since(state, Some(from_epoch))?,
        keys_removed: BTreeSet::new(),
    }))
}

/// How many revoked indices a delta from `from_epoch` would carry: a cheap
/// way to choose between a delta and a snapshot.
pub fn indices_since(state: &LedgerState, from_epoch: u64) -> usize {
    state.indices_revoked_after(from_epoch).len()
}

/// The commit time of every revocation committed after `from_epoch`, by
/// epoch: what propagation is measured against.
pub fn revocations_since(state: &LedgerState, from_epoch: u64) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    let mut note = |epoch: u64, at_ms: u64| {
        if epoch > from_epoch {
            out.insert(epoch, at_ms);
        }
    };
    for index in state.indices_revoked_after(from_epoch) {
        if let Some(at) = state.revoked_indices.get(&index) {
            note(at.epoch, at.at_ms);
        }
    }
    for at in state.revoked_secrets.values() {
        note(at.epoch, at.at_ms);
    }
    for rule in state
        .subject_rules
        .values()
        .chain(state.tenant_rules.values())
        .chain(state.task_rules.values())
    {
        note(rule.revoked.epoch, rule.revoked.at_ms);
    }
    for key in state.keys.values() {
        if let Some(at) = key.revoked {
            note(at.epoch, at.at_ms);
        }
    }
    for at in state.revoked_foreign_keys.values() {
        note(at.epoch, at.at_ms);
    }
    out
}

fn rules_since(state: &LedgerState, from_epoch: Option<u64>) -> Result<RuleSet, FilterError> {
    let newer = |epoch: u64| from_epoch.is_none_or(|from| epoch > from);
    let mut rules = RuleSet::new();
    for ((tenant, subject), rule) in &state.subject_rules {
        if newer(rule.revoked.epoch) {
            rules.revoke_subject(tenant.as_str(), subject.as_str(), rule.issued_before_ms)?;
        }
    }
    for (tenant, rule) in &state.tenant_rules {
        if newer(rule.revoked.epoch) {
            rules.revoke_tenant(tenant.as_str(), rule.issued_before_ms)?;
        }
    }
    for ((tenant, task), rule) in &state.task_rules {
        if newer(rule.revoked.epoch) {
            rules.revoke_task(tenant.as_str(), task, rule.issued_before_ms)?;
        }
    }
    for (kid, key) in &state.keys {
        if let Some(at) = key.revoked
            && newer(at.epoch)
        {
            rules.revoke_key(kid.as_str())?;
        }
    }
    for (kid, at) in &state.revoked_foreign_keys {
        if newer(at.epoch) {
            rules.revoke_key(kid.as_str())?;
        }
    }
    Ok(rules)
}

fn keys_since(state: &LedgerState, from_epoch: Option<u64>) -> Result<KeySet, FilterError> {
    let mut keys = KeySet::new();
    for (kid, key) in &state.keys {
        if from_epoch.is_none_or(|from| key.changed_epoch > from) {
            keys.insert(
                kid.as_str(),
                PublicKey {
                    algorithm: KeyAlgorithm::Ed25519,
                    bytes: key.public_key.clone(),
                    not_before_ms: key.not_before_ms,
                    not_after_ms: key.not_after_ms,
                },
            )?;
        }
    }
    Ok(keys)
}
