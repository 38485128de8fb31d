//! `lapse bench propagation` and `lapse bench verify`.
//!
//! Propagation: a local three-broker cluster and N verifiers (tasks in this
//! process, each with its own connection, spread over the brokers). One
//! revocation at a time; for each, the time from the revoke call returning
//! (committed and acknowledged) to each verifier applying it, and to the
//! last of them. The same shape as `bench/etcd`, which measures a put
//! returning to each etcd watcher seeing it.
//!
//! Verify: credentials checked by a verifier holding a realistic filter,
//! single-threaded (per core), beside raw Ed25519 verification of the same
//! signatures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use lapse_credential::{
    Claims, KeyId, SigningKeyPair, StatusClaim, StatusListRef, TenantId, WorkloadId, verify_raw,
};
use lapse_filter::{
    KeyAlgorithm, KeySet, Message, PublicKey, RevokedSet, RuleSet, SecretSet, Snapshot,
    encode_message,
};
use lapse_verifier::{Expect, FollowConfig, FollowStats, OnApply, Verifier, VerifyConfig, follow};
use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::cluster::{self as pb, revocation::Target};
use lapse_wire::feed::feed_event::Kind;
use lapse_wire::feed::{FeedEvent, Heartbeat};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::bench::{BENCH_TOKEN, rate, request, start_bench_cluster};
use crate::client::{Failure, exit, print_json};

#[derive(Debug, Args)]
pub struct PropagationBench {
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
}

#[derive(Debug, Args)]
pub struct VerifyBench {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Revoked indices in the verifier's filter.
    #[arg(long, default_value_t = 100_000)]
    revoked: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn fail(e: impl std::fmt::Display) -> Failure {
    Failure::new(exit::FAILURE, e.to_string())
}

/// The value at quantile `q` of sorted `values`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn summary(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        quantile(&values, 0.5),
        quantile(&values, 0.99),
        values.last().copied().unwrap_or(0.0),
    )
}

pub async fn propagation(args: PropagationBench) -> Result<(), Failure> {
    let temporary = tempfile::tempdir().map_err(fail)?;
    let subscribers = args.verifiers + 16;
    let (brokers, addresses) = start_bench_cluster(temporary.path(), |config| {
        config.feed.max_subscribers = subscribers;
    })
    .await?;
    let auth = format!("Bearer {BENCH_TOKEN}");
    let leader = brokers
        .iter()
        .find(|b| b.core().leader().0 == Some(b.core().id()))
        .map(|b| b.local_address())
        .unwrap_or(addresses[0]);
    let mut admin = ClusterClient::connect(format!("http://{leader}"))
        .await
        .map_err(fail)?;
    let lease = admin
        .lease_indices(request(
            &auth,
            pb::LeaseRequest {
                request_id: "bench-lease".into(),
                broker_id: 1,
                count: args.revocations + 10,
                lease_ms: 3_600_000,
            },
        ))
        .await
        .map_err(fail)?
        .into_inner();

    // The verifiers, and when each reached each epoch.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let broker_list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    // Verifiers share a few connections (one per `per_connection` of them),
    // each verifier its own stream, as the etcd watchers do.
    let groups = args.verifiers.div_ceil(args.per_connection).max(1);
    let mut pools: Vec<Vec<tonic::transport::Channel>> = Vec::new();
    for _ in 0..groups {
        let mut pool = Vec::new();
        for address in &broker_list {
            pool.push(
                tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                    .map_err(fail)?
                    .tcp_nodelay(true)
                    .connect_lazy(),
            );
        }
        pools.push(pool);
    }
    let mut verifiers = Vec::new();
    let mut logs: Vec<ApplyLog> = Vec::new();
    let progress = Arc::new(Progress {
        target: AtomicU64::new(1),
        reached: AtomicUsize::new(0),
        marked: (0..args.verifiers)
            .map(|_| AtomicBool::new(false))
            .collect(),
        all: tokio::sync::Notify::new(),
        count: args.verifiers,
    });
    for i in 0..args.verifiers {
        let verifier = Verifier::new(VerifyConfig::default());
        let mut config = FollowConfig::new(broker_list.clone(), format!("bench-{i}"));
        config.brokers.rotate_left(i % 3);
        if args.per_connection > 1 {
            let mut pool = pools[i / args.per_connection].clone();
            pool.rotate_left(i % 3);
            config.channels = Some(pool);
        }
        config.region = format!("region-{}", i % 3);
        let log: ApplyLog = Arc::default();
        let (record, progress_of) = (log.clone(), progress.clone());
        config.on_apply = Some(OnApply(Arc::new(move |epoch| {
            record
                .lock()
                .expect("log lock")
                .push((epoch, Instant::now()));
            progress_of.reached(i, epoch);
        })));
        let mut stop = stop_rx.clone();
        tokio::spawn(follow(
            verifier.clone(),
            config,
            Arc::new(FollowStats::default()),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ));
        logs.push(log);
        verifiers.push(verifier);
    }
    let wait_all = |epoch: u64, patience: Duration| {
        progress.start(epoch, &verifiers);
        let progress = progress.clone();
        async move {
            tokio::time::timeout(patience, async {
                loop {
                    let notified = progress.all.notified();
                    if progress.reached.load(Ordering::SeqCst) >= progress.count {
                        return;
                    }
                    notified.await;
                }
            })
            .await
            .is_ok()
        }
    };
    let subscribed = Instant::now();
    if !wait_all(1, Duration::from_secs(120)).await {
        return Err(Failure::new(
            exit::UNAVAILABLE,
            "verifiers did not all subscribe within 120 s",
        ));
    }
    let subscribe_time = subscribed.elapsed();

    let mut last_ms = Vec::new();
    let mut each_ms = Vec::new();
    let mut timeouts = 0;
    for n in 0..=args.revocations {
        let reply = admin
            .revoke(request(
                &auth,
                pb::RevokeRequest {
                    request_id: format!("bench-revoke-{n}"),
                    revocation: Some(pb::Revocation {
                        target: Some(Target::Index(lease.start + n)),
                    }),
                },
            ))
            .await
            .map_err(fail)?
            .into_inner();
        let acknowledged = Instant::now();
        if !wait_all(reply.epoch, Duration::from_secs(10)).await {
            timeouts += 1;
            continue;
        }
        if n == 0 {
            continue; // warm-up
        }
        let mut last: f64 = 0.0;
        for log in &logs {
            let log = log.lock().expect("log lock");
            if let Some((_, at)) = log.iter().find(|(epoch, _)| *epoch >= reply.epoch) {
                let ms = at.saturating_duration_since(acknowledged).as_secs_f64() * 1000.0;
                each_ms.push(ms);
                last = last.max(ms);
            }
        }
        last_ms.push(last);
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    let measured = {
        let mut client = ClusterClient::connect(format!("http://{leader}"))
            .await
            .map_err(fail)?;
        client
            .propagation(request(&auth, pb::PropagationRequest { epoch: 0 }))
            .await
            .map_err(fail)?
            .into_inner()
            .overall
    };
    let _ = stop_tx.send(true);
    for broker in brokers {
        broker.shutdown().await;
    }
    let (last_p50, last_p99, last_max) = summary(last_ms.clone());
    let (each_p50, each_p99, each_max) = summary(each_ms.clone());
    let report = json!({
        "system": "lapse",
        "watchers": args.verifiers,
        "puts": last_ms.len(),
        "timeouts": timeouts,
        "subscribe_s": subscribe_time.as_secs_f64(),
        "last_p50_ms": last_p50, "last_p99_ms": last_p99, "last_max_ms": last_max,
        "each_p50_ms": each_p50, "each_p99_ms": each_p99, "each_max_ms": each_max,
        "brokers_commit_to_ack": measured.as_ref().map(|m| json!({
            "samples": m.samples, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms, "max_ms": m.max_ms,
        })),
    });
    if args.json {
        print_json(&report);
    } else {
        println!(
            "{} verifiers subscribed in {:.1} s; {} revocations measured ({timeouts} timed out)",
            args.verifiers,
            subscribe_time.as_secs_f64(),
            last_ms.len()
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
        if let Some(m) = measured {
            println!(
                "{:<44} {:>9.2} {:>9.2} {:>9.2}",
                "commit -> ack, as the brokers measure it", m.p50_ms, m.p99_ms, m.max_ms
            );
        }
    }
    if timeouts > 0 {
        return Err(Failure::new(
            exit::UNAVAILABLE,
            format!("{timeouts} revocations did not reach every verifier within 10 s"),
        ));
    }
    Ok(())
}

/// When one verifier reached each epoch.
type ApplyLog = Arc<Mutex<Vec<(u64, Instant)>>>;

/// Which verifiers hold the epoch being waited for.
struct Progress {
    target: AtomicU64,
    reached: AtomicUsize,
    marked: Vec<AtomicBool>,
    all: tokio::sync::Notify,
    count: usize,
}

impl Progress {
    /// Verifier `i` now holds `epoch`.
    fn reached(&self, i: usize, epoch: u64) {
        if epoch >= self.target.load(Ordering::SeqCst)
            && !self.marked[i].swap(true, Ordering::SeqCst)
        {
            let reached = self.reached.fetch_add(1, Ordering::SeqCst) + 1;
            if reached >= self.count {
                self.all.notify_one();
            }
        }
    }

    /// Wait for `epoch` next; count verifiers that already hold it.
    fn start(&self, epoch: u64, verifiers: &[Verifier]) {
        // No verifier is marked while the marks are reset.
        self.target.store(u64::MAX, Ordering::SeqCst);
        self.reached.store(0, Ordering::SeqCst);
        for mark in &self.marked {
            mark.store(false, Ordering::SeqCst);
        }
        self.target.store(epoch, Ordering::SeqCst);
        for (i, verifier) in verifiers.iter().enumerate() {
            if let Some(held) = verifier.epoch() {
                self.reached(i, held);
            }
        }
    }
}

pub async fn verify(args: VerifyBench) -> Result<(), Failure> {
    let signer = SigningKeyPair::from_seed(KeyId::new("n1-bench").expect("valid"), [7; 32]);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(fail)?
        .as_secs();
    let universe = args.revoked * 100;
    // Every 100th index revoked; credentials use indices in between.
    let mut set_indices: Vec<u64> = (0..args.revoked).map(|i| i * 100).collect();
    set_indices.sort_unstable();
    let mut keys = KeySet::new();
    keys.insert(
        "n1-bench",
        PublicKey {
            algorithm: KeyAlgorithm::Ed25519,
            bytes: signer.public_key().to_vec(),
            not_before_ms: (now_s - 3600) * 1000,
            not_after_ms: (now_s + 3600) * 1000,
        },
    )
    .map_err(fail)?;
    let mut rules = RuleSet::new();
    for i in 0..1000 {
        rules
            .revoke_subject("bench", &format!("spiffe://bench/old-{i}"), now_s * 1000)
            .map_err(fail)?;
    }
    let snapshot = Snapshot {
        epoch: 7,
        set: RevokedSet::from_sorted(0, universe, set_indices).map_err(fail)?,
        secrets: SecretSet::new(1000, 1e-6, [3; 32]).map_err(fail)?,
        rules,
        keys,
    };
    let verifier = Verifier::new(VerifyConfig {
        staleness: Duration::from_secs(3600),
        ..VerifyConfig::default()
    });
    let event = |kind, epoch| FeedEvent {
        kind: Some(kind),
        epoch,
        from_epoch: 0,
        cluster_time_ms: now_s * 1000,
        broker_id: 1,
        max_credential_ttl_ms: 86_400_000,
    };
    let bytes = encode_message(&Message::Full(Box::new(snapshot))).map_err(fail)?;
    verifier
        .apply(&event(Kind::Snapshot(bytes.into()), 7))
        .map_err(fail)?;
    verifier
        .apply(&event(Kind::Heartbeat(Heartbeat { interval_ms: 200 }), 7))
        .map_err(fail)?;
    let tokens: Vec<String> = (0..1024u64)
        .map(|i| {
            signer.sign(&Claims {
                iss: "lapse".into(),
                sub: WorkloadId::new(format!("spiffe://bench/worker-{}", i % 50)).expect("valid"),
                aud: vec!["bench".into()],
                iat: now_s - 5,
                nbf: now_s - 5,
                exp: now_s + 600,
                jti: format!("{i:032x}"),
                tenant: TenantId::new("bench").expect("valid"),
                scopes: vec!["read".into()],
                status: StatusClaim {
                    status_list: StatusListRef {
                        idx: ((i * 97) % universe) | 1,
                        uri: "lapse/statuslists/1".into(),
                    },
                },
                cnf: None,
            })
        })
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    let expect = Expect::default();
    for token in &tokens {
        verifier.verify(token, &expect).map_err(fail)?;
    }
    // The same signatures, raw.
    use base64::Engine;
    let raw: Vec<(Vec<u8>, [u8; 64])> = tokens
        .iter()
        .map(|t| {
            let (input, signature) = t.rsplit_once('.').expect("three parts");
            let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(signature)
                .expect("base64");
            (
                input.as_bytes().to_vec(),
                signature.try_into().expect("64 bytes"),
            )
        })
        .collect();
    let public = signer.public_key();
    let seconds = Duration::from_secs(args.seconds);
    let mut runs = Vec::new();
    for _ in 0..3 {
        let raw_rate = rate(seconds, |n| {
            let (input, signature) = &raw[n % raw.len()];
            assert!(verify_raw(&public, input, signature));
        });
        let verifier_rate = rate(seconds, |n| {
            std::hint::black_box(verifier.verify(&tokens[n % tokens.len()], &expect).is_ok());
        });
        runs.push((raw_rate, verifier_rate));
    }
    runs.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
    let (raw_rate, verifier_rate) = runs[1];
    let report = json!({
        "revoked_indices": args.revoked,
        "raw_ed25519_per_second": raw_rate,
        "verifier_per_second": verifier_rate,
        "ratio": verifier_rate / raw_rate,
        "verify_us": 1e6 / verifier_rate,
        "runs": runs.iter().map(|(r, v)| json!({"raw": r, "verifier": v})).collect::<Vec<_>>(),
    });
    if args.json {
        print_json(&report);
    } else {
        println!("one thread, median of 3 runs of {} s each:", args.seconds);
        println!("  raw Ed25519 verify        {raw_rate:>10.0} /s");
        println!(
            "  verifier (JWT + filter)   {verifier_rate:>10.0} /s  ({:.1} us each, {:.0} % of raw)",
            1e6 / verifier_rate,
            100.0 * verifier_rate / raw_rate
        );
    }
    Ok(())
}
