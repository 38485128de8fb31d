//! Fuzz what a verifier does with bytes from the feed: decode a protobuf
//! `FeedEvent` (`decode_event_bytes`) and apply it to a verifier holding a
//! small state. Nothing may panic, and an event that is refused must leave
//! the verifier exactly as it was.
//!
//! Mode byte: even → the rest as the raw event bytes; odd → a valid delta
//! event built from the rest, encoded, then damaged.

#![no_main]

use std::sync::OnceLock;

use lapse_filter::{
    DeltaMessage, KeySet, Message, RevokedDelta, RevokedSet, RuleSet, SecretSet, Snapshot,
    encode_message,
};
use lapse_fuzz::{Source, mutate, raw_or_valid};
use lapse_verifier::{Verifier, VerifyConfig, decode_event_bytes};
use lapse_wire::feed::FeedEvent;
use lapse_wire::feed::feed_event::Kind;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fn event(kind: Kind, epoch: u64, from: u64) -> FeedEvent {
    FeedEvent {
        kind: Some(kind),
        epoch,
        from_epoch: from,
        cluster_time_ms: 1_800_000_000_000,
        broker_id: 1,
        max_credential_ttl_ms: 86_400_000,
    }
}

/// The encoded snapshot every run starts from: epoch 10, indices 3 and 40.
fn snapshot_event() -> &'static FeedEvent {
    static SNAPSHOT: OnceLock<FeedEvent> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let snapshot = Snapshot {
            epoch: 10,
            set: RevokedSet::from_sorted(0, 1 << 20, [3, 40]).expect("valid"),
            secrets: SecretSet::new(10, 0.01, [9; 32]).expect("valid"),
            rules: RuleSet::new(),
            keys: KeySet::new(),
        };
        let bytes = encode_message(&Message::Full(Box::new(snapshot))).expect("encodes");
        event(Kind::Snapshot(bytes.into()), 10, 0)
    })
}

fuzz_target!(|data: &[u8]| {
    let (raw, rest) = raw_or_valid(data);
    let bytes = if raw {
        rest.to_vec()
    } else {
        let mut src = Source::new(rest);
        let added: Vec<u64> = (0..src.byte() % 8)
            .map(|i| 100 + u64::from(i) * 7 + u64::from(src.byte()))
            .collect();
        let mut added = added;
        added.sort_unstable();
        added.dedup();
        let delta = DeltaMessage {
            revoked: RevokedDelta::new(10, 11, added, Some(0)).expect("valid"),
            added_secrets: Default::default(),
            rules: RuleSet::new(),
            keys: KeySet::new(),
            keys_removed: Default::default(),
        };
        let payload = encode_message(&Message::Delta(delta)).expect("encodes");
        let mut b = event(Kind::Delta(payload.into()), 11, 10).encode_to_vec();
        mutate(&mut b, &mut src);
        b
    };
    let decoded = decode_event_bytes(&bytes);
    let Ok(incoming) = FeedEvent::decode(bytes.as_slice()) else {
        assert!(decoded.is_err());
        return;
    };
    let verifier = Verifier::new(VerifyConfig::default());
    verifier
        .apply(snapshot_event())
        .expect("the starting snapshot applies");
    let before = verifier.status();
    match verifier.apply(&incoming) {
        Ok(epoch) => assert!(epoch >= 10, "epochs only grow"),
        Err(_) => {
            let after = verifier.status();
            assert_eq!(after.epoch, before.epoch);
            assert_eq!(after.revoked_indices, before.revoked_indices);
            assert_eq!(after.rules, before.rules);
            assert_eq!(after.secrets, before.secrets);
            assert_eq!(after.keys, before.keys);
            assert_eq!(after.heartbeats, before.heartbeats);
        }
    }
});
