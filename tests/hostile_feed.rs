//! A hostile hop between brokers and verifiers, on real processes: three
//! brokers with mutual TLS, a relay in this process that follows them
//! with a verifier certificate of its own and attacks the feed it passes
//! on, and `lapse verifier` processes that reach the brokers only through
//! it, over plaintext, checking heartbeat signatures against the cluster
//! CA (`--signed-by`).
//!
//! The attacks: revocations stripped from deltas, a signing key injected
//! and then "vouched for" with a certificate from another CA, `ttl = 1` on
//! every event, and old heartbeats replayed in place of new ones. A
//! verifier that checks signatures ends, at worst, refusing credentials or
//! stale. Beside each, a verifier that does not check signatures falls
//! for the same attack: the attacks are real, and the check is what stops
//! them.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lapse_credential::{Claims, KeyId, SigningKeyPair};
use lapse_filter::{KeyAlgorithm, PublicKey};
use lapse_pki::{Credentials, Expect, Role, Tls, TlsConnector, TlsFiles};
use lapse_sim::relay::{Relay, RelayStats, Tamper};
use serde_json::Value;
use support::edge::VerifierProcess;
use support::*;

const DAY: Duration = Duration::from_secs(86_400);
const WORKLOAD: &str = "spiffe://example.org/payments";
const POLICY: &str = r#"
permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900 };
"#;

/// A relay listening on loopback, and what it did.
struct Hop {
    address: String,
    stats: Arc<RelayStats>,
    replay: Arc<AtomicBool>,
    _server: tokio::task::JoinHandle<()>,
}

/// Start a relay named `name` (its verifier certificate's name) following
/// the cluster's brokers over mutual TLS, changing the feed as `tamper`
/// says.
async fn hop(cluster: &TestCluster, name: &str, tamper: Tamper) -> Hop {
    let certs = cluster.certs();
    let (cert, key) = issue_cert(certs, Role::Verifier(name.into()), SystemTime::now(), DAY);
    let files = TlsFiles {
        ca: certs.join("ca.pem"),
        cert: Some(cert),
        key: Some(key),
    };
    let tls = Tls::open(files, SystemTime::now()).expect("the relay's certificate");
    let upstream = (1..=3)
        .map(|id| {
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.address(id)))
                    .unwrap()
                    .connect_timeout(Duration::from_secs(2));
            TlsConnector::new(tls.clone(), Expect::AnyBroker).channel(endpoint)
        })
        .collect();
    let replay = tamper.replay.clone();
    let relay = Relay::new(upstream, Some(name.into()), tamper);
    let stats = relay.stats();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(relay.into_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    Hop {
        address,
        stats,
        replay,
        _server: server,
    }
}

/// A `lapse verifier` named `id` that follows only `hop`, checking
/// heartbeat signatures against the cluster CA when `signed`.
fn verifier_through(dir: &Path, hop: &Hop, id: &str, signed: bool, ca: &Path) -> VerifierProcess {
    let ca = ca.display().to_string();
    let mut extra = vec![
        "--insecure-plaintext",
        "--staleness",
        "2s",
        "--age-out-every",
        "100ms",
    ];
    if signed {
        extra.extend(["--signed-by", ca.as_str()]);
    }
    VerifierProcess::start(
        dir,
        id,
        "edge",
        1,
        std::slice::from_ref(&hop.address),
        &extra,
    )
}

/// The one verifier's status.
fn status(process: &VerifierProcess) -> Value {
    process.status()[&process.prefix].clone()
}

/// The one verifier's answer for `token`: "valid" or its reason.
fn verdict(process: &VerifierProcess, token: &str) -> String {
    let (_, answers) = process.verify_all(token);
    let answer = &answers[0];
    if answer["valid"] == true {
        "valid".into()
    } else {
        answer["reason"].as_str().unwrap_or("?").into()
    }
}

/// Poll `check` until it holds, or fail with `what` after `seconds`.
async fn eventually(seconds: u64, what: impl Fn() -> String, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "{}", what());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue a credential for the workload: (token, status index).
fn issue(cluster: &TestCluster) -> (String, u64) {
    let join = cli_json(
        cluster,
        1,
        &[
            "join-token",
            "create",
            "--tenant",
            "acme",
            "--workload",
            WORKLOAD,
            "--json",
        ],
    );
    let issued = cli_json(
        cluster,
        1,
        &[
            "issue",
            "--join-token",
            join["token"].as_str().unwrap(),
            "--audience",
            "billing",
            "--scope",
            "payments:read",
            "--json",
        ],
    );
    (
        issued["credential"].as_str().unwrap().to_owned(),
        issued["status_index"].as_u64().unwrap(),
    )
}

/// A credential with `genuine`'s claims, signed by `key` instead.
fn forge(genuine: &str, key: &SigningKeyPair) -> String {
    let payload = genuine.split('.').nth(1).unwrap();
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    key.sign(&claims).unwrap()
}

/// A broker certificate for broker 1 from a CA of the same trust domain
/// that is not the cluster's.
fn rogue_broker(dir: &Path) -> Arc<Credentials> {
    let certs = dir.join("rogue");
    new_ca(&certs, "test.lapse");
    let (cert, key) = issue_cert(&certs, Role::Broker(1), SystemTime::now(), DAY);
    let read = |p: &Path| std::fs::read(p).unwrap();
    Arc::new(
        Credentials::from_pem(
            &read(&certs.join("ca.pem")),
            Some((&read(&cert), &read(&key))),
            SystemTime::now(),
        )
        .unwrap(),
    )
}

fn logs(processes: &[&VerifierProcess]) -> String {
    processes
        .iter()
        .map(|p| format!("--- {}\n{}", p.prefix, p.log_tail()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_hop_makes_a_signature_checking_verifier_refuse_or_go_stale_never_accept_more() {
    let cluster = TestCluster::start_tls_with(3, FAST_RAFT, |_| {
        format!(
            "[issuance]\nhttp_listen = \"127.0.0.1:{}\"\nlease_block = 20\n[feed]\nheartbeat_ms = 100\n",
            free_port()
        )
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 3).await;
    set_policy(&cluster, "acme", POLICY);
    let ca = cluster.certs().join("ca.pem");
    let dir = tempfile::tempdir().unwrap();

    // The attacker's signing key, as the relay injects it.
    let attacker = SigningKeyPair::from_seed(KeyId::new("attacker-1").unwrap(), [7; 32]);
    let forged_key = PublicKey {
        algorithm: KeyAlgorithm::Ed25519,
        bytes: attacker.public_key().to_vec(),
        not_before_ms: 0,
        not_after_ms: 4_000_000_000_000,
    };

    let honest = hop(&cluster, "hop-honest", Tamper::default()).await;
    let dropping = hop(
        &cluster,
        "hop-drop",
        Tamper {
            drop_revocations: true,
            ..Tamper::default()
        },
    )
    .await;
    // It forges only once told to, so that its verifiers first become
    // fresh on the real feed.
    let forge_now = Arc::new(AtomicBool::new(false));
    let forging = hop(
        &cluster,
        "hop-forge",
        Tamper {
            inject_key: Some(("attacker-1".into(), forged_key)),
            resign_with: Some(rogue_broker(dir.path())),
            armed: Some(forge_now.clone()),
            ..Tamper::default()
        },
    )
    .await;
    let ttl = hop(
        &cluster,
        "hop-ttl",
        Tamper {
            ttl_ms: Some(1),
            ..Tamper::default()
        },
    )
    .await;
    let replaying = hop(&cluster, "hop-replay", Tamper::default()).await;

    let d = dir.path();
    let honest_v = verifier_through(d, &honest, "honest", true, &ca);
    let drop_signed = verifier_through(d, &dropping, "drop-signed", true, &ca);
    let drop_open = verifier_through(d, &dropping, "drop-open", false, &ca);
    let forge_signed = verifier_through(d, &forging, "forge-signed", true, &ca);
    let forge_open = verifier_through(d, &forging, "forge-open", false, &ca);
    let ttl_signed = verifier_through(d, &ttl, "ttl-signed", true, &ca);
    let ttl_open = verifier_through(d, &ttl, "ttl-open", false, &ca);
    let replay_signed = verifier_through(d, &replaying, "replay-signed", true, &ca);
    let replay_open = verifier_through(d, &replaying, "replay-open", false, &ca);
    let all = [
        &honest_v,
        &drop_signed,
        &drop_open,
        &forge_signed,
        &forge_open,
        &ttl_signed,
        &ttl_open,
        &replay_signed,
        &replay_open,
    ];

    let (first, first_index) = issue(&cluster);
    let (second, _) = issue(&cluster);
    // The forged credential copies the second one's claims: the first is
    // about to be revoked.
    let forged = forge(&second, &attacker);

    // Through every hop, every verifier becomes fresh first (the signing
    // ones on the brokers' signed heartbeats) and accepts the credential.
    for process in all {
        eventually(
            30,
            || format!("{} never became fresh\n{}", process.prefix, logs(&all)),
            || status(process)["fresh"] == true && verdict(process, &first) == "valid",
        )
        .await;
    }
    assert_eq!(status(&honest_v)["signed_heartbeats"], true);
    assert_eq!(status(&drop_open)["signed_heartbeats"], false);
    // Nothing injected yet: the forged credential's key is unknown to all.
    for process in all {
        assert_ne!(verdict(process, &forged), "valid", "{}", process.prefix);
    }

    // The replaying hop freezes: from now on it sends old heartbeats in
    // place of new ones, and nothing else. The forging hop starts.
    replaying.replay.store(true, Ordering::SeqCst);
    forge_now.store(true, Ordering::SeqCst);
    let replayed_before = replaying.stats.replayed.load(Ordering::SeqCst);

    // Revoke the first credential by its index.
    let revoked = cli_json(
        &cluster,
        1,
        &["revoke", "index", &first_index.to_string(), "--json"],
    );
    assert!(revoked["epoch"].as_u64().is_some(), "{revoked}");
    eventually(
        30,
        || {
            format!(
                "the honest hop never delivered the revocation\n{}",
                logs(&all)
            )
        },
        || verdict(&honest_v, &first) == "revoked",
    )
    .await;

    // Stripped revocation: the hop stripped it, and the signing verifier
    // saw that the state received is not the one the broker vouched for.
    eventually(
        30,
        || "the dropping hop never stripped the revocation".into(),
        || dropping.stats.dropped_revocations.load(Ordering::SeqCst) >= 1,
    )
    .await;
    eventually(
        30,
        || format!("drop-signed never noticed\n{}", logs(&all)),
        || status(&drop_signed)["unvouched_drops"].as_u64() >= Some(1),
    )
    .await;
    // Injected key: the forging hop added it to the revocation's delta.
    eventually(
        30,
        || "the forging hop never injected its key".into(),
        || forging.stats.tampered_deltas.load(Ordering::SeqCst) >= 1,
    )
    .await;
    // Replay: old heartbeats went out in place of new ones.
    eventually(
        30,
        || "the replaying hop never replayed".into(),
        || replaying.stats.replayed.load(Ordering::SeqCst) >= replayed_before + 5,
    )
    .await;

    // Without the signature check, each attack works: the stripped
    // revocation is missing, the forged credential passes, and replayed
    // heartbeats keep a verifier fresh on the state before the revocation.
    eventually(
        30,
        || {
            format!(
                "drop-open did not fall for the stripped revocation\n{}",
                logs(&all)
            )
        },
        || {
            status(&drop_open)["epoch"].as_u64() >= revoked["epoch"].as_u64()
                && status(&drop_open)["fresh"] == true
                && verdict(&drop_open, &first) == "valid"
        },
    )
    .await;
    eventually(
        30,
        || format!("forge-open did not take the forged key\n{}", logs(&all)),
        || verdict(&forge_open, &forged) == "valid",
    )
    .await;
    eventually(
        30,
        || format!("replay-open did not stay fresh on replays\n{}", logs(&all)),
        || status(&replay_open)["fresh"] == true && verdict(&replay_open, &first) == "valid",
    )
    .await;
    assert!(replaying.stats.replayed.load(Ordering::SeqCst) >= replayed_before + 5);

    // With it, the forged credential is never accepted, and once the
    // staleness bound has passed without a heartbeat vouching for what
    // the hop sent, the revoked credential is refused too: stale at worst.
    for process in [&drop_signed, &forge_signed, &replay_signed] {
        assert_ne!(verdict(process, &forged), "valid", "{}", process.prefix);
        eventually(
            30,
            || {
                format!(
                    "{} stayed fresh on a feed no broker vouched for\n{}",
                    process.prefix,
                    logs(&all)
                )
            },
            || status(process)["fresh"] == false,
        )
        .await;
        let held = status(process);
        assert!(
            held["vouched_epoch"].as_u64() < revoked["epoch"].as_u64(),
            "{}: vouched for the tampered state {held}",
            process.prefix
        );
        assert_ne!(verdict(process, &first), "valid", "{}", process.prefix);
        assert_ne!(verdict(process, &forged), "valid", "{}", process.prefix);
    }
    // The forging hop's own vouchers, signed by another CA's broker 1,
    // were refused, not taken.
    assert!(forging.stats.resigned.load(Ordering::SeqCst) >= 1);

    // ttl = 1 on every event: a verifier that took the envelope's word
    // would age the subject rule out at once. Revoke every credential of
    // the workload issued until now by a subject rule.
    let rule = cli_json(
        &cluster,
        1,
        &["revoke", "subject", WORKLOAD, "--tenant", "acme", "--json"],
    );
    assert!(rule["epoch"].as_u64().is_some(), "{rule}");
    eventually(
        30,
        || format!("ttl-signed never took the rule\n{}", logs(&all)),
        || verdict(&ttl_signed, &second) == "revoked" && status(&ttl_signed)["rules"] == 1,
    )
    .await;
    // Ageing out runs every 100 ms; wait until it has run on the vouched
    // state well after the rule arrived.
    let aged = status(&ttl_signed)["age_outs"].as_u64().unwrap();
    eventually(
        30,
        || format!("ttl-signed never aged out\n{}", logs(&all)),
        || status(&ttl_signed)["age_outs"].as_u64() >= Some(aged + 10),
    )
    .await;
    let held = status(&ttl_signed);
    assert_eq!(held["fresh"], true, "{held}");
    assert_eq!(held["rules"], 1, "{held}");
    assert_eq!(verdict(&ttl_signed, &second), "revoked");
    // The verifier that believes the envelope dropped the rule.
    eventually(
        30,
        || format!("ttl-open kept the rule\n{}", logs(&all)),
        || status(&ttl_open)["rules"] == 0 && verdict(&ttl_open, &second) == "valid",
    )
    .await;
    // The honest path is unaffected throughout.
    assert_eq!(verdict(&honest_v, &second), "revoked");
    assert_eq!(status(&honest_v)["fresh"], true);
}
