//! Property and size tests for lapse-filter: model-checked `RevokedSet` and
//! deltas, secret and rule round trips (task rules too), decoder robustness
//! on hostile bytes, and encoded size against the information-theoretic
//! bound.

use std::collections::BTreeSet;

use lapse_filter::{
    DeltaMessage, FilterError, KeyAlgorithm, KeySet, Message, PublicKey, RevokedDelta, RevokedSet,
    RuleSet, SecretSet, Snapshot, decode_message, encode_message, information_bound_bits,
};
use proptest::prelude::*;

/// splitmix64: a fixed-seed PRNG for reproducible size tests.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn hash(&mut self) -> [u8; 32] {
        let mut h = [0u8; 32];
        for c in h.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        h
    }
}

fn random_set(rng: &mut SplitMix64, universe: u64, count: usize) -> BTreeSet<u64> {
    let mut s = BTreeSet::new();
    while s.len() < count {
        s.insert(rng.next() % universe);
    }
    s
}

#[test]
fn size_within_five_percent_of_bound() {
    let (u, r) = (1_000_000u64, 10_000usize);
    let mut rng = SplitMix64(0x1A95E);
    let model = random_set(&mut rng, u, r);
    let set = RevokedSet::from_sorted(0, u, model.iter().copied()).unwrap();
    let bits = set.encode().len() as f64 * 8.0;
    let bound = information_bound_bits(u, r as u64);
    let ratio = bits / bound;
    println!("U={u} R={r}: encoded {bits} bits, bound {bound:.1} bits, ratio {ratio:.4}");
    assert!(ratio <= 1.05, "ratio {ratio}");
    assert!(
        ratio >= 1.0,
        "below the information bound: encoding is lossy?"
    );
}

#[test]
fn delta_size_within_bound() {
    let u = 1_000_000u64;
    let mut rng = SplitMix64(0xDE17A);
    let added: Vec<u64> = random_set(&mut rng, u, 100).into_iter().collect();
    let d = RevokedDelta::new(1, 2, added, None).unwrap();
    let bytes = d.encode().len() as f64;
    let bound = information_bound_bits(u, 100);
    let limit = 1.3 * bound + 64.0 * 8.0;
    println!(
        "delta of 100 in U={u}: encoded {} bits, bound {bound:.1} bits, ratio {:.4}, limit {limit:.1} bits",
        bytes * 8.0,
        bytes * 8.0 / bound
    );
    assert!(bytes * 8.0 <= limit);
}

#[test]
fn secret_set_no_false_negatives_no_false_positives() {
    let mut rng = SplitMix64(7);
    let mut s = SecretSet::new(500, 0.01, rng.hash()).unwrap();
    let members: Vec<[u8; 32]> = (0..500).map(|_| rng.hash()).collect();
    for m in &members {
        assert!(s.insert(*m).unwrap());
    }
    assert!(!s.insert(members[0]).unwrap());
    let back = SecretSet::decode(&s.encode()).unwrap();
    assert_eq!(back, s);
    for set in [&s, &back] {
        for m in &members {
            assert!(set.might_contain(m) && set.contains(m));
        }
        let mut bloom_fp = 0;
        for _ in 0..20_000 {
            let h = rng.hash();
            bloom_fp += usize::from(set.might_contain(&h));
            assert!(!set.contains(&h), "exact contains had a false positive");
        }
        let rate = bloom_fp as f64 / 20_000.0;
        println!("bloom-only false-positive rate {rate:.4} (target 0.01)");
        assert!(rate < 0.02, "bloom fp rate {rate}");
    }
}

fn arb_rules() -> impl Strategy<Value = RuleSet> {
    (
        prop::collection::vec(("[a-c]{0,3}", "[a-zé]{0,4}", any::<u64>()), 0..8),
        prop::collection::vec(("[a-d]{0,3}", any::<u64>()), 0..5),
        prop::collection::vec("[k-m0-9]{0,5}", 0..5),
        prop::collection::vec(("[a-d]{0,3}", "[a-z0-9:/._-]{0,6}", any::<u64>()), 0..5),
    )
        .prop_map(|(subs, tens, keys, tasks)| {
            let mut r = RuleSet::new();
            for (t, s, c) in subs {
                r.revoke_subject(&t, &s, c).unwrap();
            }
            for (t, c) in tens {
                r.revoke_tenant(&t, c).unwrap();
            }
            for k in keys {
                r.revoke_key(&k).unwrap();
            }
            for (t, task, c) in tasks {
                r.revoke_task(&t, &task, c).unwrap();
            }
            r
        })
}

/// A window plus sorted member indices inside it.
fn arb_set() -> impl Strategy<Value = (u64, u64, BTreeSet<u64>)> {
    (0u64..1 << 40, 1u64..5000).prop_flat_map(|(base, universe)| {
        (
            Just(base),
            Just(universe),
            prop::collection::btree_set(base..base + universe, 0..200),
        )
    })
}

proptest! {
    #[test]
    fn revoked_set_matches_model((base, universe, model) in arb_set(), probes in prop::collection::vec(any::<u64>(), 0..50)) {
        let s = RevokedSet::from_sorted(base, universe, model.iter().copied()).unwrap();
        prop_assert_eq!(s.len(), model.len());
        prop_assert_eq!(s.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
        for &m in &model {
            prop_assert!(s.contains(m));
        }
        for p in probes {
            let p = base.wrapping_add(p % (universe * 2));
            prop_assert_eq!(s.contains(p), model.contains(&p));
        }
        let d = RevokedSet::decode(&s.encode()).unwrap();
        prop_assert_eq!(&d, &s);
        // Unsorted input is rejected.
        if model.len() >= 2 {
            let mut v: Vec<u64> = model.iter().copied().collect();
            v.swap(0, 1);
            prop_assert_eq!(RevokedSet::from_sorted(base, universe, v), Err(FilterError::NotSorted));
        }
    }

    #[test]
    fn deltas_match_model(
        universe in 1u64..3000,
        steps in prop::collection::vec((prop::collection::vec(any::<u64>(), 0..40), prop::option::of(0u64..500)), 1..12),
    ) {
        let mut model: BTreeSet<u64> = BTreeSet::new();
        let mut base = 1000u64;
        let mut set = RevokedSet::empty(base, universe).unwrap();
        for (epoch, (raw_added, shift)) in steps.into_iter().enumerate() {
            let new_base = shift.map(|s| base + s);
            let nb = new_base.unwrap_or(base);
            model.retain(|&i| i >= nb);
            let added: BTreeSet<u64> = raw_added
                .into_iter()
                .map(|x| nb + x % universe)
                .filter(|i| !model.contains(i))
                .collect();
            model.extend(added.iter().copied());
            base = nb;
            let delta = RevokedDelta::new(epoch as u64, epoch as u64 + 1, added.into_iter().collect(), new_base).unwrap();
            let wire = RevokedDelta::decode(&delta.encode()).unwrap();
            prop_assert_eq!(&wire, &delta);
            set.apply(&wire).unwrap();
            prop_assert_eq!(set.base(), base);
            prop_assert_eq!(set.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(RevokedSet::decode(&set.encode()).unwrap(), set.clone());
        }
    }

    #[test]
    fn rules_round_trip(r in arb_rules(), t in "[a-d]{0,3}", s in "[a-z]{0,4}", task in prop::option::of("[a-z0-9:/._-]{0,6}"), k in "[k-m0-9]{0,5}", at in any::<u64>()) {
        let back = RuleSet::decode(&r.encode()).unwrap();
        prop_assert_eq!(&back, &r);
        let expect = r.key_ids().contains(&k)
            || r.tenants().get(&t).is_some_and(|&c| at < c)
            || r.subjects().get(&(t.clone(), s.clone())).is_some_and(|&c| at < c)
            || task.as_ref().is_some_and(|task| r.tasks().get(&(t.clone(), task.clone())).is_some_and(|&c| at < c));
        prop_assert_eq!(back.revokes(&t, &s, task.as_deref(), &k, at), expect);
    }

    /// Subject and task lookups (which a fingerprint of each rule's pair
    /// lets skip the ordered maps) answer as the maps say, for every pair
    /// a rule names and for others, after rules are added, merged in, aged
    /// out, decoded and cloned.
    #[test]
    fn rule_lookups_match_the_maps_through_every_change(
        a in arb_rules(),
        b in arb_rules(),
        keep_from in any::<u64>(),
        probes in prop::collection::vec(("[a-d]{0,3}", "[a-zé0-9:/._-]{0,6}", any::<u64>()), 0..16),
    ) {
        let check = |r: &RuleSet| -> Result<(), TestCaseError> {
            let mut pairs: Vec<(String, String, u64)> = probes.clone();
            for ((t, s), &c) in r.subjects().iter().chain(r.tasks()) {
                pairs.push((t.clone(), s.clone(), c.saturating_sub(1)));
                pairs.push((t.clone(), s.clone(), c));
            }
            for (t, name, at) in pairs {
                let by_subject = r.subjects().get(&(t.clone(), name.clone())).is_some_and(|&c| at < c);
                let by_task = r.tasks().get(&(t.clone(), name.clone())).is_some_and(|&c| at < c);
                let by_tenant = r.tenants().get(&t).is_some_and(|&c| at < c);
                // As a subject, with no task.
                prop_assert_eq!(r.revokes(&t, &name, None, "none", at), by_tenant || by_subject);
                // As a task, of a subject no rule names.
                prop_assert_eq!(r.revokes(&t, "\u{0}", Some(&name), "none", at), by_tenant || by_task);
            }
            Ok(())
        };
        let mut r = a.clone();
        check(&r)?;
        r.merge(&b).unwrap();
        check(&r)?;
        check(&r.clone())?;
        check(&RuleSet::decode(&r.encode()).unwrap())?;
        r.retain_cutoffs(|c| c >= keep_from);
        check(&r)?;
        r.revoke_subject("zz", "late", 5).unwrap();
        r.revoke_task("zz", "late-task", 5).unwrap();
        check(&r)?;
        prop_assert!(r.revokes("zz", "late", None, "none", 4));
        prop_assert!(r.revokes("zz", "x", Some("late-task"), "none", 4));
    }

    /// A task rule revokes exactly its tenant's credentials of its task
    /// issued before its cutoff; merging keeps the later cutoff, in either
    /// order.
    #[test]
    fn task_rules_match_model(
        rules in prop::collection::vec(("[a-b]{1,2}", "[a-c]{1,2}", 0u64..100), 0..10),
        other in prop::collection::vec(("[a-b]{1,2}", "[a-c]{1,2}", 0u64..100), 0..10),
        probe in ("[a-b]{1,2}", "[a-c]{1,2}", 0u64..100),
    ) {
        let build = |rules: &[(String, String, u64)]| {
            let mut r = RuleSet::new();
            for (t, task, c) in rules {
                r.revoke_task(t, task, *c).unwrap();
            }
            r
        };
        let (mut a, b) = (build(&rules), build(&other));
        let mut b_then_a = b.clone();
        a.merge(&b).unwrap();
        b_then_a.merge(&build(&rules)).unwrap();
        prop_assert_eq!(&a, &b_then_a);
        let cutoff = rules.iter().chain(&other)
            .filter(|(t, task, _)| *t == probe.0 && *task == probe.1)
            .map(|(_, _, c)| *c)
            .max();
        let (t, task, at) = probe;
        prop_assert_eq!(
            a.revoked_by(&t, "s", Some(&task), "k", at),
            cutoff.filter(|&c| at < c).map(|_| lapse_filter::RevokedBy::Task)
        );
        prop_assert_eq!(a.revoked_by(&t, "s", None, "k", 0), None);
        prop_assert_eq!(RuleSet::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn secret_set_round_trip(seed in any::<[u8; 32]>(), hashes in prop::collection::btree_set(any::<[u8; 32]>(), 0..50), probe in any::<[u8; 32]>()) {
        let mut s = SecretSet::new(hashes.len() as u64, 0.001, seed).unwrap();
        for h in &hashes {
            s.insert(*h).unwrap();
        }
        let back = SecretSet::decode(&s.encode()).unwrap();
        prop_assert_eq!(&back, &s);
        for h in &hashes {
            prop_assert!(back.contains(h));
        }
        prop_assert_eq!(back.contains(&probe), hashes.contains(&probe));
    }

    #[test]
    fn decode_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_message(&bytes);
        let _ = RevokedSet::decode(&bytes);
        let _ = RevokedDelta::decode(&bytes);
        let _ = SecretSet::decode(&bytes);
        let _ = RuleSet::decode(&bytes);
    }

    #[test]
    fn decode_mutated_messages_never_panics(
        (base, universe, model) in arb_set(),
        rules in arb_rules(),
        full in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        fix_crc in any::<bool>(),
    ) {
        let msg = if full {
            let mut secrets = SecretSet::new(4, 0.01, [5; 32]).unwrap();
            secrets.insert([6; 32]).unwrap();
            Message::Full(Box::new(Snapshot {
                epoch: 3,
                set: RevokedSet::from_sorted(base, universe, model.iter().copied()).unwrap(),
                secrets,
                rules,
                keys: sample_keys(),
            }))
        } else {
            Message::Delta(DeltaMessage {
                revoked: RevokedDelta::new(3, 4, model.iter().copied().collect(), Some(base)).unwrap(),
                added_secrets: [[1; 32]].into_iter().collect(),
                rules,
                keys: sample_keys(),
                keys_removed: ["gone".to_string()].into_iter().collect(),
            })
        };
        let mut b = encode_message(&msg).unwrap();
        prop_assert_eq!(decode_message(&b).unwrap(), msg);
        for (i, v) in &edits {
            let i = i.index(b.len());
            b[i] = *v;
        }
        if truncate {
            b.truncate(cut.index(b.len() + 1));
        }
        if fix_crc && b.len() >= 15 {
            // Recompute the checksum (and body length) so the body parser sees the damage.
            let body_len = (b.len() - 15) as u32;
            b[7..11].copy_from_slice(&body_len.to_le_bytes());
            let at = b.len() - 4;
            let crc = crc32fast::hash(&b[..at]);
            b[at..].copy_from_slice(&crc.to_le_bytes());
        }
        if let Ok(m) = decode_message(&b) {
            // Whatever decodes must re-encode to the same bytes (canonical form).
            prop_assert_eq!(encode_message(&m).unwrap(), b);
        }
    }
}

/// Every single-byte change to valid messages, with the checksum repaired so
/// the body parser sees it: no panic, and anything accepted is canonical.
#[test]
fn every_single_byte_mutation_is_handled() {
    let mut rng = SplitMix64(99);
    let mut secrets = SecretSet::new(4, 0.01, rng.hash()).unwrap();
    secrets.insert(rng.hash()).unwrap();
    secrets.insert(rng.hash()).unwrap();
    let mut rules = RuleSet::new();
    rules.revoke_subject("acme", "svc", 10).unwrap();
    rules.revoke_tenant("globex", 20).unwrap();
    rules.revoke_key("k1").unwrap();
    rules.revoke_task("acme", "task:7/a", 30).unwrap();
    let model = random_set(&mut rng, 500, 40);
    let msgs = [
        Message::Full(Box::new(Snapshot {
            epoch: 9,
            set: RevokedSet::from_sorted(0, 500, model.iter().copied()).unwrap(),
            secrets,
            rules: rules.clone(),
            keys: sample_keys(),
        })),
        Message::Delta(DeltaMessage {
            revoked: RevokedDelta::new(9, 10, model.iter().copied().collect(), Some(3)).unwrap(),
            added_secrets: [rng.hash()].into_iter().collect(),
            rules,
            keys: KeySet::new(),
            keys_removed: ["k1".to_string()].into_iter().collect(),
        }),
    ];
    let (mut accepted, mut rejected) = (0usize, 0usize);
    for msg in &msgs {
        let good = encode_message(msg).unwrap();
        for i in 11..good.len() - 4 {
            for v in [0u8, 1, 0x7f, 0x80, 0xff, good[i] ^ 0x10, good[i] ^ 0x01] {
                if v == good[i] {
                    continue;
                }
                let mut b = good.clone();
                b[i] = v;
                let at = b.len() - 4;
                let crc = crc32fast::hash(&b[..at]);
                b[at..].copy_from_slice(&crc.to_le_bytes());
                match decode_message(&b) {
                    Ok(m) => {
                        accepted += 1;
                        assert_eq!(
                            encode_message(&m).unwrap(),
                            b,
                            "non-canonical accept at {i}"
                        );
                    }
                    Err(_) => rejected += 1,
                }
            }
        }
    }
    println!("single-byte mutations: {accepted} accepted (canonical), {rejected} rejected");
    assert!(rejected > 0 && accepted > 0);
}

fn sample_keys() -> KeySet {
    let mut keys = KeySet::new();
    keys.insert(
        "node-1-0",
        PublicKey {
            algorithm: KeyAlgorithm::Ed25519,
            bytes: vec![7; 32],
            not_before_ms: 1_000,
            not_after_ms: 9_000,
        },
    )
    .unwrap();
    keys
}

/// Task rules from a hostile feed: a count or a length far beyond the caps
/// errors without panicking or allocating for it, inside a whole message
/// with a good checksum too.
#[test]
fn hostile_task_rules_are_refused() {
    let mut rules = RuleSet::new();
    rules.revoke_task("acme", "t", 5).unwrap();
    let good = rules.encode();
    assert_eq!(good, [0, 0, 0, 1, 4, b'a', b'c', b'm', b'e', 1, b't', 5]);
    let hostile: [&[u8]; 5] = [
        // 2^63 task rules.
        &[
            0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
        // 1000 task rules in 3 bytes.
        &[0, 0, 0, 0xe8, 0x07, 1, 2, 3],
        // A task id of 2^62 bytes.
        &[
            0, 0, 0, 1, 1, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0,
        ],
        // A task id of 129 bytes (one over the cap), all present.
        &[&[0u8, 0, 0, 1, 1, b'a', 0x81, 0x01][..], &[b't'; 129], &[5]].concat(),
        // A tenant of 2^40 bytes.
        &[0, 0, 0, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 1, b't', 5],
    ];
    for bytes in hostile {
        assert!(RuleSet::decode(bytes).is_err(), "{bytes:?}");
        let msg = Message::Delta(DeltaMessage {
            revoked: RevokedDelta::new(1, 2, vec![], None).unwrap(),
            added_secrets: BTreeSet::new(),
            rules: RuleSet::new(),
            keys: KeySet::new(),
            keys_removed: BTreeSet::new(),
        });
        let mut framed = encode_message(&msg).unwrap();
        // Replace the empty rule set (four zero counts) with the hostile
        // one: after the header, the revoked delta and the secrets' count.
        let empty_rules = RuleSet::new().encode();
        let delta_head = RevokedDelta::new(1, 2, vec![], None)
            .unwrap()
            .encode()
            .len()
            + 1;
        let at = 11 + delta_head;
        assert_eq!(&framed[at..at + empty_rules.len()], &empty_rules[..]);
        framed.splice(at..at + empty_rules.len(), bytes.iter().copied());
        let body_len = (framed.len() - 15) as u32;
        framed[7..11].copy_from_slice(&body_len.to_le_bytes());
        let crc_at = framed.len() - 4;
        let crc = crc32fast::hash(&framed[..crc_at]);
        framed[crc_at..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_message(&framed).is_err(), "{bytes:?}");
    }
}
