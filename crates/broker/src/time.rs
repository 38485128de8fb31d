//! What time it is, for a broker: a local clock that does not step, and
//! cluster time.
//!
//! **Local time** is the wall clock with its steps taken out. A wall clock
//! can jump by minutes when NTP corrects it; the monotonic clock cannot.
//! Each reading compares how far the two moved since the last one: a
//! difference beyond [`STEP_TOLERANCE_MS`] (plus [`RATE_TOLERANCE`] of the
//! interval, so drift and slewing pass) is a step, and it is cancelled by a
//! correction. The correction then shrinks by [`SLEW_PPM`] of elapsed time,
//! so a step that was a genuine fix still takes effect, at a rate no
//! credential lifetime notices (a 2-minute step is absorbed in about
//! 33 hours).
//!
//! **Cluster time** is the leader's local time. A follower learns it with
//! every read index (the leader's reading plus half the round trip), and
//! the ledger carries the leader's stamp of each entry. Cluster time never
//! moves backwards, and it never stands still: between stamps it advances
//! at the monotonic clock's rate from the last stamp seen, so a new leader
//! whose clock is behind does not freeze it. Credentials take `iat` and
//! `exp` from it, keys their windows, revocations their cut-offs, and
//! verifiers their clocks, so all of them agree.

use std::sync::Mutex;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
    /// A clock that never steps: ms since an arbitrary origin, running at
    /// the same rate as the wall clock. Used to take the wall clock's
    /// steps out (see [`crate::time`]).
    fn monotonic_ms(&self) -> f64 {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
            * 1000.0
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A jump of the wall clock against the monotonic clock larger than this
/// (plus [`RATE_TOLERANCE`] of the interval) is a step.
pub const STEP_TOLERANCE_MS: f64 = 100.0;
/// Rate differences below this fraction are drift or slewing, not steps.
pub const RATE_TOLERANCE: f64 = 0.01;
/// How fast the correction for a step wears off, in parts per million of
/// elapsed time.
pub const SLEW_PPM: f64 = 1_000.0;

/// The wall clock with its steps taken out.
#[derive(Debug, Default)]
pub struct StepGuard {
    state: Mutex<GuardState>,
}

#[derive(Debug, Default)]
struct GuardState {
    /// The last (wall, monotonic) reading.
    last: Option<(f64, f64)>,
    /// Added to the wall clock.
    correction_ms: f64,
    /// The last reading returned: local time never goes backwards.
    last_out: u64,
    steps: u64,
    last_step_ms: i64,
}

/// Steps seen, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Wall-clock steps taken out since start.
    pub steps: u64,
    /// The size of the last one (positive: the wall clock jumped forward).
    pub last_step_ms: i64,
    /// What is still being corrected, ms (local minus wall).
    pub correction_ms: i64,
}

impl StepGuard {
    /// Local time: `clock`'s wall time with its steps taken out.
    pub fn now_ms(&self, clock: &dyn Clock) -> u64 {
        let wall = clock.now_ms() as f64;
        let mono = clock.monotonic_ms();
        let mut s = self.state.lock().expect("step guard lock");
        if let Some((last_wall, last_mono)) = s.last {
            let elapsed = (mono - last_mono).max(0.0);
            let jump = (wall - last_wall) - elapsed;
            if jump.abs() > STEP_TOLERANCE_MS + elapsed * RATE_TOLERANCE {
                s.correction_ms -= jump;
                s.steps += 1;
                s.last_step_ms = jump as i64;
            } else {
                let slew = elapsed * SLEW_PPM / 1e6;
                s.correction_ms =
                    s.correction_ms.signum() * (s.correction_ms.abs() - slew).max(0.0);
            }
        }
        s.last = Some((wall, mono));
        let out = (wall + s.correction_ms).max(0.0) as u64;
        s.last_out = s.last_out.max(out);
        s.last_out
    }

    pub fn report(&self) -> StepReport {
        let s = self.state.lock().expect("step guard lock");
        StepReport {
            steps: s.steps,
            last_step_ms: s.last_step_ms,
            correction_ms: s.correction_ms as i64,
        }
    }
}

/// Cluster time as one broker knows it.
#[derive(Debug, Default)]
pub struct ClusterClock {
    state: Mutex<ClusterState>,
}

#[derive(Debug, Default)]
struct ClusterState {
    /// Leader's local time minus this broker's, from the last read index.
    leader_offset_ms: i64,
    /// A read index has measured it at least once.
    measured: bool,
    /// The highest ledger stamp seen, and the monotonic time it was seen.
    floor: Option<(u64, f64)>,
    last_out: u64,
}

impl ClusterClock {
    /// Cluster time now, given this broker's local time, its monotonic
    /// clock, and the ledger's latest stamp.
    pub fn now_ms(&self, local_ms: u64, mono_ms: f64, stamped_ms: u64) -> u64 {
        let mut s = self.state.lock().expect("cluster clock lock");
        if s.floor.is_none_or(|(floor, _)| stamped_ms > floor) {
            s.floor = Some((stamped_ms, mono_ms));
        }
        let (floor, seen) = s.floor.expect("set above");
        let floor_now = floor + (mono_ms - seen).max(0.0) as u64;
        let estimate = (local_ms as i64 + s.leader_offset_ms).max(0) as u64;
        let out = estimate.max(floor_now);
        if !s.measured {
            // Only this broker's own clock so far: not a reading to hold
            // cluster time to once the leader's is known.
            return out;
        }
        s.last_out = s.last_out.max(out);
        s.last_out
    }

    /// A read index measured the leader's local time at `offset_ms` from
    /// this broker's (0 on the leader itself).
    pub fn set_leader_offset(&self, offset_ms: i64) {
        let mut s = self.state.lock().expect("cluster clock lock");
        s.leader_offset_ms = offset_ms;
        s.measured = true;
    }

    /// Whether the leader's time has been measured since this broker
    /// started; until then cluster time is only this broker's own.
    pub fn measured(&self) -> bool {
        self.state.lock().expect("cluster clock lock").measured
    }

    pub fn leader_offset_ms(&self) -> i64 {
        self.state
            .lock()
            .expect("cluster clock lock")
            .leader_offset_ms
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    /// A wall clock and a monotonic clock moved by hand.
    #[derive(Default)]
    struct Manual {
        wall: AtomicI64,
        mono: AtomicI64,
    }

    impl Manual {
        fn pass(&self, ms: i64) {
            self.wall.fetch_add(ms, Ordering::SeqCst);
            self.mono.fetch_add(ms, Ordering::SeqCst);
        }
        fn step(&self, ms: i64) {
            self.wall.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl Clock for Manual {
        fn now_ms(&self) -> u64 {
            self.wall.load(Ordering::SeqCst) as u64
        }
        fn monotonic_ms(&self) -> f64 {
            self.mono.load(Ordering::SeqCst) as f64
        }
    }

    fn manual_at(ms: i64) -> Manual {
        let clock = Manual::default();
        clock.wall.store(ms, Ordering::SeqCst);
        clock
    }

    #[test]
    fn steps_either_way_are_taken_out() {
        let clock = manual_at(1_000_000);
        let guard = StepGuard::default();
        assert_eq!(guard.now_ms(&clock), 1_000_000);
        clock.pass(1_000);
        clock.step(-120_000);
        assert_eq!(guard.now_ms(&clock), 1_001_000);
        clock.pass(1_000);
        // One second of slewing at 1000 ppm: 1 ms of the step let through.
        assert_eq!(guard.now_ms(&clock), 1_001_999);
        clock.step(240_000);
        clock.pass(1_000);
        let after = guard.now_ms(&clock);
        assert!((1_002_990..=1_003_000).contains(&after), "{after}");
        let report = guard.report();
        assert_eq!(report.steps, 2);
        assert_eq!(report.last_step_ms, 240_000);
    }

    #[test]
    fn drift_and_small_corrections_pass_through() {
        let clock = manual_at(5_000_000);
        let guard = StepGuard::default();
        guard.now_ms(&clock);
        for _ in 0..100 {
            clock.pass(1_000);
            // 500 ppm of drift, then a 50 ms slew.
            clock.step(1);
        }
        clock.step(50);
        clock.pass(1_000);
        assert_eq!(guard.now_ms(&clock), 5_000_000 + 101_000 + 100 + 50);
        assert_eq!(guard.report().steps, 0);
    }

    #[test]
    fn local_time_never_goes_backwards() {
        let clock = manual_at(1_000_000);
        let guard = StepGuard::default();
        guard.now_ms(&clock);
        clock.step(-90);
        assert_eq!(guard.now_ms(&clock), 1_000_000);
    }

    #[test]
    fn cluster_time_follows_the_leader_and_never_stands_still() {
        let clock = ClusterClock::default();
        // Before the leader's clock is measured: this broker's own, which
        // does not hold cluster time up once the leader's is known.
        assert_eq!(clock.now_ms(70_000, 0.0, 0), 70_000);
        // A follower 2 s behind the leader.
        clock.set_leader_offset(2_000);
        assert_eq!(clock.now_ms(10_000, 0.0, 0), 12_000);
        // A new leader whose clock is a minute behind the last stamp:
        // cluster time runs on from the stamp at the monotonic rate.
        clock.set_leader_offset(-60_000);
        assert_eq!(clock.now_ms(10_500, 500.0, 12_400), 12_400);
        assert_eq!(clock.now_ms(11_500, 1_500.0, 12_400), 13_400);
        // Never backwards, even if the stamp and the estimate both are.
        assert_eq!(clock.now_ms(0, 1_500.0, 0), 13_400);
    }
}
