//! Time to revoke: from a revocation's commit to the moment the last
//! verifier of a region subscribed to this broker has applied it.
//!
//! Per region, the tracker keeps how many of the region's subscribed
//! verifiers hold each acked epoch. The least of them is the epoch the
//! whole region holds; when an ack raises it, every revocation committed
//! in between has now reached the last of them, and gives one sample: the
//! broker's cluster time at that ack minus the revocation's commit time.
//!
//! Revocations from before a region's first verifier subscribed are not
//! measured, nor those the region holds only because its laggard left
//! (the rest applied them at times not known here). A revocation the
//! region has not finished applying shows as the age of the oldest one
//! ([`RegionRevokeTime::oldest_pending_ms`]), so a verifier that never acks
//! is seen before its sample arrives.
//!
//! Regions are the verifiers' own word: the first [`MAX_REGIONS`] seen
//! have their own entry, later ones are measured together as
//! [`OTHER_REGION`] (its last verifier being the last of all of them).

use std::collections::BTreeMap;

use super::histogram::Histogram;

/// Regions measured on their own; further regions share one entry.
pub const MAX_REGIONS: usize = 64;
/// The region label of the regions beyond [`MAX_REGIONS`].
pub const OTHER_REGION: &str = "other";

#[derive(Debug, Default)]
struct Region {
    /// Subscribed verifiers of the region per epoch they last acked.
    acked: BTreeMap<u64, u32>,
    /// Every revocation up to this epoch is done with in this region:
    /// measured, or not measurable.
    completed_through: u64,
    times: Histogram,
}

impl Region {
    fn least_acked(&self) -> Option<u64> {
        self.acked.keys().next().copied()
    }

    fn add(&mut self, epoch: u64) {
        *self.acked.entry(epoch).or_default() += 1;
    }

    fn remove(&mut self, epoch: u64) {
        if let Some(n) = self.acked.get_mut(&epoch) {
            *n -= 1;
            if *n == 0 {
                self.acked.remove(&epoch);
            }
        }
    }
}

/// Time to revoke per region, as one broker sees its own verifiers.
#[derive(Debug, Default)]
pub struct RevokeTimes {
    regions: BTreeMap<String, Region>,
    /// Each subscribed verifier's region entry and last acked epoch.
    members: BTreeMap<String, (String, u64)>,
}

/// One region's measurements, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct RegionRevokeTime {
    /// Commit to applied by the region's last verifier, microseconds.
    pub times: Histogram,
    /// Age of the oldest revocation some subscribed verifier of the region
    /// has not applied yet (0 when none).
    pub oldest_pending_ms: u64,
}

impl RevokeTimes {
    /// `verifier` subscribed (its first open subscription here) from
    /// `region`, holding `acked` as far as this broker knows; revocations
    /// up to `noted_through` came before it.
    pub fn joined(&mut self, verifier: &str, region: &str, acked: u64, noted_through: u64) {
        if self.members.contains_key(verifier) {
            return;
        }
        let key = if self.regions.contains_key(region) || self.regions.len() < MAX_REGIONS - 1 {
            region
        } else {
            OTHER_REGION
        };
        let entry = self.regions.entry(key.to_owned()).or_default();
        if entry.acked.is_empty() {
            // Nobody here before: what was revoked until now is not this
            // region's to measure.
            entry.completed_through = entry.completed_through.max(noted_through);
        }
        entry.add(acked);
        self.members
            .insert(verifier.to_owned(), (key.to_owned(), acked));
    }

    /// `verifier`'s last subscription here ended.
    pub fn left(&mut self, verifier: &str) {
        let Some((key, acked)) = self.members.remove(verifier) else {
            return;
        };
        if let Some(region) = self.regions.get_mut(&key) {
            region.remove(acked);
            if let Some(least) = region.least_acked() {
                region.completed_through = region.completed_through.max(least);
            }
        }
    }

    /// `verifier` acked `epoch` at cluster time `now_ms`; `commits` holds
    /// the commit time of each recent revocation epoch.
    pub fn acked(&mut self, verifier: &str, epoch: u64, now_ms: u64, commits: &BTreeMap<u64, u64>) {
        let Some((key, acked)) = self.members.get_mut(verifier) else {
            return;
        };
        if epoch <= *acked {
            return;
        }
        let Some(region) = self.regions.get_mut(key.as_str()) else {
            return;
        };
        region.remove(*acked);
        region.add(epoch);
        *acked = epoch;
        let least = region.least_acked().unwrap_or(epoch);
        if least <= region.completed_through {
            return;
        }
        for (_, committed_ms) in commits.range(region.completed_through + 1..=least) {
            let us = now_ms.saturating_sub(*committed_ms).saturating_mul(1000);
            region.times.record(us);
        }
        region.completed_through = least;
    }

    /// Drop regions with no verifier subscribed that `keep` does not name.
    pub fn forget(&mut self, keep: impl Fn(&str) -> bool) {
        self.regions
            .retain(|name, region| !region.acked.is_empty() || keep(name));
    }

    /// Each region's measurements at cluster time `now_ms`.
    pub fn report(
        &self,
        now_ms: u64,
        commits: &BTreeMap<u64, u64>,
    ) -> BTreeMap<String, RegionRevokeTime> {
        self.regions
            .iter()
            .map(|(name, region)| {
                let held = region
                    .least_acked()
                    .map_or(u64::MAX, |least| least.max(region.completed_through));
                let oldest_pending_ms = match held.checked_add(1) {
                    Some(from) => commits
                        .range(from..)
                        .next()
                        .map_or(0, |(_, committed)| now_ms.saturating_sub(*committed)),
                    None => 0,
                };
                let measured = RegionRevokeTime {
                    times: region.times.clone(),
                    oldest_pending_ms,
                };
                (name.clone(), measured)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commits(pairs: &[(u64, u64)]) -> BTreeMap<u64, u64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn a_revocation_is_timed_when_the_last_verifier_of_its_region_applies_it() {
        let c = commits(&[(5, 1_000), (7, 1_100)]);
        let mut t = RevokeTimes::default();
        t.joined("a", "eu", 4, 4);
        t.joined("b", "eu", 4, 4);
        t.joined("c", "us", 4, 4);
        t.acked("a", 7, 1_150, &c);
        assert_eq!(t.report(1_150, &c)["eu"].times.count(), 0);
        assert_eq!(t.report(1_150, &c)["eu"].oldest_pending_ms, 150);
        t.acked("b", 5, 1_200, &c);
        t.acked("b", 7, 1_300, &c);
        let report = t.report(1_300, &c);
        let eu = &report["eu"];
        assert_eq!(eu.times.count(), 2);
        // 5 at 1 200 (200 ms), 7 at 1 300 (200 ms).
        assert_eq!(eu.times.max_us(), 200_000);
        assert_eq!(eu.oldest_pending_ms, 0);
        assert_eq!(report["us"].times.count(), 0);
        assert_eq!(report["us"].oldest_pending_ms, 300);
        // The laggard leaves: the region is done, with no sample for it.
        t.left("c");
        let report = t.report(1_400, &c);
        assert_eq!(report["us"].oldest_pending_ms, 0);
        assert_eq!(report["us"].times.count(), 0);
        t.forget(|_| false);
        assert!(!t.report(1_400, &c).contains_key("us"));
    }

    #[test]
    fn a_new_region_measures_only_what_comes_after_it() {
        let c = commits(&[(5, 1_000), (9, 5_000)]);
        let mut t = RevokeTimes::default();
        t.joined("a", "eu", 0, 5);
        t.acked("a", 5, 4_000, &c);
        t.acked("a", 9, 5_010, &c);
        let eu = &t.report(5_010, &c)["eu"];
        assert_eq!(eu.times.count(), 1);
        assert_eq!(eu.times.max_us(), 10_000);
    }

    #[test]
    fn regions_beyond_the_cap_are_measured_together() {
        let c = commits(&[(2, 100)]);
        let mut t = RevokeTimes::default();
        for n in 0..MAX_REGIONS * 2 {
            t.joined(&format!("v{n}"), &format!("r{n}"), 1, 1);
        }
        let report = t.report(200, &c);
        assert_eq!(report.len(), MAX_REGIONS);
        assert!(report.contains_key(OTHER_REGION));
        for n in 0..MAX_REGIONS * 2 {
            t.acked(&format!("v{n}"), 2, 300, &c);
        }
        let report = t.report(300, &c);
        assert_eq!(report[OTHER_REGION].times.count(), 1);
        assert_eq!(report["r0"].times.count(), 1);
    }
}
