//! Propagation measurement: verifiers' acks turned into commit-to-apply
//! delays, per revocation, per verifier and per region.
//!
//! The broker remembers the commit time of recent revocation epochs. When a
//! verifier acks epoch `A`, every revocation epoch between its previous ack
//! and `A` has reached it: each gives one sample, the broker's cluster time
//! at the ack minus the revocation's commit time. Samples go into mergeable
//! HDR histograms (`histogram.rs`), so reports from every broker combine
//! exactly.
//!
//! A sample means "this revocation, committed at `c`, was applied by this
//! verifier at `a`, while it was part of the fleet". A verifier that
//! subscribes holding nothing (resume epoch 0) receives everything revoked
//! before it arrived in its first snapshot; those revocations are counted
//! as caught up, not as propagation delay. A verifier that resumes from an
//! epoch (a reconnect or a failover) was part of the fleet all along, so
//! what it missed while away is measured.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::histogram::Histogram;
use super::revoke_time::{RegionRevokeTime, RevokeTimes};

/// Revocation epochs remembered for measurement; older ones are dropped
/// (a verifier acking past them records no sample for them).
const MAX_TRACKED_EPOCHS: usize = 200_000;

/// What one broker knows of one verifier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifierRecord {
    pub region: String,
    pub broker_id: u64,
    pub acked_epoch: u64,
    /// Open subscriptions from this verifier to this broker.
    pub connections: u32,
    /// Broker cluster time of the last ack (or of the subscription).
    pub last_seen_ms: u64,
    pub delays: Histogram,
    /// Delay of the latest revocation acked, in microseconds.
    pub last_us: u64,
    /// Revocations committed before this cluster time reached the verifier
    /// in its first snapshot: not propagation samples.
    pub measured_from_ms: u64,
    /// How many revocations arrived that way.
    pub caught_up: u64,
}

/// One broker's view, as sent to peers for a cluster-wide report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalReport {
    pub broker_id: u64,
    pub current_epoch: u64,
    pub now_ms: u64,
    pub verifiers: BTreeMap<String, VerifierRecord>,
    pub regions: BTreeMap<String, Histogram>,
}

/// The format of an encoded [`LocalReport`], its first byte. A peer whose
/// report this broker cannot read counts as unreachable in the
/// cluster-wide report. Format 1 had no such byte and log-bucket
/// histograms; format 2 carries HDR buckets.
pub const REPORT_FORMAT: u8 = 2;

impl LocalReport {
    /// The report as sent to a peer: the format byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![REPORT_FORMAT];
        bytes.extend(postcard::to_stdvec(self).expect("reports always serialise"));
        bytes
    }

    /// A peer's report, if it is in this broker's format and well formed.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first() {
            Some((&REPORT_FORMAT, rest)) => postcard::from_bytes(rest).ok(),
            _ => None,
        }
    }
}

/// Most verifiers the tracker keeps. Subscriptions are capped by
/// `feed.max_subscribers`; this caps those gone but not yet forgotten, so
/// cycling verifier ids cannot grow it: the longest gone leaves first.
pub const MAX_TRACKED_VERIFIERS: usize = 50_000;
/// Most regions with their own histogram; samples of further regions count
/// for their verifiers only.
pub const MAX_TRACKED_REGIONS: usize = 1_024;

/// The measuring state of one broker.
#[derive(Debug)]
pub struct Tracker {
    /// [`MAX_TRACKED_VERIFIERS`], less in tests.
    max_verifiers: usize,
    commits: BTreeMap<u64, u64>,
    /// Every revocation up to this epoch is in `commits`.
    noted_through: u64,
    verifiers: BTreeMap<String, VerifierRecord>,
    /// The verifiers with no subscription open here, by when they were
    /// last seen and id: the longest gone is evicted or forgotten first
    /// without a scan of every verifier (a relay that moves brings its
    /// thousands of leaves at once).
    gone: BTreeSet<(u64, String)>,
    /// A verifier was evicted or moved region since the regions were last
    /// pruned.
    regions_to_prune: bool,
    regions: BTreeMap<String, Histogram>,
    /// Per verifier, the epoch it said it held when it subscribed: what it
    /// holds up to there is not measured here. It is the verifier's claim,
    /// not an acknowledgement: only acks move `acked_epoch`.
    baselines: BTreeMap<String, u64>,
    /// Commit to the last verifier of each region.
    revoke_times: RevokeTimes,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            max_verifiers: MAX_TRACKED_VERIFIERS,
            commits: BTreeMap::new(),
            noted_through: 0,
            verifiers: BTreeMap::new(),
            gone: BTreeSet::new(),
            regions_to_prune: false,
            regions: BTreeMap::new(),
            baselines: BTreeMap::new(),
            revoke_times: RevokeTimes::default(),
        }
    }
}

impl Tracker {
    /// Remember the commit times of the revocation epochs up to `through`.
    pub fn note_commits(&mut self, commits: impl IntoIterator<Item = (u64, u64)>, through: u64) {
        self.commits.extend(commits);
        self.noted_through = self.noted_through.max(through);
        while self.commits.len() > MAX_TRACKED_EPOCHS {
            self.commits.pop_first();
        }
    }

    /// A tracker that knows no commit up to `epoch` (those were committed
    /// before it started).
    pub fn starting_at(epoch: u64) -> Self {
        Self {
            noted_through: epoch,
            ..Self::default()
        }
    }

    /// The epoch up to which commit times are known.
    pub fn noted_through(&self) -> u64 {
        self.noted_through
    }

    /// A verifier subscribed, saying it holds `resume_epoch` (0: nothing).
    /// That is not an acknowledgement: a verifier counts as holding an
    /// epoch only once it acks it. It only keeps epochs up to there (at
    /// most those this broker knows) out of the measurements.
    pub fn connected(
        &mut self,
        verifier: &str,
        region: &str,
        broker_id: u64,
        resume_epoch: u64,
        now_ms: u64,
    ) {
        if !self.verifiers.contains_key(verifier)
            && self.verifiers.len() >= self.max_verifiers
            && let Some((_, id)) = self.gone.pop_first()
        {
            self.verifiers.remove(&id);
            self.baselines.remove(&id);
            self.regions_to_prune = true;
        }
        let record = self
            .verifiers
            .entry(verifier.to_owned())
            .or_insert_with(|| VerifierRecord {
                region: region.to_owned(),
                broker_id,
                acked_epoch: 0,
                connections: 0,
                last_seen_ms: now_ms,
                delays: Histogram::default(),
                last_us: 0,
                measured_from_ms: 0,
                caught_up: 0,
            });
        if record.connections == 0 {
            self.gone
                .remove(&(record.last_seen_ms, verifier.to_owned()));
        }
        let baseline = resume_epoch.min(self.noted_through);
        let kept = self.baselines.entry(verifier.to_owned()).or_insert(0);
        *kept = (*kept).max(baseline);
        if resume_epoch == 0 {
            // It holds nothing: what was revoked before now arrives in its
            // first snapshot.
            record.measured_from_ms = now_ms;
        }
        if record.region != region {
            record.region = region.to_owned();
            self.regions_to_prune = true;
        }
        record.connections += 1;
        record.last_seen_ms = now_ms;
        if record.connections == 1 {
            self.revoke_times
                .joined(verifier, region, record.acked_epoch, self.noted_through);
        }
    }

    pub fn disconnected(&mut self, verifier: &str, now_ms: u64) {
        if let Some(record) = self.verifiers.get_mut(verifier) {
            if record.connections == 0 {
                self.gone
                    .remove(&(record.last_seen_ms, verifier.to_owned()));
            }
            record.connections = record.connections.saturating_sub(1);
            record.last_seen_ms = now_ms;
            if record.connections == 0 {
                self.gone.insert((now_ms, verifier.to_owned()));
                self.revoke_times.left(verifier);
            }
        }
    }

    /// The verifier has applied everything up to `epoch`. Returns how many
    /// revocation samples this ack produced.
    pub fn ack(&mut self, verifier: &str, epoch: u64, now_ms: u64) -> usize {
        let Some(record) = self.verifiers.get_mut(verifier) else {
            return 0;
        };
        if record.connections == 0 && record.last_seen_ms != now_ms {
            // Seen again, though not subscribed: gone since now.
            self.gone
                .remove(&(record.last_seen_ms, verifier.to_owned()));
            self.gone.insert((now_ms, verifier.to_owned()));
        }
        record.last_seen_ms = now_ms;
        if epoch <= record.acked_epoch {
            return 0;
        }
        self.revoke_times
            .acked(verifier, epoch, now_ms, &self.commits);
        let baseline = self.baselines.get(verifier).copied().unwrap_or(0);
        let from = record.acked_epoch.max(baseline);
        if epoch <= from {
            // Held before it subscribed here: nothing to measure.
            record.acked_epoch = epoch;
            return 0;
        }
        let mut samples = 0;
        for (_, committed_ms) in self.commits.range(from + 1..=epoch) {
            if *committed_ms < record.measured_from_ms {
                record.caught_up += 1;
                continue;
            }
            let us = now_ms.saturating_sub(*committed_ms).saturating_mul(1000);
            record.delays.record(us);
            // Looked up per sample, so an ack without samples allocates nothing.
            let room = self.regions.len() < MAX_TRACKED_REGIONS;
            match self.regions.get_mut(&record.region) {
                Some(region) => region.record(us),
                None if !room => {}
                None => {
                    let mut region = Histogram::default();
                    region.record(us);
                    self.regions.insert(record.region.clone(), region);
                }
            }
            record.last_us = us;
            samples += 1;
        }
        record.acked_epoch = epoch;
        samples
    }

    /// Drop verifiers that have been gone longer than `forget_ms`, and
    /// the regions no verifier left is in. Runs with every heartbeat: it
    /// looks at the longest gone only, and at the regions only when it
    /// forgot someone.
    pub fn forget_gone(&mut self, now_ms: u64, forget_ms: u64) {
        let mut prune = std::mem::take(&mut self.regions_to_prune);
        while let Some((seen, _)) = self.gone.first()
            && seen.saturating_add(forget_ms) <= now_ms
        {
            if let Some((_, id)) = self.gone.pop_first() {
                self.verifiers.remove(&id);
                self.baselines.remove(&id);
                prune = true;
            }
        }
        if !prune {
            return;
        }
        // (Or one was evicted, or moved region.)
        let verifiers = &self.verifiers;
        let regions: std::collections::BTreeSet<&String> =
            verifiers.values().map(|r| &r.region).collect();
        self.regions.retain(|region, _| regions.contains(region));
        self.revoke_times
            .forget(|region| regions.contains(&region.to_owned()));
    }

    /// Time to revoke per region (see [`super::revoke_time`]) at cluster
    /// time `now_ms`.
    pub fn revoke_times(&self, now_ms: u64) -> BTreeMap<String, RegionRevokeTime> {
        self.revoke_times.report(now_ms, &self.commits)
    }

    /// Subscribed verifiers that have not applied a revocation committed
    /// more than `bound_ms` before `now_ms`.
    pub fn stale_verifiers(&self, now_ms: u64, bound_ms: u64) -> usize {
        let overdue = |acked: u64| {
            self.commits
                .range(acked.saturating_add(1)..)
                .next()
                .is_some_and(|(_, committed)| committed.saturating_add(bound_ms) < now_ms)
        };
        self.verifiers
            .values()
            .filter(|r| r.connections > 0 && overdue(r.acked_epoch))
            .count()
    }

    pub fn subscribers(&self) -> usize {
        self.verifiers
            .values()
            .filter(|r| r.connections > 0)
            .count()
    }

    pub fn report(&self, broker_id: u64, current_epoch: u64, now_ms: u64) -> LocalReport {
        LocalReport {
            broker_id,
            current_epoch,
            now_ms,
            verifiers: self.verifiers.clone(),
            regions: self.regions.clone(),
        }
    }
}

/// Reports of several brokers merged: a verifier seen by two brokers (it
/// failed over) counts once, with its furthest ack and all its samples.
pub fn merge_reports(reports: &[LocalReport]) -> LocalReport {
    let mut merged = LocalReport::default();
    for report in reports {
        merged.current_epoch = merged.current_epoch.max(report.current_epoch);
        merged.now_ms = merged.now_ms.max(report.now_ms);
        for (region, histogram) in &report.regions {
            merged
                .regions
                .entry(region.clone())
                .or_default()
                .merge(histogram);
        }
        for (id, record) in &report.verifiers {
            match merged.verifiers.get_mut(id) {
                None => {
                    merged.verifiers.insert(id.clone(), record.clone());
                }
                Some(existing) => {
                    let newer = (record.connections > 0, record.last_seen_ms)
                        > (existing.connections > 0, existing.last_seen_ms);
                    existing.delays.merge(&record.delays);
                    existing.acked_epoch = existing.acked_epoch.max(record.acked_epoch);
                    existing.connections += record.connections;
                    existing.caught_up += record.caught_up;
                    if newer {
                        existing.broker_id = record.broker_id;
                        existing.region = record.region.clone();
                        existing.last_us = record.last_us;
                    }
                    existing.last_seen_ms = existing.last_seen_ms.max(record.last_seen_ms);
                }
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycling_verifier_ids_and_regions_cannot_grow_the_tracker() {
        let mut t = Tracker::default();
        t.note_commits([(1, 0)], 1);
        let live = "live-one";
        t.connected(live, "eu", 1, 0, 0);
        for n in 0..MAX_TRACKED_VERIFIERS + 100 {
            let id = format!("v{n}");
            let region = format!("r{n}");
            t.connected(&id, &region, 1, 0, 0);
            t.ack(&id, 1, n as u64 + 1);
            t.disconnected(&id, n as u64 + 1);
        }
        let report = t.report(1, 1, 0);
        assert_eq!(report.verifiers.len(), MAX_TRACKED_VERIFIERS);
        assert!(
            report.verifiers.contains_key(live),
            "a connected verifier was evicted"
        );
        assert!(
            !report.verifiers.contains_key("v0"),
            "the longest gone stays"
        );
        assert_eq!(report.regions.len(), MAX_TRACKED_REGIONS);
        // Once gone long enough, their regions go with them.
        t.forget_gone(u64::MAX / 2, 1);
        let report = t.report(1, 1, 0);
        assert_eq!(report.verifiers.len(), 1);
        assert!(report.regions.len() <= 1, "{:?}", report.regions.keys());
    }

    #[test]
    fn acks_produce_one_sample_per_revocation() {
        let mut t = Tracker::default();
        t.note_commits([(5, 1_000), (7, 1_010), (9, 1_020)], 9);
        t.connected("v1", "eu", 1, 4, 1_000);
        assert_eq!(t.ack("v1", 7, 1_030), 2);
        assert_eq!(t.ack("v1", 7, 1_040), 0);
        assert_eq!(t.ack("v1", 9, 1_050), 1);
        let report = t.report(1, 9, 1_050);
        let v = &report.verifiers["v1"];
        assert_eq!(v.acked_epoch, 9);
        assert_eq!(v.delays.count(), 3);
        assert_eq!(v.delays.max_us(), 30_000);
        assert_eq!(v.last_us, 30_000);
        assert_eq!(report.regions["eu"].count(), 3);
        // A second broker saw the same verifier after a failover.
        let mut other = Tracker::default();
        other.note_commits([(11, 2_000)], 11);
        other.connected("v1", "eu", 2, 9, 2_000);
        other.ack("v1", 11, 2_005);
        t.disconnected("v1", 1_900);
        let merged = merge_reports(&[report_of(&t, 1), report_of(&other, 2)]);
        let v = &merged.verifiers["v1"];
        assert_eq!((v.acked_epoch, v.broker_id, v.connections), (11, 2, 1));
        assert_eq!(v.delays.count(), 4);
        assert_eq!(merged.regions["eu"].count(), 4);
        t.forget_gone(1_900 + 10, 5);
        assert_eq!(t.subscribers(), 0);
        assert!(t.report(1, 0, 0).verifiers.is_empty());
    }

    #[test]
    fn revocations_from_before_a_new_verifier_subscribed_are_caught_up_not_delay() {
        let mut t = Tracker::default();
        // A burst revoked long before the verifier arrives.
        t.note_commits([(2, 1_000), (3, 1_001), (4, 1_002)], 4);
        t.connected("v1", "eu", 1, 0, 60_000);
        // Its first snapshot covers them all; then one revocation arrives
        // while it is subscribed.
        assert_eq!(t.ack("v1", 4, 60_010), 0);
        t.note_commits([(5, 61_000)], 5);
        assert_eq!(t.ack("v1", 5, 61_007), 1);
        let v = &t.report(1, 5, 61_007).verifiers["v1"];
        assert_eq!(v.caught_up, 3);
        assert_eq!(v.delays.count(), 1);
        assert_eq!(v.delays.max_us(), 7_000);
        // A verifier resuming from an epoch was away: what it missed is
        // measured, however long it took.
        t.disconnected("v1", 61_100);
        t.note_commits([(6, 62_000)], 6);
        t.connected("v1", "eu", 1, 5, 65_000);
        assert_eq!(t.ack("v1", 6, 65_010), 1);
        assert_eq!(
            t.report(1, 6, 65_010).verifiers["v1"].delays.max_us(),
            3_010_000
        );
    }

    #[test]
    fn a_resume_epoch_is_not_an_acknowledgement() {
        let mut t = Tracker::default();
        t.note_commits([(5, 1_000)], 5);
        // A subscriber claiming to hold everything there will ever be.
        t.connected("liar", "eu", 1, u64::MAX, 1_000);
        t.connected("honest", "eu", 1, 4, 1_000);
        let report = t.report(1, 5, 1_001);
        assert_eq!(report.verifiers["liar"].acked_epoch, 0);
        assert_eq!(report.verifiers["honest"].acked_epoch, 0);
        // Only an ack says what a verifier holds; the honest one's measures
        // the one revocation it was missing.
        assert_eq!(t.ack("honest", 5, 1_010), 1);
        assert_eq!(t.report(1, 5, 1_010).verifiers["honest"].acked_epoch, 5);
        // The liar's claim kept nothing but its own samples out.
        assert_eq!(t.ack("liar", 5, 1_010), 0);
        t.disconnected("liar", 1_020);
        t.disconnected("honest", 1_020);
        t.forget_gone(1_030, 5);
        assert!(
            t.baselines.is_empty(),
            "forgotten verifiers keep no baseline"
        );
    }

    #[test]
    fn reports_carry_their_format_and_another_format_is_not_read() {
        let mut t = Tracker::default();
        t.note_commits([(5, 1_000)], 5);
        t.connected("v1", "eu", 1, 4, 1_000);
        t.ack("v1", 5, 1_008);
        let report = t.report(1, 5, 1_008);
        let bytes = report.encode();
        assert_eq!(bytes[0], REPORT_FORMAT);
        assert_eq!(LocalReport::decode(&bytes), Some(report.clone()));
        // Format 1: postcard with no format byte.
        let old = postcard::to_stdvec(&report).unwrap();
        assert_eq!(LocalReport::decode(&old), None);
        assert_eq!(LocalReport::decode(&[]), None);
        assert_eq!(LocalReport::decode(&bytes[..bytes.len() - 1]), None);
    }

    /// The index of gone verifiers agrees with a scan of every record,
    /// through any mix of subscriptions, acks, leaving, eviction at the
    /// cap and forgetting.
    #[test]
    fn the_gone_index_matches_a_scan_of_the_records() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cap = 300;
        let mut t = Tracker {
            max_verifiers: cap,
            ..Tracker::default()
        };
        t.note_commits((1..=50).map(|e| (e, e * 10)), 50);
        let mut now = 0u64;
        let mut evicted = 0;
        for step in 0..40_000 {
            now += rng.gen_range(0..3);
            // Ids from a range wider than the cap, so eviction happens.
            let id = format!("v{}", rng.gen_range(0..cap * 2));
            match rng.gen_range(0..10) {
                0..=3 => {
                    let full = t.verifiers.len() >= cap && !t.verifiers.contains_key(&id);
                    let before = t.verifiers.len();
                    t.connected(&id, "eu", 1, 0, now);
                    evicted += usize::from(full && t.verifiers.len() == before);
                }
                4..=6 => t.disconnected(&id, now),
                7 | 8 => {
                    t.ack(&id, rng.gen_range(1..=50), now);
                }
                _ => t.forget_gone(now, rng.gen_range(1..2_000)),
            }
            if step % 97 == 0 {
                let scanned: BTreeSet<(u64, String)> = t
                    .verifiers
                    .iter()
                    .filter(|(_, r)| r.connections == 0)
                    .map(|(id, r)| (r.last_seen_ms, id.clone()))
                    .collect();
                assert_eq!(t.gone, scanned, "step {step}");
                // Subscribed verifiers are capped elsewhere
                // (`feed.max_subscribers`); the gone ones by the cap.
                assert!(t.gone.len() <= cap, "step {step}");
            }
        }
        assert!(evicted > 100, "eviction was not exercised: {evicted}");
        assert!(t.baselines.keys().all(|id| t.verifiers.contains_key(id)));
    }

    fn report_of(t: &Tracker, id: u64) -> LocalReport {
        t.report(id, 11, 2_005)
    }
}
