//! Every scenario keeps every invariant on a bounded range of seeds. The
//! long sweep is `lapse sim run all --seeds 1..200` (see the README);
//! `LAPSE_SIM_SEEDS=A..B` widens this one.

use std::path::Path;

use lapse_sim::{Scenario, Variant, scenario, swarm};

fn seeds() -> std::ops::Range<u64> {
    std::env::var("LAPSE_SIM_SEEDS")
        .ok()
        .and_then(|text| {
            let (a, b) = text.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(1..3)
}

fn check(scenario: &Scenario, seed: u64) {
    let outcome = lapse_sim::run(scenario, seed, Variant::Correct);
    assert!(
        outcome.passed(),
        "{} seed {seed} failed (replay: lapse sim run {} --seed {seed} --trace):\n{:?}\n{}",
        scenario.name,
        scenario.name,
        outcome.error,
        outcome
            .violations
            .iter()
            .take(10)
            .map(|v| format!("  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(outcome.counts.issued > 0 && outcome.counts.revocations_acked > 0);
}

#[test]
fn every_scenario_file_keeps_its_invariants() {
    let paths = scenario::list(Path::new("scenarios")).unwrap();
    assert!(paths.len() >= 9, "scenarios missing: {paths:?}");
    for path in paths {
        let scenario = Scenario::load(&path).unwrap();
        for seed in seeds() {
            check(&scenario, seed);
        }
    }
}

#[test]
fn swarm_scenarios_keep_their_invariants() {
    for seed in seeds() {
        check(&swarm::generate(seed), seed);
    }
}
