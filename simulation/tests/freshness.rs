//! Freshness across regions and clock steps, on the shipped scenarios:
//! verifiers behind a quorum that spans regions never go stale without a
//! fault, and a leader whose wall clock steps by minutes neither makes
//! verifiers stale nor changes which credentials they accept.

use std::path::Path;

use lapse_sim::{RunOutcome, Scenario, Variant};

fn run(name: &str, seed: u64) -> RunOutcome {
    let scenario = Scenario::load(&Path::new("scenarios").join(format!("{name}.toml"))).unwrap();
    let outcome = lapse_sim::run(&scenario, seed, Variant::Correct);
    assert!(
        outcome.passed(),
        "{name} seed {seed} (replay: lapse sim run {name} --seed {seed} --trace):\n{:?}\n{}",
        outcome.error,
        outcome
            .violations
            .iter()
            .take(10)
            .map(|v| format!("  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    outcome
}

/// Trace lines in which a verifier went from fresh to stale.
fn went_stale(outcome: &RunOutcome) -> Vec<&String> {
    outcome
        .trace
        .iter()
        .filter(|line| line.contains("fresh -> stale"))
        .collect()
}

#[test]
fn one_voter_per_region_70_ms_apart_keeps_every_verifier_fresh_without_faults() {
    for seed in 1..3 {
        let outcome = run("wan-voter-per-region", seed);
        // Once fresh, no verifier ever went stale, and nothing was refused
        // as stale after the settle time (`freshness_liveness`).
        assert!(
            went_stale(&outcome).is_empty(),
            "{:#?}",
            went_stale(&outcome)
        );
        assert!(outcome.counts.verifications > 1_000, "{:?}", outcome.counts);
        assert_eq!(outcome.counts.rejected_other, 0, "{:?}", outcome.counts);
        // Each verifier's first heartbeat is in the trace.
        let fresh = outcome
            .trace
            .iter()
            .filter(|l| l.contains(" fresh (heartbeat from broker"))
            .count();
        assert_eq!(fresh, 9, "one first heartbeat per verifier");
    }
}

#[test]
fn a_leader_clock_stepping_minutes_either_way_keeps_verifiers_fresh_and_expiry_on_time() {
    for seed in 1..3 {
        let outcome = run("leader-clock-step", seed);
        let steps: Vec<&String> = outcome
            .trace
            .iter()
            .filter(|l| l.contains("steps by"))
            .collect();
        assert_eq!(steps.len(), 4, "{steps:#?}");
        assert!(steps.iter().any(|l| l.contains("by 120000 ms")));
        assert!(steps.iter().any(|l| l.contains("by -240000 ms")));
        // Verifiers stayed fresh through every step (the only stale
        // refusals are before each verifier's first heartbeat, and
        // `freshness_liveness` gives a clock step no settle time).
        assert!(
            went_stale(&outcome).is_empty(),
            "{:#?}",
            went_stale(&outcome)
        );
        // Credentials live 10 s: many expired during the run, and every
        // verification of one after its lifetime was refused (an
        // acceptance would be an `expired_acceptance` violation); no valid
        // credential was refused (`valid_acceptance`) and nothing else was.
        let counts = &outcome.counts;
        assert!(counts.rejected_expired > 100, "{counts:?}");
        assert!(counts.accepted > 100, "{counts:?}");
        assert_eq!(counts.rejected_other, 0, "{counts:?}");
    }
}
