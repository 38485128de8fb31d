//! The invariants catch deliberately broken builds.

use std::path::Path;

use lapse_sim::{Scenario, Variant};

fn violated(outcome: &lapse_sim::RunOutcome) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = outcome.violations.iter().map(|v| v.invariant).collect();
    names.dedup();
    names
}

#[test]
fn a_verifier_that_ignores_staleness_accepts_revoked_credentials_and_is_caught() {
    let scenario = Scenario::load(Path::new("scenarios/region-cut-off.toml")).unwrap();
    let correct = lapse_sim::run(&scenario, 3, Variant::Correct);
    assert!(correct.passed(), "{:#?}", correct.violations);
    let broken = lapse_sim::run(&scenario, 3, Variant::VerifierIgnoresStaleness);
    assert!(
        violated(&broken).contains(&"revoked_acceptance"),
        "expected revoked_acceptance, got {:?}",
        broken.violations
    );
}

#[test]
fn a_log_store_that_acknowledges_before_flushing_loses_revocations_and_is_caught() {
    let scenario = Scenario::load(Path::new("scenarios/whole-cluster-restart.toml")).unwrap();
    let broken = lapse_sim::run(&scenario, 3, Variant::AckBeforeFlush);
    assert!(
        violated(&broken).contains(&"acked_revocations"),
        "expected acked_revocations, got {:?}",
        broken.violations
    );
}

#[test]
fn a_leader_restored_without_a_vote_diverges_from_its_followers_and_is_caught() {
    let scenario = Scenario::load(Path::new("scenarios/leader-crash-mid-append.toml")).unwrap();
    let broken = lapse_sim::run(&scenario, 1, Variant::LeaderRestoreWithoutVote);
    assert!(
        violated(&broken).contains(&"replicas_agree"),
        "expected replicas_agree, got {:?}",
        broken.violations
    );
    // The brokers' own background comparison of checkpoint digests notices
    // it too, and says so.
    assert!(
        broken
            .trace
            .iter()
            .any(|line| line.contains("detects divergence from")),
        "no broker reported the divergence itself"
    );
}

#[test]
fn reads_confirmed_by_raft_heartbeats_alone_leave_wan_verifiers_stale_and_are_caught() {
    // One voter per region, 70 ms apart: every Raft heartbeat times out
    // (its deadline is the 100 ms heartbeat interval), so an idle leader can
    // only confirm a read through a replicated entry.
    let scenario = Scenario::load(Path::new("scenarios/wan-voter-per-region.toml")).unwrap();
    let correct = lapse_sim::run(&scenario, 1, Variant::Correct);
    assert!(correct.passed(), "{:#?}", correct.violations);
    assert_eq!(correct.counts.rejected_stale, 0, "{:?}", correct.counts);
    let broken = lapse_sim::run(&scenario, 1, Variant::HeartbeatOnlyReads);
    assert!(
        violated(&broken).contains(&"freshness_liveness"),
        "expected freshness_liveness, got {:?}",
        broken.violations
    );
}

#[test]
fn cluster_time_read_from_a_stepping_wall_clock_refuses_valid_credentials_and_is_caught() {
    // The leader's clock jumps two minutes forward: with its steps not
    // taken out, cluster time jumps with it and credentials with 10 s
    // left look expired to every verifier.
    let scenario = Scenario::load(Path::new("scenarios/leader-clock-step.toml")).unwrap();
    let broken = lapse_sim::run(&scenario, 1, Variant::WallClockTime);
    assert!(
        violated(&broken).contains(&"valid_acceptance"),
        "expected valid_acceptance, got {:?}",
        broken.violations
    );
}

#[test]
fn a_verifier_that_skips_heartbeat_signatures_believes_a_hostile_relay_and_is_caught() {
    // The ap region's verifiers follow a relay that strips revocations
    // from the feed. Checking the brokers' signed digests, they notice and
    // leave it; skipping the check, they stay, fresh, and accept revoked
    // credentials.
    let scenario = Scenario::load(Path::new("scenarios/hostile-relay.toml")).unwrap();
    let correct = lapse_sim::run(&scenario, 1, Variant::Correct);
    assert!(correct.passed(), "{:#?}", correct.violations);
    let stripped = |outcome: &lapse_sim::RunOutcome| {
        outcome
            .trace
            .iter()
            .any(|line| line.contains("r-ap") && line.contains("stripped"))
    };
    assert!(stripped(&correct), "the relay never changed the feed");
    assert!(
        correct
            .trace
            .iter()
            .any(|line| line.contains("dropped back to vouched epoch")),
        "no verifier noticed the relay"
    );
    let broken = lapse_sim::run(&scenario, 1, Variant::VerifierSkipsSignatures);
    assert!(stripped(&broken), "the relay never changed the feed");
    assert!(
        violated(&broken).contains(&"revoked_acceptance"),
        "expected revoked_acceptance, got {:?}",
        broken.violations
    );
}

#[test]
fn an_exchange_that_forgets_ancestors_lets_delegates_outlive_a_revocation_and_is_caught() {
    // Clients delegate their chains' seeds and revoke at random; with the
    // ancestors left out, a delegate of a revoked seed stays valid.
    let scenario = Scenario::load(Path::new("scenarios/leader-crash.toml")).unwrap();
    let correct = lapse_sim::run(&scenario, 1, Variant::Correct);
    assert!(correct.passed(), "{:#?}", correct.violations);
    let broken = lapse_sim::run(&scenario, 1, Variant::ExchangeForgetsAncestors);
    assert!(
        violated(&broken).contains(&"delegated_acceptance"),
        "expected delegated_acceptance, got {:?}",
        broken.violations
    );
}
