//! Revocation commit throughput and latency.
//!
//! Starts a three-broker cluster with sled storage in this process, on
//! loopback, and sends revocations to the leader over gRPC from concurrent
//! clients: first one revocation per call, then batched calls. Beside them
//! it measures a baseline in the same run: a `Status` call, which crosses
//! the same gRPC stack but neither Raft nor the disk.
//!
//! By default it does all of that twice, each time on a fresh cluster:
//! first in plaintext, then with mutual TLS as deployed (an operator
//! certificate for the revocations, TLS between the brokers too), and
//! states the TLS figures as ratios to the plaintext ones of the same run.
//!
//! ```sh
//! cargo bench -p lapse-benches --bench revoke -- [--transports plaintext,tls] [--single N] [--batched N] [--json] ...
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use lapse_benches::client::{Phase, connections, request, run_phase};
use lapse_benches::cluster::{bench_auth, leader_address, shutdown, start_bench_cluster};
use lapse_benches::transport::{Caller, Transport};
use lapse_benches::{CargoBench, Transports, init_logging, print_json, ratio};
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
    /// Where the brokers keep their data, under `<transport>/` (default: a
    /// temporary directory).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    transports: Transports,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cargo: CargoBench,
}

/// What one cluster measured.
struct Measured {
    transport: Transport,
    baseline: Phase,
    single: Phase,
    batched: Phase,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = RevokeBench::parse();
    init_logging();
    let mut runs = Vec::new();
    for &transport in &args.transports.transports {
        runs.push(measure(&args, transport).await?);
    }
    report(&args, &runs);
    Ok(())
}

/// The three phases on a fresh cluster talking `transport`.
async fn measure(args: &RevokeBench, transport: Transport) -> anyhow::Result<Measured> {
    let temporary = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned())
        .join(transport.name());
    let (brokers, _, dialer) = start_bench_cluster(&dir, transport, |_| {}).await?;
    let channels = connections(
        &dialer,
        &leader_address(&brokers)?,
        Caller::Operator,
        args.connections,
    )
    .await?;
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

    let baseline = baseline_phase(args, &channels).await?;
    let single = single_phase(args, &channels, &auth, &next_index).await?;
    let batched = batched_phase(args, &channels, &auth, &next_index).await?;
    drop(channels);
    shutdown(brokers).await;
    Ok(Measured {
        transport,
        baseline,
        single,
        batched,
    })
}

/// `Status` calls: the same gRPC stack and access decision, neither Raft
/// nor the disk.
async fn baseline_phase(args: &RevokeBench, channels: &[Channel]) -> anyhow::Result<Phase> {
    run_phase(
        "baseline: Status call (gRPC only)",
        args.single,
        1,
        args.single_concurrency,
        channels,
        {
            let auth = Arc::new(bench_auth());
            move |client: &Channel, _: u64, _: u64| {
                let mut client = ClusterClient::new(client.clone());
                let request = request(&auth, pb::StatusRequest {});
                async move { client.status(request).await.map(|_| ()) }
            }
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

/// The figures compared between transports, by name.
fn figures(m: &Measured) -> Vec<(&'static str, f64)> {
    let rate = |p: &Phase, items: u64| per_second(p, items);
    vec![
        ("baseline calls/s", rate(&m.baseline, 0)),
        ("baseline p50 ms", m.baseline.latencies.quantile_ms(0.5)),
        ("baseline p99 ms", m.baseline.latencies.quantile_ms(0.99)),
        (
            "one per call revocations/s",
            rate(&m.single, m.single.items),
        ),
        ("one per call p50 ms", m.single.latencies.quantile_ms(0.5)),
        ("one per call p99 ms", m.single.latencies.quantile_ms(0.99)),
        ("batched revocations/s", rate(&m.batched, m.batched.items)),
        ("batched p50 ms", m.batched.latencies.quantile_ms(0.5)),
        ("batched p99 ms", m.batched.latencies.quantile_ms(0.99)),
    ]
}

/// TLS over plaintext for every figure, when the run measured both.
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

fn report(args: &RevokeBench, runs: &[Measured]) {
    let ratios = tls_over_plaintext(runs);
    if args.json {
        let runs: Vec<_> = runs
            .iter()
            .map(|m| {
                // The baseline revokes nothing.
                let phases = [
                    (&m.baseline, 0),
                    (&m.single, m.single.items),
                    (&m.batched, m.batched.items),
                ];
                let rows: Vec<_> = phases
                    .iter()
                    .map(|&(p, revocations)| {
                        json!({
                            "phase": p.name, "calls": p.operations, "revocations": revocations,
                            "seconds": p.elapsed.as_secs_f64(),
                            "per_second": per_second(p, revocations),
                            "p50_ms": p.latencies.quantile_ms(0.5), "p99_ms": p.latencies.quantile_ms(0.99),
                            "max_ms": p.latencies.max_ms(),
                        })
                    })
                    .collect();
                json!({ "transport": m.transport.name(), "phases": rows })
            })
            .collect();
        print_json(&json!({
            "single_concurrency": args.single_concurrency, "batched_concurrency": args.concurrency,
            "batch": args.batch, "runs": runs,
            "tls_over_plaintext": ratios.map(|r| r
                .into_iter()
                .map(|(name, r)| (name.to_owned(), json!(r)))
                .collect::<serde_json::Map<_, _>>()),
        }));
        return;
    }
    println!(
        "three brokers, sled, loopback gRPC, {} connections; one per call: {} concurrent clients; \
         batched: {} concurrent clients, {} revocations per call",
        args.connections, args.single_concurrency, args.concurrency, args.batch
    );
    println!(
        "{:<10} {:<36} {:>9} {:>12} {:>14} {:>9} {:>9} {:>9}",
        "transport", "phase", "calls", "revocations", "per second", "p50 ms", "p99 ms", "max ms"
    );
    for m in runs {
        // The baseline revokes nothing: its rate is calls per second.
        for (p, revocations) in [
            (&m.baseline, 0),
            (&m.single, m.single.items),
            (&m.batched, m.batched.items),
        ] {
            let (p50, p99, max) = p.latencies.summary_ms();
            println!(
                "{:<10} {:<36} {:>9} {:>12} {:>14.0} {:>9.2} {:>9.2} {:>9.2}",
                m.transport.name(),
                p.name,
                p.operations,
                revocations,
                per_second(p, revocations),
                p50,
                p99,
                max
            );
        }
    }
    for m in runs {
        let baseline_p50 = m.baseline.latencies.quantile_ms(0.5);
        println!(
            "{}: ratios to the baseline (p50 latency): one per call {:.1}x, batched {:.1}x",
            m.transport.name(),
            ratio(m.single.latencies.quantile_ms(0.5), baseline_p50),
            ratio(m.batched.latencies.quantile_ms(0.5), baseline_p50)
        );
    }
    if let Some(ratios) = ratios {
        println!("TLS / plaintext, same run (rates below 1 and latencies above 1 are TLS's cost):");
        for (name, r) in ratios {
            println!("  {name:<30} {r:>6.3}");
        }
    }
}
