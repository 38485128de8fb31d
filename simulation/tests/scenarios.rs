//! Every scenario keeps every invariant on a bounded range of seeds, one
//! test per scenario file. The
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
    if scenario.name == "relay-tier" {
        relays_served_their_regions(&outcome, seed);
    }
}

/// In `relay-tier`, each relay served every verifier of its region (six)
/// before its fault: the scenario tests the relays, not only the brokers'
/// feed the verifiers fail over to.
fn relays_served_their_regions(outcome: &lapse_sim::RunOutcome, seed: u64) {
    for (relay, fault_at_s) in [("r-ap", 8.0), ("r-us", 18.0)] {
        let served = outcome.trace.iter().any(|line| {
            let mut words = line.split_whitespace();
            let at_s: f64 = words
                .next()
                .and_then(|w| w.parse().ok())
                .unwrap_or(f64::MAX);
            at_s < fault_at_s && words.next() == Some(relay) && line.ends_with("serving 6 leaves")
        });
        assert!(
            served,
            "seed {seed}: {relay} served no leaves before its fault"
        );
    }
}

/// One test per scenario file, so that the test threads share the files
/// instead of one thread running them all.
macro_rules! scenario_files {
    ($($test:ident: $file:literal,)*) => {
        const FILES: &[&str] = &[$($file),*];
        $(
            #[test]
            fn $test() {
                let scenario = Scenario::load(&Path::new("scenarios").join($file)).unwrap();
                for seed in seeds() {
                    check(&scenario, seed);
                }
            }
        )*
    };
}

scenario_files! {
    clock_drift: "clock-drift.toml",
    clock_skew: "clock-skew.toml",
    hostile_relay: "hostile-relay.toml",
    leader_clock_step: "leader-clock-step.toml",
    leader_crash_mid_append: "leader-crash-mid-append.toml",
    leader_crash: "leader-crash.toml",
    leader_partition: "leader-partition.toml",
    loss_and_latency: "loss-and-latency.toml",
    minority_partition: "minority-partition.toml",
    region_cut_off: "region-cut-off.toml",
    relay_tier: "relay-tier.toml",
    slow_verifier: "slow-verifier.toml",
    wan_five_voters_clock_step: "wan-five-voters-clock-step.toml",
    wan_five_voters_leader_crash: "wan-five-voters-leader-crash.toml",
    wan_five_voters_region_cut: "wan-five-voters-region-cut.toml",
    wan_five_voters: "wan-five-voters.toml",
    wan_voter_per_region_clock_step: "wan-voter-per-region-clock-step.toml",
    wan_voter_per_region_leader_crash: "wan-voter-per-region-leader-crash.toml",
    wan_voter_per_region_region_cut: "wan-voter-per-region-region-cut.toml",
    wan_voter_per_region: "wan-voter-per-region.toml",
    whole_cluster_restart: "whole-cluster-restart.toml",
}

#[test]
fn every_scenario_file_has_its_test() {
    let paths = scenario::list(Path::new("scenarios")).unwrap();
    assert!(paths.len() >= 9, "scenarios missing: {paths:?}");
    let on_disk: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut listed: Vec<String> = FILES.iter().map(|f| f.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "add each scenario file to scenario_files!");
}

#[test]
fn swarm_scenarios_keep_their_invariants() {
    for seed in seeds() {
        check(&swarm::generate(seed), seed);
    }
}
