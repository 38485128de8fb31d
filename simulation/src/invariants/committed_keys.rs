//! No credential is signed with a key that was not committed: when a
//! client receives a credential, its key id is registered in the applied
//! ledger of at least one running broker (the leader applies an entry
//! before it answers the write that committed it).

use lapse_ledger::LedgerState;

use super::Violation;

pub const NAME: &str = "committed_keys";

pub fn check(broker: u64, key_id: &str, state: &LedgerState, at_ms: f64) -> Option<Violation> {
    let known = state.keys.keys().any(|k| k.as_str() == key_id);
    (!known).then(|| Violation {
        invariant: NAME,
        at_ms,
        detail: format!(
            "broker {broker} signed a credential with key {key_id}, which its ledger does not hold"
        ),
    })
}
