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
//! ```sh
//! cargo bench -p lapse-benches --bench propagation -- [--verifiers 1000] [--revocations 200] [--json]
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use lapse_benches::client::request;
use lapse_benches::cluster::{bench_auth, leading_broker, shutdown, start_bench_cluster};
use lapse_benches::fleet::Fleet;
use lapse_benches::stats::Latencies;
use lapse_benches::{CargoBench, init_logging, print_json};
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
    /// Pause between revocations.
    #[arg(long, default_value_t = 10)]
    pause_ms: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cargo: CargoBench,
}

/// What one run measured.
struct Measured {
    subscribe_time: Duration,
    /// Per revocation, the delay to the last verifier.
    last: Latencies,
    /// Every verifier-revocation pair.
    each: Latencies,
    /// Revocations not applied by every verifier within 10 s.
    timeouts: u64,
    /// Commit to ack, as the brokers measure it.
    brokers: Option<pb::DelaySummary>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = PropagationBench::parse();
    init_logging();
    let temporary = tempfile::tempdir()?;
    let subscribers = args.verifiers + 16;
    let (brokers, addresses) = start_bench_cluster(temporary.path(), |config| {
        config.feed.max_subscribers = subscribers;
    })
    .await?;
    let leader = leading_broker(&brokers, addresses[0]);
    let (admin, first_index) = lease(leader, args.revocations + 10).await?;
    let broker_list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    let fleet = Fleet::start(&broker_list, args.verifiers, args.per_connection)?;
    let subscribed = Instant::now();
    if !fleet.wait_all(1, Duration::from_secs(120)).await {
        bail!("verifiers did not all subscribe within 120 s");
    }
    let subscribe_time = subscribed.elapsed();
    let (last, each, timeouts) = measure(&args, &fleet, admin, first_index).await?;
    let brokers_view = brokers_view(leader).await?;
    fleet.stop();
    shutdown(brokers).await;
    let measured = Measured {
        subscribe_time,
        last,
        each,
        timeouts,
        brokers: brokers_view,
    };
    report(&args, &measured);
    if timeouts > 0 {
        bail!("{timeouts} revocations did not reach every verifier within 10 s");
    }
    Ok(())
}

/// A client of the leader, and the first of `count` status indices
/// leased to broker 1.
async fn lease(leader: SocketAddr, count: u64) -> anyhow::Result<(ClusterClient<Channel>, u64)> {
    let mut admin = ClusterClient::<Channel>::connect(format!("http://{leader}")).await?;
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
/// 10 s passed): the delays to the last verifier and to each, and how many
/// timed out.
async fn measure(
    args: &PropagationBench,
    fleet: &Fleet,
    mut admin: ClusterClient<Channel>,
    first_index: u64,
) -> anyhow::Result<(Latencies, Latencies, u64)> {
    let auth = bench_auth();
    let (mut last, mut each) = (Latencies::new(), Latencies::new());
    let mut timeouts = 0;
    for n in 0..=args.revocations {
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
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    Ok((last, each, timeouts))
}

/// The brokers' own measurement, from commit to each ack, over every
/// verifier.
async fn brokers_view(leader: SocketAddr) -> anyhow::Result<Option<pb::DelaySummary>> {
    let mut client = ClusterClient::<Channel>::connect(format!("http://{leader}")).await?;
    Ok(client
        .propagation(request(&bench_auth(), pb::PropagationRequest { epoch: 0 }))
        .await?
        .into_inner()
        .overall)
}

fn report(args: &PropagationBench, m: &Measured) {
    let (last_p50, last_p99, last_max) = m.last.summary_ms();
    let (each_p50, each_p99, each_max) = m.each.summary_ms();
    if args.json {
        print_json(&json!({
            "system": "lapse",
            "watchers": args.verifiers,
            "puts": m.last.len(),
            "timeouts": m.timeouts,
            "subscribe_s": m.subscribe_time.as_secs_f64(),
            "last_p50_ms": last_p50, "last_p99_ms": last_p99, "last_max_ms": last_max,
            "each_p50_ms": each_p50, "each_p99_ms": each_p99, "each_max_ms": each_max,
            "brokers_commit_to_ack": m.brokers.as_ref().map(|b| json!({
                "samples": b.samples, "p50_ms": b.p50_ms, "p99_ms": b.p99_ms, "max_ms": b.max_ms,
            })),
        }));
        return;
    }
    println!(
        "{} verifiers subscribed in {:.1} s; {} revocations measured ({} timed out)",
        args.verifiers,
        m.subscribe_time.as_secs_f64(),
        m.last.len(),
        m.timeouts
    );
    println!("{:<44} {:>9} {:>9} {:>9}", "", "p50 ms", "p99 ms", "max ms");
    println!(
        "{:<44} {last_p50:>9.2} {last_p99:>9.2} {last_max:>9.2}",
        "revoke acknowledged -> last verifier applied"
    );
    println!(
        "{:<44} {each_p50:>9.2} {each_p99:>9.2} {each_max:>9.2}",
        "revoke acknowledged -> each verifier applied"
    );
    if let Some(b) = &m.brokers {
        println!(
            "{:<44} {:>9.2} {:>9.2} {:>9.2}",
            "commit -> ack, as the brokers measure it", b.p50_ms, b.p99_ms, b.max_ms
        );
    }
}
