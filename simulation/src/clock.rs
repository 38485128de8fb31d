//! Per-host clocks. True time is turmoil's simulated time; each host reads
//! it through its own offset, drift rate and scheduled steps, and that is
//! the only wall clock its broker or verifiers see (through the broker's
//! `Env` and the verifier's `Clock`).

use std::sync::Arc;

use crate::scenario::ClockSpec;

/// The wall-clock time (Unix ms) at which every run starts.
pub const EPOCH_MS: u64 = 1_800_000_000_000;

/// One host's clock.
#[derive(Debug, Clone, Default)]
pub struct HostClock {
    offset_ms: i64,
    drift_ppm: f64,
    /// (true seconds since start, step in ms), sorted.
    steps: Vec<(f64, i64)>,
}

impl HostClock {
    /// The clock for `host`: the sum of every spec that names it.
    pub fn for_host(host: &str, specs: &[ClockSpec]) -> Self {
        let mut clock = HostClock::default();
        for spec in specs {
            if spec
                .hosts
                .iter()
                .any(|p| crate::scenario::host_matches(p, host))
            {
                clock.offset_ms += spec.offset_ms;
                clock.drift_ppm += spec.drift_ppm;
                clock
                    .steps
                    .extend(spec.steps.iter().map(|s| (s.at_s, s.by_ms)));
            }
        }
        clock.steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        clock
    }

    /// What this clock reads when `elapsed_ms` of true time have passed.
    pub fn read(&self, elapsed_ms: f64) -> u64 {
        let drifted = elapsed_ms * (1.0 + self.drift_ppm / 1e6);
        let stepped: i64 = self
            .steps
            .iter()
            .filter(|(at_s, _)| *at_s * 1000.0 <= elapsed_ms)
            .map(|(_, by)| by)
            .sum();
        (EPOCH_MS as i64 + self.offset_ms + stepped + drifted as i64).max(0) as u64
    }

    /// What this host's monotonic clock reads at `elapsed_ms`: it drifts
    /// with the wall clock (one oscillator drives both) but never steps.
    pub fn monotonic(&self, elapsed_ms: f64) -> f64 {
        elapsed_ms * (1.0 + self.drift_ppm / 1e6)
    }

    /// How far this clock is from true time at `elapsed_ms`, in ms.
    pub fn error_ms(&self, elapsed_ms: f64) -> i64 {
        self.read(elapsed_ms) as i64 - (EPOCH_MS as i64 + elapsed_ms as i64)
    }
}

/// True simulated time since the start, in ms (0 outside a simulation).
pub fn elapsed_ms() -> f64 {
    turmoil::sim_elapsed()
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Steps of one host's wall clock made by `step_clock` faults while the
/// run goes: (true ms since start, step in ms). Shared by every process
/// the host runs, across restarts: the clock belongs to the machine.
pub type LateSteps = Arc<std::sync::Mutex<Vec<(f64, i64)>>>;

/// A host clock readable by the broker and the verifier.
#[derive(Debug, Clone)]
pub struct SimClock {
    pub host: Arc<HostClock>,
    pub late_steps: LateSteps,
}

impl SimClock {
    fn wall(&self) -> u64 {
        let elapsed = elapsed_ms();
        let late: i64 = self
            .late_steps
            .lock()
            .expect("clock lock")
            .iter()
            .filter(|(at, _)| *at <= elapsed)
            .map(|(_, by)| by)
            .sum();
        (self.host.read(elapsed) as i64 + late).max(0) as u64
    }
}

impl lapse_broker::Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.wall()
    }
    fn monotonic_ms(&self) -> f64 {
        self.host.monotonic(elapsed_ms())
    }
}

impl lapse_verifier::clock::Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.wall()
    }
    fn monotonic_ms(&self) -> f64 {
        self.host.monotonic(elapsed_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ClockStep;

    #[test]
    fn offset_drift_and_steps_add_up() {
        let spec = ClockSpec {
            hosts: vec!["v-eu-*".into()],
            offset_ms: -120_000,
            drift_ppm: 500.0,
            steps: vec![ClockStep {
                at_s: 10.0,
                by_ms: 3_000,
            }],
        };
        let clock = HostClock::for_host("v-eu-0", std::slice::from_ref(&spec));
        assert_eq!(clock.error_ms(0.0), -120_000);
        // 500 ppm over 20 s is 10 ms, plus the step.
        assert_eq!(clock.error_ms(20_000.0), -120_000 + 10 + 3_000);
        let other = HostClock::for_host("b1", &[spec]);
        assert_eq!(other.error_ms(20_000.0), 0);
    }
}
