//! A relay host: a feed relay in a region, following the brokers in the
//! region's order of preference and serving their feed to the region's
//! verifiers, which try it first. Either Lapse's relay tier (a verifier
//! serving what it follows, as `lapse verifier --relay` runs it) or the
//! simulation's pass-through relay ([`crate::relay`]), which may be hostile
//! and change the feed on the way; the verifiers' signature and digest
//! checks must make that harmless.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lapse_verifier::relay::{RelayConfig, RelayService};
use lapse_verifier::{FollowConfig, FollowStats, OnApply, OnEvent, Verifier};
use lapse_wire::frames::FeedFrameServer;

use super::verifier;
use crate::harness::World;
use crate::net::{self, BROKER_PORT};
use crate::relay::{Relay, RelayStats, Tamper};
use crate::scenario::RelayMode;

/// Run the relay `host` in `mode`, following `brokers`.
pub(in crate::harness) async fn relay_host(
    world: Arc<World>,
    host: String,
    mode: RelayMode,
    brokers: Vec<String>,
) -> turmoil::Result {
    if mode == RelayMode::Tier {
        return tier_relay_host(world, host, brokers).await;
    }
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", BROKER_PORT)).await?;
    let mut endpoint_config = FollowConfig::new(brokers.clone(), host.clone());
    endpoint_config.connect_timeout =
        Duration::from_millis(world.scenario.workload.request_timeout_ms);
    let upstream = net::dial_feeds(&endpoint_config);
    let tamper = Tamper {
        drop_revocations: mode == RelayMode::DropRevocations,
        ..Tamper::default()
    };
    world.note(
        &host,
        format_args!("relay ({mode:?}) following {brokers:?}"),
    );
    let relay = Relay::new(upstream, None, tamper);
    tokio::spawn(note_tampering(world.clone(), host.clone(), relay.stats()));
    tonic::transport::Server::builder()
        .add_service(relay.into_service())
        .serve_with_incoming(net::incoming(listener))
        .await?;
    Ok(())
}

/// Run Lapse's relay tier on `host`: a verifier following `brokers` whose
/// feed is served on to the region's verifiers. It keeps no state across a
/// crash: restarted, it subscribes afresh and its leaves start again from
/// its snapshot or fail over to the brokers meanwhile.
async fn tier_relay_host(world: Arc<World>, host: String, brokers: Vec<String>) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", BROKER_PORT)).await?;
    let clock = Arc::new(world.hosts.clock(&host, &world.scenario.clocks));
    let verifier = Verifier::with_clock(verifier::verify_config(&world), clock);
    let relay = lapse_verifier::relay::Relay::new(verifier.clone(), RelayConfig::default());
    let mut config = FollowConfig::new(brokers.clone(), host.clone());
    config.region = "relays".into();
    config.connect_timeout = Duration::from_millis(world.scenario.workload.request_timeout_ms);
    // Over the simulated network, as the region's verifiers connect.
    config.channels = Some(net::dial_feeds(&config));
    let passing = relay.clone();
    config.on_event = Some(OnEvent(Arc::new(move |event| passing.passed(event))));
    config.downstream = Some(relay.clone());
    {
        let (world, host) = (world.clone(), host.clone());
        config.on_apply = Some(OnApply(Arc::new(move |epoch| {
            world.note(&host, format_args!("relaying epoch {epoch}"));
        })));
    }
    world.note(&host, format_args!("relay tier following {brokers:?}"));
    tokio::spawn(note_leaves(world.clone(), host.clone(), relay.clone()));
    tokio::spawn(lapse_verifier::follow(
        verifier,
        config,
        Arc::new(FollowStats::default()),
        std::future::pending(),
    ));
    tonic::transport::Server::builder()
        .add_service(FeedFrameServer::new(RelayService(relay)))
        .serve_with_incoming(net::incoming(listener))
        .await?;
    Ok(())
}

/// Every second, note in the trace how many leaves the relay serves, when
/// that changed.
async fn note_leaves(world: Arc<World>, host: String, relay: Arc<lapse_verifier::relay::Relay>) {
    let mut noted = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let leaves = relay.leaves();
        if leaves != noted {
            noted = leaves;
            world.note(&host, format_args!("serving {leaves} leaves"));
        }
    }
}

/// Every second, note in the trace what the relay changed since the last
/// note, if anything.
async fn note_tampering(world: Arc<World>, host: String, stats: Arc<RelayStats>) {
    let mut noted = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let tampered = stats.tampered_deltas.load(Ordering::Relaxed);
        if tampered > noted {
            noted = tampered;
            world.note(
                &host,
                format_args!(
                    "stripped {} revocations from {tampered} deltas so far (last at epoch {})",
                    stats.dropped_revocations.load(Ordering::Relaxed),
                    stats.last_tampered_epoch.load(Ordering::Relaxed)
                ),
            );
        }
    }
}
