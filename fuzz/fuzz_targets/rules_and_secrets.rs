//! Fuzz `RuleSet::decode`, `SecretSet::decode` (and `KeySet::decode`): what
//! decodes re-encodes to the same bytes and decodes back to an equal value;
//! every decoded secret hash is found by both the Bloom filter and the exact
//! check.
//!
//! Mode byte: bit 0 clear → the rest as raw bytes for every decoder; set →
//! a valid rule set, secret set or key set (by the byte's value) built from
//! the rest, encoded, then damaged.

#![no_main]

use lapse_filter::{KeySet, RuleSet, SecretSet};
use lapse_fuzz::{Source, mutate, valid_keys, valid_rules, valid_secrets};
use libfuzzer_sys::fuzz_target;

fn check_rules(bytes: &[u8]) {
    if let Ok(r) = RuleSet::decode(bytes) {
        let again = r.encode();
        assert_eq!(RuleSet::decode(&again).expect("re-encoding decodes"), r);
        assert_eq!(again, bytes, "accepted a non-canonical rule set");
        for ((t, s), &c) in r.subjects() {
            assert!(c == 0 || r.revokes(t, s, None, "\u{0}", c - 1));
        }
        for ((t, task), &c) in r.tasks() {
            assert!(c == 0 || r.revokes(t, "", Some(task), "\u{0}", c - 1));
        }
    }
}

fn check_secrets(bytes: &[u8]) {
    if let Ok(s) = SecretSet::decode(bytes) {
        let again = s.encode();
        assert_eq!(SecretSet::decode(&again).expect("re-encoding decodes"), s);
        assert_eq!(again, bytes, "accepted a non-canonical secret set");
        for h in s.iter() {
            assert!(s.might_contain(h) && s.contains(h));
        }
    }
}

fn check_keys(bytes: &[u8]) {
    if let Ok(k) = KeySet::decode(bytes) {
        let again = k.encode();
        assert_eq!(KeySet::decode(&again).expect("re-encoding decodes"), k);
        assert_eq!(again, bytes, "accepted a non-canonical key set");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut src = Source::new(rest);
        let mut b = match (mode >> 1) % 3 {
            0 => valid_rules(&mut src).encode(),
            1 => valid_secrets(&mut src).encode(),
            _ => valid_keys(&mut src).encode(),
        };
        mutate(&mut b, &mut src);
        b
    };
    check_rules(&bytes);
    check_secrets(&bytes);
    check_keys(&bytes);
});
