//! Revocation commit throughput and latency.
//!
//! Starts a three-broker cluster with sled storage in this process, on
//! loopback, and sends revocations to the leader over gRPC from concurrent
//! clients: first one revocation per call, then batched calls. Beside them
//! it measures a baseline in the same run: a `Status` call, which crosses
//! the same gRPC stack but neither Raft nor the disk.
//!
//! ```sh
//! cargo bench -p lapse-benches --bench revoke -- [--single N] [--batched N] [--json] ...
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use lapse_benches::client::{Phase, connections, request, run_phase};
use lapse_benches::cluster::{bench_auth, leader_address, shutdown, start_bench_cluster};
use lapse_benches::{CargoBench, init_logging, print_json};
use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::cluster::{self as pb, revocation::Target};
use serde_json::json;
use tonic::transport::Channel;

/// Revocation commit throughput and latency on a local three-broker cluster.
#[derive(Debug, Parser)]
#[command(
    name = "revoke",
    bin_name = "cargo bench -p lapse-benches --bench revoke --"
)]
struct RevokeBench {
    /// Revocations sent one per call.
    #[arg(long, default_value_t = 20_000)]
    single: u64,
    /// Concurrent client tasks sending one revocation per call (and for the baseline).
    #[arg(long, default_value_t = 32)]
    single_concurrency: u64,
    /// Revocations sent in batched calls.
    #[arg(long, default_value_t = 400_000)]
    batched: u64,
    /// Revocations per batched call.
    #[arg(long, default_value_t = 256)]
    batch: u64,
    /// Concurrent client tasks sending batched calls.
    #[arg(long, default_value_t = 2)]
    concurrency: u64,
    /// Client connections the tasks share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Where the brokers keep their data (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cargo: CargoBench,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = RevokeBench::parse();
    init_logging();
    let temporary = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    let (brokers, _) = start_bench_cluster(&dir, |_| {}).await?;
    let channels = connections(&leader_address(&brokers)?, args.connections).await?;
    let auth = Arc::new(bench_auth());

    let mut admin = ClusterClient::new(channels[0].clone());
    let lease = admin
        .lease_indices(request(
            &auth,
            pb::LeaseRequest {
                request_id: "bench-lease".into(),
                broker_id: 1,
                count: (args.single + args.batched).max(1),
                lease_ms: 3_600_000,
            },
        ))
        .await?
        .into_inner();
    let next_index = Arc::new(AtomicU64::new(lease.start));

    let baseline = baseline_phase(&args, &channels).await?;
    let single = single_phase(&args, &channels, &auth, &next_index).await?;
    let batched = batched_phase(&args, &channels, &auth, &next_index).await?;
    shutdown(brokers).await;
    report(&args, &baseline, &single, &batched);
    Ok(())
}

/// `Status` calls: the same gRPC stack, neither Raft nor the disk.
async fn baseline_phase(args: &RevokeBench, channels: &[Channel]) -> anyhow::Result<Phase> {
    run_phase(
        "baseline: Status call (gRPC only)",
        args.single,
        1,
        args.single_concurrency,
        channels,
        move |client: &Channel, _: u64, _: u64| {
            let mut client = ClusterClient::new(client.clone());
            async move { client.status(pb::StatusRequest {}).await.map(|_| ()) }
        },
    )
    .await
}

/// One `Revoke` call per revocation, each its own Raft entry.
async fn single_phase(
    args: &RevokeBench,
    channels: &[Channel],
    auth: &Arc<String>,
    next_index: &Arc<AtomicU64>,
) -> anyhow::Result<Phase> {
    let (next_index, auth) = (next_index.clone(), auth.clone());
    run_phase(
        "revoke, one per call",
        args.single,
        1,
        args.single_concurrency,
        channels,
        move |client, call, _| {
            let mut client = ClusterClient::new(client.clone());
            let index = next_index.fetch_add(1, Ordering::Relaxed);
            let message = pb::RevokeRequest {
                request_id: format!("bench-single-{call}"),
                revocation: Some(pb::Revocation {
                    target: Some(Target::Index(index)),
                }),
            };
            let request = request(&auth, message);
            async move { client.revoke(request).await.map(|_| ()) }
        },
    )
    .await
}

/// `RevokeMany` calls of `--batch` revocations, one Raft entry per call.
async fn batched_phase(
    args: &RevokeBench,
    channels: &[Channel],
    auth: &Arc<String>,
    next_index: &Arc<AtomicU64>,
) -> anyhow::Result<Phase> {
    let (next_index, auth) = (next_index.clone(), auth.clone());
    run_phase(
        "revoke, batched",
        args.batched,
        args.batch.max(1),
        args.concurrency,
        channels,
        move |client, call, size| {
            let mut client = ClusterClient::new(client.clone());
            let start = next_index.fetch_add(size, Ordering::Relaxed);
            let message = pb::RevokeManyRequest {
                request_id: format!("bench-batch-{call}"),
                revocations: (start..start + size)
                    .map(|index| pb::Revocation {
                        target: Some(Target::Index(index)),
                    })
                    .collect(),
            };
            let request = request(&auth, message);
            async move { client.revoke_many(request).await.map(|_| ()) }
        },
    )
    .await
}

/// Revocations per second, or calls per second for the baseline.
fn per_second(phase: &Phase, revocations: u64) -> f64 {
    let done = if revocations == 0 {
        phase.operations
    } else {
        revocations
    };
    done as f64 / phase.elapsed.as_secs_f64()
}

fn report(args: &RevokeBench, baseline: &Phase, single: &Phase, batched: &Phase) {
    // The baseline revokes nothing.
    let phases = [
        (baseline, 0),
        (single, single.items),
        (batched, batched.items),
    ];
    if args.json {
        let rows: Vec<_> = phases
            .iter()
            .map(|&(p, revocations)| {
                json!({
                    "phase": p.name, "calls": p.operations, "revocations": revocations,
                    "seconds": p.elapsed.as_secs_f64(),
                    "per_second": revocations as f64 / p.elapsed.as_secs_f64(),
                    "p50_ms": p.latencies.quantile_ms(0.5), "p99_ms": p.latencies.quantile_ms(0.99),
                    "max_ms": p.latencies.max_ms(),
                })
            })
            .collect();
        print_json(&json!({
            "single_concurrency": args.single_concurrency, "batched_concurrency": args.concurrency,
            "batch": args.batch, "phases": rows,
        }));
        return;
    }
    println!(
        "three brokers, sled, loopback gRPC, {} connections; one per call: {} concurrent clients; \
         batched: {} concurrent clients, {} revocations per call",
        args.connections, args.single_concurrency, args.concurrency, args.batch
    );
    println!(
        "{:<36} {:>9} {:>12} {:>14} {:>9} {:>9} {:>9}",
        "phase", "calls", "revocations", "revocations/s", "p50 ms", "p99 ms", "max ms"
    );
    for (p, revocations) in phases {
        let (p50, p99, max) = p.latencies.summary_ms();
        println!(
            "{:<36} {:>9} {:>12} {:>14.0} {:>9.2} {:>9.2} {:>9.2}",
            p.name,
            p.operations,
            revocations,
            per_second(p, revocations),
            p50,
            p99,
            max
        );
    }
    let baseline_p50 = baseline.latencies.quantile_ms(0.5).max(1e-9);
    println!(
        "ratios to the baseline (p50 latency): one per call {:.1}x, batched {:.1}x",
        single.latencies.quantile_ms(0.5) / baseline_p50,
        batched.latencies.quantile_ms(0.5) / baseline_p50
    );
}
