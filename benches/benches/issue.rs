//! Issuance latency and throughput over gRPC beside the crypto bound of a
//! refresh.
//!
//! First, on one thread and before anything else starts: the raw Ed25519
//! signing and verifying rates, the rate of whole EdDSA JWTs, and the
//! crypto bound of a refresh: one Ed25519 verification plus one signature
//! of a credential's signing input, in a loop. Then a three-broker cluster
//! in this process (sled, loopback gRPC), a Cedar policy, one credential
//! from a join token, and `Refresh` calls to one broker: the broker-local
//! issuance path (verify, revocation, decide, sign, audit fsync), no Raft
//! round trip per credential. Three phases on the same cluster:
//!
//! 1. saturation: `--concurrency` clients in a closed loop, as fast as the
//!    broker answers: the maximum rate;
//! 2. open loop at `--load` (one half) of that maximum: each call is sent
//!    when it is due, whatever is still unanswered, and its latency runs
//!    from when it was due; the p50 and p99 to read;
//! 3. as many `Exchange` calls (RFC 8693 delegation of the same credential
//!    to a tool: a fresh status index and the `act` chain), printed beside
//!    the refreshes (`--exchanges false` skips them).
//!
//! Per core: the brokers run on a runtime of their own (threads
//! `lapse-broker-rt`, beside the brokers' own threads: the audit writer,
//! sled's), the clients on another (`bench-client`, and the main thread).
//! The brokers' CPU time in a phase is the process's user and system time
//! less the client threads' (from `/proc`); the cores they used are that
//! over the phase's wall-clock time, and refreshes per core are the
//! refreshes over the brokers' CPU seconds. All three brokers count
//! (followers apply the shipped audit records and Raft heartbeats), so the
//! figure is if anything low for the one broker serving.
//!
//! By default the cluster part runs twice, each time on a fresh cluster:
//! in plaintext, then with TLS as deployed (the workload's connections
//! check the broker's certificate and present none; the setup's admin calls
//! present an operator certificate; brokers talk mutual TLS), and the TLS
//! figures are stated as ratios to the plaintext ones of the same run.
//!
//! ```sh
//! cargo bench -p lapse-benches --bench issue -- [--transports plaintext,tls] [--count N] [--concurrency N] [--load 0.5] [--json] ...
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use lapse_benches::client::{Phase, connections, request, run_open_loop, run_phase};
use lapse_benches::cluster::{bench_auth, shutdown, start_bench_cluster};
use lapse_benches::cpu::{CpuReading, thread_cpu};
use lapse_benches::stats::rate;
use lapse_benches::transport::{Caller, Transport};
use lapse_benches::{CargoBench, Transports, init_logging, print_json, ratio};
use lapse_credential::{
    Claims, KeyId, SigningKeyPair, StatusClaim, StatusListRef, TenantId, WorkloadId, verify_raw,
};
use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::cluster::{self as pb};
use lapse_wire::issuer::issuer_client::IssuerClient;
use lapse_wire::issuer::{
    ExchangeRequest, IssueRequest, RefreshRequest, issue_request::Attestation,
};
use serde_json::json;
use tonic::transport::Channel;

/// The name (and `/proc` comm prefix) of the client runtime's threads.
const CLIENT_THREADS: &str = "bench-client";
/// The name of the broker runtime's threads.
const BROKER_THREADS: &str = "lapse-broker-rt";

/// Issuance latency and throughput over gRPC beside the crypto bound of a refresh.
#[derive(Debug, Parser)]
#[command(
    name = "issue",
    bin_name = "cargo bench -p lapse-benches --bench issue --"
)]
struct IssueBench {
    /// Credentials to issue in each phase.
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// Concurrent client tasks of the saturation and exchange phases.
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// Client connections the tasks share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The open-loop phase's rate, as a share of the saturation phase's.
    #[arg(long, default_value_t = 0.5)]
    load: f64,
    /// Worker threads of the brokers' runtime (0: one per core).
    #[arg(long, default_value_t = 0)]
    broker_threads: usize,
    /// Worker threads of the clients' runtime (0: one per core).
    #[arg(long, default_value_t = 0)]
    client_threads: usize,
    /// Measure exchanges after the refreshes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    exchanges: bool,
    /// How often brokers ship audit records to the ledger.
    #[arg(long, default_value_t = 1000)]
    audit_ship_ms: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    transports: Transports,
    #[command(flatten)]
    cargo: CargoBench,
}

/// Rates on one thread, per second: raw Ed25519, whole JWTs, and the crypto
/// bound of a refresh.
struct SigningBaseline {
    raw_per_second: f64,
    jwt_per_second: f64,
    verify_per_second: f64,
    /// One verification plus one signature of a credential's signing input,
    /// per second of wall-clock time on one thread.
    wall_bound: f64,
    /// The same per second of that thread's CPU time: the bound per core.
    bound_per_second: f64,
}

/// A phase with the CPU time the brokers and the clients used in it.
struct Measured {
    phase: Phase,
    broker_cpu: Duration,
    client_cpu: Duration,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.phase.operations as f64 / self.phase.elapsed.as_secs_f64()
    }

    /// Cores the brokers kept busy on average.
    fn broker_cores(&self) -> f64 {
        ratio(
            self.broker_cpu.as_secs_f64(),
            self.phase.elapsed.as_secs_f64(),
        )
    }

    fn client_cores(&self) -> f64 {
        ratio(
            self.client_cpu.as_secs_f64(),
            self.phase.elapsed.as_secs_f64(),
        )
    }

    /// Calls per second of the brokers' CPU time.
    fn per_core(&self) -> f64 {
        ratio(self.phase.operations as f64, self.broker_cpu.as_secs_f64())
    }
}

/// Run `phase`, reading the CPU time around it.
async fn measured(
    phase: impl std::future::Future<Output = anyhow::Result<Phase>>,
) -> anyhow::Result<Measured> {
    let before = CpuReading::now(CLIENT_THREADS);
    let phase = phase.await?;
    let after = CpuReading::now(CLIENT_THREADS);
    Ok(Measured {
        phase,
        broker_cpu: after.others_since(&before),
        client_cpu: after.client_since(&before),
    })
}

/// What one transport's cluster measured.
struct Run {
    transport: Transport,
    saturation: Measured,
    open_loop: Measured,
    exchanges: Option<Measured>,
}

fn runtime(name: &str, threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.thread_name(name).enable_all();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder.build()
}

fn main() -> anyhow::Result<()> {
    let args = IssueBench::parse();
    init_logging();
    // Baselines first, on an idle machine, on this thread.
    let baseline = signing_baseline();
    let brokers = runtime(BROKER_THREADS, args.broker_threads)?;
    let clients = runtime(CLIENT_THREADS, args.client_threads)?;
    let runs = clients.block_on(async {
        let mut runs = Vec::new();
        for &transport in &args.transports.transports {
            runs.push(issue(&args, transport, brokers.handle()).await?);
        }
        anyhow::Ok(runs)
    })?;
    report(&args, &baseline, &runs);
    drop(clients);
    drop(brokers);
    Ok(())
}

/// Refreshes at saturation, then open loop at `--load` of that rate, then
/// exchanges, from clients to one broker of a fresh cluster talking
/// `transport`, the brokers on `brokers`.
async fn issue(
    args: &IssueBench,
    transport: Transport,
    brokers: &tokio::runtime::Handle,
) -> anyhow::Result<Run> {
    let temporary = tempfile::tempdir()?;
    let dir = temporary.path().to_owned();
    let audit_ship_ms = args.audit_ship_ms;
    let (cluster, addresses, dialer) = brokers
        .spawn(async move {
            start_bench_cluster(&dir, transport, move |config| {
                config.issuance.lease_block = 200_000;
                config.issuance.audit_ship_ms = audit_ship_ms;
            })
            .await
        })
        .await??;
    let target = addresses[0].to_string();
    let seed = first_credential(dialer.connect(&target, Caller::Operator, false).await?).await?;
    let channels = connections(&dialer, &target, Caller::Workload, args.connections).await?;
    let seed = Arc::new(seed);
    let refresh = {
        let seed = seed.clone();
        move |client: &Channel| {
            let mut issuer = IssuerClient::new(client.clone());
            let message = RefreshRequest {
                credential: seed.to_string(),
                dpop_proof: String::new(),
                ttl_seconds: 600,
                audiences: vec![],
                scopes: vec![],
            };
            async move { issuer.refresh(message).await.map(|_| ()) }
        }
    };
    let saturation = {
        let refresh = refresh.clone();
        measured(run_phase(
            "refresh at saturation (verify, revocation, policy, sign, audit fsync)",
            args.count,
            1,
            args.concurrency,
            &channels,
            move |client, _, _| refresh(client),
        ))
        .await?
    };
    let rate = saturation.per_second() * args.load;
    let open_loop = measured(run_open_loop(
        "refresh, open loop at a share of the saturation rate",
        args.count,
        rate,
        &channels,
        move |client, _| refresh(client),
    ))
    .await?;
    let exchanges = if args.exchanges {
        let seed = seed.clone();
        Some(
            measured(run_phase(
                "exchange (delegate to a tool: verify, policy, index, sign, audit fsync)",
                args.count,
                1,
                args.concurrency,
                &channels,
                move |client, _, _| {
                    let mut issuer = IssuerClient::new(client.clone());
                    let message = ExchangeRequest {
                        subject_token: seed.to_string(),
                        actor: "spiffe://bench.example/tool".into(),
                        scopes: vec!["read".into()],
                        ttl_seconds: 300,
                        task: "bench-task".into(),
                        ..Default::default()
                    };
                    async move { issuer.exchange(message).await.map(|_| ()) }
                },
            ))
            .await?,
        )
    } else {
        None
    };
    drop(channels);
    brokers.spawn(shutdown(cluster)).await?;
    Ok(Run {
        transport,
        saturation,
        open_loop,
        exchanges,
    })
}

/// The raw Ed25519, whole-JWT and verify-plus-sign rates, one second each.
fn signing_baseline() -> SigningBaseline {
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
        chain: None,
        agent: Default::default(),
    };
    let jwt_per_second = rate(Duration::from_secs(1), |_| {
        std::hint::black_box(signer.sign(&claims).ok());
    });
    // The crypto of a refresh: verify the credential presented, sign the
    // new one, both over a credential's signing input.
    let token = signer.sign(&claims).expect("signs");
    let (input, _) = token.rsplit_once('.').expect("a JWT");
    let input = input.as_bytes();
    let public = signer.public_key();
    let signature = signer.sign_raw(input);
    let verify_per_second = rate(Duration::from_secs(1), |_| {
        assert!(verify_raw(&public, std::hint::black_box(input), &signature));
    });
    // On a shared host this thread may not have had its core to itself:
    // the bound is also taken per second of its own CPU time, the measure
    // the brokers' refreshes per core are taken in.
    let (cpu_before, started) = (thread_cpu(), Instant::now());
    let wall_bound = rate(Duration::from_secs(1), |_| {
        assert!(verify_raw(&public, std::hint::black_box(input), &signature));
        std::hint::black_box(signer.sign_raw(std::hint::black_box(input)));
    });
    let (cpu, wall) = (thread_cpu().saturating_sub(cpu_before), started.elapsed());
    let bound_per_second = if cpu.is_zero() {
        wall_bound
    } else {
        wall_bound * wall.as_secs_f64() / cpu.as_secs_f64()
    };
    SigningBaseline {
        raw_per_second,
        jwt_per_second,
        verify_per_second,
        wall_bound,
        bound_per_second,
    }
}

/// Set a policy that lets tenant `bench` issue, create a join token for
/// its worker and exchange it for the credential every refresh presents.
async fn first_credential(channel: Channel) -> anyhow::Result<String> {
    let auth = bench_auth();
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
    let mut issuer = IssuerClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match issuer
            .issue(IssueRequest {
                attestation: Some(Attestation::JoinToken(join.token.clone())),
                audiences: vec!["bench".into()],
                scopes: vec!["read".into()],
                ttl_seconds: 600,
                dpop_jkt: String::new(),
                dpop_proof: String::new(),
                tenant: String::new(),
                request_id: String::new(),
                ..Default::default()
            })
            .await
        {
            Ok(reply) => return Ok(reply.into_inner().credential),
            Err(status)
                if status.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
}

fn report(args: &IssueBench, baseline: &SigningBaseline, runs: &[Run]) {
    let SigningBaseline {
        raw_per_second,
        jwt_per_second,
        verify_per_second,
        wall_bound,
        bound_per_second,
    } = *baseline;
    let of = |t: Transport| runs.iter().find(|run| run.transport == t);
    let ratios = match (of(Transport::Plaintext), of(Transport::Tls)) {
        (Some(plain), Some(tls)) => Some([
            (
                "issued_per_second",
                ratio(tls.saturation.per_second(), plain.saturation.per_second()),
            ),
            (
                "per_core",
                ratio(tls.saturation.per_core(), plain.saturation.per_core()),
            ),
            (
                "open_loop_p50_ms",
                ratio(
                    tls.open_loop.phase.latencies.quantile_ms(0.5),
                    plain.open_loop.phase.latencies.quantile_ms(0.5),
                ),
            ),
            (
                "open_loop_p99_ms",
                ratio(
                    tls.open_loop.phase.latencies.quantile_ms(0.99),
                    plain.open_loop.phase.latencies.quantile_ms(0.99),
                ),
            ),
        ]),
        _ => None,
    };
    if args.json {
        let runs: Vec<_> = runs
            .iter()
            .map(|run| {
                let (p50, p99, max) = run.saturation.phase.latencies.summary_ms();
                let (o50, o99, omax) = run.open_loop.phase.latencies.summary_ms();
                let mut value = json!({
                    "transport": run.transport.name(),
                    "issued_per_second": run.saturation.per_second(),
                    "broker_cores": run.saturation.broker_cores(),
                    "client_cores": run.saturation.client_cores(),
                    "issued_per_broker_core_second": run.saturation.per_core(),
                    "per_core_over_bound": run.saturation.per_core() / bound_per_second,
                    "p50_ms": p50, "p99_ms": p99, "max_ms": max,
                    "open_loop_per_second": run.open_loop.per_second(),
                    "open_loop_broker_cores": run.open_loop.broker_cores(),
                    "open_loop_p50_ms": o50, "open_loop_p99_ms": o99, "open_loop_max_ms": omax,
                    "open_loop_from_sent_p50_ms": run.open_loop.phase.from_sent.as_ref().map(|s| s.quantile_ms(0.5)),
                    "open_loop_from_sent_p99_ms": run.open_loop.phase.from_sent.as_ref().map(|s| s.quantile_ms(0.99)),
                });
                if let Some(exchange) = &run.exchanges {
                    let (x50, x99, xmax) = exchange.phase.latencies.summary_ms();
                    value["exchanged_per_second"] = json!(exchange.per_second());
                    value["exchange_per_broker_core_second"] = json!(exchange.per_core());
                    value["exchange_p50_ms"] = json!(x50);
                    value["exchange_p99_ms"] = json!(x99);
                    value["exchange_max_ms"] = json!(xmax);
                    value["exchange_over_refresh"] =
                        json!(ratio(exchange.per_second(), run.saturation.per_second()));
                }
                value
            })
            .collect();
        print_json(&json!({
            "raw_ed25519_signatures_per_second_one_core": raw_per_second,
            "raw_ed25519_verifications_per_second_one_core": verify_per_second,
            "jwt_signatures_per_second_one_core": jwt_per_second,
            "crypto_bound_refreshes_per_second_one_thread": wall_bound,
            "crypto_bound_refreshes_per_cpu_second": bound_per_second,
            "concurrency": args.concurrency,
            "load": args.load,
            "runs": runs,
            "tls_over_plaintext": ratios.map(|r| r
                .into_iter()
                .map(|(name, r)| (name.to_owned(), json!(r)))
                .collect::<serde_json::Map<_, _>>()),
        }));
        return;
    }
    println!(
        "one broker of three (sled, loopback gRPC); saturation: {} concurrent clients over {} connections; then open loop at {:.2} of the saturation rate",
        args.concurrency, args.connections, args.load
    );
    let line = |name: &str, value: String| println!("{name:<52} {value:>12}");
    line(
        "raw Ed25519 signatures/s (one thread)",
        format!("{raw_per_second:.0}"),
    );
    line(
        "raw Ed25519 verifications/s (one thread)",
        format!("{verify_per_second:.0}"),
    );
    line(
        "EdDSA JWT signatures/s (one thread)",
        format!("{jwt_per_second:.0}"),
    );
    line(
        "crypto bound: verify + sign /s (one thread)",
        format!("{wall_bound:.0}"),
    );
    line(
        "crypto bound per core: verify + sign /CPU second",
        format!("{bound_per_second:.0}"),
    );
    for run in runs {
        let name = run.transport.name();
        let saturation = &run.saturation;
        let (p50, p99, max) = saturation.phase.latencies.summary_ms();
        println!("{name}:");
        line(
            "  refreshes/s at saturation",
            format!("{:.0}", saturation.per_second()),
        );
        println!(
            "  {:<50} p50 {p50:.2} ms   p99 {p99:.2} ms   max {max:.2} ms",
            "  (closed loop)"
        );
        line(
            "  broker cores used / client cores used",
            format!(
                "{:.2} / {:.2}",
                saturation.broker_cores(),
                saturation.client_cores()
            ),
        );
        line(
            "  refreshes per broker CPU second (per core)",
            format!("{:.0}", saturation.per_core()),
        );
        line(
            "  per core / crypto bound",
            format!("{:.2}", saturation.per_core() / bound_per_second),
        );
        let open = &run.open_loop;
        let (o50, o99, omax) = open.phase.latencies.summary_ms();
        line(
            "  open loop: refreshes/s (asked for)",
            format!(
                "{:.0} ({:.0})",
                open.per_second(),
                saturation.per_second() * args.load
            ),
        );
        println!(
            "  {:<50} p50 {o50:.2} ms   p99 {o99:.2} ms   max {omax:.2} ms",
            "  open loop latency, from when each call was due"
        );
        if let Some(sent) = &open.phase.from_sent {
            let (s50, s99, smax) = sent.summary_ms();
            println!(
                "  {:<50} p50 {s50:.2} ms   p99 {s99:.2} ms   max {smax:.2} ms",
                "  open loop latency, from when each call was sent"
            );
        }
        line(
            "  open loop: broker cores used",
            format!("{:.2}", open.broker_cores()),
        );
        if let Some(exchange) = &run.exchanges {
            let (x50, x99, xmax) = exchange.phase.latencies.summary_ms();
            line(
                "  exchanges (delegations)/s",
                format!("{:.0}", exchange.per_second()),
            );
            println!(
                "  {:<50} p50 {x50:.2} ms   p99 {x99:.2} ms   max {xmax:.2} ms",
                ""
            );
            line(
                "  exchanges per broker CPU second",
                format!("{:.0}", exchange.per_core()),
            );
            line(
                "  exchanges/s over refreshes/s",
                format!(
                    "{:.3}",
                    ratio(exchange.per_second(), saturation.per_second())
                ),
            );
        }
    }
    if let Some(ratios) = ratios {
        println!("TLS / plaintext, same run:");
        for (name, r) in ratios {
            println!("  {name:<20} {r:>6.3}");
        }
    }
}
