//! Swarm mode: the whole scenario (topology, clocks, faults) drawn from the
//! seed, so a sweep of seeds explores combinations no file names.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::scenario::{
    Bounds, ClockSpec, Fault, FaultAction, LatencyRange, Region, RegionLink, Scenario, Topology,
    VerifierSettings, Workload,
};

/// The scenario seed `seed` stands for. The run itself uses the same seed.
pub fn generate(seed: u64) -> Scenario {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5357_4152_4d00_0000);
    let regions = draw_regions(&mut rng);
    let duration_s = rng.gen_range(15..=30u64);
    let links = draw_links(&mut rng, &regions);
    // The freshness rule: the heartbeat interval, the confirmation's round
    // trips (to the leader and the leader's quorum, about five one-way
    // trips) and the Raft heartbeat the leader waits before a no-op entry
    // fit in the staleness bound. Draw bounds that keep it.
    let longest = links.iter().map(|l| l.latency_ms).max().unwrap_or(20);
    let least = (6 * longest + 600).max(1_000);
    let staleness_ms = rng.gen_range(least..=least.max(3_000));
    let mut scenario = Scenario {
        name: format!("swarm-{seed}"),
        description: "drawn from the seed".into(),
        duration_s,
        settle_s: 15,
        topology: Topology {
            regions,
            latency_ms: LatencyRange {
                min: 1,
                max: rng.gen_range(2..=20),
            },
            links,
        },
        workload: Workload::default(),
        verifier: VerifierSettings {
            staleness_ms,
            fail_open: false,
            ..VerifierSettings::default()
        },
        bounds: Bounds {
            skew_allowance_ms: 0,
            delivery_allowance_ms: 1_000 + 2 * longest,
            // Long links slow recovery after a fault: elections, catching
            // up and moving verifiers each take a few round trips.
            fresh_after_s: 5 + longest / 50,
        },
        clocks: vec![],
        faults: vec![],
    };
    draw_clocks(&mut rng, &mut scenario);
    draw_faults(&mut rng, &mut scenario);
    scenario
}

const REGION_NAMES: [&str; 3] = ["eu", "us", "ap"];

/// One to three regions with their verifiers, three or five voters, and
/// sometimes a learner in the last region.
fn draw_regions(rng: &mut StdRng) -> Vec<Region> {
    let names = REGION_NAMES;
    let region_count = rng.gen_range(1..=3usize);
    let voters_total = *[3u32, 5].choose(rng).expect("non-empty");
    let mut regions: Vec<Region> = names[..region_count]
        .iter()
        .map(|name| Region {
            name: (*name).into(),
            voters: 0,
            learners: 0,
            verifiers: rng.gen_range(2..=8),
            verifier_hosts: rng.gen_range(1..=2),
            relay: None,
        })
        .collect();
    // Voters round-robin over the regions (a quorum then spans regions
    // whenever there are two or more), or all but one in the first.
    let spread = rng.gen_bool(0.7);
    for n in 0..voters_total as usize {
        let region = if spread || n + 1 == voters_total as usize {
            n % region_count
        } else {
            0
        };
        regions[region].voters += 1;
    }
    if rng.gen_bool(0.3) {
        let last = regions.len() - 1;
        regions[last].learners = 1;
    }
    regions
}

/// Half the draws put the regions far apart (up to 250 ms one way).
fn draw_links(rng: &mut StdRng, regions: &[Region]) -> Vec<RegionLink> {
    let names = REGION_NAMES;
    let region_count = regions.len();
    let mut links = Vec::new();
    if region_count > 1 && rng.gen_bool(0.5) {
        for a in 0..region_count {
            for b in a + 1..region_count {
                links.push(RegionLink {
                    between: [names[a].into(), names[b].into()],
                    latency_ms: rng.gen_range(20..=250),
                });
            }
        }
    }
    links
}

/// Some hosts get a clock offset and drift.
fn draw_clocks(rng: &mut StdRng, scenario: &mut Scenario) {
    for host in &scenario.all_hosts() {
        if rng.gen_bool(0.3) {
            scenario.clocks.push(ClockSpec {
                hosts: vec![host.clone()],
                offset_ms: rng.gen_range(-120_000..=120_000),
                drift_ppm: rng.gen_range(-500.0..=500.0),
                steps: vec![],
            });
        }
    }
}

/// One to four faults in the first two thirds of the workload; everything
/// heals and restarts before it ends.
fn draw_faults(rng: &mut StdRng, scenario: &mut Scenario) {
    let duration_s = scenario.duration_s;
    let brokers: Vec<String> = scenario.brokers().into_iter().map(|b| b.host).collect();
    let window = duration_s as f64 * 2.0 / 3.0;
    let mut crashed: Vec<String> = Vec::new();
    for _ in 0..rng.gen_range(1..=4) {
        let at_s = (rng.gen_range(2.0..window) * 10.0f64).round() / 10.0;
        let target = if rng.gen_bool(0.5) {
            "leader".to_owned()
        } else {
            brokers[rng.gen_range(0..brokers.len())].clone()
        };
        let action = match rng.gen_range(0..10) {
            0 => FaultAction::Isolate { target },
            1 => {
                let region = scenario.topology.regions
                    [rng.gen_range(0..scenario.topology.regions.len())]
                .name
                .clone();
                FaultAction::CutRegion { region }
            }
            2 if target != "leader" && !crashed.contains(&target) => {
                crashed.push(target.clone());
                FaultAction::Crash { target }
            }
            3 => FaultAction::LatencySpike {
                max_ms: rng.gen_range(50..=400),
            },
            4 => FaultAction::DropFeed {
                rate: rng.gen_range(0.01..0.2),
            },
            5 => FaultAction::DelayApply {
                ms: rng.gen_range(10..=200),
            },
            6 => FaultAction::Snapshot { target },
            9 => FaultAction::StepClock {
                target,
                by_ms: rng.gen_range(-120_000..=120_000),
            },
            7 => FaultAction::CrashLeaderMidAppend {
                hold_ms: rng.gen_range(20..=300),
                restart_after_ms: rng.gen_range(0..=500),
            },
            _ => FaultAction::Loss {
                rate: rng.gen_range(0.001..0.01),
                repair_rate: 0.2,
            },
        };
        scenario.faults.push(Fault { at_s, action });
    }
    let heal_at = (window + 1.0).min(duration_s as f64);
    scenario.faults.push(Fault {
        at_s: heal_at,
        action: FaultAction::Heal,
    });
    scenario.faults.push(Fault {
        at_s: heal_at,
        action: FaultAction::LatencyNormal,
    });
    scenario.faults.push(Fault {
        at_s: heal_at,
        action: FaultAction::RestartAll,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_draws_the_same_valid_scenario() {
        for seed in 0..50 {
            let a = generate(seed);
            assert_eq!(a, generate(seed));
            let text = toml::to_string(&a).expect("serialises");
            Scenario::parse(&text, std::path::Path::new("swarm.toml"))
                .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        }
    }
}
