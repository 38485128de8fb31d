//! Fuzz `decode_message`: whatever decodes must re-encode, decode back to the
//! same message, and (the encoding being canonical) re-encode to the same
//! bytes; a decoded delta applied to a fixed snapshot must not panic.
//!
//! Mode byte: even → the rest as raw bytes; odd → bit 1 set: the rest framed
//! as a body with a correct header and CRC, clear: a valid message built from
//! the rest, damaged, and (by a flag) re-checksummed.

#![no_main]

use lapse_filter::{
    Message, RevokedSet, RuleSet, SecretSet, Snapshot, decode_message, encode_message,
};
use lapse_fuzz::{Source, frame, mutate, refresh_frame, valid_message};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let Ok(msg) = decode_message(bytes) else {
        return;
    };
    let again = encode_message(&msg).expect("a decoded message re-encodes");
    assert_eq!(decode_message(&again).expect("re-encoding decodes"), msg);
    assert_eq!(again, bytes, "accepted a non-canonical encoding");
    match &msg {
        Message::Full(s) => {
            for i in s.set.iter() {
                assert!(s.revokes(&lapse_filter::CredentialFacts {
                    status_index: Some(i),
                    ..Default::default()
                }));
            }
        }
        Message::Delta(d) => {
            let mut snap = Snapshot {
                epoch: d.revoked.from_epoch(),
                set: RevokedSet::from_sorted(100, 1000, [100, 150, 1099]).expect("valid"),
                secrets: SecretSet::new(10, 0.01, [3; 32]).expect("valid"),
                rules: RuleSet::new(),
                keys: Default::default(),
            };
            let before = snap.clone();
            if snap.apply(d).is_err() {
                assert_eq!(snap, before, "a failed apply must not mutate");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check(rest);
    } else if mode & 2 != 0 {
        let (kind, body) = rest.split_first().map_or((1, &[][..]), |(&k, b)| (k, b));
        let kind = if k_is_raw(kind) { kind } else { 1 + (kind & 1) };
        check(&frame(kind, body));
    } else {
        let mut src = Source::new(rest);
        let msg = valid_message(&mut src);
        let mut bytes = encode_message(&msg).expect("small message");
        assert_eq!(decode_message(&bytes).expect("valid message decodes"), msg);
        mutate(&mut bytes, &mut src);
        if src.flag() {
            refresh_frame(&mut bytes);
        }
        check(&bytes);
    }
});

/// Kind bytes at or above 0x80 are passed through, so unknown kinds are tried.
fn k_is_raw(kind: u8) -> bool {
    kind >= 0x80
}
