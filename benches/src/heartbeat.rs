//! What signed heartbeats cost on one thread, outside any cluster: the
//! broker's ECDSA P-256 signature over a heartbeat statement, and what a
//! verifier does with it (the signature and certificate chain checked
//! against the CA, the first time or remembered; the digest of its state
//! recomputed and compared). The propagation benchmark prints these beside
//! its TLS figures, which include them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use lapse_filter::Statement;
use lapse_filter::{KeyAlgorithm, KeySet, PublicKey, RevokedSet, RuleSet, SecretSet, Snapshot};
use lapse_pki::{SignatureChecker, TlsFiles};

use crate::stats::rate;
use crate::transport::{VERIFIER, make_certificates};

/// Microseconds per operation, on one thread.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatCosts {
    /// Bytes of a signed statement.
    pub statement_bytes: usize,
    /// The broker signs a statement.
    pub sign_us: f64,
    /// A verifier checks a signature it has not seen: chain to the CA,
    /// broker name, ECDSA verification.
    pub check_first_us: f64,
    /// A verifier checks a signature another verifier of the process
    /// already checked (the shared checker remembers it).
    pub check_again_us: f64,
    /// A verifier digests its state (`revoked` indices, three keys) at an
    /// epoch it has not digested yet, and compares.
    pub digest_new_epoch_us: f64,
    /// The same at an epoch already digested (the part fixed by the epoch
    /// is cached).
    pub digest_same_epoch_us: f64,
    /// Revoked indices in the state digested.
    pub revoked: u64,
}

/// Measure each cost for `each` on this thread, with certificates made for
/// the purpose and a state holding `revoked` indices.
pub fn heartbeat_costs(each: Duration, revoked: u64) -> anyhow::Result<HeartbeatCosts> {
    let certs = tempfile::tempdir()?;
    make_certificates(certs.path(), 1)?;
    let now = SystemTime::now();
    let load = |stem: &str| {
        TlsFiles {
            ca: certs.path().join("ca.pem"),
            cert: Some(certs.path().join(format!("{stem}.pem"))),
            key: Some(certs.path().join(format!("{stem}.key"))),
        }
        .load(now)
        .map_err(|e| anyhow::anyhow!("{stem}: {e}"))
    };
    let broker = load("broker-1")?;
    let verifier = Arc::new(load(&format!("verifier-{VERIFIER}"))?);

    let state = state(revoked)?;
    let epoch_digest = state.epoch_digest();
    let at_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_millis()
        .try_into()
        .context("time in ms")?;
    let max_ttl_ms = 86_400_000;
    let vouched = state.digest_at(Some(epoch_digest), at_ms, max_ttl_ms);
    let statement = Statement {
        broker_id: 1,
        epoch: state.epoch,
        cluster_time_ms: at_ms,
        max_ttl_ms,
        interval_ms: 200,
        digest: vouched,
    }
    .encode();
    let signed = broker
        .sign(&statement)
        .map_err(|e| anyhow::anyhow!("sign: {e}"))?;
    let shared = SignatureChecker::new(verifier.clone());
    shared
        .check_broker(&statement, &signed, now)
        .map_err(|e| anyhow::anyhow!("check: {e}"))?;

    let per = |per_second: f64| 1e6 / per_second;
    let sign_us = per(rate(each, |_| {
        std::hint::black_box(broker.sign(std::hint::black_box(&statement)).ok());
    }));
    let check_first_us = per(rate(each, |_| {
        // A checker of its own remembers nothing.
        let checker = SignatureChecker::new(verifier.clone());
        std::hint::black_box(checker.check_broker(&statement, &signed, now).ok());
    }));
    let check_again_us = per(rate(each, |_| {
        std::hint::black_box(shared.check_broker(&statement, &signed, now).ok());
    }));
    let digest_new_epoch_us = per(rate(each, |_| {
        let digest = state.digest_at(None, at_ms, max_ttl_ms);
        std::hint::black_box(digest == std::hint::black_box(vouched));
    }));
    let digest_same_epoch_us = per(rate(each, |_| {
        let digest = state.digest_at(Some(epoch_digest), at_ms, max_ttl_ms);
        std::hint::black_box(digest == std::hint::black_box(vouched));
    }));
    Ok(HeartbeatCosts {
        statement_bytes: statement.len(),
        sign_us,
        check_first_us,
        check_again_us,
        digest_new_epoch_us,
        digest_same_epoch_us,
        revoked,
    })
}

/// A verifier's state after `revoked` revocations, with the three brokers'
/// signing keys.
fn state(revoked: u64) -> anyhow::Result<Snapshot> {
    let err = |e: lapse_filter::FilterError| anyhow::anyhow!("{e}");
    let mut keys = KeySet::new();
    for n in 1..=3u8 {
        keys.insert(
            &format!("n{n}-bench"),
            PublicKey {
                algorithm: KeyAlgorithm::Ed25519,
                bytes: vec![n; 32],
                not_before_ms: 0,
                not_after_ms: u64::MAX / 2,
            },
        )
        .map_err(err)?;
    }
    Ok(Snapshot {
        epoch: revoked + 1,
        set: RevokedSet::from_sorted(0, 1 << 20, (0..revoked).map(|i| i * 7)).map_err(err)?,
        secrets: SecretSet::new(1000, 1e-6, [3; 32]).map_err(err)?,
        rules: RuleSet::new(),
        keys,
    })
}
