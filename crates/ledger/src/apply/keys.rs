//! Signing keys: `RegisterKey` and `RetireKey`. (Revoking a key is a
//! revocation, in [`super::revoke`].)

use lapse_credential::KeyId;

use crate::command::{Applied, NodeId, Outcome, Refusal};
use crate::state::{EvidenceKey, LedgerState, MAX_EVIDENCE_KEYS, SigningKey};

impl LedgerState {
    /// `RegisterKey`: a broker's new Ed25519 public key and its validity.
    pub(super) fn register_key(
        &mut self,
        epoch: u64,
        key_id: &KeyId,
        broker: NodeId,
        public_key: &[u8],
        not_before_ms: u64,
        not_after_ms: u64,
    ) -> Outcome {
        if self.keys.contains_key(key_id) {
            return Err(Refusal::KeyExists {
                key_id: key_id.to_string(),
            });
        }
        if public_key.len() != 32 {
            return Err(Refusal::BadPublicKey {
                length: public_key.len(),
            });
        }
        if not_after_ms <= not_before_ms {
            return Err(Refusal::BadValidity);
        }
        self.keys.insert(
            key_id.clone(),
            SigningKey {
                broker,
                public_key: public_key.to_vec(),
                not_before_ms,
                not_after_ms,
                registered_epoch: epoch,
                changed_epoch: epoch,
                retired_at_ms: None,
                revoked: None,
            },
        );
        self.keep_evidence_key(epoch, key_id, broker, public_key, not_after_ms);
        self.revocation_epoch = epoch;
        Ok(Applied::KeyRegistered)
    }

    /// Keep the key's public half for checking evidence, leaving out the
    /// longest-registered one when the map is full.
    fn keep_evidence_key(
        &mut self,
        epoch: u64,
        key_id: &KeyId,
        broker: NodeId,
        public_key: &[u8],
        not_after_ms: u64,
    ) {
        if self.evidence_keys.len() >= MAX_EVIDENCE_KEYS
            && let Some(oldest) = self
                .evidence_keys
                .iter()
                .min_by_key(|(_, key)| key.registered_epoch)
                .map(|(id, _)| id.clone())
        {
            self.evidence_keys.remove(&oldest);
        }
        self.evidence_keys.insert(
            key_id.clone(),
            EvidenceKey {
                broker,
                public_key: public_key.to_vec(),
                not_after_ms,
                registered_epoch: epoch,
            },
        );
    }

    /// A registered key, to change; refused if there is none.
    pub(super) fn key_mut(&mut self, key_id: &KeyId) -> Result<&mut SigningKey, Refusal> {
        self.keys
            .get_mut(key_id)
            .ok_or_else(|| Refusal::UnknownKey {
                key_id: key_id.to_string(),
            })
    }

    /// `RetireKey`: the key's validity ends now, or one millisecond after
    /// it begins if that is later; an earlier end is kept. Retiring a
    /// retired key changes nothing.
    pub(super) fn retire_key(&mut self, epoch: u64, now_ms: u64, key_id: &KeyId) -> Outcome {
        let key = self.key_mut(key_id)?;
        if key.retired_at_ms.is_none() {
            key.retired_at_ms = Some(now_ms);
            key.not_after_ms = key.not_after_ms.min(now_ms.max(key.not_before_ms + 1));
            key.changed_epoch = epoch;
            self.revocation_epoch = epoch;
        }
        Ok(Applied::KeyRetired)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Ledger, key_id};
    use crate::command::{Applied, Command, Refusal};
    use crate::state::SigningKey;

    fn register(name: &str, public_key: Vec<u8>, not_before_ms: u64, not_after_ms: u64) -> Command {
        Command::RegisterKey {
            key_id: key_id(name),
            broker: 3,
            public_key,
            not_before_ms,
            not_after_ms,
        }
    }

    fn retire(name: &str) -> Command {
        Command::RetireKey {
            key_id: key_id(name),
        }
    }

    #[test]
    fn registering_a_key_records_it_and_moves_the_feed_epoch() {
        let mut ledger = Ledger::new();
        let response = ledger.run("reg", 1_000, register("k1", vec![7; 32], 500, 90_000));
        assert_eq!(response.outcome, Ok(Applied::KeyRegistered));
        assert_eq!(
            ledger.state.keys.get(&key_id("k1")),
            Some(&SigningKey {
                broker: 3,
                public_key: vec![7; 32],
                not_before_ms: 500,
                not_after_ms: 90_000,
                registered_epoch: 1,
                changed_epoch: 1,
                retired_at_ms: None,
                revoked: None,
            })
        );
        assert_eq!(ledger.state.revocation_epoch, 1);
    }

    #[test]
    fn register_retried_replays_the_first_answer() {
        let mut ledger = Ledger::new();
        let first = ledger.run("reg", 1_000, register("k1", vec![7; 32], 500, 90_000));
        let again = ledger.run("reg", 1_100, register("k1", vec![7; 32], 500, 90_000));
        assert!(again.duplicate);
        // The retry is not refused as KeyExists: it gets the first answer.
        assert_eq!(again.outcome, Ok(Applied::KeyRegistered));
        assert_eq!(again.log_index, first.log_index);
        assert_eq!(ledger.state.revocation_epoch, first.log_index);
    }

    #[test]
    fn register_refusals() {
        let mut ledger = Ledger::new();
        ledger.run("reg", 1_000, register("k1", vec![7; 32], 500, 90_000));
        let epoch = ledger.state.revocation_epoch;
        // An existing id is refused before anything else is checked.
        assert_eq!(
            ledger
                .run("dup", 1_000, register("k1", vec![1; 3], 9, 9))
                .outcome,
            Err(Refusal::KeyExists {
                key_id: "k1".into()
            })
        );
        assert_eq!(
            ledger
                .run("short", 1_000, register("k2", vec![1; 31], 0, 10))
                .outcome,
            Err(Refusal::BadPublicKey { length: 31 })
        );
        assert_eq!(
            ledger
                .run("long", 1_000, register("k2", vec![1; 33], 0, 10))
                .outcome,
            Err(Refusal::BadPublicKey { length: 33 })
        );
        for (id, not_after_ms) in [("empty", 10), ("inverted", 9)] {
            assert_eq!(
                ledger
                    .run(id, 1_000, register("k2", vec![1; 32], 10, not_after_ms))
                    .outcome,
                Err(Refusal::BadValidity)
            );
        }
        assert_eq!(ledger.state.keys.len(), 1);
        assert_eq!(ledger.state.keys[&key_id("k1")].public_key, vec![7; 32]);
        assert_eq!(ledger.state.revocation_epoch, epoch);
    }

    #[test]
    fn retiring_a_key_ends_its_validity_now() {
        let mut ledger = Ledger::new();
        ledger.run("reg", 1_000, register("k1", vec![7; 32], 500, 90_000));
        let retired = ledger.run("retire", 2_000, retire("k1"));
        assert_eq!(retired.outcome, Ok(Applied::KeyRetired));
        let key = &ledger.state.keys[&key_id("k1")];
        assert_eq!(key.retired_at_ms, Some(2_000));
        assert_eq!(key.not_after_ms, 2_000);
        assert_eq!(key.changed_epoch, retired.log_index);
        assert_eq!(key.revoked, None);
        assert_eq!(ledger.state.revocation_epoch, retired.log_index);

        // Retiring again is answered the same and changes nothing.
        let again = ledger.run("retire-again", 3_000, retire("k1"));
        assert_eq!(again.outcome, Ok(Applied::KeyRetired));
        assert!(!again.duplicate);
        let key = &ledger.state.keys[&key_id("k1")];
        assert_eq!(
            (key.retired_at_ms, key.not_after_ms, key.changed_epoch),
            (Some(2_000), 2_000, retired.log_index)
        );
        assert_eq!(ledger.state.revocation_epoch, retired.log_index);
    }

    #[test]
    fn retiring_keeps_a_validity_window_that_is_not_empty() {
        let mut ledger = Ledger::new();
        // Not yet valid when retired: the window shrinks to one millisecond.
        ledger.run(
            "reg-future",
            1_000,
            register("k1", vec![7; 32], 5_000, 90_000),
        );
        ledger.run("retire-future", 2_000, retire("k1"));
        assert_eq!(ledger.state.keys[&key_id("k1")].not_after_ms, 5_001);
        // Already past its end when retired: the end does not move later.
        ledger.run("reg-past", 1_000, register("k2", vec![7; 32], 0, 1_500));
        ledger.run("retire-past", 2_000, retire("k2"));
        assert_eq!(ledger.state.keys[&key_id("k2")].not_after_ms, 1_500);
    }

    #[test]
    fn retire_retried_replays_the_first_answer() {
        let mut ledger = Ledger::new();
        ledger.run("reg", 1_000, register("k1", vec![7; 32], 500, 90_000));
        let first = ledger.run("retire", 2_000, retire("k1"));
        let again = ledger.run("retire", 3_000, retire("k1"));
        assert!(again.duplicate);
        assert_eq!(again.outcome, Ok(Applied::KeyRetired));
        assert_eq!(again.log_index, first.log_index);
        assert_eq!(ledger.state.keys[&key_id("k1")].retired_at_ms, Some(2_000));
    }

    #[test]
    fn retiring_an_unknown_key_is_refused() {
        let mut ledger = Ledger::new();
        assert_eq!(
            ledger.run("retire", 1_000, retire("nope")).outcome,
            Err(Refusal::UnknownKey {
                key_id: "nope".into()
            })
        );
        assert_eq!(ledger.state.revocation_epoch, 0);
    }
}
