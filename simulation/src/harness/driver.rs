//! The driver: builds the simulation for a scenario and a seed (hosts,
//! links), then steps it to the end, applying scheduled faults and their
//! later steps, sampling the brokers every [`SAMPLE_EVERY_MS`], and running
//! the final checks once the settle time is over.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use lapse_broker::MemoryStorage;
use lapse_storage::FlushPolicy;

use super::faults::{self, Deferred};
use super::hosts::{broker, broker_address, broker_order, client, relay, verifier};
use super::{RunOutcome, Variant, World, oracle};
use crate::clock::EPOCH_MS;
use crate::invariants::replicas_agree::ReplicaDigests;
use crate::scenario::{BrokerSpec, Scenario, client_host, relay_host};

/// How often the driver samples replica digests and leases.
const SAMPLE_EVERY_MS: f64 = 250.0;

/// Run `scenario` from `seed`.
pub fn run(scenario: &Scenario, seed: u64, variant: Variant) -> RunOutcome {
    let started = std::time::Instant::now();
    let policy = match variant {
        Variant::AckBeforeFlush => FlushPolicy::AckWithoutFlush,
        _ => FlushPolicy::FlushBeforeAck,
    };
    let world = Arc::new(World {
        scenario: scenario.clone(),
        seed,
        variant,
        storage: scenario
            .brokers()
            .iter()
            .map(|b| (b.id, MemoryStorage::new(policy)))
            .collect(),
        observer: Default::default(),
        oracle: Default::default(),
        faults: Default::default(),
        hosts: Default::default(),
        pki: super::pki::SimPki::new(scenario.brokers().iter().map(|b| b.id)),
    });
    note_clocks(&world);
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let mut sim = build(&world, data_dir.path());
    let error = step_to_end(&mut sim, &world);
    let simulated_s = sim.elapsed().as_secs_f64();
    world.note("check", format_args!("{:?}", world.observer.counts()));
    drop(sim);
    let recorded = world.observer.take();
    RunOutcome {
        scenario: scenario.name.clone(),
        seed,
        trace: recorded.trace,
        violations: recorded.violations,
        propagation_ms: recorded.propagation.iter().map(|s| s.delay_ms).collect(),
        propagation: recorded.propagation,
        fault_spans: scenario.fault_spans(),
        simulated_s,
        wall_s: started.elapsed().as_secs_f64(),
        counts: recorded.counts,
        error,
    }
}

/// Note the clocks the run starts with, so a trace can be read on its own
/// (a swarm scenario is drawn from the seed, not written down).
fn note_clocks(world: &World) {
    for spec in &world.scenario.clocks {
        world.note(
            "clock",
            format_args!(
                "{:?}: offset {} ms, drift {} ppm, steps {:?}",
                spec.hosts,
                spec.offset_ms,
                spec.drift_ppm,
                spec.steps
                    .iter()
                    .map(|s| (s.at_s, s.by_ms))
                    .collect::<Vec<_>>()
            ),
        );
    }
}

/// Simulated time from the start to the end of the settle time.
fn total(scenario: &Scenario) -> Duration {
    Duration::from_secs(scenario.duration_s + scenario.settle_s)
}

/// The simulation: every host of the scenario and its links.
fn build<'a>(world: &Arc<World>, data_dir: &Path) -> turmoil::Sim<'a> {
    let scenario = &world.scenario;
    let brokers = scenario.brokers();
    let total = total(scenario);
    let latency = scenario.topology.latency_ms;
    let mut sim = turmoil::Builder::new()
        .rng_seed(world.seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .tcp_capacity(65536)
        .simulation_duration(total + Duration::from_secs(60))
        .min_message_latency(Duration::from_millis(latency.min))
        .max_message_latency(Duration::from_millis(latency.max))
        .repair_rate(0.2)
        .build();
    for spec in &brokers {
        let world = world.clone();
        let spec = spec.clone();
        let members: Vec<BrokerSpec> = brokers.iter().filter(|b| !b.learner).cloned().collect();
        let dir = data_dir.join(&spec.host);
        sim.host(spec.host.clone(), move || {
            broker::broker_host(world.clone(), spec.clone(), members.clone(), dir.clone())
        });
    }
    for (host, region, mode) in scenario.relay_hosts() {
        let world = world.clone();
        let ordered = broker_order(&brokers, &region);
        sim.host(host.clone(), move || {
            relay::relay_host(world.clone(), host.clone(), mode, ordered.clone())
        });
    }
    for host in scenario.verifier_hosts() {
        let world = world.clone();
        let mut ordered = broker_order(&brokers, &host.region);
        // A region's relay, if it has one, comes before every broker.
        if scenario
            .relay_hosts()
            .iter()
            .any(|(_, region, _)| *region == host.region)
        {
            ordered.insert(0, broker_address(&relay_host(&host.region)));
        }
        sim.host(host.host.clone(), move || {
            verifier::verifier_host(
                world.clone(),
                host.host.clone(),
                host.region.clone(),
                host.verifiers,
                ordered.clone(),
            )
        });
    }
    for (n, region) in scenario.topology.regions.iter().enumerate() {
        let world = world.clone();
        let ordered = broker_order(&brokers, &region.name);
        let region = region.name.clone();
        sim.host(client_host(&region), move || {
            client::run_client(world.clone(), n == 0, region.clone(), ordered.clone())
        });
    }
    sim.client("end", async move {
        tokio::time::sleep(total).await;
        Ok(())
    });
    for link in &scenario.topology.links {
        let a = scenario.hosts_of_region(&link.between[0]);
        let b = scenario.hosts_of_region(&link.between[1]);
        for x in &a {
            for y in &b {
                sim.set_link_latency(
                    x.as_str(),
                    y.as_str(),
                    Duration::from_millis(link.latency_ms),
                );
            }
        }
    }
    sim
}

/// Step `sim` until it ends; the error that stopped it, if any.
fn step_to_end(sim: &mut turmoil::Sim<'_>, world: &World) -> Option<String> {
    let total_ms = total(&world.scenario).as_secs_f64() * 1000.0;
    let mut schedule = world.scenario.faults.clone();
    schedule.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut schedule = schedule.into_iter().peekable();
    let mut digests = ReplicaDigests::default();
    let mut deferred = Deferred::default();
    let mut next_sample = SAMPLE_EVERY_MS;
    let mut final_checked = false;
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Some(e.to_string()),
        }
        let now_ms = sim.elapsed().as_secs_f64() * 1000.0;
        world.observer.set_driver_ms(now_ms);
        while let Some(fault) = schedule.next_if(|f| f.at_s * 1000.0 <= now_ms) {
            faults::apply(sim, world, &fault.action, &mut deferred, now_ms);
        }
        for step in deferred.due(now_ms) {
            faults::run_deferred(sim, world, step);
        }
        if now_ms >= next_sample {
            next_sample += SAMPLE_EVERY_MS;
            oracle::sample(world, &mut digests, now_ms);
        }
        if !final_checked && now_ms >= total_ms - 1.0 {
            final_checked = true;
            oracle::final_checks(world, now_ms);
        }
    }
    if !final_checked {
        oracle::final_checks(world, sim.elapsed().as_secs_f64() * 1000.0);
    }
    None
}
