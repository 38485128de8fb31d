//! Credential verification per core beside raw Ed25519 verification.
//!
//! One thread, one verifier holding a filter with `--revoked` revoked
//! indices (one in a hundred of the window), 1,000 subject rules, 1,000
//! task rules and one key, fresh (a heartbeat applied), checking 1,024
//! distinct credentials in a loop with its signature memory off (each
//! credential as if never seen); beside it, raw Ed25519 verification of
//! the same signatures over the same signing input, and the same verifier
//! checking 1,024 delegated credentials of depth 4 (four actors, four
//! ancestors' indices checked against the revoked set, a task checked
//! against the task rules). Then batches of `--batch` credentials: raw
//! Ed25519 batch verification of their signatures, and the verifier's
//! `verify_batch` (memory off), per credential; and repeated credentials:
//! the same 1,024 credentials through a verifier whose signature memory
//! holds them, every check but the signature (time, audience, key window,
//! every revocation check) still run on each. Three runs of each; the run
//! with the median ratio is reported. Then chains of depth 1 to 8, three runs each, and
//! the filter's encoded size: the same at every depth, since a delegated
//! credential carries its ancestors' indices and the filter holds only the
//! revoked ones (beside the size a filter would need if it had to list
//! every credential delegated from each revoked one).
//!
//! ```sh
//! cargo bench -p lapse-benches --bench verify -- [--seconds 2] [--revoked 100000] [--batch 64] [--json]
//! ```

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::Parser;
use lapse_benches::stats::rate;
use lapse_benches::{CargoBench, print_json};
use lapse_credential::batch::batch_passes;
use lapse_credential::{
    Actor, AgentContext, Claims, CredentialKey, KeyId, MAX_DELEGATION_DEPTH, SigningKeyPair,
    StatusClaim, StatusListRef, TenantId, Unverified, WorkloadId, verify_raw,
};
use lapse_filter::{
    KeyAlgorithm, KeySet, Message, PublicKey, RevokedSet, RuleSet, SecretSet, Snapshot,
    encode_message,
};
use lapse_verifier::{Expect, Verifier, VerifyConfig};
use lapse_wire::feed::feed_event::Kind;
use lapse_wire::feed::{FeedEvent, Heartbeat};
use serde_json::json;

/// Credential verification per core beside raw Ed25519 verification.
#[derive(Debug, Parser)]
#[command(
    name = "verify",
    bin_name = "cargo bench -p lapse-benches --bench verify --"
)]
struct VerifyBench {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Revoked indices in the verifier's filter.
    #[arg(long, default_value_t = 100_000)]
    revoked: u64,
    /// Credentials per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Instead of measuring, serve the local verify API on this loopback
    /// address with the same loaded verifier (signature memory on), for
    /// a load generator (`benches/verify_http.sh`), until killed or
    /// `--seconds` pass. The per-IP rate limit is raised to 10,000,000 a
    /// second so that it does not cap the load; every other guard is as
    /// served.
    #[arg(long)]
    serve: Option<std::net::SocketAddr>,
    /// With `--serve`: write the 1,024 credentials here, one a line.
    #[arg(long)]
    tokens_out: Option<std::path::PathBuf>,
    /// Only verify remembered credentials, for `--seconds`, and print the
    /// rate: a loop for a profiler (`perf record`) with nothing else in it.
    #[arg(long)]
    repeated_only: bool,
    #[command(flatten)]
    cargo: CargoBench,
}

/// One credential's signing input and its signature.
type RawSignature = (Vec<u8>, [u8; 64]);

fn main() -> anyhow::Result<()> {
    let args = VerifyBench::parse();
    let signer = SigningKeyPair::from_seed(KeyId::new("n1-bench").expect("valid"), [7; 32]);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let universe = args.revoked * 100;
    if let Some(address) = args.serve {
        return serve(&args, address, &signer, now_s, universe);
    }
    // Distinct credentials: nothing remembered.
    let verifier = loaded_verifier(&signer, now_s, args.revoked, 0)?;
    // Repeated credentials: every one remembered.
    let remembering = loaded_verifier(&signer, now_s, args.revoked, 16_384)?;
    let tokens = credentials(&signer, now_s, universe, 0)?;
    let delegated = credentials(&signer, now_s, universe, 4)?;
    let expect = Expect::default();
    for token in tokens.iter().chain(&delegated) {
        verifier.verify(token, &expect).map_err(err)?;
        remembering.verify(token, &expect).map_err(err)?;
    }
    // Remembered credentials, in turn, for `seconds`: verifications a second.
    let repeated = |seconds: Duration| {
        rate(seconds, |n| {
            std::hint::black_box(
                remembering
                    .verify(&tokens[n % tokens.len()], &expect)
                    .is_ok(),
            );
        })
    };
    if args.repeated_only {
        let repeated = repeated(Duration::from_secs(args.seconds));
        println!("repeated (remembered) {repeated:.0} /s");
        return Ok(());
    }
    let raw = raw_signatures(&tokens)?;
    let public = signer.public_key();
    let key = CredentialKey::new(signer.key_id().clone(), public).map_err(err)?;
    let parsed: Vec<Unverified> = tokens
        .iter()
        .map(|t| Unverified::parse(t.as_str()))
        .collect::<Result<_, _>>()
        .map_err(err)?;
    let batch = args.batch.clamp(1, tokens.len());
    let batches: Vec<Vec<(&Unverified, &CredentialKey)>> = parsed
        .chunks(batch)
        .filter(|chunk| chunk.len() == batch)
        .map(|chunk| chunk.iter().map(|u| (u, &key)).collect())
        .collect();
    let requests: Vec<Vec<(&str, Expect)>> = tokens
        .chunks(batch)
        .filter(|chunk| chunk.len() == batch)
        .map(|chunk| {
            chunk
                .iter()
                .map(|t| (t.as_str(), Expect::default()))
                .collect()
        })
        .collect();
    for requests in &requests {
        if verifier.verify_batch(requests).iter().any(Result::is_err) {
            anyhow::bail!("a batch of valid credentials was refused");
        }
    }
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
        let delegated_rate = rate(seconds, |n| {
            std::hint::black_box(
                verifier
                    .verify(&delegated[n % delegated.len()], &expect)
                    .is_ok(),
            );
        });
        let raw_batch_rate = batch as f64
            * rate(seconds, |n| {
                assert!(batch_passes(&batches[n % batches.len()]));
            });
        let verifier_batch_rate = batch as f64
            * rate(seconds, |n| {
                std::hint::black_box(verifier.verify_batch(&requests[n % requests.len()]));
            });
        let repeated_rate = repeated(seconds);
        runs.push(Run {
            raw: raw_rate,
            verifier: verifier_rate,
            delegated: delegated_rate,
            raw_batch: raw_batch_rate,
            verifier_batch: verifier_batch_rate,
            repeated: repeated_rate,
        });
    }
    if remembering.status().signatures_recalled == 0 {
        anyhow::bail!("the repeated credentials were not taken from memory");
    }
    let mut depths = Vec::new();
    for depth in 1..=MAX_DELEGATION_DEPTH {
        let chained = credentials(&signer, now_s, universe, depth)?;
        for token in &chained {
            verifier.verify(token, &expect).map_err(err)?;
        }
        let mut rates: Vec<f64> = (0..3)
            .map(|_| {
                rate(seconds, |n| {
                    std::hint::black_box(
                        verifier
                            .verify(&chained[n % chained.len()], &expect)
                            .is_ok(),
                    );
                })
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        depths.push(Depth {
            depth,
            rates,
            filter_bytes: filter_bytes(&signer, now_s, args.revoked)?,
            listed_bytes: listed_bytes(args.revoked, depth)?,
        });
    }
    report(&args, runs, &depths);
    Ok(())
}

/// Serve the verify API at `address` with a loaded verifier for
/// `--seconds`, the credentials written to `--tokens-out`.
fn serve(
    args: &VerifyBench,
    address: std::net::SocketAddr,
    signer: &SigningKeyPair,
    now_s: u64,
    universe: u64,
) -> anyhow::Result<()> {
    lapse_verifier::http::check_loopback(address).map_err(err)?;
    let verifier = loaded_verifier(signer, now_s, args.revoked, 16_384)?;
    if let Some(path) = &args.tokens_out {
        let tokens = credentials(signer, now_s, universe, 0)?;
        std::fs::write(path, tokens.join("\n") + "\n")
            .with_context(|| format!("{}", path.display()))?;
    }
    let served = lapse_verifier::http::Served {
        id: "bench".into(),
        region: "local".into(),
        verifier,
        stats: Default::default(),
        relay: None,
    };
    let limits = lapse_verifier::http::ApiLimits {
        rate: lapse_pki::RateLimits {
            per_second: 10_000_000,
            burst: 10_000_000,
            max_callers: 4_096,
        },
        ..Default::default()
    };
    let seconds = Duration::from_secs(args.seconds);
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(address).await?;
        println!("serving on {}", listener.local_addr()?);
        lapse_verifier::http::serve(
            listener,
            vec![served],
            None,
            limits,
            tokio::time::sleep(seconds),
        )
        .await?;
        anyhow::Ok(())
    })
}

/// One run's rates, per second on one thread.
struct Run {
    raw: f64,
    verifier: f64,
    delegated: f64,
    /// Credentials per second, in batches.
    raw_batch: f64,
    verifier_batch: f64,
    repeated: f64,
}

/// Verification at one delegation depth, and what the filter costs there.
struct Depth {
    depth: usize,
    /// Verifications per second, three runs, sorted.
    rates: Vec<f64>,
    /// The encoded snapshot the verifier holds.
    filter_bytes: usize,
    /// The encoded revoked set a filter would need if, instead of
    /// credentials carrying their ancestors, it listed every credential
    /// of each revoked one's chain (the root and `depth` delegates).
    listed_bytes: usize,
}

/// The encoded size of the snapshot the verifier holds: what the feed sends.
fn filter_bytes(signer: &SigningKeyPair, now_s: u64, revoked: u64) -> anyhow::Result<usize> {
    let snapshot = snapshot(signer, now_s, revoked)?;
    Ok(encode_message(&Message::Full(Box::new(snapshot)))
        .map_err(err)?
        .len())
}

/// The encoded size of a revoked set holding each of `revoked` roots and
/// the `depth` credentials delegated from each, in the same window.
fn listed_bytes(revoked: u64, depth: usize) -> anyhow::Result<usize> {
    let per_root = depth as u64 + 1;
    let indices: Vec<u64> = (0..revoked)
        .flat_map(|i| (0..per_root).map(move |d| i * 100 + d))
        .collect();
    Ok(RevokedSet::from_sorted(0, revoked * 100, indices)
        .map_err(err)?
        .encode()
        .len())
}

/// An error of the library under measurement, as text.
fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// A fresh verifier holding [`snapshot`], remembering at most
/// `signature_cache` verified signatures.
fn loaded_verifier(
    signer: &SigningKeyPair,
    now_s: u64,
    revoked: u64,
    signature_cache: usize,
) -> anyhow::Result<Verifier> {
    let snapshot = snapshot(signer, now_s, revoked)?;
    let verifier = Verifier::new(VerifyConfig {
        staleness: Duration::from_secs(3600),
        audience: Some("bench".into()),
        signature_cache,
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
    let bytes = encode_message(&Message::Full(Box::new(snapshot))).map_err(err)?;
    verifier
        .apply(&event(Kind::Snapshot(bytes.into()), 7))
        .map_err(err)?;
    verifier
        .apply(&event(
            Kind::Heartbeat(Heartbeat {
                interval_ms: 200,
                voucher: None,
            }),
            7,
        ))
        .map_err(err)?;
    Ok(verifier)
}

/// Every 100th index of a window of `revoked * 100` revoked, 1,000 subject
/// rules, 1,000 task rules and `signer`'s key.
fn snapshot(signer: &SigningKeyPair, now_s: u64, revoked: u64) -> anyhow::Result<Snapshot> {
    // Every 100th index revoked; credentials use indices in between.
    let set_indices: Vec<u64> = (0..revoked).map(|i| i * 100).collect();
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
    .map_err(err)?;
    let mut rules = RuleSet::new();
    for i in 0..1000 {
        rules
            .revoke_subject("bench", &format!("spiffe://bench/old-{i}"), now_s * 1000)
            .map_err(err)?;
        rules
            .revoke_task("bench", &format!("old-task-{i}"), now_s * 1000)
            .map_err(err)?;
    }
    Ok(Snapshot {
        epoch: 7,
        set: RevokedSet::from_sorted(0, revoked * 100, set_indices).map_err(err)?,
        secrets: SecretSet::new(1000, 1e-6, [3; 32]).map_err(err)?,
        rules,
        keys,
    })
}

/// 1,024 distinct valid credentials, none revoked, from 50 workloads;
/// with `depth` > 0, each delegated `depth` times (an actor and a
/// non-revoked ancestor's index per step), for one of 16 tasks, on behalf
/// of a user.
fn credentials(
    signer: &SigningKeyPair,
    now_s: u64,
    universe: u64,
    depth: usize,
) -> anyhow::Result<Vec<String>> {
    (0..1024u64)
        .map(|i| {
            let index = |step: u64| ((i * 97 + step * 7919) % universe) | 1;
            let agent = if depth == 0 {
                AgentContext::default()
            } else {
                let actors: Vec<WorkloadId> = (0..depth)
                    .map(|d| {
                        WorkloadId::new(format!("spiffe://bench/agent-{}-{d}", i % 50))
                            .expect("valid")
                    })
                    .collect();
                AgentContext {
                    act: Actor::from_chain(&actors),
                    ancestors: (1..=depth as u64).map(index).collect(),
                    task: Some(format!("task-{}", i % 16)),
                    on_behalf_of: Some("user:bench@example.org".into()),
                    intent: None,
                }
            };
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
                        idx: index(0),
                        uri: "lapse/statuslists/1".into(),
                    },
                },
                cnf: None,
                chain: None,
                agent,
            })
        })
        .collect::<Result<_, _>>()
        .map_err(err)
}

/// The signing input and signature of each JWT.
fn raw_signatures(tokens: &[String]) -> anyhow::Result<Vec<RawSignature>> {
    tokens
        .iter()
        .map(|t| {
            let (input, signature) = t.rsplit_once('.').context("three parts")?;
            let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature)?;
            let signature: [u8; 64] = signature
                .try_into()
                .map_err(|_| anyhow::anyhow!("a signature of 64 bytes"))?;
            Ok((input.as_bytes().to_vec(), signature))
        })
        .collect()
}

/// Report the run with the median ratio of verifier to raw rate, and the
/// median of each depth; batches and repeated credentials by their own
/// medians.
fn report(args: &VerifyBench, mut runs: Vec<Run>, depths: &[Depth]) {
    let median = |runs: &[Run], of: fn(&Run) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(of).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let raw_batch = median(&runs, |r| r.raw_batch);
    let verifier_batch = median(&runs, |r| r.verifier_batch);
    let repeated = median(&runs, |r| r.repeated);
    let repeated_ratio = median(&runs, |r| r.repeated / r.raw);
    runs.sort_by(|a, b| (a.verifier / a.raw).total_cmp(&(b.verifier / b.raw)));
    let Run {
        raw: raw_rate,
        verifier: verifier_rate,
        delegated: delegated_rate,
        ..
    } = runs[runs.len() / 2];
    let report = json!({
        "revoked_indices": args.revoked,
        "raw_ed25519_per_second": raw_rate,
        "verifier_per_second": verifier_rate,
        "delegated_depth_4_per_second": delegated_rate,
        "ratio": verifier_rate / raw_rate,
        "verify_us": 1e6 / verifier_rate,
        "delegated_depth_4_us": 1e6 / delegated_rate,
        "batch": args.batch,
        "raw_ed25519_batch_per_second": raw_batch,
        "verifier_batch_per_second": verifier_batch,
        "repeated_per_second": repeated,
        "repeated_over_raw": repeated_ratio,
        "runs": runs
            .iter()
            .map(|r| json!({
                "raw": r.raw,
                "verifier": r.verifier,
                "delegated_depth_4": r.delegated,
                "raw_batch": r.raw_batch,
                "verifier_batch": r.verifier_batch,
                "repeated": r.repeated,
            }))
            .collect::<Vec<_>>(),
        "depths": depths
            .iter()
            .map(|d| json!({
                "depth": d.depth,
                "runs": d.rates,
                "median_per_second": d.rates[1],
                "median_us": 1e6 / d.rates[1],
                "filter_bytes": d.filter_bytes,
                "listed_bytes": d.listed_bytes,
            }))
            .collect::<Vec<_>>(),
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
        println!(
            "  delegated, depth 4        {delegated_rate:>10.0} /s  ({:.1} us each, {:.0} % of depth 0)",
            1e6 / delegated_rate,
            100.0 * delegated_rate / verifier_rate
        );
        println!(
            "  raw Ed25519 batch of {:<3}  {raw_batch:>10.0} /s  ({:.1} us each, {:.2}x single)",
            args.batch,
            1e6 / raw_batch,
            raw_batch / raw_rate
        );
        println!(
            "  verifier batch of {:<3}     {verifier_batch:>10.0} /s  ({:.1} us each, {:.2}x single)",
            args.batch,
            1e6 / verifier_batch,
            verifier_batch / verifier_rate
        );
        println!(
            "  repeated (remembered)     {repeated:>10.0} /s  ({:.2} us each, revocation checked)",
            1e6 / repeated
        );
        for (n, r) in runs.iter().enumerate() {
            println!(
                "  run {}: raw {:.0} /s, depth 0 {:.0} /s ({:.2}), depth 4 {:.0} /s, raw batch {:.0} /s, verifier batch {:.0} /s, repeated {:.0} /s",
                n + 1,
                r.raw,
                r.verifier,
                r.verifier / r.raw,
                r.delegated,
                r.raw_batch,
                r.verifier_batch,
                r.repeated
            );
        }
        println!("chains of depth 1 to {MAX_DELEGATION_DEPTH} (3 runs each, sorted; median us):");
        for d in depths {
            println!(
                "  depth {}: {:.0} / {:.0} / {:.0} per s, {:.1} us; filter {} bytes (listing every delegate: {} bytes of revoked set)",
                d.depth,
                d.rates[0],
                d.rates[1],
                d.rates[2],
                1e6 / d.rates[1],
                d.filter_bytes,
                d.listed_bytes
            );
        }
    }
}
