//! The openraft configuration a broker runs, and why each safety setting is
//! set as it is. ARCHITECTURE.md ("Raft guarantees Lapse relies on") says
//! the same in prose.

use openraft::{Config, SnapshotPolicy};

use crate::config::RaftTuning;

/// How a restarted leader regains leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaderRestart {
    /// Standard Raft: a restarted node starts as a follower and must win a
    /// vote in a new, higher term; voters refuse a candidate whose log is
    /// shorter than theirs.
    #[default]
    Elect,
    /// openraft's `enable_leader_restore`: a leader that restarts before
    /// anyone else is elected resumes leading in its old term without a
    /// vote. Unsafe with Lapse's storage (see [`raft_config`]); only the
    /// simulation's deliberately broken build asks for it.
    RestoreWithoutVote,
}

/// The openraft configuration for a broker with `tuning`.
///
/// Safety settings, each set explicitly rather than left to openraft's
/// defaults (which differ between alphas):
///
/// - `enable_leader_restore = false`. A leader replicates an entry before
///   its own copy is flushed (openraft sends what is *submitted* to the log
///   store), so a majority of followers can hold an entry that the leader
///   loses on `kill -9`. With leader restore on, such a leader came back in
///   the same term with the shorter log and wrote different entries at
///   indices its followers already held under that term; a follower that
///   sees the same (term, index) keeps its own entry, and the replicas
///   diverged for good. Off, the restarted leader starts as a follower, and
///   a new term's election chooses a node whose log holds every committed
///   entry.
/// - `allow_log_reversion = false`. A follower whose log went backwards
///   lost acknowledged appends (a broken disk); the leader must treat that
///   as an error, not quietly re-replicate over it.
/// - `enable_pre_vote = true`. A voter cut off from the others (its region
///   cut, say) keeps timing out and, without pre-vote, raises its term at
///   every election timeout; when the cut heals, that term deposes the
///   healthy leader and every verifier in the cluster goes stale during
///   the elections that follow (the simulation's `*-region-cut`
///   scenarios showed a leader deposed 9 s after a heal, and 20 terms of
///   elections). With pre-vote, a node asks first whether it could win and
///   raises its term only if a quorum says yes.
/// - The vote is flushed before it is acted on, and appends are
///   acknowledged only after their flush (the log stores' invariant); the
///   committed log id is saved without a flush, which is safe because a
///   restarted node only re-applies up to what it saved and learns the rest
///   from the leader.
pub fn raft_config(tuning: &RaftTuning, restart: LeaderRestart) -> Config {
    Config {
        cluster_name: "lapse".into(),
        heartbeat_interval: tuning.heartbeat_ms,
        election_timeout_min: tuning.election_timeout_min_ms,
        election_timeout_max: tuning.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every_entries),
        max_in_snapshot_log_to_keep: tuning.logs_kept_after_snapshot,
        install_snapshot_timeout: tuning.rpc_timeout_ms.max(1000),
        enable_leader_restore: Some(restart == LeaderRestart::RestoreWithoutVote),
        allow_log_reversion: Some(false),
        enable_pre_vote: Some(true),
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_brokers_never_restore_leadership_without_a_vote() {
        let config = raft_config(&RaftTuning::default(), LeaderRestart::default());
        assert_eq!(config.enable_leader_restore, Some(false));
        assert_eq!(config.allow_log_reversion, Some(false));
        assert_eq!(config.enable_pre_vote, Some(true));
        assert!(config.validate().is_ok());
    }
}
