//! Credential verification per core beside raw Ed25519 verification.
//!
//! One thread, one verifier holding a filter with `--revoked` revoked
//! indices (one in a hundred of the window), 1,000 subject rules, 1,000
//! task rules and one key, fresh (a heartbeat applied), checking 1,024
//! distinct credentials in a loop; beside it, raw Ed25519 verification of
//! the same signatures over the same signing input, and the same verifier
//! checking 1,024 delegated credentials of depth 4 (four actors, four
//! ancestors' indices checked against the revoked set, a task checked
//! against the task rules). Three runs of each; the run with the median
//! ratio is reported. Then chains of depth 1 to 8, three runs each, and
//! the filter's encoded size: the same at every depth, since a delegated
//! credential carries its ancestors' indices and the filter holds only the
//! revoked ones (beside the size a filter would need if it had to list
//! every credential delegated from each revoked one).
//!
//! ```sh
//! cargo bench -p lapse-benches --bench verify -- [--seconds 2] [--revoked 100000] [--json]
//! ```

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::Parser;
use lapse_benches::stats::rate;
use lapse_benches::{CargoBench, print_json};
use lapse_credential::{
    Actor, AgentContext, Claims, KeyId, MAX_DELEGATION_DEPTH, SigningKeyPair, StatusClaim,
    StatusListRef, TenantId, WorkloadId, verify_raw,
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
    /// Print JSON.
    #[arg(long)]
    json: bool,
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
    let verifier = loaded_verifier(&signer, now_s, args.revoked)?;
    let tokens = credentials(&signer, now_s, universe, 0)?;
    let delegated = credentials(&signer, now_s, universe, 4)?;
    let expect = Expect::default();
    for token in tokens.iter().chain(&delegated) {
        verifier.verify(token, &expect).map_err(err)?;
    }
    let raw = raw_signatures(&tokens)?;
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
        let delegated_rate = rate(seconds, |n| {
            std::hint::black_box(
                verifier
                    .verify(&delegated[n % delegated.len()], &expect)
                    .is_ok(),
            );
        });
        runs.push((raw_rate, verifier_rate, delegated_rate));
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

/// A fresh verifier holding [`snapshot`].
fn loaded_verifier(signer: &SigningKeyPair, now_s: u64, revoked: u64) -> anyhow::Result<Verifier> {
    let snapshot = snapshot(signer, now_s, revoked)?;
    let verifier = Verifier::new(VerifyConfig {
        staleness: Duration::from_secs(3600),
        audience: Some("bench".into()),
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
/// median of each depth.
fn report(args: &VerifyBench, mut runs: Vec<(f64, f64, f64)>, depths: &[Depth]) {
    runs.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
    let (raw_rate, verifier_rate, delegated_rate) = runs[1];
    let report = json!({
        "revoked_indices": args.revoked,
        "raw_ed25519_per_second": raw_rate,
        "verifier_per_second": verifier_rate,
        "delegated_depth_4_per_second": delegated_rate,
        "ratio": verifier_rate / raw_rate,
        "verify_us": 1e6 / verifier_rate,
        "delegated_depth_4_us": 1e6 / delegated_rate,
        "runs": runs
            .iter()
            .map(|(r, v, d)| json!({"raw": r, "verifier": v, "delegated_depth_4": d}))
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
        for (n, (r, v, d)) in runs.iter().enumerate() {
            println!(
                "  run {}: raw {r:.0} /s, depth 0 {v:.0} /s, depth 4 {d:.0} /s",
                n + 1
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
