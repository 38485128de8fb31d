//! A relay host: a feed relay ([`crate::relay`]) in a region, following
//! the brokers in the region's order of preference and serving their feed
//! to the region's verifiers, which try it first. A hostile one changes
//! the feed on the way; the verifiers' signature and digest checks must
//! make that harmless.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lapse_verifier::FollowConfig;

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
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", BROKER_PORT)).await?;
    let mut endpoint_config = FollowConfig::new(brokers.clone(), host.clone());
    endpoint_config.connect_timeout =
        Duration::from_millis(world.scenario.workload.request_timeout_ms);
    let upstream = brokers
        .iter()
        .map(|b| {
            net::dial(
                lapse_verifier::feed_endpoint(b, &endpoint_config)
                    .expect("simulation addresses are valid URIs"),
            )
        })
        .collect();
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
