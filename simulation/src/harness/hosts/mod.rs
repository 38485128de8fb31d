//! The hosts of a run and the registry of what runs on them. A broker host
//! ([`broker`]) runs one `Broker`; a verifier host ([`verifier`]) runs many
//! `Verifier`s over shared channels; a client host ([`client`]) issues and
//! revokes for its region. The registry holds the handles of the running
//! brokers and verifiers, each host's incarnation count, and the clock
//! steps faults made, behind one lock taken only by the methods here.

pub(super) mod broker;
pub(super) mod client;
pub(super) mod relay;
pub(super) mod verifier;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lapse_broker::replica_check::ReplicaCheck;
use lapse_storage::{LedgerView, Raft};
use lapse_verifier::Verifier;
use openraft::async_runtime::WatchReceiver;

use crate::clock::{HostClock, LateSteps, SimClock};
use crate::invariants::convergence::VerifierEnd;
use crate::net::BROKER_PORT;
use crate::scenario::{BrokerSpec, ClockSpec};

/// A running broker, as the oracle and the faults see it.
pub(super) struct BrokerHandle {
    pub view: LedgerView,
    pub raft: Raft,
    pub replicas: Arc<ReplicaCheck>,
}

/// A running verifier.
struct VerifierHandle {
    verifier: Verifier,
    region: String,
    /// The highest epoch it applied.
    last_epoch: u64,
    /// The epoch it applied last, or after its state received was dropped
    /// back to the vouched one (a relay changed the feed), that epoch.
    applied: u64,
    /// Its count of such drops when last looked at.
    drops_seen: u64,
    /// When it started, holding nothing: revocations first applied before
    /// then reach it in its first snapshot and are not propagation samples
    /// (as in the brokers' own measurement).
    started_ms: f64,
    /// Whether it was fresh when last looked at, for the trace.
    fresh: Option<bool>,
}

/// A verifier's epoch moved: what it held before, and what the samples of
/// the move need.
pub(super) struct EpochMove {
    /// The highest epoch it held before.
    pub previous: u64,
    /// The lowest epoch it may apply now: the last it applied, or the
    /// vouched epoch its state received fell back to since.
    pub floor: u64,
    /// Set when its state received fell back to the vouched one since it
    /// last applied an epoch: that vouched epoch.
    pub dropped_to: Option<u64>,
    pub started_ms: f64,
    pub region: String,
}

#[derive(Default)]
struct Registry {
    brokers: BTreeMap<u64, BrokerHandle>,
    verifiers: BTreeMap<String, VerifierHandle>,
    incarnations: BTreeMap<String, u64>,
    /// Wall-clock steps made by `step_clock` faults, per host.
    late_steps: BTreeMap<String, LateSteps>,
}

#[derive(Default)]
pub(super) struct Hosts {
    registry: Mutex<Registry>,
    /// Set once the first region's client has set the tenant's policy.
    policy_ready: AtomicBool,
}

impl Hosts {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().expect("registry lock")
    }

    /// Count one more start of `host` and return the count.
    pub fn next_incarnation(&self, host: &str) -> u64 {
        let mut registry = self.registry();
        let n = registry.incarnations.entry(host.to_owned()).or_default();
        *n += 1;
        *n
    }

    /// The clock of `host`: its scenario clock and the steps faults make.
    pub fn clock(&self, host: &str, specs: &[ClockSpec]) -> SimClock {
        let late_steps = self
            .registry()
            .late_steps
            .entry(host.to_owned())
            .or_default()
            .clone();
        SimClock {
            host: Arc::new(HostClock::for_host(host, specs)),
            late_steps,
        }
    }

    /// Step the wall clock of `host` by `by_ms` at true `at_ms`.
    pub fn step_clock(&self, host: &str, at_ms: f64, by_ms: i64) {
        self.registry()
            .late_steps
            .entry(host.to_owned())
            .or_default()
            .lock()
            .expect("clock lock")
            .push((at_ms, by_ms));
    }

    pub fn policy_ready(&self) -> bool {
        self.policy_ready.load(Ordering::SeqCst)
    }

    pub fn set_policy_ready(&self) {
        self.policy_ready.store(true, Ordering::SeqCst);
    }

    pub fn broker_started(&self, id: u64, handle: BrokerHandle) {
        self.registry().brokers.insert(id, handle);
    }

    pub fn broker_stopped(&self, id: u64) {
        self.registry().brokers.remove(&id);
    }

    /// `look` at every running broker, in id order.
    pub fn with_brokers<R>(&self, look: impl FnOnce(&BTreeMap<u64, BrokerHandle>) -> R) -> R {
        look(&self.registry().brokers)
    }

    /// The broker that leads in the highest term any running broker knows.
    pub fn current_leader(&self) -> Option<u64> {
        self.registry()
            .brokers
            .values()
            .map(|b| b.raft.metrics().borrow_watched().clone())
            .filter_map(|m| m.current_leader.map(|l| (m.current_term, l)))
            .max()
            .map(|(_, leader)| leader)
    }

    pub fn verifier_started(&self, id: String, region: String, verifier: Verifier, at_ms: f64) {
        self.registry().verifiers.insert(
            id,
            VerifierHandle {
                verifier,
                region,
                last_epoch: 0,
                applied: 0,
                drops_seen: 0,
                started_ms: at_ms,
                fresh: None,
            },
        );
    }

    /// Verifier `id` applied `epoch`; `None` if it is not known.
    pub fn verifier_epoch(&self, id: &str, epoch: u64) -> Option<EpochMove> {
        let mut registry = self.registry();
        let handle = registry.verifiers.get_mut(id)?;
        let status = handle.verifier.status();
        let mut dropped_to = None;
        if status.unvouched_drops > handle.drops_seen {
            handle.drops_seen = status.unvouched_drops;
            handle.applied = status.vouched_epoch.unwrap_or(0);
            dropped_to = Some(handle.applied);
        }
        let floor = std::mem::replace(&mut handle.applied, epoch);
        let previous = handle.last_epoch;
        handle.last_epoch = handle.last_epoch.max(epoch);
        Some(EpochMove {
            previous,
            floor,
            dropped_to,
            started_ms: handle.started_ms,
            region: handle.region.clone(),
        })
    }

    /// Remember whether verifier `id` is fresh; what it was last time.
    pub fn verifier_fresh(&self, id: &str, fresh: bool) -> Option<bool> {
        self.registry()
            .verifiers
            .get_mut(id)
            .and_then(|h| h.fresh.replace(fresh))
    }

    /// The state of every verifier on `host`, as each sees itself now.
    pub fn verifier_ends(&self, host: &str) -> Vec<VerifierEnd> {
        let prefix = format!("{host}/");
        self.registry()
            .verifiers
            .iter()
            .filter(|(id, _)| id.starts_with(&prefix))
            .map(|(id, v)| {
                let status = v.verifier.status();
                VerifierEnd {
                    id: id.clone(),
                    epoch: status.epoch,
                    stale: !status.fresh,
                }
            })
            .collect()
    }
}

/// Where a broker host listens.
pub(super) fn broker_address(host: &str) -> String {
    format!("{host}:{BROKER_PORT}")
}

/// Brokers in the order a host of `region` prefers them: its own region's
/// first.
pub(super) fn broker_order(brokers: &[BrokerSpec], region: &str) -> Vec<String> {
    let mut ordered: Vec<&BrokerSpec> = brokers.iter().collect();
    ordered.sort_by_key(|b| (b.region != region, b.id));
    ordered
        .into_iter()
        .map(|b| broker_address(&b.host))
        .collect()
}

/// The id of a broker host (`b3` is 3).
pub(super) fn broker_id_of(host: &str) -> Option<u64> {
    host.strip_prefix('b').and_then(|n| n.parse().ok())
}
