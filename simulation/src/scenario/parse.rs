//! Reading scenario files: TOML parsed into a [`Scenario`] with the line
//! of any error, the checks a parsed scenario must pass (known regions and
//! hosts, faults inside the workload, rates and sizes in range), and
//! finding scenario files in a directory.

use std::path::{Path, PathBuf};

use super::{FaultAction, Scenario};

/// A scenario file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no scenario named {name:?} in {dir} (known: {known})")]
    Unknown {
        name: String,
        dir: PathBuf,
        known: String,
    },
}

impl Scenario {
    /// Parse scenario text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|error| {
            let line = error
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            ScenarioError::Parse {
                path: path.to_owned(),
                line,
                message: error.message().trim().to_owned(),
            }
        })?;
        scenario
            .validate()
            .map_err(|message| ScenarioError::Invalid {
                path: path.to_owned(),
                message,
            })?;
        Ok(scenario)
    }

    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn validate(&self) -> Result<(), String> {
        self.validate_topology()?;
        if self.duration_s == 0 {
            return Err("duration_s must be above 0".into());
        }
        self.validate_faults()
    }

    /// Regions named once and well, at least one voter, links between
    /// known regions.
    fn validate_topology(&self) -> Result<(), String> {
        if self.topology.regions.is_empty() {
            return Err("topology.regions is empty".into());
        }
        let voters: u32 = self.topology.regions.iter().map(|r| r.voters).sum();
        if voters == 0 {
            return Err("the topology has no voting broker".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for region in &self.topology.regions {
            if region.name.is_empty()
                || !region
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!(
                    "region name {:?} must be letters, digits or _",
                    region.name
                ));
            }
            if !names.insert(region.name.as_str()) {
                return Err(format!("region {:?} is named twice", region.name));
            }
        }
        if self.topology.latency_ms.min > self.topology.latency_ms.max {
            return Err("topology.latency_ms.min is above max".into());
        }
        for link in &self.topology.links {
            for name in &link.between {
                if !names.contains(name.as_str()) {
                    return Err(format!("link names unknown region {name:?}"));
                }
            }
        }
        Ok(())
    }

    /// Every fault inside the workload, naming known hosts and regions,
    /// with its numbers in range.
    fn validate_faults(&self) -> Result<(), String> {
        let names: std::collections::BTreeSet<&str> = self
            .topology
            .regions
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        let brokers: Vec<String> = self.brokers().into_iter().map(|b| b.host).collect();
        let hosts = self.all_hosts();
        let relays: Vec<String> = self.relay_hosts().into_iter().map(|r| r.0).collect();
        let known_target = |t: &str| {
            t == "leader"
                || brokers.iter().any(|b| b == t)
                || relays.iter().any(|r| r == t)
                || t.starts_with("v-")
        };
        for fault in &self.faults {
            if !(0.0..=self.duration_s as f64).contains(&fault.at_s) {
                return Err(format!(
                    "fault at {} s is outside the workload's {} s",
                    fault.at_s, self.duration_s
                ));
            }
            let problem = match &fault.action {
                FaultAction::Isolate { target }
                | FaultAction::Crash { target }
                | FaultAction::Restart { target }
                | FaultAction::Snapshot { target }
                | FaultAction::StepClock { target, .. }
                    if !known_target(target)
                        || (target.starts_with("v-") && !hosts.contains(target)) =>
                {
                    Some(format!("fault names unknown host {target:?}"))
                }
                FaultAction::Partition { hosts: cut } => cut
                    .iter()
                    .find(|h| !hosts.contains(h))
                    .map(|h| format!("partition names unknown host {h:?}")),
                FaultAction::CutRegion { region } if !names.contains(region.as_str()) => {
                    Some(format!("cut_region names unknown region {region:?}"))
                }
                FaultAction::SlowVerifier { host, .. } if !hosts.contains(host) => {
                    Some(format!("slow_verifier names unknown host {host:?}"))
                }
                FaultAction::Loss { rate, repair_rate }
                    if !(0.0..=1.0).contains(rate) || !(0.0..=1.0).contains(repair_rate) =>
                {
                    Some("loss rates must be between 0 and 1".into())
                }
                FaultAction::DropFeed { rate } if !(0.0..=1.0).contains(rate) => {
                    Some("drop_feed rate must be between 0 and 1".into())
                }
                FaultAction::CrashLeaderMidAppend {
                    hold_ms,
                    restart_after_ms,
                } if *hold_ms > 10_000 || *restart_after_ms > 60_000 => Some(
                    "crash_leader_mid_append: hold_ms is at most 10000, restart_after_ms at most 60000"
                        .into(),
                ),
                FaultAction::StepClock { by_ms, .. } if by_ms.unsigned_abs() > 86_400_000 => {
                    Some("step_clock: by_ms is at most a day either way".into())
                }
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(problem);
            }
        }
        Ok(())
    }
}

/// The scenarios in `dir`, by file name, sorted.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ScenarioError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Find `name` (a path, or a file stem in `dir`).
pub fn resolve(name: &str, dir: &Path) -> Result<PathBuf, ScenarioError> {
    let direct = PathBuf::from(name);
    if direct.is_file() {
        return Ok(direct);
    }
    let in_dir = dir.join(format!("{name}.toml"));
    if in_dir.is_file() {
        return Ok(in_dir);
    }
    let known = list(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(", ");
    Err(ScenarioError::Unknown {
        name: name.to_owned(),
        dir: dir.to_owned(),
        known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
name = "example"
duration_s = 10
settle_s = 10

[topology]
regions = [{ name = "eu", voters = 3, verifiers = 4 }]

[[faults]]
at_s = 3
kind = "isolate"
target = "leader"

[[faults]]
at_s = 6
kind = "heal"
"#;

    #[test]
    fn an_example_parses() {
        let scenario = Scenario::parse(EXAMPLE, Path::new("example.toml")).unwrap();
        assert_eq!(scenario.brokers().len(), 3);
        assert_eq!(scenario.faults.len(), 2);
        assert_eq!(
            scenario.faults[0].action,
            FaultAction::Isolate {
                target: "leader".into()
            }
        );
    }

    #[test]
    fn a_malformed_file_names_its_line() {
        let text = EXAMPLE.replace("kind = \"heal\"", "kind = \"explode\"");
        let error = Scenario::parse(&text, Path::new("bad.toml")).unwrap_err();
        let shown = error.to_string();
        let line = text
            .lines()
            .position(|l| l.contains("explode"))
            .map(|n| n + 1)
            .unwrap();
        // The error points at the table holding the bad value, which ends
        // on the line of `kind`; the line reported is inside that table.
        match error {
            ScenarioError::Parse { line: found, .. } => {
                assert!(
                    (line - 2..=line).contains(&found),
                    "{shown} (bad value on line {line})"
                )
            }
            other => panic!("expected a parse error, got {other}"),
        }

        let text = EXAMPLE.replace("settle_s = 10", "settle_s = \"ten\"");
        let error = Scenario::parse(&text, Path::new("bad.toml")).unwrap_err();
        assert!(error.to_string().starts_with("bad.toml:4:"), "{error}");
    }

    #[test]
    fn a_fault_outside_the_run_is_refused() {
        let text = EXAMPLE.replace("at_s = 6", "at_s = 60");
        let error = Scenario::parse(&text, Path::new("bad.toml")).unwrap_err();
        assert!(error.to_string().contains("outside"), "{error}");
    }
}
