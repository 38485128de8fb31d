//! Decoder robustness on the stable toolchain: the same paths the cargo-fuzz
//! targets in `fuzz/` exercise, driven by proptest so that CI runs them.
//!
//! Every decoder (`decode_message`, `RevokedSet`, `RevokedDelta`, `RuleSet`,
//! `SecretSet`, `KeySet`) gets a few thousand random byte strings and a few
//! thousand damaged valid encodings (overwrites, bit flips, insertions,
//! removals, truncation; messages with their length and CRC repaired so the
//! body parser sees the damage). None may panic; anything accepted must
//! re-encode to the same bytes, and a decoded delta applied to small fixed
//! sets must either succeed consistently or leave the set untouched.

use std::collections::BTreeSet;

use lapse_filter::{
    DeltaMessage, KeyAlgorithm, KeySet, MAGIC, Message, PublicKey, RevokedDelta, RevokedSet,
    RuleSet, SecretSet, Snapshot, decode_message, encode_message,
};
use proptest::prelude::*;
use proptest::sample::Index;

const HEADER_LEN: usize = 11;
const TRAILER_LEN: usize = 4;

/// One edit: operation (0 overwrite, 1 flip a bit, 2 insert, 3 remove,
/// 4 truncate), position, value.
type Edit = (u8, Index, u8);

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec((0u8..5, any::<Index>(), any::<u8>()), 1..8)
}

fn mutate(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for (op, at, v) in edits {
        let at = at.index(bytes.len() + 1);
        match op {
            0 if at < bytes.len() => bytes[at] = *v,
            1 if at < bytes.len() => bytes[at] ^= 1 << (v % 8),
            2 => bytes.insert(at, *v),
            3 if at < bytes.len() => {
                bytes.remove(at);
            }
            4 => bytes.truncate(at),
            _ => {}
        }
    }
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&1u16.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Rewrite body length and CRC so the body parser decides.
fn refresh_frame(b: &mut [u8]) {
    if b.len() < HEADER_LEN + TRAILER_LEN {
        return;
    }
    let body_len = (b.len() - HEADER_LEN - TRAILER_LEN) as u32;
    b[7..11].copy_from_slice(&body_len.to_le_bytes());
    let at = b.len() - TRAILER_LEN;
    let crc = crc32fast::hash(&b[..at]);
    b[at..].copy_from_slice(&crc.to_le_bytes());
}

fn fixed_sets() -> Vec<RevokedSet> {
    vec![
        RevokedSet::from_sorted(100, 1000, [100, 150, 1099]).unwrap(),
        RevokedSet::from_sorted(0, u64::MAX, [0, 1, 1 << 40, u64::MAX - 1]).unwrap(),
        RevokedSet::from_sorted(u64::MAX - 10, 10, [u64::MAX - 10, u64::MAX - 1]).unwrap(),
        RevokedSet::empty(0, 0).unwrap(),
    ]
}

fn check_apply(set: &RevokedSet, delta: &RevokedDelta) {
    let mut s = set.clone();
    match s.apply(delta) {
        Ok(()) => {
            let base = delta.removed_below().unwrap_or(set.base());
            assert_eq!(s.base(), base);
            for &i in delta.added() {
                assert!(s.contains(i));
            }
            let kept = set.iter().filter(|&i| i >= base).count();
            assert_eq!(s.len(), kept + delta.added().len());
            assert!(s.iter().all(|i| i >= base && i - base < s.universe()));
        }
        Err(_) => assert_eq!(&s, set, "a failed apply must not mutate"),
    }
}

/// Feed `b` to every decoder; whatever is accepted must be canonical.
fn every_decoder(b: &[u8]) {
    if let Ok(m) = decode_message(b) {
        assert_eq!(encode_message(&m).unwrap(), b, "non-canonical message");
    }
    if let Ok(s) = RevokedSet::decode(b) {
        assert_eq!(s.encode(), b, "non-canonical set");
        assert!(s.iter().all(|i| s.contains(i)));
    }
    if let Ok(d) = RevokedDelta::decode(b) {
        assert_eq!(d.encode(), b, "non-canonical delta");
        for set in fixed_sets() {
            check_apply(&set, &d);
        }
    }
    if let Ok(r) = RuleSet::decode(b) {
        assert_eq!(r.encode(), b, "non-canonical rules");
    }
    if let Ok(s) = SecretSet::decode(b) {
        assert_eq!(s.encode(), b, "non-canonical secrets");
        assert!(s.iter().all(|h| s.contains(h)));
    }
    if let Ok(k) = KeySet::decode(b) {
        assert_eq!(k.encode(), b, "non-canonical keys");
    }
}

/// A window that never overflows and up to 64 indices in it.
fn arb_set() -> impl Strategy<Value = RevokedSet> {
    let window = prop_oneof![
        (0u64..1 << 20, 0u64..4096),
        (any::<u64>(), any::<u64>()),
        (0u64..64, Just(u64::MAX)),
    ]
    .prop_map(|(base, universe)| (base, universe.min(u64::MAX - base)));
    (
        window,
        prop::collection::vec(any::<Index>(), 0..64),
        prop::collection::vec(any::<u64>(), 0..8),
    )
        .prop_map(|((base, universe), picks, far)| {
            let mut v: BTreeSet<u64> = BTreeSet::new();
            if universe > 0 {
                // Dense picks near the base, and a few anywhere in the window.
                let near = universe.min(1 << 16) as usize;
                v.extend(picks.iter().map(|p| base + p.index(near) as u64));
                v.extend(far.iter().map(|x| base + x % universe));
            }
            RevokedSet::from_sorted(base, universe, v).unwrap()
        })
}

/// Added indices stop at `u64::MAX - 1` (see `a_delta_cannot_add_u64_max`).
fn arb_delta() -> impl Strategy<Value = RevokedDelta> {
    (
        0u64..1000,
        1u64..5,
        prop::collection::btree_set(
            prop_oneof![0u64..2000, 0..u64::MAX, (u64::MAX - 16)..u64::MAX],
            0..48,
        ),
        prop::option::of(prop_oneof![0u64..2000, any::<u64>()]),
    )
        .prop_map(|(from, step, added, removed_below)| {
            RevokedDelta::new(
                from,
                from + step,
                added.into_iter().collect(),
                removed_below,
            )
            .unwrap()
        })
}

fn arb_rules() -> impl Strategy<Value = RuleSet> {
    prop::collection::vec((0u8..4, "[a-c]{0,4}", "[a-c]{0,4}", any::<u64>()), 0..8).prop_map(
        |rules| {
            let mut r = RuleSet::new();
            for (kind, t, s, c) in rules {
                match kind {
                    0 => r.revoke_subject(&t, &s, c).unwrap(),
                    1 => r.revoke_tenant(&t, c).unwrap(),
                    2 => r.revoke_task(&t, &s, c).unwrap(),
                    _ => r.revoke_key(&s).unwrap(),
                }
            }
            r
        },
    )
}

fn arb_secrets() -> impl Strategy<Value = SecretSet> {
    (
        any::<[u8; 32]>(),
        0u64..3000,
        prop::sample::select(vec![0.5, 0.01, 1e-3, 1e-6]),
        prop::collection::btree_set(any::<[u8; 32]>(), 0..6),
    )
        .prop_map(|(seed, planned, fp, hashes)| {
            let mut s = SecretSet::new(planned, fp, seed).unwrap();
            for h in hashes {
                s.insert(h).unwrap();
            }
            s
        })
}

fn arb_keys() -> impl Strategy<Value = KeySet> {
    prop::collection::vec(
        ("[a-c]{0,4}", any::<u8>(), any::<u64>(), any::<u64>()),
        0..4,
    )
    .prop_map(|keys| {
        let mut k = KeySet::new();
        for (kid, b, x, y) in keys {
            let key = PublicKey {
                algorithm: KeyAlgorithm::Ed25519,
                bytes: vec![b; 32],
                not_before_ms: x.min(y),
                not_after_ms: x.max(y),
            };
            k.insert(&kid, key).unwrap();
        }
        k
    })
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u64>(),
            arb_set(),
            arb_secrets(),
            arb_rules(),
            arb_keys()
        )
            .prop_map(|(epoch, set, secrets, rules, keys)| {
                Message::Full(Box::new(Snapshot {
                    epoch,
                    set,
                    secrets,
                    rules,
                    keys,
                }))
            }),
        (
            arb_delta(),
            prop::collection::btree_set(any::<[u8; 32]>(), 0..4),
            arb_rules(),
            arb_keys(),
            prop::collection::btree_set("[a-c]{0,4}", 0..3),
        )
            .prop_map(|(revoked, added_secrets, rules, keys, keys_removed)| {
                Message::Delta(DeltaMessage {
                    revoked,
                    added_secrets,
                    rules,
                    keys,
                    keys_removed,
                })
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        every_decoder(&bytes);
    }

    #[test]
    fn random_bodies_behind_a_valid_frame(
        kind in prop_oneof![Just(1u8), Just(2u8), any::<u8>()],
        body in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        every_decoder(&frame(kind, &body));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_sets(set in arb_set(), edits in edits()) {
        let mut b = set.encode();
        prop_assert_eq!(RevokedSet::decode(&b).unwrap(), set);
        mutate(&mut b, &edits);
        every_decoder(&b);
    }

    #[test]
    fn mutated_deltas(delta in arb_delta(), edits in edits()) {
        let mut b = delta.encode();
        prop_assert_eq!(RevokedDelta::decode(&b).unwrap(), delta);
        mutate(&mut b, &edits);
        every_decoder(&b);
    }

    #[test]
    fn mutated_rules_secrets_keys(
        rules in arb_rules(),
        secrets in arb_secrets(),
        keys in arb_keys(),
        which in 0u8..3,
        edits in edits(),
    ) {
        let mut b = match which {
            0 => rules.encode(),
            1 => secrets.encode(),
            _ => keys.encode(),
        };
        mutate(&mut b, &edits);
        every_decoder(&b);
    }

    #[test]
    fn mutated_messages(msg in arb_message(), edits in edits(), repair in any::<bool>()) {
        let mut b = encode_message(&msg).unwrap();
        prop_assert_eq!(decode_message(&b).unwrap(), msg);
        mutate(&mut b, &edits);
        if repair {
            refresh_frame(&mut b);
        }
        every_decoder(&b);
    }
}

/// No window reaches `u64::MAX`, so no delta may add it: `new` refuses it
/// (encoding such a delta used to overflow) and `decode` refuses the bytes
/// the old encoder wrote for it (kept in `fuzz/regressions/`).
#[test]
fn a_delta_cannot_add_u64_max() {
    assert!(RevokedDelta::new(0, 1, vec![u64::MAX], None).is_err());
    assert!(RevokedDelta::new(0, 1, vec![5, u64::MAX], None).is_err());
    let old = [
        0x00, 0x01, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00,
    ];
    assert!(RevokedDelta::decode(&old).is_err());
    let d = RevokedDelta::new(0, 1, vec![5, u64::MAX - 1], None).unwrap();
    assert_eq!(RevokedDelta::decode(&d.encode()).unwrap(), d);
}
