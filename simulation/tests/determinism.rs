//! One seed replays one run exactly.

use std::path::Path;

use lapse_sim::{Scenario, Variant};

#[test]
fn the_same_seed_twice_gives_the_same_trace() {
    let scenario = Scenario::load(Path::new("scenarios/leader-partition.toml")).unwrap();
    let first = lapse_sim::run(&scenario, 7, Variant::Correct);
    let second = lapse_sim::run(&scenario, 7, Variant::Correct);
    assert!(first.error.is_none(), "{:?}", first.error);
    // The trace holds every issuance, revocation outcome, fault and
    // verifier epoch change with its simulated time.
    assert!(
        first.trace.len() > 300,
        "a thin trace: {}",
        first.trace.len()
    );
    if let Some((n, (a, b))) = first
        .trace
        .iter()
        .zip(&second.trace)
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        panic!("the traces differ at line {n}:\n  {a}\n  {b}");
    }
    assert_eq!(first.trace.len(), second.trace.len());
    assert_eq!(first.propagation_ms, second.propagation_ms);

    let other = lapse_sim::run(&scenario, 8, Variant::Correct);
    assert_ne!(
        first.trace, other.trace,
        "another seed should give another run"
    );
}
