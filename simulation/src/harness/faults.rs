//! Faults: the schedule applied to the simulation between steps (cuts,
//! crashes, restarts, latency, link loss, clock steps), the later steps of
//! faults that unfold over time, and the fault points brokers consult
//! (dropped feed messages, held applies, forced snapshots). Their state,
//! and which faults are in force for `freshness_liveness`, sit behind one
//! lock taken only in this module.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lapse_broker::FaultPoints;
use rand::Rng;
use rand::rngs::StdRng;

use super::hosts::broker_id_of;
use super::{Variant, World};
use crate::scenario::FaultAction;

#[derive(Debug, Default)]
struct FaultState {
    drop_feed: f64,
    delay_apply_ms: u64,
    snapshot: BTreeSet<u64>,
    /// Faults in force now (cuts, loss, latency, ...).
    active: BTreeSet<String>,
    /// Brokers crashed and not yet running again.
    down: BTreeSet<u64>,
    /// True ms when the last fault began or ended.
    last_change_ms: f64,
}

/// The fault state of a run.
#[derive(Debug, Default)]
pub(super) struct Faults {
    state: Mutex<FaultState>,
}

impl FaultState {
    /// Take in a fault applied at `now_ms`: the fault points' settings,
    /// and which faults are in force, for `freshness_liveness`.
    /// `snapshot` is the broker a `snapshot` fault resolved to.
    fn take_in(&mut self, action: &FaultAction, snapshot: Option<u64>, now_ms: f64) {
        let active = &mut self.active;
        match action {
            FaultAction::Isolate { .. }
            | FaultAction::Partition { .. }
            | FaultAction::CutRegion { .. } => {
                active.insert("cut".into());
            }
            FaultAction::Loss { .. } => {
                active.insert("loss".into());
            }
            FaultAction::DropFeed { rate } => {
                self.drop_feed = *rate;
                active.insert("drop_feed".into());
            }
            FaultAction::DelayApply { ms } => {
                self.delay_apply_ms = *ms;
                active.insert("delay_apply".into());
            }
            FaultAction::Heal => {
                self.drop_feed = 0.0;
                self.delay_apply_ms = 0;
                for kind in ["cut", "loss", "drop_feed", "delay_apply"] {
                    active.remove(kind);
                }
            }
            FaultAction::LatencySpike { .. } => {
                active.insert("latency".into());
            }
            FaultAction::LatencyNormal => {
                active.remove("latency");
            }
            FaultAction::SlowVerifier { host, .. } => {
                active.insert(format!("slow {host}"));
            }
            FaultAction::CrashLeaderMidAppend { .. } => {
                // Until its deferred restart: a leader whose disk holds its
                // flushes, then a crashed one.
                active.insert("mid_append".into());
            }
            FaultAction::Snapshot { .. } => {
                self.snapshot.extend(snapshot);
            }
            // Crashes are tracked by the brokers that are down (see `crash`
            // and `Faults::broker_up`).
            FaultAction::Crash { .. }
            | FaultAction::CrashAll
            | FaultAction::Restart { .. }
            | FaultAction::RestartAll => {}
            // A clock step is not given time to settle: verifiers must stay
            // fresh through it.
            FaultAction::StepClock { .. } => return,
        }
        self.last_change_ms = now_ms;
    }
}

impl Faults {
    fn state(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().expect("fault lock")
    }

    /// Since when no fault has been in force, if none is.
    pub fn calm_since_ms(&self) -> Option<f64> {
        let state = self.state();
        (state.active.is_empty() && state.down.is_empty()).then_some(state.last_change_ms)
    }

    /// Broker `id` runs (again) from `now_ms`.
    pub fn broker_up(&self, id: u64, now_ms: f64) {
        let mut state = self.state();
        if state.down.remove(&id) {
            state.last_change_ms = now_ms;
        }
    }
}

/// The fault points of one simulated broker.
pub(super) struct BrokerFaults {
    pub world: Arc<World>,
    pub id: u64,
    pub rng: Mutex<StdRng>,
}

impl FaultPoints for BrokerFaults {
    fn drop_feed_message(&self, _verifier: &str) -> bool {
        let rate = self.world.faults.state().drop_feed;
        rate > 0.0 && self.rng.lock().expect("rng lock").gen_bool(rate)
    }

    fn apply_delay(&self) -> Option<Duration> {
        let ms = self.world.faults.state().delay_apply_ms;
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    fn restore_leadership_without_vote(&self) -> bool {
        self.world.variant == Variant::LeaderRestoreWithoutVote
    }

    fn skip_leadership_confirmation(&self) -> bool {
        self.world.variant == Variant::HeartbeatOnlyReads
    }

    fn note(&self, event: &str) {
        self.world.note(&format!("b{}", self.id), event);
    }

    fn raw_wall_clock(&self) -> bool {
        self.world.variant == Variant::WallClockTime
    }

    fn forget_ancestors(&self) -> bool {
        self.world.variant == Variant::ExchangeForgetsAncestors
    }

    fn force_snapshot(&self) -> bool {
        self.world.faults.state().snapshot.remove(&self.id)
    }
}

/// A later step of a fault that unfolds over time.
#[derive(Debug, Clone)]
pub(super) enum DeferredStep {
    /// Crash a broker whose flushes are held, losing its unflushed tail.
    CrashHeld(String),
    Restart(String),
}

/// Steps due at a simulated time, in the order they were scheduled.
#[derive(Debug, Default)]
pub(super) struct Deferred {
    steps: Vec<(f64, DeferredStep)>,
}

impl Deferred {
    fn at(&mut self, at_ms: f64, step: DeferredStep) {
        self.steps.push((at_ms, step));
    }

    pub fn due(&mut self, now_ms: f64) -> Vec<DeferredStep> {
        let (due, later) = std::mem::take(&mut self.steps)
            .into_iter()
            .partition(|(at, _)| *at <= now_ms);
        self.steps = later;
        due.into_iter().map(|(_, step)| step).collect()
    }
}

/// Take a deferred step now.
pub(super) fn run_deferred(sim: &mut turmoil::Sim<'_>, world: &World, step: DeferredStep) {
    let (described, ended) = match step {
        DeferredStep::CrashHeld(host) => {
            let lost = broker_id_of(&host)
                .and_then(|id| world.storage.get(&id))
                .map(|s| s.log.unflushed_writes())
                .unwrap_or(0);
            crash(sim, world, &host);
            (
                format!("crash {host}, losing {lost} unflushed log writes"),
                None,
            )
        }
        DeferredStep::Restart(host) => {
            restart(sim, &host);
            (format!("restart {host}"), Some("mid_append"))
        }
    };
    let now_ms = world.observer.now_ms();
    {
        let mut state = world.faults.state();
        if let Some(kind) = ended {
            state.active.remove(kind);
        }
        state.last_change_ms = now_ms;
    }
    world.note("fault", described);
}

/// Apply one scheduled fault at `now_ms`.
pub(super) fn apply(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    action: &FaultAction,
    deferred: &mut Deferred,
    now_ms: f64,
) {
    world.observer.count(|c| c.faults += 1);
    // The broker a `snapshot` fault names, once resolved.
    let mut snapshot = None;
    let described = match action {
        FaultAction::Isolate { .. }
        | FaultAction::Partition { .. }
        | FaultAction::CutRegion { .. }
        | FaultAction::Heal
        | FaultAction::Loss { .. }
        | FaultAction::LatencySpike { .. }
        | FaultAction::LatencyNormal
        | FaultAction::SlowVerifier { .. } => links(sim, world, action),
        FaultAction::Crash { .. }
        | FaultAction::Restart { .. }
        | FaultAction::CrashLeaderMidAppend { .. }
        | FaultAction::CrashAll
        | FaultAction::RestartAll => processes(sim, world, action, deferred, now_ms),
        FaultAction::DropFeed { .. }
        | FaultAction::DelayApply { .. }
        | FaultAction::Snapshot { .. }
        | FaultAction::StepClock { .. } => fault_points(world, action, now_ms, &mut snapshot),
    };
    world.faults.state().take_in(action, snapshot, now_ms);
    world.note("fault", described);
}

/// Faults of the network: cuts, heals, loss and latency.
fn links(sim: &mut turmoil::Sim<'_>, world: &World, action: &FaultAction) -> String {
    let all = world.scenario.all_hosts();
    let cut = |sim: &turmoil::Sim<'_>, inside: &[String]| {
        for a in inside {
            for b in all.iter().filter(|h| !inside.contains(h)) {
                sim.partition(a.as_str(), b.as_str());
            }
        }
    };
    match action {
        FaultAction::Isolate { target } => match resolve_target(world, target) {
            Some(host) => {
                cut(sim, std::slice::from_ref(&host));
                format!("isolate {host}")
            }
            None => "isolate: no leader known; nothing done".into(),
        },
        FaultAction::Partition { hosts } => {
            cut(sim, hosts);
            format!("partition {hosts:?} from the rest")
        }
        FaultAction::CutRegion { region } => {
            cut(sim, &world.scenario.hosts_of_region(region));
            format!("cut region {region} off")
        }
        FaultAction::Heal => {
            for (n, a) in all.iter().enumerate() {
                for b in &all[n + 1..] {
                    sim.repair(a.as_str(), b.as_str());
                }
            }
            sim.set_fail_rate(0.0);
            "heal every link".into()
        }
        FaultAction::Loss { rate, .. } => {
            sim.set_fail_rate(*rate);
            format!("links fail at rate {rate}")
        }
        FaultAction::LatencySpike { max_ms } => {
            sim.set_max_message_latency(Duration::from_millis(*max_ms));
            format!("latency up to {max_ms} ms")
        }
        FaultAction::LatencyNormal => {
            sim.set_max_message_latency(Duration::from_millis(
                world.scenario.topology.latency_ms.max,
            ));
            "latency back to normal".into()
        }
        FaultAction::SlowVerifier { host, latency_ms } => {
            for spec in world.scenario.brokers() {
                sim.set_link_latency(
                    host.as_str(),
                    spec.host.as_str(),
                    Duration::from_millis(*latency_ms),
                );
            }
            format!("links of {host} take {latency_ms} ms")
        }
        _ => unreachable!("not a fault of the links: {action:?}"),
    }
}

/// Faults of broker processes: crashes and restarts.
fn processes(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    action: &FaultAction,
    deferred: &mut Deferred,
    now_ms: f64,
) -> String {
    match action {
        FaultAction::Crash { target } => match resolve_target(world, target) {
            Some(host) => {
                crash(sim, world, &host);
                format!("crash {host}")
            }
            None => "crash: no leader known; nothing done".into(),
        },
        FaultAction::Restart { target } => match resolve_target(world, target) {
            Some(host) => {
                restart(sim, &host);
                format!("restart {host}")
            }
            None => "restart: no leader known; nothing done".into(),
        },
        FaultAction::CrashLeaderMidAppend {
            hold_ms,
            restart_after_ms,
        } => match world.hosts.current_leader() {
            Some(id) => {
                let host = format!("b{id}");
                if let Some(storage) = world.storage.get(&id) {
                    storage.log.hold_flushes();
                }
                let crash_at = now_ms + *hold_ms as f64;
                deferred.at(crash_at, DeferredStep::CrashHeld(host.clone()));
                deferred.at(
                    crash_at + *restart_after_ms as f64,
                    DeferredStep::Restart(host.clone()),
                );
                format!(
                    "{host} stops flushing its log; crash in {hold_ms} ms, restart {restart_after_ms} ms after"
                )
            }
            None => "crash_leader_mid_append: no leader known; nothing done".into(),
        },
        FaultAction::CrashAll => {
            for spec in world.scenario.brokers() {
                crash(sim, world, &spec.host);
            }
            "crash every broker".into()
        }
        FaultAction::RestartAll => {
            for spec in world.scenario.brokers() {
                restart(sim, &spec.host);
            }
            "restart every broker".into()
        }
        _ => unreachable!("not a fault of processes: {action:?}"),
    }
}

/// Faults through the brokers' fault points (set by
/// [`FaultState::take_in`]; a snapshot's broker is put in `snapshot`), and
/// clock steps.
fn fault_points(
    world: &World,
    action: &FaultAction,
    now_ms: f64,
    snapshot: &mut Option<u64>,
) -> String {
    match action {
        FaultAction::DropFeed { rate } => format!("brokers drop {rate} of feed messages"),
        FaultAction::DelayApply { ms } => format!("brokers hold each applied batch {ms} ms"),
        FaultAction::Snapshot { target } => match resolve_target(world, target) {
            Some(host) => {
                *snapshot = broker_id_of(&host);
                format!("snapshot on {host}")
            }
            None => "snapshot: no leader known; nothing done".into(),
        },
        FaultAction::StepClock { target, by_ms } => {
            let host = if target.starts_with("v-") {
                Some(target.clone())
            } else {
                resolve_target(world, target)
            };
            match host {
                Some(host) => {
                    world.hosts.step_clock(&host, now_ms, *by_ms);
                    format!("the wall clock of {host} steps by {by_ms} ms")
                }
                None => "step_clock: no leader known; nothing done".into(),
            }
        }
        _ => unreachable!("not a fault point: {action:?}"),
    }
}

/// `target` as a host name: `leader` is the current leader, if any.
fn resolve_target(world: &World, target: &str) -> Option<String> {
    if target == "leader" {
        world.hosts.current_leader().map(|id| format!("b{id}"))
    } else {
        Some(target.to_owned())
    }
}

fn crash(sim: &mut turmoil::Sim<'_>, world: &World, host: &str) {
    if !sim.is_host_running(host) {
        return;
    }
    sim.crash(host);
    if let Some(id) = broker_id_of(host) {
        world.faults.state().down.insert(id);
        world.hosts.broker_stopped(id);
        if let Some(storage) = world.storage.get(&id) {
            storage.crash();
        }
    }
}

fn restart(sim: &mut turmoil::Sim<'_>, host: &str) {
    if !sim.is_host_running(host) {
        sim.bounce(host);
    }
}
