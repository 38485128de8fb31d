//! Scenarios: the topology, the workload, the fault schedule and the
//! bounds the invariants use, as the types a TOML scenario file is read
//! into, and the hosts a topology names. Reading and validating a file is
//! in `parse` (see `simulation/README.md` for the format with an
//! example); the fault schedule as spans of time is in `timeline`.

mod parse;
mod timeline;

use serde::{Deserialize, Serialize};

pub use parse::{ScenarioError, list, resolve};
pub use timeline::FaultSpan;

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
    /// A feed relay in the region, which its verifiers follow before any
    /// broker, and what it does to the feed on the way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayMode>,
}

/// What a region's relay does to the feed it passes on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RelayMode {
    /// Passes it on unchanged.
    Honest,
    /// Lapse's own relay tier (`lapse verifier --relay`): a verifier that
    /// follows the brokers, checks what it applies, serves its feed to the
    /// region's verifiers and reports their acks upstream.
    Tier,
    /// Strips every revocation from deltas, keeping their epochs, and
    /// passes heartbeats on unchanged: a hostile hop that verifiers must
    /// catch by the broker's signed digest.
    DropRevocations,
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

impl Scenario {
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

    /// The relay hosts: (host, region, mode).
    pub fn relay_hosts(&self) -> Vec<(String, String, RelayMode)> {
        self.topology
            .regions
            .iter()
            .filter_map(|r| {
                r.relay
                    .map(|mode| (relay_host(&r.name), r.name.clone(), mode))
            })
            .collect()
    }

    /// Every host name in the run.
    pub fn all_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.brokers().into_iter().map(|b| b.host).collect();
        hosts.extend(self.verifier_hosts().into_iter().map(|v| v.host));
        hosts.extend(self.relay_hosts().into_iter().map(|(host, _, _)| host));
        hosts.extend(self.topology.regions.iter().map(|r| client_host(&r.name)));
        hosts
    }

    /// Every host of `region`: its brokers, verifier hosts and client.
    pub fn hosts_of_region(&self, region: &str) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .brokers()
            .into_iter()
            .filter(|b| b.region == region)
            .map(|b| b.host)
            .collect();
        hosts.extend(
            self.verifier_hosts()
                .into_iter()
                .filter(|v| v.region == region)
                .map(|v| v.host),
        );
        hosts.extend(
            self.relay_hosts()
                .into_iter()
                .filter(|(_, r, _)| r == region)
                .map(|(host, _, _)| host),
        );
        hosts.push(client_host(region));
        hosts
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

/// The relay host of a region.
pub fn relay_host(region: &str) -> String {
    format!("r-{region}")
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
