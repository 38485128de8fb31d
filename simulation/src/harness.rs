//! One run of one scenario from one seed: real brokers and verifiers on
//! turmoil's network, clients that issue and revoke, the fault schedule
//! applied between simulation steps, and the invariants checked as the run
//! goes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use lapse_broker::replica_check::ReplicaCheck;
use lapse_broker::{Broker, BrokerConfig, Env, FaultPoints, Member, MemoryStorage, Storage};
use lapse_ledger::LedgerState;
use lapse_storage::{FlushPolicy, LedgerView, Raft};
use lapse_verifier::{Expect, FollowConfig, FollowStats, OnApply, Verifier, VerifyConfig};
use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::cluster::{self as pb, revocation::Target};
use lapse_wire::issuer::issue_request::Attestation;
use lapse_wire::issuer::issuer_client::IssuerClient;
use lapse_wire::issuer::{IssueRequest, RefreshRequest};
use openraft::async_runtime::WatchReceiver;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::clock::{EPOCH_MS, HostClock, LateSteps, SimClock, elapsed_ms};
use crate::invariants::acked_revocations::{self, Outcome};
use crate::invariants::convergence::{self, VerifierEnd};
use crate::invariants::disjoint_leases::LeaseBook;
use crate::invariants::replicas_agree::ReplicaDigests;
use crate::invariants::valid_acceptance::{self, Life};
use crate::invariants::{
    Violation, committed_keys, epochs_grow, expired_acceptance, freshness_liveness,
    revoked_acceptance,
};
use crate::net::{self, BROKER_PORT, SeededEntropy, SimDialer};
use crate::scenario::{BrokerSpec, FaultAction, Scenario, client_host};

const ADMIN_TOKEN: &str = "simulation-admin-token";
const CLUSTER_SECRET: &str = "simulation-cluster-secret-0123456789";
const TENANT: &str = "sim";
/// How often the harness samples replica digests and leases.
const SAMPLE_EVERY_MS: f64 = 250.0;
/// Verifiers report their final state this long before the end.
const REPORT_BEFORE_END_MS: u64 = 20;

/// A deliberately broken build, to show the invariants catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// Lapse as it ships.
    #[default]
    Correct,
    /// Verifiers accept credentials while stale (ignoring the bound).
    VerifierIgnoresStaleness,
    /// The Raft log store acknowledges appends before flushing them.
    AckBeforeFlush,
    /// Brokers run openraft with leader restore on: a restarted leader
    /// resumes its old term without a vote, even with a shorter log.
    LeaderRestoreWithoutVote,
    /// Leaders confirm reads with Raft heartbeats only, which never answer
    /// in time when a round trip is longer than the heartbeat interval.
    HeartbeatOnlyReads,
    /// Brokers take cluster time from the raw wall clock, steps and all.
    WallClockTime,
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub scenario: String,
    pub seed: u64,
    pub trace: Vec<String>,
    pub violations: Vec<Violation>,
    /// Revocation propagation delays (first apply on a broker to apply on
    /// a verifier), ms.
    pub propagation_ms: Vec<f64>,
    pub simulated_s: f64,
    pub wall_s: f64,
    pub counts: Counts,
    /// Set when the simulation itself failed (a host's software errored).
    pub error: Option<String>,
}

impl RunOutcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.error.is_none()
    }
}

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

struct Issued {
    region: String,
    index: u64,
    token: String,
    /// True ms when the request left and when the answer came: the
    /// credential was signed in between.
    sent_ms: f64,
    issued_ms: f64,
    ttl_ms: u64,
}

struct BrokerHandle {
    view: LedgerView,
    raft: Raft,
    replicas: Arc<ReplicaCheck>,
}

struct VerifierHandle {
    verifier: Verifier,
    last_epoch: u64,
    /// When it started, holding nothing: revocations first applied before
    /// then reach it in its first snapshot and are not propagation samples
    /// (as in the brokers' own measurement).
    started_ms: f64,
    /// Whether it was fresh when last looked at, for the trace.
    fresh: Option<bool>,
}

#[derive(Default)]
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

impl FaultState {
    /// Since when no fault has been active, if none is.
    fn calm_since_ms(&self) -> Option<f64> {
        (self.active.is_empty() && self.down.is_empty()).then_some(self.last_change_ms)
    }
}

/// State shared by every host of a run and the driver. Turmoil runs every
/// host on one thread, so the locks are never contended; they are here
/// because broker code needs `Send`.
struct Shared {
    scenario: Scenario,
    seed: u64,
    variant: Variant,
    trace: Mutex<Vec<String>>,
    issued: Mutex<Vec<Issued>>,
    outcomes: Mutex<BTreeMap<u64, Outcome>>,
    /// index -> (true ms of first apply on any broker, feed epoch)
    first_applied: Mutex<BTreeMap<u64, (f64, u64)>>,
    /// feed epoch -> true ms of first apply, for propagation.
    applied_by_epoch: Mutex<BTreeMap<u64, f64>>,
    brokers: Mutex<BTreeMap<u64, BrokerHandle>>,
    storage: BTreeMap<u64, MemoryStorage>,
    incarnations: Mutex<BTreeMap<String, u64>>,
    verifiers: Mutex<BTreeMap<String, VerifierHandle>>,
    violations: Mutex<Vec<Violation>>,
    propagation: Mutex<Vec<f64>>,
    counts: Mutex<Counts>,
    faults: Mutex<FaultState>,
    leases: Mutex<LeaseBook>,
    policy_ready: AtomicBool,
    /// The driver's simulated time, for what it notes between steps.
    driver_ms: Mutex<f64>,
    /// Each verifier's state just before the end, reported from its host
    /// (its staleness is measured on that host's clock).
    verifier_ends: Mutex<Vec<VerifierEnd>>,
    /// Wall-clock steps made by `step_clock` faults, per host.
    late_steps: Mutex<BTreeMap<String, LateSteps>>,
    /// Indices whose revocation a client attempted (noted before the
    /// request leaves, so an answer still in flight counts).
    revoke_attempted: Mutex<BTreeSet<u64>>,
}

impl Shared {
    fn note(&self, host: &str, event: impl std::fmt::Display) {
        let line = format!("{:>10.3} {host:<8} {event}", self.now_ms() / 1000.0);
        self.trace.lock().expect("trace lock").push(line);
    }

    fn violate(&self, violation: Violation) {
        self.note("check", format!("VIOLATION {violation}"));
        self.violations
            .lock()
            .expect("violations lock")
            .push(violation);
    }

    /// Simulated ms: the host's view inside a host, the driver's outside.
    fn now_ms(&self) -> f64 {
        match turmoil::sim_elapsed() {
            Some(elapsed) => elapsed.as_secs_f64() * 1000.0,
            None => *self.driver_ms.lock().expect("lock"),
        }
    }

    fn accept_bound_ms(&self) -> u64 {
        self.scenario.verifier.staleness_ms
            + self.scenario.bounds.skew_allowance_ms
            + self.scenario.bounds.delivery_allowance_ms
    }

    fn broker_address(host: &str) -> String {
        format!("{host}:{BROKER_PORT}")
    }

    fn next_incarnation(&self, host: &str) -> u64 {
        let mut incarnations = self.incarnations.lock().expect("incarnation lock");
        let n = incarnations.entry(host.to_owned()).or_default();
        *n += 1;
        *n
    }

    fn host_seed(&self, host: &str, incarnation: u64) -> u64 {
        let mut h = self.seed ^ 0x9e37_79b9_7f4a_7c15;
        for byte in host.bytes().chain(incarnation.to_le_bytes()) {
            h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    fn clock(&self, host: &str) -> SimClock {
        let late_steps = self
            .late_steps
            .lock()
            .expect("lock")
            .entry(host.to_owned())
            .or_default()
            .clone();
        SimClock {
            host: Arc::new(HostClock::for_host(host, &self.scenario.clocks)),
            late_steps,
        }
    }
}

/// The fault points of one simulated broker.
struct BrokerFaults {
    shared: Arc<Shared>,
    id: u64,
    rng: Mutex<StdRng>,
}

impl FaultPoints for BrokerFaults {
    fn drop_feed_message(&self, _verifier: &str) -> bool {
        let rate = self.shared.faults.lock().expect("fault lock").drop_feed;
        rate > 0.0 && self.rng.lock().expect("rng lock").gen_bool(rate)
    }

    fn apply_delay(&self) -> Option<Duration> {
        let ms = self
            .shared
            .faults
            .lock()
            .expect("fault lock")
            .delay_apply_ms;
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    fn restore_leadership_without_vote(&self) -> bool {
        self.shared.variant == Variant::LeaderRestoreWithoutVote
    }

    fn skip_leadership_confirmation(&self) -> bool {
        self.shared.variant == Variant::HeartbeatOnlyReads
    }

    fn note(&self, event: &str) {
        self.shared.note(&format!("b{}", self.id), event);
    }

    fn raw_wall_clock(&self) -> bool {
        self.shared.variant == Variant::WallClockTime
    }

    fn force_snapshot(&self) -> bool {
        self.shared
            .faults
            .lock()
            .expect("fault lock")
            .snapshot
            .remove(&self.id)
    }
}

/// Run `scenario` from `seed`.
pub fn run(scenario: &Scenario, seed: u64, variant: Variant) -> RunOutcome {
    let started = std::time::Instant::now();
    let brokers = scenario.brokers();
    let policy = match variant {
        Variant::AckBeforeFlush => FlushPolicy::AckWithoutFlush,
        _ => FlushPolicy::FlushBeforeAck,
    };
    let shared = Arc::new(Shared {
        scenario: scenario.clone(),
        seed,
        variant,
        trace: Mutex::default(),
        issued: Mutex::default(),
        outcomes: Mutex::default(),
        first_applied: Mutex::default(),
        applied_by_epoch: Mutex::default(),
        brokers: Mutex::default(),
        storage: brokers
            .iter()
            .map(|b| (b.id, MemoryStorage::new(policy)))
            .collect(),
        incarnations: Mutex::default(),
        verifiers: Mutex::default(),
        violations: Mutex::default(),
        propagation: Mutex::default(),
        counts: Mutex::default(),
        faults: Mutex::default(),
        leases: Mutex::default(),
        policy_ready: AtomicBool::new(false),
        driver_ms: Mutex::new(0.0),
        verifier_ends: Mutex::default(),
        late_steps: Mutex::default(),
        revoke_attempted: Mutex::default(),
    });
    // The clocks the run starts with, so a trace can be read on its own
    // (a swarm scenario is drawn from the seed, not written down).
    for spec in &scenario.clocks {
        shared.note(
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
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let total = Duration::from_secs(scenario.duration_s + scenario.settle_s);
    let latency = scenario.topology.latency_ms;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .tcp_capacity(65536)
        .simulation_duration(total + Duration::from_secs(60))
        .min_message_latency(Duration::from_millis(latency.min))
        .max_message_latency(Duration::from_millis(latency.max))
        .repair_rate(0.2)
        .build();

    for spec in &brokers {
        let shared = shared.clone();
        let spec = spec.clone();
        let members: Vec<BrokerSpec> = brokers.iter().filter(|b| !b.learner).cloned().collect();
        let dir = data_dir.path().join(&spec.host);
        sim.host(spec.host.clone(), move || {
            broker_host(shared.clone(), spec.clone(), members.clone(), dir.clone())
        });
    }
    for host in scenario.verifier_hosts() {
        let shared = shared.clone();
        let ordered = broker_order(&brokers, &host.region);
        sim.host(host.host.clone(), move || {
            verifier_host(
                shared.clone(),
                host.host.clone(),
                host.region.clone(),
                host.verifiers,
                ordered.clone(),
            )
        });
    }
    for (n, region) in scenario.topology.regions.iter().enumerate() {
        let shared = shared.clone();
        let ordered = broker_order(&brokers, &region.name);
        let region = region.name.clone();
        sim.host(client_host(&region), move || {
            client(shared.clone(), n == 0, region.clone(), ordered.clone())
        });
    }
    sim.client("end", async move {
        tokio::time::sleep(total).await;
        Ok(())
    });
    for link in &scenario.topology.links {
        let a = hosts_of_region(scenario, &link.between[0]);
        let b = hosts_of_region(scenario, &link.between[1]);
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

    let mut faults: Vec<_> = scenario.faults.clone();
    faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut faults = faults.into_iter().peekable();
    let mut digests = ReplicaDigests::default();
    let mut deferred = Deferred::default();
    let mut next_sample = SAMPLE_EVERY_MS;
    let mut error = None;
    let mut final_checked = false;
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
        let now_ms = sim.elapsed().as_secs_f64() * 1000.0;
        *shared.driver_ms.lock().expect("lock") = now_ms;
        while let Some(fault) = faults.next_if(|f| f.at_s * 1000.0 <= now_ms) {
            apply_fault(&mut sim, &shared, &fault.action, &mut deferred, now_ms);
        }
        for step in deferred.due(now_ms) {
            run_deferred(&mut sim, &shared, step);
        }
        if now_ms >= next_sample {
            next_sample += SAMPLE_EVERY_MS;
            sample(&shared, &mut digests, now_ms);
        }
        if !final_checked && now_ms >= total.as_secs_f64() * 1000.0 - 1.0 {
            final_checked = true;
            final_checks(&shared, now_ms);
        }
    }
    if !final_checked && error.is_none() {
        let now_ms = sim.elapsed().as_secs_f64() * 1000.0;
        final_checks(&shared, now_ms);
    }
    let simulated_s = sim.elapsed().as_secs_f64();
    shared.note(
        "check",
        format_args!("{:?}", shared.counts.lock().expect("lock")),
    );
    drop(sim);
    let trace = std::mem::take(&mut *shared.trace.lock().expect("trace lock"));
    let violations = shared.violations.lock().expect("lock").clone();
    let propagation_ms = shared.propagation.lock().expect("lock").clone();
    let counts = shared.counts.lock().expect("lock").clone();
    RunOutcome {
        scenario: scenario.name.clone(),
        seed,
        trace,
        violations,
        propagation_ms,
        simulated_s,
        wall_s: started.elapsed().as_secs_f64(),
        counts,
        error,
    }
}

/// Brokers in the order a host of `region` prefers them: its own region's
/// first.
fn broker_order(brokers: &[BrokerSpec], region: &str) -> Vec<String> {
    let mut ordered: Vec<&BrokerSpec> = brokers.iter().collect();
    ordered.sort_by_key(|b| (b.region != region, b.id));
    ordered
        .into_iter()
        .map(|b| Shared::broker_address(&b.host))
        .collect()
}

fn hosts_of_region(scenario: &Scenario, region: &str) -> Vec<String> {
    let mut hosts: Vec<String> = scenario
        .brokers()
        .into_iter()
        .filter(|b| b.region == region)
        .map(|b| b.host)
        .collect();
    hosts.extend(
        scenario
            .verifier_hosts()
            .into_iter()
            .filter(|v| v.region == region)
            .map(|v| v.host),
    );
    hosts.push(client_host(region));
    hosts
}

async fn broker_host(
    shared: Arc<Shared>,
    spec: BrokerSpec,
    voters: Vec<BrokerSpec>,
    dir: std::path::PathBuf,
) -> turmoil::Result {
    let incarnation = shared.next_incarnation(&spec.host);
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", BROKER_PORT)).await?;
    let listen: std::net::SocketAddr = ([0, 0, 0, 0], BROKER_PORT).into();
    let mut config = BrokerConfig::new(spec.id, listen, dir);
    config.advertise = Some(Shared::broker_address(&spec.host));
    // A learner starts with no members: it waits, uninitialised, until the
    // setup client adds it through the leader.
    if !spec.learner {
        config.cluster.members = voters
            .iter()
            .map(|b| Member {
                id: b.id,
                address: Shared::broker_address(&b.host),
            })
            .collect();
    }
    config.cluster.secret = Some(CLUSTER_SECRET.into());
    config.auth.admin_tokens = vec![ADMIN_TOKEN.into()];
    config.issuance.audit_ship_ms = 500;
    // Checkpoints often enough for a short run to compare several.
    config.raft.checkpoint_every_entries = 32;
    config.raft.replica_check_ms = 1000;
    let host_seed = shared.host_seed(&spec.host, incarnation);
    let env = Env {
        clock: Arc::new(shared.clock(&spec.host)),
        entropy: Arc::new(SeededEntropy::new(host_seed)),
        dialer: Arc::new(SimDialer),
        faults: Some(Arc::new(BrokerFaults {
            shared: shared.clone(),
            id: spec.id,
            rng: Mutex::new(StdRng::seed_from_u64(host_seed ^ 1)),
        })),
        steps: Arc::default(),
    };
    let storage = shared.storage[&spec.id].clone();
    let broker = Broker::start_with(
        config,
        env,
        Storage::Memory(storage),
        net::incoming(listener),
        listen,
    )
    .await
    .map_err(|e| format!("broker {} did not start: {e}", spec.id))?;
    shared.note(
        &spec.host,
        format_args!("started (incarnation {incarnation})"),
    );
    let view = broker.core().view().clone();
    {
        let mut faults = shared.faults.lock().expect("fault lock");
        if faults.down.remove(&spec.id) {
            faults.last_change_ms = elapsed_ms();
        }
    }
    shared.brokers.lock().expect("broker lock").insert(
        spec.id,
        BrokerHandle {
            view: view.clone(),
            raft: broker.raft().clone(),
            replicas: broker.core().replicas().clone(),
        },
    );
    tokio::spawn(note_leadership(
        shared.clone(),
        spec.host.clone(),
        broker.raft().clone(),
    ));
    // Watch this replica apply revocations: the first replica to apply one
    // fixes its commit time for the invariants and for propagation.
    let mut changes = view.changes();
    let mut seen_epoch = 0u64;
    loop {
        let revoked: Vec<(u64, u64)> = view.read(|applied| {
            applied
                .ledger
                .indices_revoked_after(seen_epoch)
                .into_iter()
                .filter_map(|index| {
                    applied
                        .ledger
                        .revoked_indices
                        .get(&index)
                        .map(|at| (index, at.epoch))
                })
                .collect()
        });
        if !revoked.is_empty() {
            let now = elapsed_ms();
            let mut first = shared.first_applied.lock().expect("lock");
            let mut by_epoch = shared.applied_by_epoch.lock().expect("lock");
            for (index, epoch) in revoked {
                seen_epoch = seen_epoch.max(epoch);
                first.entry(index).or_insert((now, epoch));
                by_epoch.entry(epoch).or_insert(now);
            }
        }
        if changes.changed().await.is_err() {
            break;
        }
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// Note in the trace each term in which this broker becomes leader, so a
/// run shows whether a restarted leader won a new election.
async fn note_leadership(shared: Arc<Shared>, host: String, raft: Raft) {
    let mut metrics = raft.metrics();
    let mut leading = None;
    loop {
        let now_leading = {
            let m = metrics.borrow_watched();
            (m.state == openraft::ServerState::Leader).then_some(m.current_term)
        };
        if now_leading != leading {
            if let Some(term) = now_leading {
                shared.note(&host, format_args!("leads term {term}"));
            }
            leading = now_leading;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

async fn verifier_host(
    shared: Arc<Shared>,
    host: String,
    region: String,
    count: u32,
    brokers: Vec<String>,
) -> turmoil::Result {
    let incarnation = shared.next_incarnation(&host);
    let timeout = Duration::from_millis(shared.scenario.workload.request_timeout_ms);
    // One connection per broker for the whole host, set up as a verifier
    // sets up its own (keepalive pings find a connection that died).
    let mut endpoint_config = FollowConfig::new(brokers.clone(), host.clone());
    endpoint_config.connect_timeout = timeout;
    let channels: Vec<Channel> = brokers
        .iter()
        .map(|b| {
            let endpoint = lapse_verifier::feed_endpoint(b, &endpoint_config)
                .expect("simulation addresses are valid URIs");
            net::dial(endpoint)
        })
        .collect();
    let clock = Arc::new(shared.clock(&host));
    for n in 0..count {
        let id = format!("{host}/{n}");
        let verifier = Verifier::with_clock(
            VerifyConfig {
                staleness: Duration::from_millis(shared.scenario.verifier.staleness_ms),
                fail_open: shared.scenario.verifier.fail_open
                    || shared.variant == Variant::VerifierIgnoresStaleness,
                leeway_seconds: shared.scenario.verifier.leeway_s,
                ..VerifyConfig::default()
            },
            clock.clone(),
        );
        shared.verifiers.lock().expect("lock").insert(
            id.clone(),
            VerifierHandle {
                verifier: verifier.clone(),
                last_epoch: 0,
                started_ms: elapsed_ms(),
                fresh: None,
            },
        );
        let on_apply = {
            let shared = shared.clone();
            let id = id.clone();
            OnApply(Arc::new(move |epoch| {
                on_verifier_epoch(&shared, &id, epoch)
            }))
        };
        let mut follow_config = FollowConfig::new(brokers.clone(), id.clone());
        follow_config.region = region.clone();
        follow_config.channels = Some(channels.clone());
        follow_config.on_apply = Some(on_apply);
        follow_config.connect_timeout = timeout;
        tokio::spawn(lapse_verifier::follow(
            verifier.clone(),
            follow_config,
            Arc::new(FollowStats::default()),
            std::future::pending(),
        ));
        let rng = StdRng::seed_from_u64(shared.host_seed(&id, incarnation));
        tokio::spawn(verify_loop(shared.clone(), id, verifier, rng));
    }
    // Report every verifier's state just before the run ends.
    let total_ms = (shared.scenario.duration_s + shared.scenario.settle_s) * 1000;
    let report_at = Duration::from_millis(total_ms.saturating_sub(REPORT_BEFORE_END_MS));
    let since_start = Duration::from_secs_f64(elapsed_ms() / 1000.0);
    tokio::time::sleep(report_at.saturating_sub(since_start)).await;
    let ends: Vec<VerifierEnd> = shared
        .verifiers
        .lock()
        .expect("lock")
        .iter()
        .filter(|(id, _)| id.starts_with(&format!("{host}/")))
        .map(|(id, v)| {
            let status = v.verifier.status();
            VerifierEnd {
                id: id.clone(),
                epoch: status.epoch,
                stale: !status.fresh,
            }
        })
        .collect();
    shared.verifier_ends.lock().expect("lock").extend(ends);
    std::future::pending::<()>().await;
    Ok(())
}

fn on_verifier_epoch(shared: &Shared, id: &str, epoch: u64) {
    let now = elapsed_ms();
    let previous = {
        let mut verifiers = shared.verifiers.lock().expect("lock");
        let Some(handle) = verifiers.get_mut(id) else {
            return;
        };
        let previous = handle.last_epoch;
        handle.last_epoch = handle.last_epoch.max(epoch);
        (previous, handle.started_ms)
    };
    let (previous, started_ms) = previous;
    shared.note(id, format_args!("epoch {epoch}"));
    if let Some(violation) = epochs_grow::check(id, previous, epoch, now) {
        shared.violate(violation);
    }
    if epoch > previous {
        let by_epoch = shared.applied_by_epoch.lock().expect("lock");
        let mut propagation = shared.propagation.lock().expect("lock");
        for (_, first) in by_epoch.range(previous + 1..=epoch) {
            if *first >= started_ms {
                propagation.push((now - first).max(0.0));
            }
        }
    }
}

async fn verify_loop(shared: Arc<Shared>, id: String, verifier: Verifier, mut rng: StdRng) {
    let every = Duration::from_millis(shared.scenario.workload.verify_every_ms);
    let bound = shared.accept_bound_ms();
    let bounds = shared.scenario.bounds.clone();
    let leeway_ms = verifier.config().leeway_seconds * 1000;
    let settle_ms = bounds.fresh_after_s as f64 * 1000.0;
    loop {
        tokio::time::sleep(every).await;
        // A few credentials: any issued one, and one whose revocation was
        // acknowledged (the ones the invariant is about).
        let picks: Vec<(u64, String, Life)> = {
            let issued = shared.issued.lock().expect("lock");
            let outcomes = shared.outcomes.lock().expect("lock");
            let life = |c: &Issued| Life {
                sent_ms: c.sent_ms,
                issued_ms: c.issued_ms,
                ttl_ms: c.ttl_ms,
            };
            let mut picks = Vec::new();
            if !issued.is_empty() {
                for _ in 0..2 {
                    let c = &issued[rng.gen_range(0..issued.len())];
                    picks.push((c.index, c.token.clone(), life(c)));
                }
                let revoked: Vec<&Issued> = issued
                    .iter()
                    .filter(|c| outcomes.contains_key(&c.index))
                    .collect();
                if !revoked.is_empty() {
                    let c = revoked[rng.gen_range(0..revoked.len())];
                    picks.push((c.index, c.token.clone(), life(c)));
                }
            }
            picks
        };
        let fresh = note_freshness(&shared, &id, &verifier);
        for (index, token, life) in picks {
            let result = verifier.verify(&token, &Expect::default());
            let now = elapsed_ms();
            let mut counts = shared.counts.lock().expect("lock");
            counts.verifications += 1;
            let refusal = match &result {
                Ok(_) => {
                    counts.accepted += 1;
                    drop(counts);
                    let revoked_ms = shared
                        .first_applied
                        .lock()
                        .expect("lock")
                        .get(&index)
                        .map(|(ms, _)| *ms);
                    if let Some(violation) =
                        revoked_acceptance::check(&id, index, now, revoked_ms, bound)
                    {
                        shared.violate(violation);
                    }
                    let deadline = expired_acceptance::deadline_ms(
                        life.issued_ms,
                        life.ttl_ms,
                        leeway_ms,
                        bounds.skew_allowance_ms,
                    );
                    if let Some(violation) = expired_acceptance::check(&id, index, now, deadline) {
                        shared.violate(violation);
                    }
                    continue;
                }
                Err(lapse_verifier::Rejection::Revoked { .. }) => {
                    counts.rejected_revoked += 1;
                    result.err()
                }
                Err(lapse_verifier::Rejection::Stale { .. }) => {
                    counts.rejected_stale += 1;
                    drop(counts);
                    let calm = shared.faults.lock().expect("lock").calm_since_ms();
                    if let Some(violation) = freshness_liveness::check(&id, now, calm, settle_ms) {
                        shared.violate(violation);
                    }
                    continue;
                }
                Err(_) if now > life.sent_ms + life.ttl_ms as f64 => {
                    counts.rejected_expired += 1;
                    continue;
                }
                Err(_) => {
                    counts.rejected_other += 1;
                    result.err()
                }
            };
            let Some(refusal) = refusal else { continue };
            let unrevoked = !shared
                .revoke_attempted
                .lock()
                .expect("lock")
                .contains(&index)
                && !shared
                    .first_applied
                    .lock()
                    .expect("lock")
                    .contains_key(&index);
            if fresh && unrevoked {
                let window = valid_acceptance::window(life, bound, bounds.skew_allowance_ms);
                if let Some(violation) =
                    valid_acceptance::check(&id, index, now, window, &refusal.to_string())
                {
                    shared.violate(violation);
                }
            }
        }
    }
}

/// Whether `verifier` is fresh now; a change since the last look goes in
/// the trace with the verifier's own reason.
fn note_freshness(shared: &Shared, id: &str, verifier: &Verifier) -> bool {
    let status = verifier.status();
    let was = {
        let mut verifiers = shared.verifiers.lock().expect("lock");
        verifiers
            .get_mut(id)
            .and_then(|h| h.fresh.replace(status.fresh))
    };
    if was != Some(status.fresh) {
        match (&status.stale_reason, was) {
            (Some(reason), Some(true)) => shared.note(id, format_args!("fresh -> stale: {reason}")),
            (None, _) => shared.note(
                id,
                format_args!(
                    "{}fresh (heartbeat from broker {})",
                    if was.is_some() { "stale -> " } else { "" },
                    status.heartbeat_broker_id.unwrap_or(0)
                ),
            ),
            (Some(_), _) => {}
        }
    }
    status.fresh
}

fn admin<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().expect("ascii"),
    );
    request
}

/// Try `call` on each broker in turn until one answers, for up to
/// `patience`.
async fn first_answer<T, F, Fut>(
    channels: &[Channel],
    patience: Duration,
    mut call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut n = 0usize;
    loop {
        let status = match call(channels[n % channels.len()].clone()).await {
            Ok(answer) => return Ok(answer),
            Err(status) => status,
        };
        if tokio::time::Instant::now() > deadline {
            return Err(status);
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn client(
    shared: Arc<Shared>,
    leads_setup: bool,
    region: String,
    brokers: Vec<String>,
) -> turmoil::Result {
    let host = client_host(&region);
    let incarnation = shared.next_incarnation(&host);
    let mut rng = StdRng::seed_from_u64(shared.host_seed(&host, incarnation));
    let workload = shared.scenario.workload.clone();
    let timeout = Duration::from_millis(workload.request_timeout_ms);
    let channels: Vec<Channel> = brokers.iter().map(|b| net::channel(b, timeout)).collect();
    let setup_patience = Duration::from_secs(shared.scenario.duration_s + 30);
    if leads_setup {
        for spec in shared.scenario.brokers().into_iter().filter(|b| b.learner) {
            first_answer(&channels, setup_patience, |c| {
                let request = pb::AddLearnerRequest {
                    node_id: spec.id,
                    address: Shared::broker_address(&spec.host),
                };
                async move { ClusterClient::new(c).add_learner(admin(request)).await }
            })
            .await?;
            shared.note(&host, format_args!("added learner {}", spec.id));
        }
        first_answer(&channels, setup_patience, |c| async move {
            ClusterClient::new(c)
                .set_policy(admin(pb::SetPolicyRequest {
                    request_id: "sim-policy".into(),
                    tenant: TENANT.into(),
                    text: format!(
                        r#"permit(principal, action == Action::"issue", resource == Tenant::"{TENANT}");"#
                    ),
                    expected_version: None,
                }))
                .await
        })
        .await?;
        shared.note(&host, "policy set");
        shared.policy_ready.store(true, Ordering::SeqCst);
    }
    while !shared.policy_ready.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let join = first_answer(&channels, setup_patience, |c| {
        let region = region.clone();
        async move {
            ClusterClient::new(c)
                .create_join_token(admin(pb::CreateJoinTokenRequest {
                    request_id: format!("sim-join-{region}"),
                    ttl_seconds: 3600,
                    grant: Some(pb::create_join_token_request::Grant::Workload(
                        pb::WorkloadGrant {
                            tenant: TENANT.into(),
                            workload: format!("spiffe://sim.example/{region}"),
                        },
                    )),
                }))
                .await
        }
    })
    .await?
    .into_inner();
    let seed_credential = first_answer(&channels, setup_patience, |c| {
        let token = join.token.clone();
        async move {
            IssuerClient::new(c)
                .issue(IssueRequest {
                    attestation: Some(Attestation::JoinToken(token)),
                    audiences: vec!["sim".into()],
                    scopes: vec!["read".into()],
                    ttl_seconds: 3600,
                    dpop_jkt: String::new(),
                    tenant: String::new(),
                    request_id: String::new(),
                })
                .await
        }
    })
    .await?
    .into_inner();
    shared.note(
        &host,
        format_args!("seed credential index {}", seed_credential.status_index),
    );

    // Scheduled on the host's tokio clock, which moves within a step;
    // turmoil's elapsed time moves only between steps.
    let start = tokio::time::Instant::now();
    let end = start
        + Duration::from_millis(shared.scenario.duration_s * 1000)
            .saturating_sub(Duration::from_secs_f64(elapsed_ms() / 1000.0));
    let issue_every = Duration::from_millis(workload.issue_every_ms.max(1));
    let revoke_every = Duration::from_millis(workload.revoke_every_ms.max(1));
    let mut next_issue = start;
    let mut next_revoke = start + revoke_every;
    let mut preferred = 0usize;
    let mut revoke_serial = 0u64;
    loop {
        let wake = next_issue.min(next_revoke);
        if wake >= end || tokio::time::Instant::now() >= end {
            break;
        }
        tokio::time::sleep_until(wake).await;
        // A slow answer delays the schedule rather than bunching requests.
        let now = tokio::time::Instant::now();
        next_issue = next_issue.max(now - issue_every);
        next_revoke = next_revoke.max(now - revoke_every);
        let target = preferred % channels.len();
        if next_issue <= next_revoke {
            next_issue += issue_every;
            let sent_ms = elapsed_ms();
            let request = RefreshRequest {
                credential: seed_credential.credential.clone(),
                dpop_proof: String::new(),
                ttl_seconds: workload.credential_ttl_s,
                audiences: vec![],
                scopes: vec![],
            };
            let answer = tokio::time::timeout(
                timeout,
                IssuerClient::new(channels[target].clone()).refresh(request),
            )
            .await;
            match answer {
                Ok(Ok(reply)) => {
                    let reply = reply.into_inner();
                    let ttl_ms = workload.credential_ttl_s * 1000;
                    on_issued(
                        &shared,
                        (&host, &brokers[target], &region),
                        reply,
                        (sent_ms, ttl_ms),
                    );
                }
                _ => {
                    shared.counts.lock().expect("lock").issue_failures += 1;
                    preferred += 1;
                }
            }
        } else {
            next_revoke += revoke_every;
            let candidate = {
                let issued = shared.issued.lock().expect("lock");
                let outcomes = shared.outcomes.lock().expect("lock");
                let mine: Vec<u64> = issued
                    .iter()
                    .filter(|c| c.region == region && !outcomes.contains_key(&c.index))
                    .map(|c| c.index)
                    .collect();
                (!mine.is_empty()).then(|| mine[rng.gen_range(0..mine.len())])
            };
            let Some(index) = candidate else { continue };
            shared.revoke_attempted.lock().expect("lock").insert(index);
            revoke_serial += 1;
            let request = admin(pb::RevokeRequest {
                request_id: format!("sim-{region}-{revoke_serial}"),
                revocation: Some(pb::Revocation {
                    target: Some(Target::Index(index)),
                }),
            });
            let answer = tokio::time::timeout(
                timeout,
                ClusterClient::new(channels[target].clone()).revoke(request),
            )
            .await;
            let outcome = match answer {
                Ok(Ok(reply)) => Outcome::Acked {
                    epoch: reply.into_inner().epoch,
                },
                Ok(Err(status)) if definite_refusal(status.code()) => Outcome::Refused,
                Ok(Err(_)) | Err(_) => {
                    preferred += 1;
                    Outcome::Unknown
                }
            };
            {
                let mut counts = shared.counts.lock().expect("lock");
                match outcome {
                    Outcome::Acked { .. } => counts.revocations_acked += 1,
                    Outcome::Unknown => counts.revocations_unknown += 1,
                    Outcome::Refused => counts.revocations_refused += 1,
                }
            }
            shared.note(&host, format_args!("revoke {index}: {outcome:?}"));
            shared.outcomes.lock().expect("lock").insert(index, outcome);
        }
    }
    shared.note(&host, "workload done");
    std::future::pending::<()>().await;
    Ok(())
}

/// Errors that say the request did not and will not take effect. Anything
/// else (a timeout, an unreachable or changing leader) leaves it unknown.
fn definite_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::NotFound
            | tonic::Code::AlreadyExists
            | tonic::Code::FailedPrecondition
            | tonic::Code::OutOfRange
    )
}

fn on_issued(
    shared: &Shared,
    (host, broker_address, region): (&str, &str, &str),
    reply: lapse_wire::issuer::IssueResponse,
    (sent_ms, ttl_ms): (f64, u64),
) {
    let now = elapsed_ms();
    let broker_id: u64 = broker_address
        .trim_start_matches('b')
        .split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Committed means applied by the leader that committed it, which may
    // not be the broker that signed: any replica holding the key will do.
    let key_violation = {
        let brokers = shared.brokers.lock().expect("lock");
        let checks: Vec<Option<Violation>> = brokers
            .values()
            .map(|b| {
                b.view
                    .read(|a| committed_keys::check(broker_id, &reply.key_id, &a.ledger, now))
            })
            .collect();
        if checks.iter().any(Option::is_none) {
            None
        } else {
            checks.into_iter().flatten().next()
        }
    };
    if let Some(violation) = key_violation {
        shared.violate(violation);
    }
    if let Some(violation) = shared
        .leases
        .lock()
        .expect("lock")
        .issued(reply.status_index, now)
    {
        shared.violate(violation);
    }
    shared.counts.lock().expect("lock").issued += 1;
    shared.note(
        host,
        format_args!(
            "issued index {} key {} via {broker_address}",
            reply.status_index, reply.key_id
        ),
    );
    shared.issued.lock().expect("lock").push(Issued {
        region: region.to_owned(),
        index: reply.status_index,
        token: reply.credential,
        sent_ms,
        issued_ms: now,
        ttl_ms,
    });
}

/// The broker that leads in the highest term any running broker knows.
fn current_leader(shared: &Shared) -> Option<u64> {
    let brokers = shared.brokers.lock().expect("lock");
    brokers
        .values()
        .map(|b| b.raft.metrics().borrow_watched().clone())
        .filter_map(|m| m.current_leader.map(|l| (m.current_term, l)))
        .max()
        .map(|(_, leader)| leader)
}

fn resolve_target(shared: &Shared, target: &str) -> Option<String> {
    if target == "leader" {
        current_leader(shared).map(|id| format!("b{id}"))
    } else {
        Some(target.to_owned())
    }
}

fn broker_id_of(host: &str) -> Option<u64> {
    host.strip_prefix('b').and_then(|n| n.parse().ok())
}

/// A later step of a fault that unfolds over time.
#[derive(Debug, Clone)]
enum DeferredStep {
    /// Crash a broker whose flushes are held, losing its unflushed tail.
    CrashHeld(String),
    Restart(String),
}

/// Steps due at a simulated time, in the order they were scheduled.
#[derive(Debug, Default)]
struct Deferred {
    steps: Vec<(f64, DeferredStep)>,
}

impl Deferred {
    fn at(&mut self, at_ms: f64, step: DeferredStep) {
        self.steps.push((at_ms, step));
    }

    fn due(&mut self, now_ms: f64) -> Vec<DeferredStep> {
        let (due, later) = std::mem::take(&mut self.steps)
            .into_iter()
            .partition(|(at, _)| *at <= now_ms);
        self.steps = later;
        due.into_iter().map(|(_, step)| step).collect()
    }
}

fn run_deferred(sim: &mut turmoil::Sim<'_>, shared: &Shared, step: DeferredStep) {
    let described = match step {
        DeferredStep::CrashHeld(host) => {
            let lost = broker_id_of(&host)
                .and_then(|id| shared.storage.get(&id))
                .map(|s| s.log.unflushed_writes())
                .unwrap_or(0);
            crash(sim, shared, &host);
            format!("crash {host}, losing {lost} unflushed log writes")
        }
        DeferredStep::Restart(host) => {
            restart(sim, &host);
            shared
                .faults
                .lock()
                .expect("lock")
                .active
                .remove("mid_append");
            format!("restart {host}")
        }
    };
    shared.faults.lock().expect("lock").last_change_ms = shared.now_ms();
    shared.note("fault", described);
}

fn apply_fault(
    sim: &mut turmoil::Sim<'_>,
    shared: &Shared,
    action: &FaultAction,
    deferred: &mut Deferred,
    now_ms: f64,
) {
    shared.counts.lock().expect("lock").faults += 1;
    let all = shared.scenario.all_hosts();
    let cut = |sim: &turmoil::Sim<'_>, inside: &[String]| {
        for a in inside {
            for b in all.iter().filter(|h| !inside.contains(h)) {
                sim.partition(a.as_str(), b.as_str());
            }
        }
    };
    let described = match action {
        FaultAction::Isolate { target } => match resolve_target(shared, target) {
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
            cut(sim, &hosts_of_region(&shared.scenario, region));
            format!("cut region {region} off")
        }
        FaultAction::Heal => {
            for (n, a) in all.iter().enumerate() {
                for b in &all[n + 1..] {
                    sim.repair(a.as_str(), b.as_str());
                }
            }
            sim.set_fail_rate(0.0);
            let mut faults = shared.faults.lock().expect("lock");
            faults.drop_feed = 0.0;
            faults.delay_apply_ms = 0;
            "heal every link".into()
        }
        FaultAction::Crash { target } => match resolve_target(shared, target) {
            Some(host) => {
                crash(sim, shared, &host);
                format!("crash {host}")
            }
            None => "crash: no leader known; nothing done".into(),
        },
        FaultAction::Restart { target } => match resolve_target(shared, target) {
            Some(host) => {
                restart(sim, &host);
                format!("restart {host}")
            }
            None => "restart: no leader known; nothing done".into(),
        },
        FaultAction::CrashLeaderMidAppend {
            hold_ms,
            restart_after_ms,
        } => match current_leader(shared) {
            Some(id) => {
                let host = format!("b{id}");
                if let Some(storage) = shared.storage.get(&id) {
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
            for spec in shared.scenario.brokers() {
                crash(sim, shared, &spec.host);
            }
            "crash every broker".into()
        }
        FaultAction::RestartAll => {
            for spec in shared.scenario.brokers() {
                restart(sim, &spec.host);
            }
            "restart every broker".into()
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
                shared.scenario.topology.latency_ms.max,
            ));
            "latency back to normal".into()
        }
        FaultAction::SlowVerifier { host, latency_ms } => {
            for spec in shared.scenario.brokers() {
                sim.set_link_latency(
                    host.as_str(),
                    spec.host.as_str(),
                    Duration::from_millis(*latency_ms),
                );
            }
            format!("links of {host} take {latency_ms} ms")
        }
        FaultAction::DropFeed { rate } => {
            shared.faults.lock().expect("lock").drop_feed = *rate;
            format!("brokers drop {rate} of feed messages")
        }
        FaultAction::DelayApply { ms } => {
            shared.faults.lock().expect("lock").delay_apply_ms = *ms;
            format!("brokers hold each applied batch {ms} ms")
        }
        FaultAction::Snapshot { target } => match resolve_target(shared, target) {
            Some(host) => {
                if let Some(id) = broker_id_of(&host) {
                    shared.faults.lock().expect("lock").snapshot.insert(id);
                }
                format!("snapshot on {host}")
            }
            None => "snapshot: no leader known; nothing done".into(),
        },
        FaultAction::StepClock { target, by_ms } => {
            let host = if target.starts_with("v-") {
                Some(target.clone())
            } else {
                resolve_target(shared, target)
            };
            match host {
                Some(host) => {
                    shared
                        .late_steps
                        .lock()
                        .expect("lock")
                        .entry(host.clone())
                        .or_default()
                        .lock()
                        .expect("clock lock")
                        .push((now_ms, *by_ms));
                    format!("the wall clock of {host} steps by {by_ms} ms")
                }
                None => "step_clock: no leader known; nothing done".into(),
            }
        }
    };
    note_activity(shared, action, now_ms);
    shared.note("fault", described);
}

/// Keep track of which faults are in force, for `freshness_liveness`.
fn note_activity(shared: &Shared, action: &FaultAction, now_ms: f64) {
    let mut faults = shared.faults.lock().expect("lock");
    let active = &mut faults.active;
    match action {
        FaultAction::Isolate { .. }
        | FaultAction::Partition { .. }
        | FaultAction::CutRegion { .. } => {
            active.insert("cut".into());
        }
        FaultAction::Loss { .. } => {
            active.insert("loss".into());
        }
        FaultAction::DropFeed { .. } => {
            active.insert("drop_feed".into());
        }
        FaultAction::DelayApply { .. } => {
            active.insert("delay_apply".into());
        }
        FaultAction::Heal => {
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
        // Crashes are tracked by the brokers that are down (see `crash`
        // and `broker_host`).
        FaultAction::Crash { .. }
        | FaultAction::CrashAll
        | FaultAction::Restart { .. }
        | FaultAction::RestartAll
        | FaultAction::Snapshot { .. } => {}
        // A clock step is not given time to settle: verifiers must stay
        // fresh through it.
        FaultAction::StepClock { .. } => return,
    }
    faults.last_change_ms = now_ms;
}

fn crash(sim: &mut turmoil::Sim<'_>, shared: &Shared, host: &str) {
    if !sim.is_host_running(host) {
        return;
    }
    sim.crash(host);
    if let Some(id) = broker_id_of(host) {
        shared.faults.lock().expect("lock").down.insert(id);
        shared.brokers.lock().expect("lock").remove(&id);
        if let Some(storage) = shared.storage.get(&id) {
            storage.crash();
        }
    }
}

fn restart(sim: &mut turmoil::Sim<'_>, host: &str) {
    if !sim.is_host_running(host) {
        sim.bounce(host);
    }
}

/// One broker sampled: id, applied index, digest, lease violations, and
/// the peers its own replica check found diverged (peer, index).
type Sampled = (u64, Option<u64>, [u8; 32], Vec<Violation>, Vec<(u64, u64)>);

/// Sample every running broker: digests at their applied index, leases.
fn sample(shared: &Shared, digests: &mut ReplicaDigests, now_ms: f64) {
    let states: Vec<Sampled> = {
        let brokers = shared.brokers.lock().expect("lock");
        let mut leases = shared.leases.lock().expect("lock");
        brokers
            .iter()
            .map(|(id, b)| {
                let diverged = b
                    .replicas
                    .divergences()
                    .into_iter()
                    .map(|d| (d.peer, d.index))
                    .collect();
                b.view.read(|a| {
                    (
                        *id,
                        a.ledger.last_applied_index,
                        a.ledger.digest(),
                        leases.observe(&a.ledger, now_ms),
                        diverged,
                    )
                })
            })
            .collect()
    };
    for (id, index, digest, lease_violations, diverged) in states {
        for (peer, at) in diverged {
            if digests.first_report(id, peer) {
                shared.note(
                    &format!("b{id}"),
                    format_args!("detects divergence from b{peer} at index {at}"),
                );
            }
        }
        if let Some(index) = index
            && let Some(violation) = digests.observe(id, index, digest, now_ms)
        {
            shared.violate(violation);
        }
        for violation in lease_violations {
            shared.violate(violation);
        }
    }
}

/// After the settle time: durability of acked revocations on every broker,
/// and convergence of every broker and verifier.
fn final_checks(shared: &Shared, now_ms: f64) {
    let outcomes = shared.outcomes.lock().expect("lock").clone();
    let states: Vec<(u64, LedgerState)> = shared
        .brokers
        .lock()
        .expect("lock")
        .iter()
        .map(|(id, b)| (*id, b.view.read(|a| a.ledger.clone())))
        .collect();
    let mut found = Vec::new();
    for (id, state) in &states {
        shared.note(
            "check",
            format_args!(
                "broker {id}: applied {:?}, epoch {}, {} revoked indices",
                state.last_applied_index,
                state.revocation_epoch,
                state.revoked_indices.len()
            ),
        );
    }
    for (id, state) in &states {
        found.extend(acked_revocations::check(*id, state, &outcomes, now_ms));
    }
    let epochs: Vec<(u64, u64)> = states
        .iter()
        .map(|(id, s)| (*id, s.revocation_epoch))
        .collect();
    let cluster_epoch = epochs.iter().map(|(_, e)| *e).max().unwrap_or(0);
    let mut verifiers = shared.verifier_ends.lock().expect("lock").clone();
    verifiers.sort_by(|a, b| a.id.cmp(&b.id));
    found.extend(convergence::check(
        cluster_epoch,
        &epochs,
        &verifiers,
        shared.scenario.settle_s,
        now_ms,
    ));
    shared.note(
        "check",
        format_args!(
            "final: cluster epoch {cluster_epoch}, {} brokers, {} verifiers, {} acked revocations",
            states.len(),
            verifiers.len(),
            outcomes
                .values()
                .filter(|o| matches!(o, Outcome::Acked { .. }))
                .count()
        ),
    );
    for violation in found {
        shared.violate(violation);
    }
}
