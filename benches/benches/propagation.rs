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
//! With `--relays N` the verifiers follow N relays of this process
//! (`lapse verifier --relay`), which follow the brokers: the delays are
//! then also given by hop, to the relays (one hop) and to the verifiers
//! behind them (two).
//!
//! `--broker-cost` runs the verifiers and relays on a runtime of their own
//! (two threads named `bench-fleet`) and the brokers on the main runtime,
//! and reports what the brokers spent per subscriber: CPU time (the
//! process's, less the fleet's threads and the main thread) per subscriber
//! per revocation over the measured revocations, heartbeats and acks
//! included; and heap bytes live on the brokers' threads, counted by the
//! benchmark's allocator ([`lapse_benches::alloc`]), with the subscribers
//! connected less without, per subscriber.
//!
//! ```sh
//! cargo bench -p lapse-benches --bench propagation -- [--transports plaintext,tls] [--verifiers 1000] [--revocations 200] [--relays 0] [--broker-cost] [--json]
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use lapse_benches::alloc::{Counting, Side, enable, live, mark_thread};
use lapse_benches::client::request;
use lapse_benches::cluster::{bench_auth, leading_broker, shutdown, start_bench_cluster};
use lapse_benches::cpu::CpuReading;
use lapse_benches::fleet::{ApplyLog, Fleet, FleetOptions, FleetSummary, delays_of};
use lapse_benches::heartbeat::{HeartbeatCosts, heartbeat_costs};
use lapse_benches::stats::Latencies;
use lapse_benches::transport::{Caller, Dialer, Transport};
use lapse_benches::{CargoBench, Transports, init_logging, print_json, ratio};
use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::cluster::{self as pb, revocation::Target};
use serde_json::json;
use tonic::transport::Channel;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The prefix of the fleet runtime's threads under `--broker-cost`.
const FLEET_THREADS: &str = "bench-fleet";

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
    /// Run the verifiers and relays on a runtime of their own (two
    /// threads) and report the brokers' CPU time and heap per subscriber.
    #[arg(long)]
    broker_cost: bool,
    /// At most this many verifiers subscribing at once, each until it
    /// applied its first state (default: all at once).
    #[arg(long)]
    subscribing: Option<usize>,
    /// How often the brokers send each subscriber a heartbeat (200: as
    /// deployed). Verifiers leave a source silent for three heartbeats
    /// (at least 2 s, their default).
    #[arg(long, default_value_t = 200)]
    heartbeat_ms: u64,
    /// Pause between revocations.
    #[arg(long, default_value_t = 10)]
    pause_ms: u64,
    /// How long each revocation may take to reach every verifier before
    /// it counts as timed out (and the run fails).
    #[arg(long, default_value_t = 10)]
    patience_s: u64,
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
    /// With relays: per revocation, the delay to each relay (one hop from
    /// a broker).
    relays_each: Latencies,
    /// With `--broker-cost`: what the brokers spent.
    cost: Option<BrokerCost>,
}

/// What the brokers spent on their subscribers (`--broker-cost`).
#[derive(Debug, Clone, Copy)]
struct BrokerCost {
    /// The brokers' own subscribers: the relays, or else the verifiers.
    subscribers: usize,
    /// Revocations the CPU time was read over (the warm-up included).
    revocations: u64,
    /// The brokers' CPU time over them.
    cpu: Duration,
    /// The brokers' CPU time per revocation (with its pause) before any
    /// subscriber connected.
    idle_cpu_per_revocation: Duration,
    /// Heap bytes live on the brokers' threads before the fleet started
    /// and after the last revocation.
    heap_before: i64,
    heap_after: i64,
    /// Heap bytes live on the fleet's threads after the last revocation.
    fleet_heap: i64,
}

impl BrokerCost {
    /// The brokers' CPU time per revocation beyond what it costs with no
    /// subscriber, per subscriber.
    fn cpu_per_subscriber_revocation_us(&self) -> f64 {
        let per_revocation = self.cpu.as_secs_f64() / self.revocations.max(1) as f64;
        let beyond_idle = per_revocation - self.idle_cpu_per_revocation.as_secs_f64();
        beyond_idle.max(0.0) * 1e6 / self.subscribers.max(1) as f64
    }

    fn heap_per_subscriber_bytes(&self) -> f64 {
        (self.heap_after - self.heap_before) as f64 / self.subscribers.max(1) as f64
    }
}

fn main() -> anyhow::Result<()> {
    let args = PropagationBench::parse();
    init_logging();
    let brokers_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-broker")
        .on_thread_start(|| mark_thread(Side::Brokers))
        .build()?;
    let fleet_runtime = if args.broker_cost {
        enable();
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .thread_name(FLEET_THREADS)
                .on_thread_start(|| mark_thread(Side::Clients))
                .build()?,
        )
    } else {
        None
    };
    let fleet_handle = fleet_runtime.as_ref().map(|r| r.handle().clone());
    let outcome = brokers_runtime.block_on(bench(args, fleet_handle));
    // Stop both runtimes without waiting on what a stopped fleet left.
    if let Some(runtime) = fleet_runtime {
        runtime.shutdown_background();
    }
    brokers_runtime.shutdown_background();
    outcome
}

/// The benchmark, on the brokers' runtime; the fleet on `fleet` when given.
async fn bench(
    args: PropagationBench,
    fleet: Option<tokio::runtime::Handle>,
) -> anyhow::Result<()> {
    let args = &args;
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
        runs.push(run(args, transport, fleet.as_ref()).await?);
    }
    report(args, &runs, costs.as_ref());
    let timeouts: u64 = runs.iter().map(|m| m.timeouts).sum();
    if timeouts > 0 {
        bail!(
            "{timeouts} revocations did not reach every verifier within {} s",
            args.patience_s
        );
    }
    Ok(())
}

/// One cluster talking `transport` and its fleet of verifiers (on
/// `fleet_runtime` when given, else beside the brokers).
async fn run(
    args: &PropagationBench,
    transport: Transport,
    fleet_runtime: Option<&tokio::runtime::Handle>,
) -> anyhow::Result<Measured> {
    let temporary = tempfile::tempdir()?;
    let subscribers = args.verifiers + args.relays + 16;
    let (brokers, addresses, dialer) = start_bench_cluster(temporary.path(), transport, |config| {
        config.feed.max_subscribers = subscribers;
        // Every verifier of the benchmark presents the one certificate.
        config.feed.max_subscribers_per_identity = subscribers;
        config.feed.heartbeat_ms = args.heartbeat_ms;
    })
    .await?;
    let leader = leading_broker(&brokers, addresses[0]);
    let (admin, first_index) = lease(&dialer, leader, 2 * args.revocations + 10).await?;
    // What the brokers spend per revocation with nobody subscribed.
    let idle = match fleet_runtime {
        Some(_) => Some(idle_cost(args, admin.clone(), first_index + args.revocations + 1).await?),
        None => None,
    };
    let broker_list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    let heap_before = live(Side::Brokers);
    let (stop_relays, relays_stopped) = tokio::sync::watch::channel(false);
    let here = tokio::runtime::Handle::current();
    let runtime = fleet_runtime.unwrap_or(&here);
    let (sources, relay_logs) = if args.relays == 0 {
        (broker_list, Vec::new())
    } else {
        runtime
            .spawn(start_relays(
                idle_timeout(args),
                dialer.clone(),
                broker_list,
                args.relays,
                relays_stopped,
            ))
            .await??
    };
    let fleet = {
        let _fleet_runtime = runtime.enter();
        let options = FleetOptions {
            // Behind relays, each verifier stays with its relay.
            pinned: args.relays > 0,
            idle_timeout: Some(idle_timeout(args)),
            subscribing: args.subscribing,
        };
        Fleet::start_with(
            &dialer,
            &sources,
            args.verifiers,
            args.per_connection,
            &options,
        )?
    };
    let subscribed = Instant::now();
    if !fleet.wait_all(1, Duration::from_secs(300)).await {
        bail!(
            "{}: verifiers did not all subscribe within 300 s",
            transport.name()
        );
    }
    let subscribe_time = subscribed.elapsed();
    let cpu_before = CpuReading::now(FLEET_THREADS);
    let measured = measure(args, &fleet, &relay_logs, admin, first_index).await?;
    let cpu_after = CpuReading::now(FLEET_THREADS);
    let cost = fleet_runtime.map(|_| BrokerCost {
        subscribers: if args.relays == 0 {
            args.verifiers
        } else {
            args.relays
        },
        revocations: args.revocations + 1,
        cpu: cpu_after.others_since(&cpu_before),
        idle_cpu_per_revocation: idle.unwrap_or_default(),
        heap_before,
        heap_after: live(Side::Brokers),
        fleet_heap: live(Side::Clients),
    });
    let brokers_view = brokers_view(&dialer, leader).await?;
    let fleet_summary = fleet.summary();
    fleet.stop();
    let _ = stop_relays.send(true);
    shutdown(brokers).await;
    Ok(Measured {
        transport,
        subscribe_time,
        last: measured.last,
        each: measured.each,
        timeouts: measured.timeouts,
        calls: measured.calls,
        brokers: brokers_view,
        fleet: fleet_summary,
        relays_each: measured.relays_each,
        cost,
    })
}

/// Start `count` relays following `brokers` (relay `i` prefers broker
/// `i mod 3`), each serving its feed on a loopback port: their addresses,
/// and when each relay applied each epoch.
async fn start_relays(
    idle: Duration,
    dialer: Dialer,
    brokers: Vec<String>,
    count: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Vec<String>, Vec<ApplyLog>)> {
    use lapse_verifier::relay::{Relay, RelayConfig};
    let mut addresses = Vec::new();
    let mut logs = Vec::new();
    for i in 0..count {
        let verifier = lapse_verifier::Verifier::new(dialer.verify_config());
        let relay = Relay::new(
            verifier.clone(),
            RelayConfig {
                require_verifier_certificate: dialer.verifier_tls().is_some(),
                // Every leaf the benchmark may put behind one relay.
                max_leaves: 1_000_000,
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
        config.idle_timeout = idle;
        config.connect_timeout = config.connect_timeout.max(idle);
        let passing = relay.clone();
        config.on_event = Some(lapse_verifier::OnEvent(std::sync::Arc::new(move |event| {
            passing.passed(event)
        })));
        config.downstream = Some(relay.clone());
        let log: ApplyLog = std::sync::Arc::default();
        let record = log.clone();
        config.on_apply = Some(lapse_verifier::OnApply(std::sync::Arc::new(move |epoch| {
            record
                .lock()
                .expect("log lock")
                .push((epoch, Instant::now()));
        })));
        logs.push(log);
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
    Ok((addresses, logs))
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

/// What the revocations measured.
#[derive(Default)]
struct Revocations {
    /// To the last verifier, per revocation.
    last: Latencies,
    /// To each verifier.
    each: Latencies,
    /// To each relay.
    relays_each: Latencies,
    timeouts: u64,
    calls: Calls,
}

/// Revoke one index at a time from `first_index` (a warm-up, then
/// `--revocations`), each once every verifier holds the one before (or
/// 10 s passed): the delays to the last verifier, to each, and to each of
/// the relays (`relay_logs`), how many timed out, and the calls' own times.
async fn measure(
    args: &PropagationBench,
    fleet: &Fleet,
    relay_logs: &[ApplyLog],
    mut admin: ClusterClient<Channel>,
    first_index: u64,
) -> anyhow::Result<Revocations> {
    let auth = bench_auth();
    let mut measured = Revocations::default();
    let Revocations {
        last,
        each,
        relays_each,
        timeouts,
        calls,
    } = &mut measured;
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
        if !fleet
            .wait_all(reply.epoch, Duration::from_secs(args.patience_s))
            .await
        {
            *timeouts += 1;
            continue;
        }
        if n == 0 {
            continue; // warm-up
        }
        let delays = fleet.delays(reply.epoch, acknowledged);
        delays.iter().for_each(|&delay| each.record(delay));
        last.record(delays.into_iter().max().unwrap_or_default());
        for delay in delays_of(relay_logs, reply.epoch, acknowledged) {
            relays_each.record(delay);
        }
        calls.rpc.record(acknowledged - sent);
        let from_sent = fleet.delays(reply.epoch, sent);
        calls
            .sent_last
            .record(from_sent.into_iter().max().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    Ok(measured)
}

/// How long verifiers and relays wait on a silent source: three
/// heartbeats, at least 2 s.
fn idle_timeout(args: &PropagationBench) -> Duration {
    Duration::from_millis((3 * args.heartbeat_ms).max(2000))
}

/// The brokers' CPU time per revocation (and its pause) with nobody
/// subscribed, over `--revocations` (at most 50) revocations of the indices
/// from `first_index`.
async fn idle_cost(
    args: &PropagationBench,
    mut admin: ClusterClient<Channel>,
    first_index: u64,
) -> anyhow::Result<Duration> {
    let auth = bench_auth();
    let count = args.revocations.clamp(1, 50);
    let before = CpuReading::now(FLEET_THREADS);
    for n in 0..count {
        admin
            .revoke(request(
                &auth,
                pb::RevokeRequest {
                    request_id: format!("bench-idle-revoke-{n}"),
                    revocation: Some(pb::Revocation {
                        target: Some(Target::Index(first_index + n)),
                    }),
                },
            ))
            .await?;
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    let cpu = CpuReading::now(FLEET_THREADS).others_since(&before);
    Ok(cpu / count as u32)
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
    // The report names every verifier: 8.6 MB at 100,000.
    Ok(ClusterClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .propagation(request(
            &bench_auth(),
            pb::PropagationRequest {
                epoch: 0,
                summary: false,
            },
        ))
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
                if args.relays > 0 {
                    let (p50, p99, max) = m.relays_each.summary_ms();
                    run["hop1_relays_each_ms"] = json!({"p50": p50, "p99": p99, "max": max});
                }
                if let Some(cost) = &m.cost {
                    run["broker_cost"] = json!({
                        "subscribers": cost.subscribers,
                        "revocations": cost.revocations,
                        "cpu_s": cost.cpu.as_secs_f64(),
                        "idle_cpu_per_revocation_us": cost.idle_cpu_per_revocation.as_secs_f64() * 1e6,
                        "cpu_per_subscriber_per_revocation_us": cost.cpu_per_subscriber_revocation_us(),
                        "heap_before_bytes": cost.heap_before,
                        "heap_after_bytes": cost.heap_after,
                        "heap_per_subscriber_bytes": cost.heap_per_subscriber_bytes(),
                        "fleet_heap_bytes": cost.fleet_heap,
                    });
                }
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
            format!(" behind {} relays (two hops from a broker)", args.relays)
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
        if args.relays > 0 {
            let (p50, p99, max) = m.relays_each.summary_ms();
            println!(
                "  {:<44} {p50:>9.2} {p99:>9.2} {max:>9.2}",
                "revoke acknowledged -> each relay (hop 1)"
            );
            println!(
                "  {:<44} {each_p50:>9.2} {each_p99:>9.2} {each_max:>9.2}",
                "revoke acknowledged -> each leaf (hop 2)"
            );
        }
        if let Some(b) = &m.brokers {
            println!(
                "  {:<44} {:>9.2} {:>9.2} {:>9.2}",
                "commit -> ack, as the brokers measure it", b.p50_ms, b.p99_ms, b.max_ms
            );
        }
        if let Some(cost) = &m.cost {
            println!(
                "  brokers, per subscriber ({} {}): CPU {:.2} µs per revocation ({:.3} s over {} revocations, heartbeats and acks included, less {:.0} µs per revocation with none subscribed); heap {:.0} B ({:.1} MB before the fleet, {:.1} MB after); the fleet's own heap {:.1} MB",
                cost.subscribers,
                if args.relays == 0 {
                    "verifiers"
                } else {
                    "relays"
                },
                cost.cpu_per_subscriber_revocation_us(),
                cost.cpu.as_secs_f64(),
                cost.revocations,
                cost.idle_cpu_per_revocation.as_secs_f64() * 1e6,
                cost.heap_per_subscriber_bytes(),
                cost.heap_before as f64 / 1e6,
                cost.heap_after as f64 / 1e6,
                cost.fleet_heap as f64 / 1e6,
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
