//! The exact sequence behind a Raft safety bug: the leader appends and
//! replicates entries, dies before flushing its own copy, and restarts at
//! once. A restarted leader must win a new, higher term's election (which a
//! shorter log cannot win against followers that hold the lost tail) or
//! follow; it must never resume its old term.

use std::path::Path;

use lapse_sim::{RunOutcome, Scenario, Variant};

/// One crash of the leader mid-append, read from the trace.
#[derive(Debug)]
struct Restart {
    host: String,
    lost_writes: u64,
    term_before: u64,
    /// Terms the host led after its restart, before its next crash.
    terms_after: Vec<u64>,
}

/// Trace lines are `<seconds> <host> <event>`.
fn parse(line: &str) -> Option<(&str, &str)> {
    let mut parts = line.trim_start().splitn(2, ' ');
    parts.next()?;
    let rest = parts.next()?.trim_start();
    rest.split_once(' ')
        .map(|(host, event)| (host, event.trim()))
}

fn restarts(outcome: &RunOutcome) -> Vec<Restart> {
    let mut found: Vec<Restart> = Vec::new();
    let mut led: std::collections::BTreeMap<String, u64> = Default::default();
    let mut open: Option<usize> = None;
    for line in &outcome.trace {
        let Some((host, event)) = parse(line) else {
            continue;
        };
        if let Some(term) = event.strip_prefix("leads term ") {
            let term: u64 = term.parse().expect("a term");
            if let Some(n) = open
                && found[n].host == host
            {
                found[n].terms_after.push(term);
            }
            led.insert(host.to_owned(), term);
        }
        if host == "fault"
            && let Some(rest) = event.strip_prefix("crash ")
            && let Some((victim, lost)) = rest.split_once(", losing ")
        {
            let lost_writes = lost
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a count");
            found.push(Restart {
                host: victim.to_owned(),
                lost_writes,
                term_before: led.get(victim).copied().unwrap_or(0),
                terms_after: Vec::new(),
            });
            open = Some(found.len() - 1);
        }
    }
    found
}

fn scenario() -> Scenario {
    Scenario::load(Path::new("scenarios/leader-crash-mid-append.toml")).unwrap()
}

#[test]
fn a_leader_that_loses_its_unflushed_tail_and_restarts_at_once_never_resumes_its_old_term() {
    let scenario = scenario();
    for seed in 1..=3 {
        let outcome = lapse_sim::run(&scenario, seed, Variant::Correct);
        assert!(
            outcome.passed(),
            "seed {seed}: {:?} {:#?}",
            outcome.error,
            outcome.violations
        );
        let restarts = restarts(&outcome);
        assert_eq!(restarts.len(), 2, "seed {seed}: {restarts:?}");
        for restart in &restarts {
            assert!(
                restart.lost_writes > 0,
                "seed {seed}: the crash lost nothing, so the sequence was not exercised: {restart:?}"
            );
            assert!(restart.term_before > 0, "seed {seed}: {restart:?}");
            for term in &restart.terms_after {
                assert!(
                    *term > restart.term_before,
                    "seed {seed}: {} led term {term} again after leading {} before its crash",
                    restart.host,
                    restart.term_before
                );
            }
        }
    }
}

#[test]
fn with_leader_restore_on_the_restarted_leader_resumes_its_old_term() {
    // The same sequence with openraft's leader restore: the restarted
    // leader leads its old term again without an election. This is the
    // mechanism of the divergence `broken_builds` shows being caught.
    let outcome = lapse_sim::run(&scenario(), 1, Variant::LeaderRestoreWithoutVote);
    let restarts = restarts(&outcome);
    assert!(
        restarts
            .iter()
            .any(|r| r.lost_writes > 0 && r.terms_after.first() == Some(&r.term_before)),
        "{restarts:#?}"
    );
}
