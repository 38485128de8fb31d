//! Credential verification per core beside raw Ed25519 verification.
//!
//! One thread, one verifier holding a filter with `--revoked` revoked
//! indices (one in a hundred of the window), 1,000 subject rules and one
//! key, fresh (a heartbeat applied), checking 1,024 distinct credentials in
//! a loop; beside it, raw Ed25519 verification of the same signatures over
//! the same signing input. Three runs of each; the run with the median
//! ratio is reported.
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
    Claims, KeyId, SigningKeyPair, StatusClaim, StatusListRef, TenantId, WorkloadId, verify_raw,
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
    let tokens = credentials(&signer, now_s, universe)?;
    let expect = Expect::default();
    for token in &tokens {
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
        runs.push((raw_rate, verifier_rate));
    }
    report(&args, runs);
    Ok(())
}

/// An error of the library under measurement, as text.
fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// A fresh verifier holding every 100th index of a window of `revoked *
/// 100` revoked, 1,000 subject rules and `signer`'s key.
fn loaded_verifier(signer: &SigningKeyPair, now_s: u64, revoked: u64) -> anyhow::Result<Verifier> {
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
    }
    let snapshot = Snapshot {
        epoch: 7,
        set: RevokedSet::from_sorted(0, revoked * 100, set_indices).map_err(err)?,
        secrets: SecretSet::new(1000, 1e-6, [3; 32]).map_err(err)?,
        rules,
        keys,
    };
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

/// 1,024 distinct valid credentials, none revoked, from 50 workloads.
fn credentials(signer: &SigningKeyPair, now_s: u64, universe: u64) -> anyhow::Result<Vec<String>> {
    (0..1024u64)
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
                chain: None,
                agent: Default::default(),
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

/// Report the run with the median ratio of verifier to raw rate.
fn report(args: &VerifyBench, mut runs: Vec<(f64, f64)>) {
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
}
