//! Relays on real processes: three brokers, a `lapse verifier --relay`
//! following them, and leaves (`lapse verifier` processes) that name the
//! relay first and a broker after it. A revocation reaches every leaf
//! through the relay and `revoke --wait all` counts them all; killing the
//! relay moves its leaves to the broker without one accepting a revoked
//! credential, and the next revocation reaches them there. With mutual
//! TLS, a hop that strips revocations from what a relay passes on is
//! caught by the leaf behind it, which checks the brokers' signatures.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use lapse_pki::{Expect, Role, Tls, TlsConnector, TlsFiles};
use lapse_sim::relay::{Relay as Hop, Tamper};
use serde_json::Value;
use support::edge::{VerifierProcess, hello, subscribe};
use support::*;

const WORKLOAD: &str = "spiffe://example.org/payments";
const POLICY: &str = r#"
permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900 };
"#;
const LEAVES: usize = 3;

/// Issue a credential through broker 1: (token, status index).
fn issue(cluster: &TestCluster) -> (String, u64) {
    let token = join_token(cluster, "acme", WORKLOAD);
    let issued = cli_json(
        cluster,
        1,
        &[
            "issue",
            "--join-token",
            &token,
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

/// The cluster's propagation report.
fn report(cluster: &TestCluster) -> Option<Value> {
    let out = cluster.cli(2, &["propagation", "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The address the one verifier of `process` follows now, if any.
fn following(process: &VerifierProcess) -> Option<String> {
    let status = process.status();
    let (_, one) = status.iter().next()?;
    one["following_broker"]["address"]
        .as_str()
        .map(str::to_owned)
}

fn revoke_and_wait(cluster: &TestCluster, index: u64) -> Value {
    let out = cluster.cli(
        1,
        &[
            "revoke",
            "index",
            &index.to_string(),
            "--wait",
            "all",
            "--wait-timeout",
            "30s",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn logs(processes: &[&VerifierProcess]) -> String {
    processes
        .iter()
        .map(|p| p.log_tail())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_follow_a_relay_are_counted_and_fail_over_when_it_dies() {
    let cluster = TestCluster::start_with(3, FAST_RAFT, |_| {
        format!(
            "[issuance]\nhttp_listen = \"127.0.0.1:{}\"\nlease_block = 20\n[feed]\nheartbeat_ms = 100\n",
            free_port()
        )
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 3).await;
    set_policy(&cluster, "acme", POLICY);
    let (first, first_index) = issue(&cluster);
    let (second, second_index) = issue(&cluster);
    let dir = cluster.dir.path();
    let brokers: Vec<String> = (1..=3).map(|id| cluster.address(id)).collect();

    let relay_address = format!("127.0.0.1:{}", free_port());
    let relay = VerifierProcess::start(
        dir,
        "relay-1",
        "eu-west",
        1,
        &brokers,
        &["--relay", &relay_address],
    );
    // Each leaf names the relay first and broker 3 after it.
    let leaf_brokers = [relay_address.clone(), cluster.address(3)];
    let leaves: Vec<VerifierProcess> = (0..LEAVES)
        .map(|i| {
            VerifierProcess::start(
                dir,
                &format!("leaf-{i}"),
                "edge",
                1,
                &leaf_brokers,
                &["--idle-timeout", "1s"],
            )
        })
        .collect();
    let all: Vec<&VerifierProcess> = std::iter::once(&relay).chain(&leaves).collect();

    // Every leaf follows the relay, and the brokers count them.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let through_relay = leaves
            .iter()
            .filter(|leaf| following(leaf).as_deref() == Some(relay_address.as_str()))
            .count();
        let counted = report(&cluster)
            .map(|r| {
                connected_verifiers(&r)
                    .iter()
                    .filter(|(id, epoch)| id.starts_with("leaf-") && **epoch > 0)
                    .count()
            })
            .unwrap_or(0);
        let accepted = leaves
            .iter()
            .filter(|leaf| leaf.verify_all(&first).0 == 1)
            .count();
        if through_relay == LEAVES && counted == LEAVES && accepted == LEAVES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaves through the relay {through_relay}, counted {counted}, accepting {accepted}\n{}\n{}",
            cluster.logs(),
            logs(&all)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The relay says how many leaves it serves, in its status and metrics.
    let (relay_id, relay_status) = relay.status().into_iter().next().unwrap();
    assert_eq!(
        relay_status["relay"],
        serde_json::json!({"leaves": LEAVES, "max_leaves": 10_000, "forwarded_use_reports": 0}),
        "{relay_status}"
    );
    let (_, metrics) = support::edge::http_request(&relay.http, "GET", "/metrics", "").unwrap();
    assert!(
        metrics.contains(&format!(
            "lapse_verifier_relay_leaves{{verifier=\"{relay_id}\",region=\"eu-west\"}} {LEAVES}\n"
        )),
        "{metrics}"
    );
    // A leaf is not a relay.
    let (_, leaf_status) = leaves[0].status().into_iter().next().unwrap();
    assert_eq!(leaf_status.get("relay"), None, "{leaf_status}");

    // A revocation reaches every leaf through the relay, and --wait counts
    // the relay and its leaves.
    let revoked = revoke_and_wait(&cluster, first_index);
    assert_eq!(revoked["propagated"]["subscribed"], LEAVES + 1, "{revoked}");
    assert_eq!(revoked["propagated"]["verifiers"], LEAVES + 1, "{revoked}");
    for leaf in &leaves {
        let (valid, answers) = leaf.verify_all(&first);
        assert_eq!(valid, 0, "{answers:?}");
        assert_eq!(answers[0]["reason"], "revoked", "{answers:?}");
        assert_eq!(leaf.verify_all(&second).0, 1);
    }
    // The leaves' delays are in the report, measured through the relay.
    let measured = report(&cluster).unwrap();
    let leaf_samples: u64 = measured["verifiers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            v["verifier"]
                .as_str()
                .is_some_and(|id| id.starts_with("leaf-"))
        })
        .map(|v| v["delay"]["samples"].as_u64().unwrap_or(0))
        .sum();
    assert!(leaf_samples >= LEAVES as u64, "{measured}");

    // Kill the relay: the leaves move to broker 3, never accepting the
    // revoked credential on the way.
    drop(relay);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for leaf in &leaves {
            let (valid, answers) = leaf.verify_all(&first);
            assert_eq!(
                valid, 0,
                "a leaf accepted a revoked credential: {answers:?}"
            );
        }
        let moved = leaves
            .iter()
            .filter(|leaf| following(leaf).as_deref() == Some(cluster.address(3).as_str()))
            .count();
        if moved == LEAVES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{moved} of {LEAVES} leaves moved to the broker\n{}",
            logs(&leaves.iter().collect::<Vec<_>>())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The relay is gone from the count; the next revocation reaches every
    // leaf directly.
    let revoked = revoke_and_wait(&cluster, second_index);
    assert_eq!(revoked["propagated"]["subscribed"], LEAVES, "{revoked}");
    assert_eq!(revoked["propagated"]["verifiers"], LEAVES, "{revoked}");
    for leaf in &leaves {
        assert_eq!(leaf.verify_all(&first).0, 0);
        assert_eq!(leaf.verify_all(&second).0, 0);
    }

    // A summary report counts every verifier and names only the lagging
    // or gone: here the dead relay, as the full report's lagging list does.
    let full = report(&cluster).unwrap();
    let summary = cli_json(&cluster, 2, &["propagation", "--summary", "--json"]);
    let names = |report: &Value| -> Vec<String> {
        report["verifiers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["verifier"].as_str().unwrap().to_owned())
            .collect()
    };
    let lagging: Vec<String> = full["lagging"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(lagging.len(), 1, "only the relay: {full}");
    assert!(lagging[0].starts_with("relay-1"), "{full}");
    assert_eq!(names(&summary), lagging, "{summary}");
    assert_eq!(summary["verifier_count"], LEAVES + 1, "{summary}");
    assert_eq!(summary["connected"], LEAVES, "{summary}");
    assert_eq!(summary["holding"], LEAVES, "{summary}");
    assert_eq!(summary["unlisted"], 0, "{summary}");
    assert_eq!(summary["overall"], full["overall"], "{summary}\n{full}");
    assert_eq!(names(&full).len(), LEAVES + 1, "{full}");
    assert_eq!(full["verifier_count"], LEAVES + 1, "{full}");
    // --summary and --all ask for opposite things.
    let out = cluster.cli(2, &["propagation", "--summary", "--all"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn a_relay_refuses_what_it_cannot_serve() {
    // Several verifiers in one process have several states: a relay has one.
    let out = lapse()
        .args(["verifier", "--brokers", "127.0.0.1:1", "--id", "relay"])
        .args(["--audience", "billing", "--insecure-plaintext", "--no-http"])
        .args(["--relay", "127.0.0.1:0", "--count", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--count 1"));
    // Without TLS, loopback only.
    let out = lapse()
        .args(["verifier", "--brokers", "127.0.0.1:1", "--id", "relay"])
        .args(["--audience", "billing", "--insecure-plaintext", "--no-http"])
        .args(["--relay", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loopback only"),
        "{out:?}"
    );
}

/// Poll `check` until it holds, or fail with `what` after a minute.
async fn eventually(what: impl Fn() -> String, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "{}", what());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one verifier's answer for `token`: "valid" or its reason.
fn verdict(process: &VerifierProcess, token: &str) -> String {
    let (_, answers) = process.verify_all(token);
    if answers[0]["valid"] == true {
        "valid".into()
    } else {
        answers[0]["reason"].as_str().unwrap_or("?").into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hop_that_strips_revocations_after_a_relay_is_caught_by_the_leaf() {
    let cluster = TestCluster::start_tls_with(3, FAST_RAFT, |_| {
        format!(
            "[issuance]\nhttp_listen = \"127.0.0.1:{}\"\nlease_block = 20\n[feed]\nheartbeat_ms = 100\n",
            free_port()
        )
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 3).await;
    set_policy(&cluster, "acme", POLICY);
    let (credential, index) = issue(&cluster);
    let certs = cluster.certs();
    let ca = certs.join("ca.pem");
    let dir = tempfile::tempdir().unwrap();
    let day = Duration::from_secs(86_400);

    // The relay: a real `lapse verifier --relay` with its certificate.
    let (cert, key) = issue_cert(
        certs,
        Role::Verifier("relay-1".into()),
        SystemTime::now(),
        day,
    );
    let relay_address = format!("127.0.0.1:{}", free_port());
    let brokers: Vec<String> = (1..=3).map(|id| cluster.address(id)).collect();
    let (ca_arg, cert_arg, key_arg) = (
        ca.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let relay = VerifierProcess::start_tls(
        dir.path(),
        "relay-1",
        "eu-west",
        1,
        &brokers,
        &[
            "--relay",
            &relay_address,
            "--ca",
            &ca_arg,
            "--cert",
            &cert_arg,
            "--key",
            &key_arg,
        ],
    );

    // A hostile hop after it: it follows the relay over mutual TLS (the
    // relay's certificate is a verifier's) and strips revocations.
    let (cert, key) = issue_cert(certs, Role::Verifier("hop".into()), SystemTime::now(), day);
    let tls = Tls::open(
        TlsFiles {
            ca: ca.clone(),
            cert: Some(cert),
            key: Some(key),
        },
        SystemTime::now(),
    )
    .unwrap();
    let upstream = tonic::transport::Endpoint::from_shared(format!("http://{relay_address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    let upstream = TlsConnector::new(tls, Expect::FeedSource).channel(upstream);
    let hop = Hop::new(
        vec![upstream],
        Some("hop".into()),
        Tamper {
            drop_revocations: true,
            ..Tamper::default()
        },
    );
    let stats = hop.stats();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hop_address = listener.local_addr().unwrap().to_string();
    let _hop = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(hop.into_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    // The leaf reaches the relay only through the hop, and checks the
    // brokers' heartbeat signatures against the cluster CA.
    let leaf = VerifierProcess::start(
        dir.path(),
        "leaf",
        "edge",
        1,
        std::slice::from_ref(&hop_address),
        &[
            "--insecure-plaintext",
            "--staleness",
            "2s",
            "--signed-by",
            &ca_arg,
        ],
    );
    let relay_log = dir.path().join("verifier-relay-1.log");
    let both = || {
        let head: String = std::fs::read_to_string(&relay_log)
            .unwrap_or_default()
            .lines()
            .take(12)
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            "{head}\n...\n{}\n---\n{}",
            relay.log_tail(),
            leaf.log_tail()
        )
    };
    eventually(
        || {
            format!(
                "the leaf never accepted through the relay\n{}\n{}",
                both(),
                cluster
                    .logs()
                    .lines()
                    .filter(|l| l.contains("feed") || l.contains("relay") || l.contains("verifier"))
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        },
        || verdict(&leaf, &credential) == "valid" && verdict(&relay, &credential) == "valid",
    )
    .await;

    // Over TLS the relay serves verifiers only, each under its own name:
    // an operator's or a broker's certificate, a verifier naming another
    // verifier, and a first message that is not a Hello are all refused,
    // and none of them counts as a leaf.
    let refusals = [
        (
            Role::Operator("alice".into()),
            "alice",
            None,
            "the feed is for verifiers",
        ),
        (
            Role::Broker(9),
            "broker-9",
            None,
            "the feed is for verifiers",
        ),
        (
            Role::Verifier("mallory".into()),
            "leaf",
            None,
            "is not this verifier's",
        ),
        (
            Role::Verifier("mallory".into()),
            "mallory",
            Some(()),
            "must be a Hello",
        ),
    ];
    for (role, id, not_hello, words) in refusals {
        let status = subscribe_to_relay(
            certs,
            &ca,
            role.clone(),
            id,
            not_hello.is_some(),
            &relay_address,
        )
        .await
        .expect_err("the relay must refuse");
        let expected = if not_hello.is_some() {
            tonic::Code::InvalidArgument
        } else {
            tonic::Code::PermissionDenied
        };
        assert_eq!(status.code(), expected, "{role:?} as {id}: {status:?}");
        assert!(
            status.message().contains(words),
            "{role:?} as {id}: {status:?}"
        );
    }
    let (_, relay_status) = relay.status().into_iter().next().unwrap();
    assert_eq!(
        relay_status["relay"]["leaves"], 1,
        "only the hop: {relay_status}"
    );

    let revoked = cli_json(
        &cluster,
        1,
        &["revoke", "index", &index.to_string(), "--json"],
    );
    assert!(revoked["epoch"].as_u64().is_some(), "{revoked}");
    eventually(
        || format!("the relay never applied the revocation\n{}", both()),
        || verdict(&relay, &credential) == "revoked",
    )
    .await;
    eventually(
        || "the hop never stripped the revocation".into(),
        || stats.dropped_revocations.load(Ordering::SeqCst) >= 1,
    )
    .await;
    // The leaf's state is not the one the brokers vouch for: it drops it
    // and refuses (stale), and never accepts the revoked credential.
    eventually(
        || format!("the leaf never noticed\n{}", both()),
        || {
            leaf.status()["leaf"]["unvouched_drops"].as_u64() >= Some(1)
                && verdict(&leaf, &credential) != "valid"
        },
    )
    .await;
    for _ in 0..20 {
        assert_ne!(verdict(&leaf, &credential), "valid", "{}", both());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Subscribe to the relay at `address` over mutual TLS with a certificate
/// for `role`, saying hello as `id` (or, with `not_hello`, acking first):
/// the relay's first answer.
async fn subscribe_to_relay(
    certs: &std::path::Path,
    ca: &std::path::Path,
    role: Role,
    id: &str,
    not_hello: bool,
    address: &str,
) -> Result<(), tonic::Status> {
    use lapse_wire::feed::feed_client::FeedClient;
    use lapse_wire::feed::feed_request::Kind as RequestKind;
    use lapse_wire::feed::{Ack, FeedRequest};
    let (cert, key) = issue_cert(certs, role, SystemTime::now(), Duration::from_secs(3600));
    let tls = Tls::open(
        TlsFiles {
            ca: ca.to_path_buf(),
            cert: Some(cert),
            key: Some(key),
        },
        SystemTime::now(),
    )
    .unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(10));
    let channel = TlsConnector::new(tls, Expect::FeedSource)
        .connect(endpoint)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e:?}")))?;
    let first = if not_hello {
        FeedRequest {
            kind: Some(RequestKind::Ack(Ack { epoch: 1 })),
        }
    } else {
        hello(id, None)
    };
    let (reply, _requests) = subscribe(&mut FeedClient::new(channel), [first]).await;
    reply?.message().await.map(|_| ())
}
