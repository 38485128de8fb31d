//! `lapse bench`: measurements that BENCHMARKS.md records.
//!
//! `lapse bench revoke` starts a three-broker cluster with sled storage in
//! this process, on loopback, and sends revocations to it over gRPC from
//! concurrent clients: first one revocation per call, then batched calls.
//! Beside them it measures a baseline in the same run: a `Status` call,
//! which crosses the same gRPC stack but neither Raft nor the disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::cluster::{self as pb, revocation::Target};
use serde_json::json;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

use crate::client::{Failure, exit, print_json};
use crate::dev::{local_configs, start_local_cluster};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Revocation commit throughput and latency on a local three-broker cluster.
    Revoke(RevokeBench),
    /// Issuance latency and throughput over gRPC beside the raw Ed25519 signing rate.
    Issue(IssueBench),
    /// Time from a revocation being acknowledged to every verifier applying it.
    Propagation(crate::bench_feed::PropagationBench),
    /// Credential verification per core beside raw Ed25519 verification.
    Verify(crate::bench_feed::VerifyBench),
}

#[derive(Debug, Args)]
struct IssueBench {
    /// Credentials to issue.
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// Client connections the tasks share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How often brokers ship audit records to the ledger.
    #[arg(long, default_value_t = 1000)]
    audit_ship_ms: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
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
}

pub async fn run(args: BenchArgs) -> Result<(), Failure> {
    match args.scenario {
        Scenario::Revoke(bench) => revoke(bench).await,
        Scenario::Issue(bench) => issue(bench).await,
        Scenario::Propagation(bench) => crate::bench_feed::propagation(bench).await,
        Scenario::Verify(bench) => crate::bench_feed::verify(bench).await,
    }
}

struct Phase {
    name: &'static str,
    operations: u64,
    revocations: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Phase {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[rank] as f64 / 1000.0
    }

    fn per_second(&self) -> f64 {
        self.revocations as f64 / self.elapsed.as_secs_f64()
    }
}

async fn revoke(args: RevokeBench) -> Result<(), Failure> {
    let temporary = tempfile::tempdir().map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    let (brokers, _) = start_bench_cluster(&dir, |_| {}).await?;
    let leader_address = brokers
        .iter()
        .find_map(|b| b.core().leader().1)
        .ok_or_else(|| Failure::new(exit::UNAVAILABLE, "no leader"))?;

    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel = Endpoint::from_shared(format!("http://{leader_address}"))
            .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
        channels.push(channel);
    }
    let auth = Arc::new(format!("Bearer {BENCH_TOKEN}"));

    let total = args.single + args.batched;
    let mut admin = ClusterClient::new(channels[0].clone());
    let lease = admin
        .lease_indices(request(
            &auth,
            pb::LeaseRequest {
                request_id: "bench-lease".into(),
                broker_id: 1,
                count: total.max(1),
                lease_ms: 3_600_000,
            },
        ))
        .await?
        .into_inner();
    let next_index = Arc::new(AtomicU64::new(lease.start));

    let baseline = run_phase(
        "baseline: Status call (gRPC only)",
        args.single,
        1,
        args.single_concurrency,
        &channels,
        {
            move |client: &Channel, _: u64, _: u64| {
                let mut client = ClusterClient::new(client.clone());
                async move { client.status(pb::StatusRequest {}).await.map(|_| ()) }
            }
        },
    )
    .await?;

    let single = {
        let next_index = next_index.clone();
        let auth = auth.clone();
        run_phase(
            "revoke, one per call",
            args.single,
            1,
            args.single_concurrency,
            &channels,
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
        .await?
    };

    let batched = {
        let next_index = next_index.clone();
        let auth = auth.clone();
        run_phase(
            "revoke, batched",
            args.batched,
            args.batch.max(1),
            args.concurrency,
            &channels,
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
        .await?
    };

    for broker in brokers {
        broker.shutdown().await;
    }

    let phases = [&baseline, &single, &batched];
    if args.json {
        let rows: Vec<_> = phases
            .iter()
            .map(|p| {
                json!({
                    "phase": p.name, "calls": p.operations, "revocations": p.revocations,
                    "seconds": p.elapsed.as_secs_f64(), "per_second": p.per_second(),
                    "p50_ms": p.percentile_ms(0.5), "p99_ms": p.percentile_ms(0.99), "max_ms": p.percentile_ms(1.0),
                })
            })
            .collect();
        print_json(&json!({
            "single_concurrency": args.single_concurrency, "batched_concurrency": args.concurrency,
            "batch": args.batch, "phases": rows,
        }));
        return Ok(());
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
    for p in phases {
        println!(
            "{:<36} {:>9} {:>12} {:>14.0} {:>9.2} {:>9.2} {:>9.2}",
            p.name,
            p.operations,
            p.revocations,
            if p.revocations == 0 {
                p.operations as f64 / p.elapsed.as_secs_f64()
            } else {
                p.per_second()
            },
            p.percentile_ms(0.5),
            p.percentile_ms(0.99),
            p.percentile_ms(1.0)
        );
    }
    println!(
        "ratios to the baseline (p50 latency): one per call {:.1}x, batched {:.1}x",
        single.percentile_ms(0.5) / baseline.percentile_ms(0.5).max(1e-9),
        batched.percentile_ms(0.5) / baseline.percentile_ms(0.5).max(1e-9)
    );
    Ok(())
}

/// The admin token of benchmark clusters.
pub(crate) const BENCH_TOKEN: &str = "bench-admin-token-0123456789";

/// Three brokers in this process on loopback, with their data under `dir`,
/// each configuration adjusted by `adjust`: the brokers and their addresses.
pub(crate) async fn start_bench_cluster(
    dir: &std::path::Path,
    adjust: impl Fn(&mut lapse_broker::BrokerConfig),
) -> Result<(Vec<lapse_broker::Broker>, Vec<std::net::SocketAddr>), Failure> {
    let fail = |e: std::io::Error| Failure::new(exit::FAILURE, e.to_string());
    let mut listeners = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
        addresses.push(listener.local_addr().map_err(fail)?);
        listeners.push(listener);
    }
    let mut configs = local_configs(
        dir,
        &addresses,
        "bench-cluster-secret-0123456789",
        BENCH_TOKEN,
    );
    configs.iter_mut().for_each(adjust);
    Ok((start_local_cluster(configs, listeners).await?, addresses))
}

/// A request with the admin token and a deadline.
pub(crate) fn request<T>(auth: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", auth.parse().expect("ascii token"));
    request.set_timeout(Duration::from_secs(30));
    request
}

/// Run `items` operations in calls of `per_call`, from `concurrency` tasks.
async fn run_phase<F, Fut>(
    name: &'static str,
    items: u64,
    per_call: u64,
    concurrency: u64,
    channels: &[Channel],
    call: F,
) -> Result<Phase, Failure>
where
    F: Fn(&Channel, u64, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let calls = items.div_ceil(per_call);
    let next_call = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency.max(1) {
        let channel = channels[task as usize % channels.len()].clone();
        let next_call = next_call.clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next_call.fetch_add(1, Ordering::Relaxed);
                if n >= calls {
                    return Ok::<_, tonic::Status>(latencies);
                }
                let size = per_call.min(items - n * per_call);
                let sent = Instant::now();
                call(&channel, n, size).await?;
                latencies.push(sent.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut latencies_us = Vec::with_capacity(calls as usize);
    for task in tasks {
        let latencies = task
            .await
            .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))??;
        latencies_us.extend(latencies);
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    let revocations = if name.starts_with("baseline") {
        0
    } else {
        items
    };
    Ok(Phase {
        name,
        operations: calls,
        revocations,
        elapsed,
        latencies_us,
    })
}

/// How many times `f` runs in `duration` on this thread, per second; `f`
/// is given the number of the run.
pub(crate) fn rate(duration: Duration, mut f: impl FnMut(usize)) -> f64 {
    let started = Instant::now();
    let mut runs = 0usize;
    while started.elapsed() < duration {
        for _ in 0..64 {
            f(runs);
            runs += 1;
        }
    }
    runs as f64 / started.elapsed().as_secs_f64()
}

async fn issue(args: IssueBench) -> Result<(), Failure> {
    use lapse_credential::{
        Claims, KeyId, SigningKeyPair, StatusClaim, StatusListRef, TenantId, WorkloadId,
    };
    use lapse_wire::issuer::issuer_client::IssuerClient;
    use lapse_wire::issuer::{IssueRequest, RefreshRequest, issue_request::Attestation};

    let fail = |e: String| Failure::new(exit::FAILURE, e);
    // Baselines first, on an idle machine: raw Ed25519 and a whole JWT.
    let signer = SigningKeyPair::from_seed(KeyId::new("bench").expect("valid"), [7; 32]);
    let raw_per_second = rate(Duration::from_secs(1), |_| {
        std::hint::black_box(signer.sign_raw(std::hint::black_box(b"a message of typical claim size, about one hundred bytes long, for the signing baseline..")));
    });
    let claims = Claims {
        iss: "lapse".into(),
        sub: WorkloadId::new("spiffe://bench.example/worker").expect("valid"),
        aud: vec!["bench".into()],
        iat: 1,
        nbf: 1,
        exp: 2,
        jti: "00112233445566778899aabbccddeeff".into(),
        tenant: TenantId::new("bench").expect("valid"),
        scopes: vec!["read".into()],
        status: StatusClaim {
            status_list: StatusListRef {
                idx: 1,
                uri: "lapse/statuslists/1".into(),
            },
        },
        cnf: None,
    };
    let jwt_per_second = rate(Duration::from_secs(1), |_| {
        std::hint::black_box(signer.sign(&claims).ok());
    });

    let temporary = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let (brokers, addresses) = start_bench_cluster(temporary.path(), |config| {
        config.issuance.lease_block = 200_000;
        config.issuance.audit_ship_ms = args.audit_ship_ms;
    })
    .await?;
    let target = addresses[0].to_string();
    let channel = Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| fail(e.to_string()))?
        .connect()
        .await
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    let auth = format!("Bearer {BENCH_TOKEN}");
    let mut admin = ClusterClient::new(channel.clone());
    admin
        .set_policy(request(
            &auth,
            pb::SetPolicyRequest {
                request_id: "bench-policy".into(),
                tenant: "bench".into(),
                text:
                    r#"permit(principal, action == Action::"issue", resource == Tenant::"bench");"#
                        .into(),
                expected_version: None,
            },
        ))
        .await?;
    let join = admin
        .create_join_token(request(
            &auth,
            pb::CreateJoinTokenRequest {
                request_id: "bench-token".into(),
                ttl_seconds: 600,
                grant: Some(pb::create_join_token_request::Grant::Workload(
                    pb::WorkloadGrant {
                        tenant: "bench".into(),
                        workload: "spiffe://bench.example/worker".into(),
                    },
                )),
            },
        ))
        .await?
        .into_inner();
    // The broker registers its signing key and leases indices in the
    // background: retry the first issuance until both are ready.
    let mut issuer = IssuerClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let seed = loop {
        match issuer
            .issue(IssueRequest {
                attestation: Some(Attestation::JoinToken(join.token.clone())),
                audiences: vec!["bench".into()],
                scopes: vec!["read".into()],
                ttl_seconds: 600,
                dpop_jkt: String::new(),
                tenant: String::new(),
                request_id: String::new(),
            })
            .await
        {
            Ok(reply) => break reply.into_inner().credential,
            Err(status)
                if status.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(status.into()),
        }
    };
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            Endpoint::from_shared(format!("http://{target}"))
                .map_err(|e| fail(e.to_string()))?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?,
        );
    }
    let seed = Arc::new(seed);
    let phase = run_phase(
        "issue (refresh: verify, policy, lease, sign, audit fsync)",
        args.count,
        1,
        args.concurrency,
        &channels,
        move |client, _, _| {
            let mut issuer = IssuerClient::new(client.clone());
            let message = RefreshRequest {
                credential: seed.to_string(),
                dpop_proof: String::new(),
                ttl_seconds: 600,
                audiences: vec![],
                scopes: vec![],
            };
            async move { issuer.refresh(message).await.map(|_| ()) }
        },
    )
    .await?;
    for broker in brokers {
        broker.shutdown().await;
    }
    let issued_per_second = phase.operations as f64 / phase.elapsed.as_secs_f64();
    if args.json {
        print_json(&json!({
            "raw_ed25519_signatures_per_second_one_core": raw_per_second,
            "jwt_signatures_per_second_one_core": jwt_per_second,
            "issued_per_second": issued_per_second,
            "p50_ms": phase.percentile_ms(0.5), "p99_ms": phase.percentile_ms(0.99), "max_ms": phase.percentile_ms(1.0),
            "concurrency": args.concurrency,
        }));
        return Ok(());
    }
    println!(
        "one broker of three (sled, loopback gRPC), {} concurrent clients over {} connections",
        args.concurrency, args.connections
    );
    println!(
        "{:<44} {:>12}",
        "raw Ed25519 signatures/s (one core)",
        format!("{raw_per_second:.0}")
    );
    println!(
        "{:<44} {:>12}",
        "EdDSA JWT signatures/s (one core)",
        format!("{jwt_per_second:.0}")
    );
    println!(
        "{:<44} {:>12}   p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        "credentials issued/s over gRPC",
        format!("{issued_per_second:.0}"),
        phase.percentile_ms(0.5),
        phase.percentile_ms(0.99),
        phase.percentile_ms(1.0)
    );
    println!(
        "issued/s as a share of the raw signing rate per core: {:.2}",
        issued_per_second / raw_per_second
    );
    Ok(())
}
