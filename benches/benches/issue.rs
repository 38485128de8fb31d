//! Issuance latency and throughput over gRPC beside the raw Ed25519 signing
//! rate.
//!
//! First, on one core and before anything else starts: the raw Ed25519
//! signing rate and the rate of whole EdDSA JWTs. Then a three-broker
//! cluster in this process (sled, loopback gRPC), a Cedar policy, one
//! credential from a join token, and `Refresh` calls to one broker from
//! concurrent clients: the broker-local issuance path (verify, decide,
//! lease, sign, audit fsync), no Raft round trip per credential. Then, on
//! the same cluster, as many `Exchange` calls (RFC 8693 delegation of the
//! same credential to a tool: the same path, plus a fresh status index and
//! the `act` chain), printed beside the refreshes.
//!
//! By default the cluster part runs twice, each time on a fresh cluster:
//! in plaintext, then with TLS as deployed (the workload's connections
//! check the broker's certificate and present none; the setup's admin calls
//! present an operator certificate; brokers talk mutual TLS), and the TLS
//! figures are stated as ratios to the plaintext ones of the same run.
//!
//! ```sh
//! cargo bench -p lapse-benches --bench issue -- [--transports plaintext,tls] [--count N] [--concurrency N] [--json] ...
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use lapse_benches::client::{Phase, connections, request, run_phase};
use lapse_benches::cluster::{bench_auth, shutdown, start_bench_cluster};
use lapse_benches::stats::rate;
use lapse_benches::transport::{Caller, Transport};
use lapse_benches::{CargoBench, Transports, init_logging, print_json, ratio};
use lapse_credential::{
    Claims, KeyId, SigningKeyPair, StatusClaim, StatusListRef, TenantId, WorkloadId,
};
use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::cluster::{self as pb};
use lapse_wire::issuer::issuer_client::IssuerClient;
use lapse_wire::issuer::{
    ExchangeRequest, IssueRequest, RefreshRequest, issue_request::Attestation,
};
use serde_json::json;
use tonic::transport::Channel;

/// Issuance latency and throughput over gRPC beside the raw Ed25519 signing rate.
#[derive(Debug, Parser)]
#[command(
    name = "issue",
    bin_name = "cargo bench -p lapse-benches --bench issue --"
)]
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
    #[command(flatten)]
    transports: Transports,
    #[command(flatten)]
    cargo: CargoBench,
}

/// Signatures per second on this thread: raw Ed25519, and whole JWTs.
struct SigningBaseline {
    raw_per_second: f64,
    jwt_per_second: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = IssueBench::parse();
    init_logging();
    // Baselines first, on an idle machine: raw Ed25519 and a whole JWT.
    let baseline = signing_baseline();
    let mut runs = Vec::new();
    for &transport in &args.transports.transports {
        runs.push((transport, issue(&args, transport).await?));
    }
    report(&args, &baseline, &runs);
    Ok(())
}

/// Refreshes, then exchanges, from concurrent clients to one broker of a
/// fresh cluster talking `transport`.
async fn issue(args: &IssueBench, transport: Transport) -> anyhow::Result<(Phase, Phase)> {
    let temporary = tempfile::tempdir()?;
    let (brokers, addresses, dialer) = start_bench_cluster(temporary.path(), transport, |config| {
        config.issuance.lease_block = 200_000;
        config.issuance.audit_ship_ms = args.audit_ship_ms;
    })
    .await?;
    let target = addresses[0].to_string();
    let seed = first_credential(dialer.connect(&target, Caller::Operator, false).await?).await?;
    let channels = connections(&dialer, &target, Caller::Workload, args.connections).await?;
    let seed = Arc::new(seed);
    let delegated = seed.clone();
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
    let exchanges = {
        let seed = delegated;
        run_phase(
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
        )
        .await?
    };
    drop(channels);
    shutdown(brokers).await;
    Ok((phase, exchanges))
}

/// The raw Ed25519 and whole-JWT signing rates, one second each.
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
    SigningBaseline {
        raw_per_second,
        jwt_per_second,
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

fn report(args: &IssueBench, baseline: &SigningBaseline, runs: &[(Transport, (Phase, Phase))]) {
    let SigningBaseline {
        raw_per_second,
        jwt_per_second,
    } = *baseline;
    let issued = |phase: &Phase| phase.operations as f64 / phase.elapsed.as_secs_f64();
    let of = |t: Transport| {
        runs.iter()
            .find(|(transport, _)| *transport == t)
            .map(|(transport, (refresh, _))| (transport, refresh))
    };
    let ratios = match (of(Transport::Plaintext), of(Transport::Tls)) {
        (Some((_, plain)), Some((_, tls))) => Some([
            ("issued_per_second", ratio(issued(tls), issued(plain))),
            (
                "p50_ms",
                ratio(
                    tls.latencies.quantile_ms(0.5),
                    plain.latencies.quantile_ms(0.5),
                ),
            ),
            (
                "p99_ms",
                ratio(
                    tls.latencies.quantile_ms(0.99),
                    plain.latencies.quantile_ms(0.99),
                ),
            ),
        ]),
        _ => None,
    };
    if args.json {
        let runs: Vec<_> = runs
            .iter()
            .map(|(transport, (phase, exchange))| {
                let (p50, p99, max) = phase.latencies.summary_ms();
                let (x50, x99, xmax) = exchange.latencies.summary_ms();
                json!({
                    "transport": transport.name(),
                    "issued_per_second": issued(phase),
                    "p50_ms": p50, "p99_ms": p99, "max_ms": max,
                    "exchanged_per_second": issued(exchange),
                    "exchange_p50_ms": x50, "exchange_p99_ms": x99, "exchange_max_ms": xmax,
                    "exchange_over_refresh": ratio(issued(exchange), issued(phase)),
                })
            })
            .collect();
        print_json(&json!({
            "raw_ed25519_signatures_per_second_one_core": raw_per_second,
            "jwt_signatures_per_second_one_core": jwt_per_second,
            "concurrency": args.concurrency,
            "runs": runs,
            "tls_over_plaintext": ratios.map(|r| r
                .into_iter()
                .map(|(name, r)| (name.to_owned(), json!(r)))
                .collect::<serde_json::Map<_, _>>()),
        }));
        return;
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
    for (transport, (phase, exchange)) in runs {
        let (p50, p99, max) = phase.latencies.summary_ms();
        println!(
            "{:<44} {:>12}   p50 {p50:.2} ms   p99 {p99:.2} ms   max {max:.2} ms",
            format!("credentials issued/s over gRPC, {}", transport.name()),
            format!("{:.0}", issued(phase)),
        );
        let (x50, x99, xmax) = exchange.latencies.summary_ms();
        println!(
            "{:<44} {:>12}   p50 {x50:.2} ms   p99 {x99:.2} ms   max {xmax:.2} ms",
            format!("exchanges (delegations)/s, {}", transport.name()),
            format!("{:.0}", issued(exchange)),
        );
        println!(
            "  exchanges/s over refreshes/s, same cluster: {:.3}",
            ratio(issued(exchange), issued(phase))
        );
        println!(
            "  issued/s as a share of the raw signing rate per core: {:.2}",
            issued(phase) / raw_per_second
        );
    }
    if let Some(ratios) = ratios {
        println!("TLS / plaintext, same run:");
        for (name, r) in ratios {
            println!("  {name:<20} {r:>6.3}");
        }
    }
}
