//! Time from a revocation being acknowledged to every verifier applying it.
//!
//! A three-broker cluster in this process and N verifiers (tasks in this
//! process, a few sharing each connection, spread over the brokers). One
//! revocation at a time; for each, the time from the revoke call returning
//! (committed and acknowledged) to each verifier applying it, and to the
//! last of them. The same shape as `benches/etcd`, which measures a put
//! returning to each etcd watcher seeing it; `benches/propagation.sh` runs
//! both.
//!
//! By default it runs twice, each time on a fresh cluster and fleet: in
//! plaintext, then with mutual TLS as deployed (verifier certificates on
//! the feed, TLS between the brokers, and heartbeats signed by the brokers
//! and checked by every verifier), and states the TLS delays as ratios to
//! the plaintext ones of the same run.
//!
//! ```sh
//! cargo bench -p lapse-benches --bench propagation -- [--transports plaintext,tls] [--verifiers 1000] [--revocations 200] [--json]
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use lapse_benches::client::request;
use lapse_benches::cluster::{bench_auth, leading_broker, shutdown, start_bench_cluster};
use lapse_benches::fleet::{Fleet, FleetSummary};
use lapse_benches::heartbeat::{HeartbeatCosts, heartbeat_costs};
use lapse_benches::stats::Latencies;
use lapse_benches::transport::{Caller, Dialer, Transport};
use lapse_benches::{CargoBench, Transports, init_logging, print_json, ratio};
use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::cluster::{self as pb, revocation::Target};
use serde_json::json;
use tonic::transport::Channel;

/// Time from a revocation being acknowledged to every verifier applying it.
#[derive(Debug, Parser)]
#[command(
    name = "propagation",
    bin_name = "cargo bench -p lapse-benches --bench propagation --"
)]
struct PropagationBench {
    /// Verifiers subscribed to the feed.
    #[arg(long, default_value_t = 1000)]
    verifiers: usize,
    /// Revocations measured, one at a time.
    #[arg(long, default_value_t = 200)]
    revocations: u64,
    /// Verifiers sharing one connection to each broker (1: a connection each).
    #[arg(long, default_value_t = 50)]
    per_connection: usize,
    /// Relays in this process between the brokers and the verifiers
    /// (`lapse verifier --relay`, each following the brokers); the
    /// verifiers then follow the relays, two hops from a broker. 0: the
    /// verifiers follow the brokers.
    #[arg(long, default_value_t = 0)]
    relays: usize,
    /// Pause between revocations.
    #[arg(long, default_value_t = 10)]
    pause_ms: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    transports: Transports,
    #[command(flatten)]
    cargo: CargoBench,
}

/// Per revocation measured: the call's round trip, and from sending it to
/// the last verifier applying it.
#[derive(Default)]
struct Calls {
    rpc: Latencies,
    sent_last: Latencies,
}

/// What one cluster and fleet measured.
struct Measured {
    transport: Transport,
    subscribe_time: Duration,
    /// Per revocation, the delay to the last verifier.
    last: Latencies,
    /// Every verifier-revocation pair.
    each: Latencies,
    /// Revocations not applied by every verifier within 10 s.
    timeouts: u64,
    /// The revoke calls, sent to acknowledged, and from sent to the last
    /// verifier applying it: context that does not depend on when the
    /// acknowledgement arrives.
    calls: Calls,
    /// Commit to ack, as the brokers measure it.
    brokers: Option<pb::DelaySummary>,
    /// The verifiers' counters at the end.
    fleet: FleetSummary,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = PropagationBench::parse();
    init_logging();
    // What signed heartbeats cost, on one thread before anything starts.
    let costs = if args.transports.transports.contains(&Transport::Tls) {
        Some(heartbeat_costs(
            Duration::from_millis(500),
            args.revocations + 1,
        )?)
    } else {
        None
    };
    let mut runs = Vec::new();
    for &transport in &args.transports.transports {
        runs.push(run(&args, transport).await?);
    }
    report(&args, &runs, costs.as_ref());
    let timeouts: u64 = runs.iter().map(|m| m.timeouts).sum();
    if timeouts > 0 {
        bail!("{timeouts} revocations did not reach every verifier within 10 s");
    }
    Ok(())
}

/// One cluster talking `transport` and its fleet of verifiers.
async fn run(args: &PropagationBench, transport: Transport) -> anyhow::Result<Measured> {
    let temporary = tempfile::tempdir()?;
    let subscribers = args.verifiers + 16;
    let (brokers, addresses, dialer) = start_bench_cluster(temporary.path(), transport, |config| {
        config.feed.max_subscribers = subscribers;
    })
    .await?;
    let leader = leading_broker(&brokers, addresses[0]);
    let (admin, first_index) = lease(&dialer, leader, args.revocations + 10).await?;
    let broker_list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    let (stop_relays, relays_stopped) = tokio::sync::watch::channel(false);
    let sources = if args.relays == 0 {
        broker_list
    } else {
        start_relays(&dialer, &broker_list, args.relays, relays_stopped).await?
    };
    let fleet = Fleet::start(&dialer, &sources, args.verifiers, args.per_connection)?;
    let subscribed = Instant::now();
    if !fleet.wait_all(1, Duration::from_secs(120)).await {
        bail!(
            "{}: verifiers did not all subscribe within 120 s",
            transport.name()
        );
    }
    let subscribe_time = subscribed.elapsed();
    let (last, each, timeouts, calls) = measure(args, &fleet, admin, first_index).await?;
    let brokers_view = brokers_view(&dialer, leader).await?;
    let fleet_summary = fleet.summary();
    fleet.stop();
    let _ = stop_relays.send(true);
    shutdown(brokers).await;
    Ok(Measured {
        transport,
        subscribe_time,
        last,
        each,
        timeouts,
        calls,
        brokers: brokers_view,
        fleet: fleet_summary,
    })
}

/// Start `count` relays following `brokers` (relay `i` prefers broker
/// `i mod 3`), each serving its feed on a loopback port: their addresses.
async fn start_relays(
    dialer: &Dialer,
    brokers: &[String],
    count: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<String>> {
    use lapse_verifier::relay::{Relay, RelayConfig};
    let mut addresses = Vec::new();
    for i in 0..count {
        let verifier = lapse_verifier::Verifier::new(dialer.verify_config());
        let relay = Relay::new(
            verifier.clone(),
            RelayConfig {
                require_verifier_certificate: dialer.verifier_tls().is_some(),
                ..RelayConfig::default()
            },
        );
        let mut config = lapse_verifier::FollowConfig::new(
            brokers.to_vec(),
            format!("{}/relay-{i}", lapse_benches::transport::VERIFIER),
        );
        config.brokers.rotate_left(i % brokers.len());
        config.tls = dialer.verifier_tls();
        config.region = "relays".into();
        let passing = relay.clone();
        config.on_event = Some(lapse_verifier::OnEvent(std::sync::Arc::new(move |event| {
            passing.passed(event)
        })));
        config.downstream = Some(relay.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addresses.push(listener.local_addr()?.to_string());
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        lapse_verifier::daemon::relay_on(
            relay,
            listener,
            dialer.verifier_tls(),
            stopped(stop.clone()),
        )
        .map_err(anyhow::Error::msg)?;
        tokio::spawn(lapse_verifier::follow(
            verifier,
            config,
            std::sync::Arc::new(lapse_verifier::FollowStats::default()),
            stopped(stop.clone()),
        ));
    }
    Ok(addresses)
}

/// An operator's client of the leader, and the first of `count` status
/// indices leased to broker 1.
async fn lease(
    dialer: &Dialer,
    leader: SocketAddr,
    count: u64,
) -> anyhow::Result<(ClusterClient<Channel>, u64)> {
    let channel = dialer
        .connect(&leader.to_string(), Caller::Operator, true)
        .await?;
    let mut admin = ClusterClient::new(channel);
    let lease = admin
        .lease_indices(request(
            &bench_auth(),
            pb::LeaseRequest {
                request_id: "bench-lease".into(),
                broker_id: 1,
                count,
                lease_ms: 3_600_000,
            },
        ))
        .await?
        .into_inner();
    Ok((admin, lease.start))
}

/// Revoke one index at a time from `first_index` (a warm-up, then
/// `--revocations`), each once every verifier holds the one before (or
/// 10 s passed): the delays to the last verifier and to each, how many
/// timed out, and the calls' own times.
async fn measure(
    args: &PropagationBench,
    fleet: &Fleet,
    mut admin: ClusterClient<Channel>,
    first_index: u64,
) -> anyhow::Result<(Latencies, Latencies, u64, Calls)> {
    let auth = bench_auth();
    let (mut last, mut each) = (Latencies::new(), Latencies::new());
    let mut calls = Calls::default();
    let mut timeouts = 0;
    for n in 0..=args.revocations {
        let sent = Instant::now();
        let reply = admin
            .revoke(request(
                &auth,
                pb::RevokeRequest {
                    request_id: format!("bench-revoke-{n}"),
                    revocation: Some(pb::Revocation {
                        target: Some(Target::Index(first_index + n)),
                    }),
                },
            ))
            .await?
            .into_inner();
        let acknowledged = Instant::now();
        if !fleet.wait_all(reply.epoch, Duration::from_secs(10)).await {
            timeouts += 1;
            continue;
        }
        if n == 0 {
            continue; // warm-up
        }
        let delays = fleet.delays(reply.epoch, acknowledged);
        delays.iter().for_each(|&delay| each.record(delay));
        last.record(delays.into_iter().max().unwrap_or_default());
        calls.rpc.record(acknowledged - sent);
        let from_sent = fleet.delays(reply.epoch, sent);
        calls
            .sent_last
            .record(from_sent.into_iter().max().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    Ok((last, each, timeouts, calls))
}

/// The brokers' own measurement, from commit to each ack, over every
/// verifier.
async fn brokers_view(
    dialer: &Dialer,
    leader: SocketAddr,
) -> anyhow::Result<Option<pb::DelaySummary>> {
    let channel = dialer
        .connect(&leader.to_string(), Caller::Operator, true)
        .await?;
    Ok(ClusterClient::new(channel)
        .propagation(request(&bench_auth(), pb::PropagationRequest { epoch: 0 }))
        .await?
        .into_inner()
        .overall)
}

/// The delays compared: name and milliseconds.
fn figures(m: &Measured) -> [(&'static str, f64); 6] {
    let (last_p50, last_p99, last_max) = m.last.summary_ms();
    let (each_p50, each_p99, each_max) = m.each.summary_ms();
    [
        ("last_p50_ms", last_p50),
        ("last_p99_ms", last_p99),
        ("last_max_ms", last_max),
        ("each_p50_ms", each_p50),
        ("each_p99_ms", each_p99),
        ("each_max_ms", each_max),
    ]
}

/// TLS over plaintext for every delay, when the run measured both.
fn tls_over_plaintext(runs: &[Measured]) -> Option<Vec<(&'static str, f64)>> {
    let of = |t: Transport| runs.iter().find(|m| m.transport == t).map(figures);
    let (plain, tls) = (of(Transport::Plaintext)?, of(Transport::Tls)?);
    Some(
        plain
            .iter()
            .zip(&tls)
            .map(|(&(name, p), &(_, t))| (name, ratio(t, p)))
            .collect(),
    )
}

fn report(args: &PropagationBench, runs: &[Measured], costs: Option<&HeartbeatCosts>) {
    let ratios = tls_over_plaintext(runs);
    if args.json {
        let runs: Vec<_> = runs
            .iter()
            .map(|m| {
                let mut run = json!({
                    "system": "lapse",
                    "transport": m.transport.name(),
                    "watchers": args.verifiers,
                    "relays": args.relays,
                    "puts": m.last.len(),
                    "timeouts": m.timeouts,
                    "subscribe_s": m.subscribe_time.as_secs_f64(),
                    "brokers_commit_to_ack": m.brokers.as_ref().map(|b| json!({
                        "samples": b.samples, "p50_ms": b.p50_ms, "p99_ms": b.p99_ms, "max_ms": b.max_ms,
                    })),
                    "rpc_p50_ms": m.calls.rpc.quantile_ms(0.5),
                    "rpc_p99_ms": m.calls.rpc.quantile_ms(0.99),
                    "sent_last_p50_ms": m.calls.sent_last.quantile_ms(0.5),
                    "sent_last_p99_ms": m.calls.sent_last.quantile_ms(0.99),
                    "signed_heartbeats": m.fleet.signed_heartbeats,
                    "heartbeats_applied": m.fleet.heartbeats,
                    "fresh_verifiers": m.fleet.fresh,
                    "rejected_events": m.fleet.rejected_events,
                });
                for (name, ms) in figures(m) {
                    run[name] = json!(ms);
                }
                run
            })
            .collect();
        print_json(&json!({
            "runs": runs,
            "heartbeat_costs_us": costs.map(|c| json!({
                "statement_bytes": c.statement_bytes,
                "revoked_in_state": c.revoked,
                "broker_sign": c.sign_us,
                "verifier_check_first": c.check_first_us,
                "verifier_check_again": c.check_again_us,
                "verifier_digest_new_epoch": c.digest_new_epoch_us,
                "verifier_digest_same_epoch": c.digest_same_epoch_us,
            })),
            "tls_over_plaintext": ratios.map(|r| r
                .into_iter()
                .map(|(name, r)| (name.trim_end_matches("_ms").to_owned(), json!(r)))
                .collect::<serde_json::Map<_, _>>()),
        }));
        return;
    }
    for m in runs {
        let (last_p50, last_p99, last_max) = m.last.summary_ms();
        let (each_p50, each_p99, each_max) = m.each.summary_ms();
        let hops = if args.relays == 0 {
            String::new()
        } else {
            format!(" behind {} relays (two hops)", args.relays)
        };
        println!(
            "{}: {} verifiers{hops} subscribed in {:.1} s; {} revocations measured ({} timed out)",
            m.transport.name(),
            args.verifiers,
            m.subscribe_time.as_secs_f64(),
            m.last.len(),
            m.timeouts
        );
        println!(
            "  heartbeats applied {} ({}), {} of {} verifiers fresh at the end, {} events refused",
            m.fleet.heartbeats,
            if m.fleet.signed_heartbeats {
                "each signed by its broker; signature and state digest checked"
            } else {
                "unsigned"
            },
            m.fleet.fresh,
            args.verifiers,
            m.fleet.rejected_events
        );
        println!(
            "  {:<44} {:>9} {:>9} {:>9}",
            "", "p50 ms", "p99 ms", "max ms"
        );
        println!(
            "  {:<44} {last_p50:>9.2} {last_p99:>9.2} {last_max:>9.2}",
            "revoke acknowledged -> last verifier applied"
        );
        println!(
            "  {:<44} {each_p50:>9.2} {each_p99:>9.2} {each_max:>9.2}",
            "revoke acknowledged -> each verifier applied"
        );
        for (name, latencies) in [
            ("revoke call (sent -> acknowledged)", &m.calls.rpc),
            ("revoke sent -> last verifier applied", &m.calls.sent_last),
        ] {
            let (p50, p99, max) = latencies.summary_ms();
            println!("  {name:<44} {p50:>9.2} {p99:>9.2} {max:>9.2}");
        }
        if let Some(b) = &m.brokers {
            println!(
                "  {:<44} {:>9.2} {:>9.2} {:>9.2}",
                "commit -> ack, as the brokers measure it", b.p50_ms, b.p99_ms, b.max_ms
            );
        }
    }
    if let Some(c) = costs {
        println!(
            "signed heartbeats, one thread, µs each: broker signs a {}-byte statement {:.1}; \
             verifier checks the signature and chain {:.1} the first time, {:.1} once checked \
             by another verifier of the process; digests a state of {} revocations {:.1} \
             (new epoch), {:.1} (same epoch)",
            c.statement_bytes,
            c.sign_us,
            c.check_first_us,
            c.check_again_us,
            c.revoked,
            c.digest_new_epoch_us,
            c.digest_same_epoch_us
        );
    }
    if let Some(ratios) = ratios {
        println!("TLS / plaintext, same run (above 1: TLS takes longer):");
        for (name, r) in ratios {
            println!("  {:<12} {r:>6.3}", name.trim_end_matches("_ms"));
        }
    }
}
