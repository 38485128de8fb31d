//! `RevokedSet` held succinctly, checked against a `BTreeSet<u64>` model:
//! random sets and windows (empty, universe 1, every index set, indices at
//! both ends of the window, very sparse and very dense), random deltas with
//! window moves and refused deltas, the wire form byte for byte against a
//! reference encoder, and the heap held against the information bound.

use std::collections::BTreeSet;

use lapse_filter::{FilterError, RevokedDelta, RevokedSet, information_bound_bits};
use proptest::prelude::*;

/// The wire form written independently of the crate: `varint base, varint
/// universe, varint count, u8 k, rice(gaps)`, MSB-first bits, with `k` the
/// cheapest of `floor(log2(mean gap)) ± 2`.
fn reference_encode(base: u64, universe: u64, model: &BTreeSet<u64>) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::new();
    varint(&mut out, base);
    varint(&mut out, universe);
    varint(&mut out, model.len() as u64);
    let mut gaps = Vec::new();
    let mut prev: Option<u64> = None;
    for &x in model {
        gaps.push(match prev {
            None => x - base,
            Some(p) => x - p - 1,
        });
        prev = Some(x);
    }
    let k = if gaps.is_empty() {
        0u8
    } else {
        let sum: u128 = gaps.iter().map(|&g| u128::from(g)).sum();
        let mean = (sum / gaps.len() as u128).max(1);
        let est = (127 - mean.leading_zeros()).min(63) as u8;
        let cost = |k: u8| {
            gaps.iter()
                .fold(0u64, |a, &g| a.saturating_add((g >> k) + 1 + u64::from(k)))
        };
        (est.saturating_sub(2)..=(est + 2).min(63))
            .min_by_key(|&k| (cost(k), k))
            .unwrap()
    };
    out.push(k);
    let mut bits: Vec<bool> = Vec::new();
    for &g in &gaps {
        bits.extend(std::iter::repeat_n(true, (g >> k) as usize));
        bits.push(false);
        bits.extend((0..k).rev().map(|i| (g >> i) & 1 == 1));
    }
    for chunk in bits.chunks(8) {
        let mut byte = 0u8;
        for (i, &b) in chunk.iter().enumerate() {
            byte |= u8::from(b) << (7 - i);
        }
        out.push(byte);
    }
    out
}

/// Everything observable about `set` matches `(base, universe, model)`.
fn check_against_model(
    set: &RevokedSet,
    base: u64,
    universe: u64,
    model: &BTreeSet<u64>,
    probes: &[u64],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(set.base(), base);
    prop_assert_eq!(set.universe(), universe);
    prop_assert_eq!(set.len(), model.len());
    prop_assert_eq!(set.is_empty(), model.is_empty());
    prop_assert_eq!(
        set.iter().collect::<Vec<_>>(),
        model.iter().copied().collect::<Vec<_>>()
    );
    for &m in model {
        prop_assert!(set.contains(m), "{} missing", m);
    }
    let end = base + universe;
    let edges = [
        0,
        base.wrapping_sub(1),
        base,
        base + 1,
        end.wrapping_sub(1),
        end,
        end.wrapping_add(1),
        u64::MAX,
    ];
    let near = model
        .iter()
        .take(64)
        .flat_map(|&m| [m.wrapping_sub(1), m.wrapping_add(1)]);
    for p in probes.iter().copied().chain(edges).chain(near) {
        prop_assert_eq!(set.contains(p), model.contains(&p), "probe {}", p);
    }
    let wire = set.encode();
    prop_assert_eq!(&wire, &reference_encode(base, universe, model));
    let back = RevokedSet::decode(&wire).unwrap();
    prop_assert_eq!(&back, set);
    prop_assert_eq!(
        back.iter().collect::<Vec<_>>(),
        set.iter().collect::<Vec<_>>()
    );
    prop_assert_eq!(
        &RevokedSet::from_sorted(base, universe, model.iter().copied()).unwrap(),
        set
    );
    Ok(())
}

/// A window and a model inside it, of every shape the set must handle.
fn arb_window_set() -> impl Strategy<Value = (u64, u64, BTreeSet<u64>)> {
    let general = (
        0u64..1 << 40,
        1u64..5000,
        0usize..300,
        any::<(bool, bool)>(),
    )
        .prop_flat_map(|(base, universe, n, ends)| {
            (
                Just(base),
                Just(universe),
                prop::collection::btree_set(base..base + universe, 0..=n.min(universe as usize)),
                Just(ends),
            )
        })
        .prop_map(|(base, universe, mut m, (first, last))| {
            if first {
                m.insert(base);
            }
            if last {
                m.insert(base + universe - 1);
            }
            (base, universe, m)
        });
    let universe_one = (any::<u64>(), any::<bool>()).prop_map(|(base, set)| {
        let base = base.min(u64::MAX - 1);
        (
            base,
            1,
            if set {
                BTreeSet::from([base])
            } else {
                BTreeSet::new()
            },
        )
    });
    let all_set = (0u64..1 << 50, 1u64..700)
        .prop_map(|(base, universe)| (base, universe, (base..base + universe).collect()));
    let dense = (0u64..1000, 64u64..3000, any::<u64>()).prop_map(|(base, universe, seed)| {
        // Every index but a few.
        let m = (base..base + universe)
            .filter(|i| (i ^ seed) % 37 != 0)
            .collect();
        (base, universe, m)
    });
    let sparse = (
        0u64..64,
        prop::collection::btree_set(any::<u64>(), 0..12),
        any::<(bool, bool)>(),
    )
        .prop_map(|(base, picks, (first, last))| {
            let universe = u64::MAX - base;
            let mut m: BTreeSet<u64> = picks.into_iter().map(|p| base + p % universe).collect();
            if first {
                m.insert(base);
            }
            if last {
                m.insert(base + universe - 1);
            }
            (base, universe, m)
        });
    let empty = (any::<u64>(), any::<u64>())
        .prop_map(|(base, universe)| (base, universe.min(u64::MAX - base), BTreeSet::new()));
    prop_oneof![
        4 => general,
        1 => universe_one,
        1 => all_set,
        1 => dense,
        1 => sparse,
        1 => empty,
    ]
}

/// One step: raw additions (folded into the new window), a window move
/// (none, small, or up to two windows), and whether to also try a delta
/// that must be refused.
type Step = (Vec<u64>, Option<u64>, u8, u64);

fn arb_steps(universe: u64) -> impl Strategy<Value = Vec<Step>> {
    let shift = prop_oneof![
        Just(None),
        (0u64..4).prop_map(Some),
        (0u64..64).prop_map(Some),
        (0..universe.saturating_mul(2).max(1)).prop_map(Some),
    ];
    prop::collection::vec(
        (
            prop_oneof![
                prop::collection::vec(any::<u64>(), 0..4),
                prop::collection::vec(any::<u64>(), 0..80),
            ],
            shift,
            0u8..6,
            any::<u64>(),
        ),
        1..24,
    )
}

fn arb_delta_run() -> impl Strategy<Value = ((u64, u64, BTreeSet<u64>), Vec<Step>)> {
    prop_oneof![
        (0u64..1 << 40, 1u64..3000, 0usize..400).prop_flat_map(|(base, universe, n)| {
            (
                Just(base),
                Just(universe),
                prop::collection::btree_set(base..base + universe, 0..=n.min(universe as usize)),
            )
        }),
        (0u64..100, 1u64..4).prop_map(|(base, universe)| (base, universe, BTreeSet::new())),
    ]
    .prop_flat_map(|start| {
        let universe = start.1;
        (Just(start), arb_steps(universe))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sets_match_model(
        (base, universe, model) in arb_window_set(),
        probes in prop::collection::vec(any::<u64>(), 0..40),
    ) {
        let probes: Vec<u64> = probes
            .into_iter()
            .map(|p| if universe == 0 { p } else { base.wrapping_add(p % universe.saturating_mul(2).max(1)) })
            .collect();
        let set = RevokedSet::from_sorted(base, universe, model.iter().copied()).unwrap();
        check_against_model(&set, base, universe, &model, &probes)?;
    }

    #[test]
    fn deltas_and_window_moves_match_model(((start_base, universe, start), steps) in arb_delta_run()) {
        let mut model = start;
        let mut base = start_base;
        let mut set = RevokedSet::from_sorted(base, universe, model.iter().copied()).unwrap();
        for (epoch, (raw, shift, bad, probe)) in steps.into_iter().enumerate() {
            let epoch = epoch as u64;
            let nb = shift.map_or(base, |s| base + s);
            model.retain(|&i| i >= nb);
            let added: BTreeSet<u64> = raw
                .into_iter()
                .map(|x| match x % 8 {
                    0 => nb,
                    1 => nb + universe - 1,
                    _ => nb + x % universe,
                })
                .filter(|i| !model.contains(i))
                .collect();
            let delta = RevokedDelta::new(
                epoch,
                epoch + 1,
                added.iter().copied().collect(),
                shift.map(|_| nb),
            )
            .unwrap();
            // A delta that must be refused leaves the set as it was.
            let refused = match bad {
                0 if base > 0 => Some(RevokedDelta::new(epoch, epoch + 1, vec![], Some(base - 1)).unwrap()),
                1 if !model.is_empty() => {
                    let present = *model.iter().nth((probe % model.len() as u64) as usize).unwrap();
                    let mut add: BTreeSet<u64> = added.clone();
                    add.insert(present);
                    Some(RevokedDelta::new(epoch, epoch + 1, add.into_iter().collect(), shift.map(|_| nb)).unwrap())
                }
                2 if nb + universe < u64::MAX => {
                    let mut add: BTreeSet<u64> = added.clone();
                    add.insert(nb + universe + probe % 5);
                    Some(RevokedDelta::new(epoch, epoch + 1, add.into_iter().collect(), shift.map(|_| nb)).unwrap())
                }
                3 if nb > 0 => {
                    let mut add: BTreeSet<u64> = added.clone();
                    add.insert(nb - 1);
                    Some(RevokedDelta::new(epoch, epoch + 1, add.into_iter().collect(), shift.map(|_| nb)).unwrap())
                }
                _ => None,
            };
            if let Some(refused) = refused {
                let before = set.clone();
                let wire = set.encode();
                prop_assert!(set.apply(&refused).is_err());
                prop_assert_eq!(&set, &before);
                prop_assert_eq!(set.encode(), wire);
            }
            set.apply(&delta).unwrap();
            model.extend(added.iter().copied());
            base = nb;
            let probes = [probe, base.wrapping_add(probe % (universe * 2)), nb + probe % universe];
            check_against_model(&set, base, universe, &model, &probes)?;
        }
    }
}

/// splitmix64: a fixed-seed PRNG for the sized test.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// At `U = 10^7, R = 10^5` the heap held stays within 1.1x the information
/// bound, fresh and while single additions and window moves are applied
/// lazily (pending buffer, dropped indices, drift all at their limits).
#[test]
fn heap_within_bound_under_deltas() {
    let (u, r) = (10_000_000u64, 100_000usize);
    let mut rng = SplitMix64(0x5EC7);
    let mut model = BTreeSet::new();
    while model.len() < r {
        model.insert(rng.next() % u);
    }
    let mut base = 0u64;
    let mut set = RevokedSet::from_sorted(base, u, model.iter().copied()).unwrap();
    let ratio = |set: &RevokedSet| {
        set.heap_bytes() as f64 * 8.0 / information_bound_bits(u, set.len() as u64)
    };
    let fresh = ratio(&set);
    println!("fresh: {} heap bytes, {fresh:.4} x bound", set.heap_bytes());
    assert!(fresh <= 1.1, "fresh ratio {fresh}");
    let mut worst = fresh;
    for epoch in 0..400u64 {
        let nb = base + rng.next() % 2000;
        model = model.split_off(&nb);
        let mut added = Vec::new();
        while added.is_empty() {
            let i = nb + rng.next() % u;
            if !model.contains(&i) {
                added.push(i);
            }
        }
        model.extend(added.iter().copied());
        let delta = RevokedDelta::new(epoch, epoch + 1, added, Some(nb)).unwrap();
        set.apply(&delta).unwrap();
        base = nb;
        assert_eq!(set.len(), model.len());
        worst = worst.max(ratio(&set));
        for _ in 0..20 {
            let p = base + rng.next() % u;
            assert_eq!(set.contains(p), model.contains(&p));
        }
    }
    println!("worst under deltas: {worst:.4} x bound");
    assert!(worst <= 1.1, "worst ratio {worst}");
    assert!(set.iter().eq(model.iter().copied()));
}

#[test]
fn refusals_are_the_same_as_before() {
    let mut s = RevokedSet::from_sorted(0, 50, [3, 10, 11, 20]).unwrap();
    assert_eq!(
        s.apply(&RevokedDelta::new(1, 2, vec![12, 20], Some(11)).unwrap()),
        Err(FilterError::AlreadyPresent(20))
    );
    assert_eq!(
        s.apply(&RevokedDelta::new(1, 2, vec![61], Some(11)).unwrap()),
        Err(FilterError::OutOfWindow {
            index: 61,
            base: 11,
            universe: 50
        })
    );
    s.apply(&RevokedDelta::new(1, 2, vec![12, 60], Some(11)).unwrap())
        .unwrap();
    assert_eq!(s.iter().collect::<Vec<_>>(), vec![11, 12, 20, 60]);
    assert!(!s.contains(10) && !s.contains(3) && s.contains(60));
}
