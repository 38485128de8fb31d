//! A broker host: `Broker::start_with` over turmoil TCP with the run's
//! in-memory storage, a seeded random source, the host's clock and the
//! fault points; then it watches its replica apply revocations (the first
//! replica to apply one fixes its commit time) and notes each term it
//! leads.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lapse_broker::{Broker, BrokerConfig, Env, Member, Storage};
use lapse_storage::{LedgerView, Raft};
use openraft::async_runtime::WatchReceiver;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{BrokerHandle, broker_address};
use crate::clock::elapsed_ms;
use crate::harness::World;
use crate::harness::faults::BrokerFaults;
use crate::net::{self, BROKER_PORT, SeededEntropy, SimDialer};
use crate::scenario::BrokerSpec;

pub(in crate::harness) const ADMIN_TOKEN: &str = "simulation-admin-token";
const CLUSTER_SECRET: &str = "simulation-cluster-secret-0123456789";

/// Run one incarnation of the broker `spec`; `voters` are the cluster's
/// configured members.
pub(in crate::harness) async fn broker_host(
    world: Arc<World>,
    spec: BrokerSpec,
    voters: Vec<BrokerSpec>,
    dir: PathBuf,
) -> turmoil::Result {
    let incarnation = world.hosts.next_incarnation(&spec.host);
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", BROKER_PORT)).await?;
    let listen: std::net::SocketAddr = ([0, 0, 0, 0], BROKER_PORT).into();
    let config = config(&spec, &voters, listen, dir);
    let host_seed = world.host_seed(&spec.host, incarnation);
    let env = Env {
        clock: Arc::new(world.hosts.clock(&spec.host, &world.scenario.clocks)),
        entropy: Arc::new(SeededEntropy::new(host_seed)),
        dialer: Arc::new(SimDialer),
        faults: Some(Arc::new(BrokerFaults {
            world: world.clone(),
            id: spec.id,
            rng: Mutex::new(StdRng::seed_from_u64(host_seed ^ 1)),
        })),
        steps: Arc::default(),
        feed_identity: world.pki.broker(spec.id),
    };
    let storage = world.storage[&spec.id].clone();
    let broker = Broker::start_with(
        config,
        env,
        Storage::Memory(storage),
        net::incoming(listener),
        listen,
    )
    .await
    .map_err(|e| format!("broker {} did not start: {e}", spec.id))?;
    world.note(
        &spec.host,
        format_args!("started (incarnation {incarnation})"),
    );
    let view = broker.core().view().clone();
    world.faults.broker_up(spec.id, elapsed_ms());
    world.hosts.broker_started(
        spec.id,
        BrokerHandle {
            view: view.clone(),
            raft: broker.raft().clone(),
            replicas: broker.core().replicas().clone(),
        },
    );
    tokio::spawn(note_leadership(
        world.clone(),
        spec.host.clone(),
        broker.raft().clone(),
    ));
    watch_revocations(&world, &view).await;
    std::future::pending::<()>().await;
    Ok(())
}

/// The configuration of broker `spec`.
fn config(
    spec: &BrokerSpec,
    voters: &[BrokerSpec],
    listen: std::net::SocketAddr,
    dir: PathBuf,
) -> BrokerConfig {
    let mut config = BrokerConfig::new(spec.id, listen, dir);
    config.advertise = Some(broker_address(&spec.host));
    // A learner starts with no members: it waits, uninitialised, until the
    // setup client adds it through the leader.
    if !spec.learner {
        config.cluster.members = voters
            .iter()
            .map(|b| Member {
                id: b.id,
                address: broker_address(&b.host),
            })
            .collect();
    }
    // turmoil's network cannot carry rustls; simulated brokers run
    // plaintext and share a secret.
    config.insecure_plaintext = true;
    config.cluster.secret = Some(CLUSTER_SECRET.into());
    config.auth.admin_tokens = vec![lapse_broker::config::AdminTokenEntry::Hashed(
        lapse_broker::config::AdminToken::for_secret("simulation", ADMIN_TOKEN),
    )];
    config.auth.cluster_admins = vec!["token:simulation".into()];
    config.issuance.audit_ship_ms = 500;
    // Checkpoints often enough for a short run to compare several.
    config.raft.checkpoint_every_entries = 32;
    config.raft.replica_check_ms = 1000;
    config
}

/// Watch this replica apply revocations, until its view closes: the first
/// replica to apply one fixes its commit time for the invariants and for
/// propagation.
async fn watch_revocations(world: &World, view: &LedgerView) {
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
        if let Some(epoch) = revoked.iter().map(|(_, epoch)| *epoch).max() {
            seen_epoch = seen_epoch.max(epoch);
            world.oracle.first_applied(&revoked, elapsed_ms());
        }
        if changes.changed().await.is_err() {
            break;
        }
    }
}

/// Note in the trace each term in which this broker becomes leader, so a
/// run shows whether a restarted leader won a new election.
async fn note_leadership(world: Arc<World>, host: String, raft: Raft) {
    let mut metrics = raft.metrics();
    let mut leading = None;
    loop {
        let now_leading = {
            let m = metrics.borrow_watched();
            (m.state == openraft::ServerState::Leader).then_some(m.current_term)
        };
        if now_leading != leading {
            if let Some(term) = now_leading {
                world.note(&host, format_args!("leads term {term}"));
            }
            leading = now_leading;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
