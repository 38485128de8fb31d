//! Whether this broker keeps its verifiers fresh, and if not, why.
//!
//! A verifier stays fresh while heartbeats reach it at most its staleness
//! bound apart. A broker sends one every `feed.heartbeat_ms`, each after
//! confirming its state with the leader, so the gap a verifier sees is the
//! interval plus the confirmation (the round trip to the leader, the
//! leader's quorum round trip and applying) plus delivery. The rule:
//!
//! ```text
//! feed.heartbeat_ms + confirmation + delivery < verifier staleness bound
//! ```
//!
//! where a leader whose quorum round trip exceeds `raft.heartbeat_ms`
//! confirms with a no-op entry after waiting one Raft heartbeat, so the
//! configuration alone must leave room: `feed.heartbeat_ms +
//! raft.heartbeat_ms` below the bound. The broker checks that at start and
//! checks the measured confirmations as it runs, and says so in `lapse
//! status`, on `/metrics` and in its log instead of silently withholding.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::config::BrokerConfig;

/// Confirmation times kept for the measured check.
const RECENT: usize = 32;
/// The longest reason kept or sent.
pub const MAX_REASON_BYTES: usize = 256;

/// A broker's heartbeat health.
#[derive(Debug)]
pub struct Freshness {
    heartbeat_ms: u64,
    staleness_ms: u64,
    config_problem: Option<String>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Since when (local ms) and why heartbeats are withheld.
    withheld: Option<(u64, String)>,
    withheld_total: u64,
    recent_ms: VecDeque<u64>,
}

/// A snapshot of [`Freshness`] for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreshnessReport {
    pub problem: Option<String>,
    pub withheld_reason: Option<String>,
    pub withheld_for_ms: u64,
    pub withheld_total: u64,
    pub slowest_confirmation_ms: u64,
    pub heartbeat_ms: u64,
    pub verifier_staleness_ms: u64,
}

/// What the configuration alone rules out, in words; `None` when it
/// leaves room for round trips.
pub fn config_problem(config: &BrokerConfig) -> Option<String> {
    let heartbeat = config.feed.heartbeat_ms;
    let raft = config.raft.heartbeat_ms;
    let bound = config.feed.verifier_staleness_ms;
    (heartbeat + raft >= bound).then(|| {
        format!(
            "feed.heartbeat_ms ({heartbeat}) + raft.heartbeat_ms ({raft}) is not below \
             feed.verifier_staleness_ms ({bound}): verifiers will go stale whenever a quorum \
             round trip exceeds raft.heartbeat_ms; lower the heartbeats or raise the \
             verifiers' --staleness and feed.verifier_staleness_ms"
        )
    })
}

/// Cut `reason` to [`MAX_REASON_BYTES`] on a character boundary.
pub fn cap(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_owned();
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

impl Freshness {
    pub fn new(config: &BrokerConfig) -> Self {
        Self {
            heartbeat_ms: config.feed.heartbeat_ms,
            staleness_ms: config.feed.verifier_staleness_ms,
            config_problem: config_problem(config),
            state: Mutex::default(),
        }
    }

    /// A heartbeat was confirmed after `took_ms`. Returns how many were
    /// withheld before it, if any were.
    pub fn confirmed(&self, took_ms: u64) -> Option<(u64, String)> {
        let mut s = self.state.lock().expect("freshness lock");
        s.recent_ms.push_back(took_ms);
        if s.recent_ms.len() > RECENT {
            s.recent_ms.pop_front();
        }
        s.withheld.take()
    }

    /// A heartbeat was withheld at local time `now_ms` for `reason`.
    /// Returns whether this starts a run of withheld heartbeats.
    pub fn withheld(&self, now_ms: u64, reason: &str) -> bool {
        let mut s = self.state.lock().expect("freshness lock");
        s.withheld_total += 1;
        match &mut s.withheld {
            Some((_, last)) => {
                *last = cap(reason);
                false
            }
            None => {
                s.withheld = Some((now_ms, cap(reason)));
                true
            }
        }
    }

    /// The measured rule, in words, when the slowest recent confirmation
    /// leaves no room.
    fn measured_problem(&self, slowest: u64) -> Option<String> {
        (self.heartbeat_ms + slowest >= self.staleness_ms).then(|| {
            format!(
                "confirming with the leader took up to {slowest} ms recently; with a heartbeat \
                 every {} ms, verifiers whose staleness bound is {} ms go stale: lower \
                 feed.heartbeat_ms or raise the verifiers' --staleness",
                self.heartbeat_ms, self.staleness_ms
            )
        })
    }

    pub fn report(&self, now_ms: u64) -> FreshnessReport {
        let s = self.state.lock().expect("freshness lock");
        let slowest = s.recent_ms.iter().copied().max().unwrap_or(0);
        FreshnessReport {
            problem: self
                .config_problem
                .clone()
                .or_else(|| self.measured_problem(slowest)),
            withheld_reason: s.withheld.as_ref().map(|(_, reason)| reason.clone()),
            withheld_for_ms: s
                .withheld
                .as_ref()
                .map_or(0, |(since, _)| now_ms.saturating_sub(*since)),
            withheld_total: s.withheld_total,
            slowest_confirmation_ms: slowest,
            heartbeat_ms: self.heartbeat_ms,
            verifier_staleness_ms: self.staleness_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_config() -> BrokerConfig {
        BrokerConfig::new(1, "127.0.0.1:0".parse().unwrap(), "unused".into())
    }

    fn config(feed_heartbeat: u64, raft_heartbeat: u64, bound: u64) -> BrokerConfig {
        let mut config = default_config();
        config.feed.heartbeat_ms = feed_heartbeat;
        config.raft.heartbeat_ms = raft_heartbeat;
        config.feed.verifier_staleness_ms = bound;
        config
    }

    #[test]
    fn the_default_configuration_leaves_room() {
        assert_eq!(config_problem(&default_config()), None);
    }

    #[test]
    fn a_configuration_without_room_for_round_trips_is_named() {
        let problem = config_problem(&config(1_500, 500, 2_000)).unwrap();
        assert!(problem.contains("feed.heartbeat_ms (1500)"), "{problem}");
        let report = Freshness::new(&config(1_500, 500, 2_000)).report(0);
        assert_eq!(report.problem, Some(problem));
    }

    #[test]
    fn slow_confirmations_are_a_problem_and_withholding_is_reported_with_its_reason() {
        let f = Freshness::new(&config(200, 100, 2_000));
        assert_eq!(f.confirmed(150), None);
        assert_eq!(f.report(0).problem, None);
        assert!(f.withheld(1_000, "read index timed out"));
        assert!(!f.withheld(1_200, "no leader known"));
        let report = f.report(1_500);
        assert_eq!(report.withheld_reason.as_deref(), Some("no leader known"));
        assert_eq!(report.withheld_for_ms, 500);
        assert_eq!(report.withheld_total, 2);
        assert_eq!(
            f.confirmed(1_900).map(|(since, _)| since),
            Some(1_000),
            "the run of withheld heartbeats ends"
        );
        let report = f.report(2_000);
        assert_eq!(report.withheld_reason, None);
        assert!(report.problem.unwrap().contains("took up to 1900 ms"));
    }

    #[test]
    fn reasons_are_capped_on_a_character_boundary() {
        let long = "é".repeat(300);
        let capped = cap(&long);
        assert!(capped.len() <= MAX_REASON_BYTES + "…".len());
        assert!(capped.ends_with('…'));
    }
}
