//! Propagation measurement: verifiers' acks turned into commit-to-apply
//! delays, per revocation, per verifier and per region.
//!
//! The broker remembers the commit time of recent revocation epochs. When a
//! verifier acks epoch `A`, every revocation epoch between its previous ack
//! and `A` has reached it: each gives one sample, the broker's cluster time
//! at the ack minus the revocation's commit time. Samples go into mergeable
//! log-bucketed histograms, so reports from every broker combine exactly.
//!
//! A sample means "this revocation, committed at `c`, was applied by this
//! verifier at `a`, while it was part of the fleet". A verifier that
//! subscribes holding nothing (resume epoch 0) receives everything revoked
//! before it arrived in its first snapshot; those revocations are counted
//! as caught up, not as propagation delay. A verifier that resumes from an
//! epoch (a reconnect or a failover) was part of the fleet all along, so
//! what it missed while away is measured.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Revocation epochs remembered for measurement; older ones are dropped
/// (a verifier acking past them records no sample for them).
const MAX_TRACKED_EPOCHS: usize = 200_000;

/// Sub-buckets per power of two: about 9 % resolution.
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;

/// A histogram of delays in microseconds, with log-spaced buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    buckets: BTreeMap<u16, u64>,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

fn bucket_of(us: u64) -> u16 {
    if us < 2 * SUB {
        return us as u16;
    }
    let exp = 63 - us.leading_zeros();
    let sub = (us >> (exp - SUB_BITS)) & (SUB - 1);
    (2 * SUB + u64::from(exp - SUB_BITS - 1) * SUB + sub) as u16
}

/// The middle of a bucket, in microseconds.
fn bucket_value(bucket: u16) -> u64 {
    let b = u64::from(bucket);
    if b < 2 * SUB {
        return b;
    }
    let exp = (b - 2 * SUB) / SUB + u64::from(SUB_BITS) + 1;
    let sub = (b - 2 * SUB) % SUB;
    let low = (1u64 << exp) + (sub << (exp - u64::from(SUB_BITS)));
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    low + width / 2
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        *self.buckets.entry(bucket_of(us)).or_default() += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (bucket, count) in &other.buckets {
            *self.buckets.entry(*bucket).or_default() += count;
        }
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The value below which a share `q` (0..=1) of samples lie; never
    /// above the largest sample.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return bucket_value(*bucket).min(self.max_us);
            }
        }
        self.max_us
    }

    /// How many samples are at most `us` (bucket resolution).
    pub fn count_at_most(&self, us: u64) -> u64 {
        let limit = bucket_of(us);
        self.buckets.range(..=limit).map(|(_, c)| c).sum()
    }
}

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

/// The measuring state of one broker.
#[derive(Debug, Default)]
pub struct Tracker {
    commits: BTreeMap<u64, u64>,
    /// Every revocation up to this epoch is in `commits`.
    noted_through: u64,
    verifiers: BTreeMap<String, VerifierRecord>,
    regions: BTreeMap<String, Histogram>,
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

    /// A verifier subscribed; `acked_epoch` is the epoch it says it holds.
    pub fn connected(
        &mut self,
        verifier: &str,
        region: &str,
        broker_id: u64,
        acked_epoch: u64,
        now_ms: u64,
    ) {
        let record = self
            .verifiers
            .entry(verifier.to_owned())
            .or_insert_with(|| VerifierRecord {
                region: region.to_owned(),
                broker_id,
                acked_epoch,
                connections: 0,
                last_seen_ms: now_ms,
                delays: Histogram::default(),
                last_us: 0,
                measured_from_ms: 0,
                caught_up: 0,
            });
        if acked_epoch == 0 {
            // It holds nothing: what was revoked before now arrives in its
            // first snapshot.
            record.measured_from_ms = now_ms;
        }
        record.region = region.to_owned();
        record.connections += 1;
        record.last_seen_ms = now_ms;
        record.acked_epoch = record.acked_epoch.max(acked_epoch);
    }

    pub fn disconnected(&mut self, verifier: &str, now_ms: u64) {
        if let Some(record) = self.verifiers.get_mut(verifier) {
            record.connections = record.connections.saturating_sub(1);
            record.last_seen_ms = now_ms;
        }
    }

    /// The verifier has applied everything up to `epoch`. Returns how many
    /// revocation samples this ack produced.
    pub fn ack(&mut self, verifier: &str, epoch: u64, now_ms: u64) -> usize {
        let Some(record) = self.verifiers.get_mut(verifier) else {
            return 0;
        };
        record.last_seen_ms = now_ms;
        if epoch <= record.acked_epoch {
            return 0;
        }
        let mut samples = 0;
        for (_, committed_ms) in self.commits.range(record.acked_epoch + 1..=epoch) {
            if *committed_ms < record.measured_from_ms {
                record.caught_up += 1;
                continue;
            }
            let us = now_ms.saturating_sub(*committed_ms).saturating_mul(1000);
            record.delays.record(us);
            // Looked up per sample, so an ack without samples allocates nothing.
            match self.regions.get_mut(&record.region) {
                Some(region) => region.record(us),
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

    /// Drop verifiers that have been gone longer than `forget_ms`.
    pub fn forget_gone(&mut self, now_ms: u64, forget_ms: u64) {
        self.verifiers.retain(|_, record| {
            record.connections > 0 || record.last_seen_ms.saturating_add(forget_ms) > now_ms
        });
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
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for us in (0..5_000_000u64).step_by(997) {
            let b = bucket_of(us);
            assert!(b >= last);
            last = b;
            let v = bucket_value(b);
            let err = v.abs_diff(us) as f64 / us.max(1) as f64;
            assert!(err <= 0.07 || us < 16, "{us} -> {b} -> {v}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(ms * 1000);
        }
        let p50 = h.quantile_us(0.5) as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.07, "{p50}");
        assert_eq!(h.quantile_us(1.0), 100_000);
        assert_eq!(h.max_us(), 100_000);
        assert_eq!(h.count(), 100);
        assert_eq!(Histogram::default().quantile_us(0.99), 0);
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

    fn report_of(t: &Tracker, id: u64) -> LocalReport {
        t.report(id, 11, 2_005)
    }
}
