//! What a run records as it goes: the trace (one line per event, with its
//! simulated time and host), the counts of what the clients and verifiers
//! did, the violations the oracle found, and the propagation samples. All
//! of it sits behind one lock, taken only by the methods here.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::invariants::Violation;

/// How many requests, verifications and faults a run saw, by outcome.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counts {
    pub issued: u64,
    pub issue_failures: u64,
    pub revocations_acked: u64,
    pub revocations_unknown: u64,
    pub revocations_refused: u64,
    pub verifications: u64,
    pub accepted: u64,
    pub rejected_revoked: u64,
    pub rejected_stale: u64,
    /// Refused after the credential's lifetime had passed in true time.
    pub rejected_expired: u64,
    pub rejected_other: u64,
    pub faults: u64,
}

/// One revocation reaching one verifier.
#[derive(Debug, Clone, PartialEq)]
pub struct PropagationSample {
    /// The region of the verifier.
    pub region: String,
    /// True ms since the start when a broker first applied the revocation.
    pub committed_ms: f64,
    /// From that first apply to the verifier applying it, ms.
    pub delay_ms: f64,
}

/// Everything recorded, taken out at the end of the run.
#[derive(Debug, Default)]
pub(super) struct Recorded {
    pub trace: Vec<String>,
    pub violations: Vec<Violation>,
    pub counts: Counts,
    pub propagation: Vec<PropagationSample>,
}

/// The record of one run, shared by its hosts and its driver.
#[derive(Debug, Default)]
pub(super) struct Observer {
    recorded: Mutex<Recorded>,
    /// The driver's simulated time (`f64` bits), for what it notes
    /// between steps, when no host is running.
    driver_ms: AtomicU64,
}

impl Observer {
    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().expect("record lock")
    }

    /// Simulated ms: the host's view inside a host, the driver's outside.
    pub fn now_ms(&self) -> f64 {
        match turmoil::sim_elapsed() {
            Some(elapsed) => elapsed.as_secs_f64() * 1000.0,
            None => f64::from_bits(self.driver_ms.load(Ordering::Relaxed)),
        }
    }

    /// Where the driver is, in simulated ms.
    pub fn set_driver_ms(&self, ms: f64) {
        self.driver_ms.store(ms.to_bits(), Ordering::Relaxed);
    }

    /// A trace line: `<seconds> <host> <event>`.
    fn line(&self, host: &str, event: impl std::fmt::Display) -> String {
        format!("{:>10.3} {host:<8} {event}", self.now_ms() / 1000.0)
    }

    /// Add a line to the trace.
    pub fn note(&self, host: &str, event: impl std::fmt::Display) {
        let line = self.line(host, event);
        self.recorded().trace.push(line);
    }

    /// Record a broken invariant (and note it in the trace).
    pub fn violate(&self, violation: Violation) {
        let line = self.line("check", format_args!("VIOLATION {violation}"));
        let mut recorded = self.recorded();
        recorded.trace.push(line);
        recorded.violations.push(violation);
    }

    /// Change the counts.
    pub fn count(&self, change: impl FnOnce(&mut Counts)) {
        change(&mut self.recorded().counts);
    }

    pub fn counts(&self) -> Counts {
        self.recorded().counts.clone()
    }

    pub fn propagated(&self, samples: impl IntoIterator<Item = PropagationSample>) {
        self.recorded().propagation.extend(samples);
    }

    /// Everything recorded so far, leaving the record empty.
    pub fn take(&self) -> Recorded {
        std::mem::take(&mut *self.recorded())
    }
}
