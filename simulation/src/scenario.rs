//! Scenario files: the topology, the workload, the fault schedule and the
//! bounds the invariants use, in TOML. See `simulation/README.md` for the
//! format with an example.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One scenario, as read from its file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Simulated seconds during which the clients issue and revoke; faults
    /// are scheduled inside this window.
    pub duration_s: u64,
    /// Simulated seconds after the workload and faults stop, within which
    /// every verifier must converge on the cluster's final state.
    pub settle_s: u64,
    pub topology: Topology,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub verifier: VerifierSettings,
    #[serde(default)]
    pub bounds: Bounds,
    #[serde(default)]
    pub clocks: Vec<ClockSpec>,
    #[serde(default)]
    pub faults: Vec<Fault>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub regions: Vec<Region>,
    /// Latency of a link inside a region, and the default between regions.
    #[serde(default = "default_latency")]
    pub latency_ms: LatencyRange,
    /// Latency between two named regions.
    #[serde(default)]
    pub links: Vec<RegionLink>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub name: String,
    /// Brokers that vote.
    pub voters: u32,
    /// Brokers that join as learners: they replicate and serve the feed but
    /// do not vote.
    #[serde(default)]
    pub learners: u32,
    /// Verifiers in the region, run as tasks spread over `verifier_hosts`.
    #[serde(default)]
    pub verifiers: u32,
    #[serde(default = "one")]
    pub verifier_hosts: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LatencyRange {
    pub min: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionLink {
    pub between: [String; 2],
    pub latency_ms: u64,
}

/// What the clients do while the scenario runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Each region's client issues a credential this often.
    pub issue_every_ms: u64,
    /// Each region's client revokes one of its credentials this often.
    pub revoke_every_ms: u64,
    /// Each verifier checks a few credentials this often.
    pub verify_every_ms: u64,
    /// How long a client waits for an answer before counting the request
    /// as unknown.
    pub request_timeout_ms: u64,
    /// Lifetime of the credentials the clients refresh (the seed
    /// credential each client starts from always lives an hour). Shorter
    /// than the run, credentials expire during it and `expired_acceptance`
    /// has something to judge.
    pub credential_ttl_s: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            issue_every_ms: 250,
            revoke_every_ms: 400,
            verify_every_ms: 200,
            request_timeout_ms: 3_000,
            credential_ttl_s: 3_600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VerifierSettings {
    /// The verifiers' staleness bound.
    pub staleness_ms: u64,
    /// Accept while stale (a deliberately unsafe setting; the invariants
    /// catch it).
    pub fail_open: bool,
    /// Allowed difference between `exp`/`nbf` and cluster time, seconds
    /// (`lapse verifier --leeway`).
    pub leeway_s: u64,
}

impl Default for VerifierSettings {
    fn default() -> Self {
        Self {
            staleness_ms: 2_000,
            fail_open: false,
            leeway_s: 30,
        }
    }
}

/// Bounds the invariants use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Bounds {
    /// Added to the staleness bound when judging a late acceptance: clock
    /// skew the scenario declares acceptable.
    pub skew_allowance_ms: u64,
    /// Added as well: the time a heartbeat may spend between its read-index
    /// confirmation and its arrival (network latency and scheduling).
    pub delivery_allowance_ms: u64,
    /// The settle time of `freshness_liveness`: once this many seconds
    /// have passed since the start or since the last fault ended (a heal,
    /// a restart, a clock step), with no fault active, no verification may
    /// be refused as stale.
    pub fresh_after_s: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            skew_allowance_ms: 0,
            fresh_after_s: 5,
            delivery_allowance_ms: 500,
        }
    }
}

/// A host's clock: an offset from true time, a drift rate, and steps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClockSpec {
    /// Host names this applies to; a trailing `*` matches a prefix
    /// (`"v-eu-*"`), and `"brokers"` / `"verifiers"` match every one.
    pub hosts: Vec<String>,
    #[serde(default)]
    pub offset_ms: i64,
    #[serde(default)]
    pub drift_ppm: f64,
    #[serde(default)]
    pub steps: Vec<ClockStep>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClockStep {
    pub at_s: f64,
    pub by_ms: i64,
}

/// One scheduled fault. (Unknown fields are refused by [`FaultAction`],
/// which receives every field but `at_s`.)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fault {
    /// Simulated seconds from the start.
    pub at_s: f64,
    #[serde(flatten)]
    pub action: FaultAction,
}

/// What a fault does. `target` names a broker (`"b2"`), or `"leader"` for
/// whichever broker leads when the fault fires.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// Cut the target off from every other host.
    Isolate {
        target: String,
    },
    /// Cut the named brokers (a minority, say) off from every other host,
    /// keeping their links to each other.
    Partition {
        hosts: Vec<String>,
    },
    /// Cut every host of a region off from every host outside it.
    CutRegion {
        region: String,
    },
    /// Repair every cut link.
    Heal,
    /// Stop the target's process; its unflushed writes are lost.
    Crash {
        target: String,
    },
    /// Start a crashed broker again.
    Restart {
        target: String,
    },
    /// The leader's disk stops flushing for `hold_ms` while it keeps
    /// appending and replicating, then the leader crashes (losing the
    /// unflushed tail its followers already hold) and restarts
    /// `restart_after_ms` later.
    CrashLeaderMidAppend {
        hold_ms: u64,
        restart_after_ms: u64,
    },
    /// Crash every broker.
    CrashAll,
    /// Start every crashed broker again.
    RestartAll,
    /// Links fail at random at this rate per step, and repair at
    /// `repair_rate`, until `Heal`.
    Loss {
        rate: f64,
        repair_rate: f64,
    },
    /// Messages take up to this long, until `LatencyNormal`.
    LatencySpike {
        max_ms: u64,
    },
    LatencyNormal,
    /// The links between a verifier host and every broker take this long.
    SlowVerifier {
        host: String,
        latency_ms: u64,
    },
    /// Brokers drop this share of feed messages, until `Heal`.
    DropFeed {
        rate: f64,
    },
    /// Brokers hold each applied batch this long, until `Heal`.
    DelayApply {
        ms: u64,
    },
    /// The target builds a Raft snapshot.
    Snapshot {
        target: String,
    },
    /// The target host's wall clock jumps by `by_ms` (an NTP step; negative
    /// is backwards). Its monotonic clock does not move. `target` is a
    /// broker, `"leader"`, or a verifier host.
    StepClock {
        target: String,
        by_ms: i64,
    },
}

fn default_latency() -> LatencyRange {
    LatencyRange { min: 1, max: 5 }
}

fn one() -> u32 {
    1
}

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

    /// Every broker host name, in node-id order: voters of each region,
    /// then learners of each region.
    pub fn brokers(&self) -> Vec<BrokerSpec> {
        let mut brokers = Vec::new();
        for learner in [false, true] {
            for region in &self.topology.regions {
                let count = if learner {
                    region.learners
                } else {
                    region.voters
                };
                for _ in 0..count {
                    let id = brokers.len() as u64 + 1;
                    brokers.push(BrokerSpec {
                        id,
                        host: format!("b{id}"),
                        region: region.name.clone(),
                        learner,
                    });
                }
            }
        }
        brokers
    }

    /// Every verifier host and the verifiers it runs.
    pub fn verifier_hosts(&self) -> Vec<VerifierHostSpec> {
        let mut hosts = Vec::new();
        for region in &self.topology.regions {
            let per_host = region.verifier_hosts.max(1);
            for h in 0..per_host {
                let count =
                    region.verifiers / per_host + u32::from(h < region.verifiers % per_host);
                if count > 0 {
                    hosts.push(VerifierHostSpec {
                        host: format!("v-{}-{h}", region.name),
                        region: region.name.clone(),
                        verifiers: count,
                    });
                }
            }
        }
        hosts
    }

    /// Every host name in the run.
    pub fn all_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.brokers().into_iter().map(|b| b.host).collect();
        hosts.extend(self.verifier_hosts().into_iter().map(|v| v.host));
        hosts.extend(self.topology.regions.iter().map(|r| client_host(&r.name)));
        hosts
    }

    fn validate(&self) -> Result<(), String> {
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
        if self.duration_s == 0 {
            return Err("duration_s must be above 0".into());
        }
        let brokers: Vec<String> = self.brokers().into_iter().map(|b| b.host).collect();
        let hosts = self.all_hosts();
        let known_target =
            |t: &str| t == "leader" || brokers.iter().any(|b| b == t) || t.starts_with("v-");
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

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerSpec {
    pub id: u64,
    pub host: String,
    pub region: String,
    pub learner: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifierHostSpec {
    pub host: String,
    pub region: String,
    pub verifiers: u32,
}

/// The client host of a region.
pub fn client_host(region: &str) -> String {
    format!("c-{region}")
}

/// Whether `pattern` (a host name, a `prefix*`, `brokers` or `verifiers`)
/// names `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern {
        "brokers" => host.starts_with('b'),
        "verifiers" => host.starts_with("v-"),
        _ => match pattern.strip_suffix('*') {
            Some(prefix) => host.starts_with(prefix),
            None => pattern == host,
        },
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
