//! A verifier host: many `Verifier`s as tasks, each following the brokers
//! with `follow` over one connection per broker for the whole host, and
//! each verifying a few credentials on a schedule; the oracle judges every
//! verification and every epoch change. Just before the end each reports
//! its final state, read on the host's own clock.

use std::sync::Arc;
use std::time::Duration;

use lapse_verifier::{Expect, FollowConfig, FollowStats, OnApply, Verifier, VerifyConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tonic::transport::Channel;

use crate::clock::{SimClock, elapsed_ms};
use crate::harness::observe::PropagationSample;
use crate::harness::oracle::{self, Verification};
use crate::harness::{Variant, World};
use crate::net;

/// Verifiers report their final state this long before the end.
const REPORT_BEFORE_END_MS: u64 = 20;

/// Run `count` verifiers on `host` in `region`, following `brokers` (in
/// order of preference).
pub(in crate::harness) async fn verifier_host(
    world: Arc<World>,
    host: String,
    region: String,
    count: u32,
    brokers: Vec<String>,
) -> turmoil::Result {
    let incarnation = world.hosts.next_incarnation(&host);
    let timeout = Duration::from_millis(world.scenario.workload.request_timeout_ms);
    // One connection per broker for the whole host, set up as a verifier
    // sets up its own (keepalive pings find a connection that died).
    let mut endpoint_config = FollowConfig::new(brokers.clone(), host.clone());
    endpoint_config.connect_timeout = timeout;
    let channels: Vec<Channel> = net::dial_feeds(&endpoint_config);
    let clock = Arc::new(world.hosts.clock(&host, &world.scenario.clocks));
    for n in 0..count {
        let id = format!("{host}/{n}");
        let verifier = start_verifier(&world, &id, &region, &brokers, &channels, clock.clone());
        let rng = StdRng::seed_from_u64(world.host_seed(&id, incarnation));
        tokio::spawn(verify_loop(world.clone(), id, verifier, rng));
    }
    // Report every verifier's state just before the run ends.
    let total_ms = (world.scenario.duration_s + world.scenario.settle_s) * 1000;
    let report_at = Duration::from_millis(total_ms.saturating_sub(REPORT_BEFORE_END_MS));
    let since_start = Duration::from_secs_f64(elapsed_ms() / 1000.0);
    tokio::time::sleep(report_at.saturating_sub(since_start)).await;
    world
        .oracle
        .verifiers_ended(world.hosts.verifier_ends(&host));
    std::future::pending::<()>().await;
    Ok(())
}

/// Start verifier `id` following `brokers` over the host's `channels`.
fn start_verifier(
    world: &Arc<World>,
    id: &str,
    region: &str,
    brokers: &[String],
    channels: &[Channel],
    clock: Arc<SimClock>,
) -> Verifier {
    let verifier = Verifier::with_clock(verify_config(world), clock);
    world.hosts.verifier_started(
        id.to_owned(),
        region.to_owned(),
        verifier.clone(),
        elapsed_ms(),
    );
    let on_apply = {
        let world = world.clone();
        let id = id.to_owned();
        OnApply(Arc::new(move |epoch| on_epoch(&world, &id, epoch)))
    };
    let mut follow_config = FollowConfig::new(brokers.to_vec(), id.to_owned());
    follow_config.region = region.to_owned();
    follow_config.channels = Some(channels.to_vec());
    follow_config.on_apply = Some(on_apply);
    follow_config.connect_timeout =
        Duration::from_millis(world.scenario.workload.request_timeout_ms);
    tokio::spawn(lapse_verifier::follow(
        verifier.clone(),
        follow_config,
        Arc::new(FollowStats::default()),
        std::future::pending(),
    ));
    verifier
}

/// How the scenario's verifiers (and relays of the relay tier) verify.
pub(in crate::harness) fn verify_config(world: &World) -> VerifyConfig {
    let settings = &world.scenario.verifier;
    VerifyConfig {
        staleness: Duration::from_millis(settings.staleness_ms),
        fail_open: settings.fail_open || world.variant == Variant::VerifierIgnoresStaleness,
        leeway_seconds: settings.leeway_s,
        trust: (world.variant != Variant::VerifierSkipsSignatures).then(|| world.pki.checker()),
        // The audience the clients' credentials are issued for.
        audience: Some("sim".into()),
        ..VerifyConfig::default()
    }
}

/// Verifier `id` applied `epoch`: trace it, check it, and sample the
/// propagation of every revocation it took in.
fn on_epoch(world: &World, id: &str, epoch: u64) {
    let now = elapsed_ms();
    let Some(moved) = world.hosts.verifier_epoch(id, epoch) else {
        return;
    };
    if let Some(vouched) = moved.dropped_to {
        world.note(
            id,
            format_args!(
                "a broker vouched for another state than the one received: dropped back to vouched epoch {vouched}"
            ),
        );
    }
    world.note(id, format_args!("epoch {epoch}"));
    oracle::check_epoch(world, id, moved.floor, epoch, now);
    if epoch > moved.previous {
        let committed = world
            .oracle
            .committed_between(moved.previous, epoch, moved.started_ms);
        world
            .observer
            .propagated(committed.into_iter().map(|first| PropagationSample {
                region: moved.region.clone(),
                committed_ms: first,
                delay_ms: (now - first).max(0.0),
            }));
    }
}

/// Every `verify_every_ms`, verify a few credentials and have the oracle
/// judge each result.
async fn verify_loop(world: Arc<World>, id: String, verifier: Verifier, mut rng: StdRng) {
    let every = Duration::from_millis(world.scenario.workload.verify_every_ms);
    let leeway_ms = verifier.config().leeway_seconds * 1000;
    loop {
        tokio::time::sleep(every).await;
        let picks = world.oracle.pick_credentials(&mut rng);
        let fresh = note_freshness(&world, &id, &verifier);
        for pick in picks {
            let result = verifier.verify(&pick.token, &Expect::default());
            let verification = Verification {
                verifier: &id,
                index: pick.index,
                life: pick.life,
                ancestors: &pick.ancestors,
                at_ms: elapsed_ms(),
                fresh,
                leeway_ms,
            };
            oracle::judge_verification(&world, &verification, &result);
        }
    }
}

/// Whether `verifier` is fresh now; a change since the last look goes in
/// the trace with the verifier's own reason.
fn note_freshness(world: &World, id: &str, verifier: &Verifier) -> bool {
    let status = verifier.status();
    let was = world.hosts.verifier_fresh(id, status.fresh);
    if was != Some(status.fresh) {
        match (&status.stale_reason, was) {
            (Some(reason), Some(true)) => world.note(id, format_args!("fresh -> stale: {reason}")),
            (None, _) => world.note(
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
