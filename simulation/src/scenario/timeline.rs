//! The fault schedule as spans of time: when each fault a scenario
//! schedules starts and when it ends (at the fault that undoes it, or at
//! the end of the run), for pictures of a run beside its faults.

use serde::Serialize;

use super::{Fault, FaultAction, Scenario};

/// One fault in force from `start_s` to `end_s` (simulated seconds since
/// the start; equal for a fault that is one instant, such as a clock step).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultSpan {
    /// What the fault does, as the scenario names it (`isolate leader`).
    pub label: String,
    pub start_s: f64,
    pub end_s: f64,
}

/// Which later fault ends a fault.
enum EndedBy {
    Heal,
    LatencyNormal,
    Restart(String),
    RestartAll,
    /// This long after it starts.
    After(f64),
    /// Nothing: it lasts to the end of the run.
    Never,
}

impl Scenario {
    /// The scheduled faults as spans, in the order they start (the order
    /// the driver applies them). Faults that only undo others (`heal`,
    /// `restart`, `restart_all`, `latency_normal`) are not spans of their
    /// own.
    pub fn fault_spans(&self) -> Vec<FaultSpan> {
        let end_of_run = (self.duration_s + self.settle_s) as f64;
        let mut schedule = self.faults.clone();
        schedule.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let mut spans = Vec::new();
        for (n, fault) in schedule.iter().enumerate() {
            let Some((label, ended_by)) = describe(&fault.action) else {
                continue;
            };
            let later = &schedule[n + 1..];
            let end_s = match ended_by {
                EndedBy::After(s) => fault.at_s + s,
                EndedBy::Never => end_of_run,
                ended_by => later
                    .iter()
                    .find(|f| ends(&ended_by, f))
                    .map_or(end_of_run, |f| f.at_s),
            };
            spans.push(FaultSpan {
                label,
                start_s: fault.at_s,
                end_s,
            });
        }
        spans
    }
}

/// Whether `fault` ends what `ended_by` waits for.
fn ends(ended_by: &EndedBy, fault: &Fault) -> bool {
    match (ended_by, &fault.action) {
        (EndedBy::Heal, FaultAction::Heal)
        | (EndedBy::LatencyNormal, FaultAction::LatencyNormal)
        | (EndedBy::Restart(_) | EndedBy::RestartAll, FaultAction::RestartAll) => true,
        (EndedBy::Restart(crashed), FaultAction::Restart { target }) => crashed == target,
        _ => false,
    }
}

/// A fault's label and what ends it; `None` for faults that only end
/// others.
fn describe(action: &FaultAction) -> Option<(String, EndedBy)> {
    let described = match action {
        FaultAction::Isolate { target } => (format!("isolate {target}"), EndedBy::Heal),
        FaultAction::Partition { hosts } => {
            (format!("partition {}", hosts.join(", ")), EndedBy::Heal)
        }
        FaultAction::CutRegion { region } => (format!("cut region {region}"), EndedBy::Heal),
        FaultAction::Crash { target } => {
            (format!("crash {target}"), EndedBy::Restart(target.clone()))
        }
        FaultAction::CrashAll => ("crash every broker".into(), EndedBy::RestartAll),
        FaultAction::CrashLeaderMidAppend {
            hold_ms,
            restart_after_ms,
        } => (
            "crash leader mid-append".into(),
            EndedBy::After((hold_ms + restart_after_ms) as f64 / 1000.0),
        ),
        FaultAction::Loss { rate, .. } => (format!("link loss {rate}"), EndedBy::Heal),
        FaultAction::LatencySpike { max_ms } => {
            (format!("latency up to {max_ms} ms"), EndedBy::LatencyNormal)
        }
        FaultAction::SlowVerifier { host, latency_ms } => {
            (format!("slow {host} ({latency_ms} ms)"), EndedBy::Never)
        }
        FaultAction::DropFeed { rate } => (format!("drop feed {rate}"), EndedBy::Heal),
        FaultAction::DelayApply { ms } => (format!("delay apply {ms} ms"), EndedBy::Heal),
        FaultAction::Snapshot { target } => (format!("snapshot {target}"), EndedBy::After(0.0)),
        FaultAction::StepClock { target, by_ms } => (
            format!("clock of {target} steps {by_ms:+} ms"),
            EndedBy::After(0.0),
        ),
        FaultAction::Heal
        | FaultAction::Restart { .. }
        | FaultAction::RestartAll
        | FaultAction::LatencyNormal => return None,
    };
    Some(described)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn each_fault_lasts_until_the_fault_that_undoes_it() {
        let text = r#"
name = "spans"
duration_s = 20
settle_s = 10

[topology]
regions = [{ name = "eu", voters = 3, verifiers = 1 }]

[[faults]]
at_s = 9
kind = "heal"

[[faults]]
at_s = 2
kind = "isolate"
target = "leader"

[[faults]]
at_s = 4
kind = "crash"
target = "b2"

[[faults]]
at_s = 5
kind = "step_clock"
target = "b1"
by_ms = -3000

[[faults]]
at_s = 7
kind = "restart"
target = "b2"

[[faults]]
at_s = 8
kind = "latency_spike"
max_ms = 300
"#;
        let scenario = Scenario::parse(text, Path::new("spans.toml")).unwrap();
        let spans = scenario.fault_spans();
        let spans: Vec<(&str, f64, f64)> = spans
            .iter()
            .map(|s| (s.label.as_str(), s.start_s, s.end_s))
            .collect();
        assert_eq!(
            spans,
            vec![
                ("isolate leader", 2.0, 9.0),
                ("crash b2", 4.0, 7.0),
                ("clock of b1 steps -3000 ms", 5.0, 5.0),
                ("latency up to 300 ms", 8.0, 30.0),
            ]
        );
    }
}
