//! End-to-end revocation feed on real processes and sockets: three brokers,
//! fifty verifiers in two `lapse verifier` processes, `revoke --wait all`,
//! a verifier cut off from every broker failing closed and resuming from
//! its epoch, failover when the followed broker is killed, and the feed's
//! limits seen by a raw gRPC subscriber.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapse_wire::feed::FeedRequest;
use lapse_wire::feed::feed_client::FeedClient;
use lapse_wire::feed::feed_event::Kind;
use lapse_wire::feed::feed_request::Kind as RequestKind;
use support::edge::{Proxy, VerifierProcess, hello, http_request, subscribe};
use support::*;

const WORKLOAD: &str = "spiffe://example.org/payments";
const POLICY: &str = r#"
permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900 };
"#;

/// Three brokers that issue, with their HTTP (metrics) addresses.
fn start(feed: &str) -> (TestCluster, BTreeMap<u64, String>) {
    let http: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let ports = http.clone();
    let feed = feed.to_owned();
    let cluster = TestCluster::start_with(3, FAST_RAFT, move |id| {
        format!(
            "[issuance]\nhttp_listen = \"{}\"\nlease_block = 20\n[feed]\nheartbeat_ms = 100\n{feed}\n",
            ports[&id]
        )
    });
    (cluster, http)
}

async fn ready_to_issue(cluster: &TestCluster) {
    cluster.wait_for_leader().await;
    wait_for_keys(cluster, 3).await;
    set_policy(cluster, "acme", POLICY);
}

/// Issue a credential through `broker`: (token, status index).
fn issue(cluster: &TestCluster, broker: u64) -> (String, u64) {
    let join = cli_json(
        cluster,
        broker,
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
        broker,
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

fn brokers(cluster: &TestCluster) -> Vec<String> {
    (1..=3).map(|id| cluster.address(id)).collect()
}

/// Wait until the cluster reports `count` connected verifiers, all holding
/// at least `epoch`.
async fn wait_for_verifiers(cluster: &TestCluster, count: usize, processes: &[&VerifierProcess]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cluster.cli(2, &["propagation", "--json"]);
        if out.status.success() {
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let verifiers = report["verifiers"].as_array().unwrap();
            let connected = verifiers
                .iter()
                .filter(|v| v["connected"] == true && v["acked_epoch"].as_u64() > Some(0))
                .count();
            if connected >= count {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "verifiers did not all subscribe\n{}\n{}",
            cluster.logs(),
            processes
                .iter()
                .map(|p| p.log_tail())
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Poll `check` until it holds, or fail with `what` after `seconds`.
async fn eventually(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    found(seconds, what, || check().then_some(())).await
}

/// Poll `check` until it returns `Some`, or fail with `what` after
/// `seconds`.
async fn found<T>(seconds: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_fifty_verifiers_and_wait_all_returns() {
    let (cluster, http) = start("");
    ready_to_issue(&cluster).await;
    let (credential, index) = issue(&cluster, 2);
    let (other, _) = issue(&cluster, 3);
    let brokers = brokers(&cluster);
    let dir = cluster.dir.path();
    let eu = VerifierProcess::start(dir, "eu", "eu-west", 25, &brokers, &[]);
    let us = VerifierProcess::start(dir, "us", "us-east", 25, &brokers, &[]);
    wait_for_verifiers(&cluster, 50, &[&eu, &us]).await;
    for process in [&eu, &us] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (valid, answers) = process.verify_all(&credential);
            if valid == 25 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{answers:?}\n{}",
                process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

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
    let revoked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(revoked["propagated"]["subscribed"], 50, "{revoked}");
    assert_eq!(revoked["propagated"]["verifiers"], 50, "{revoked}");

    // Every verifier now rejects the credential, and only that one.
    for process in [&eu, &us] {
        let (valid, answers) = process.verify_all(&credential);
        assert_eq!(valid, 0);
        assert!(
            answers.iter().all(|a| a["reason"] == "revoked"),
            "{answers:?}"
        );
        assert_eq!(process.verify_all(&other).0, 25);
    }

    // The delays are reported per region, per verifier and on /metrics.
    let report = cli_json(&cluster, 3, &["propagation", "--json"]);
    assert_eq!(report["regions"].as_array().unwrap().len(), 2, "{report}");
    assert!(
        report["overall"]["samples"].as_u64().unwrap() >= 50,
        "{report}"
    );
    assert!(report["overall"]["max_ms"].as_f64().unwrap() > 0.0);
    assert!(report["lagging"].as_array().unwrap().is_empty(), "{report}");
    let text = cluster.cli(3, &["propagation"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("eu-west"));
    let metrics: String = http
        .values()
        .map(|address| broker_metrics(address))
        .collect();
    assert!(metrics.lines().any(|l| {
        l.starts_with("lapse_propagation_delay_seconds_bucket{") && l.contains("region=\"us-east\"")
    }));
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.starts_with("lapse_verifier_acked_epoch{"))
            .count(),
        50
    );
    let status = eu.status();
    assert!(
        status
            .values()
            .all(|s| s["fresh"] == true && s["rejected_events"] == 0)
    );

    // A verifier that stops applying holds `--wait all` until its timeout,
    // which names the missing verifiers (exit code 6); a share is met.
    us.signal("STOP");
    let (third, third_index) = issue(&cluster, 1);
    let out = cluster.cli(
        1,
        &[
            "revoke",
            "index",
            &third_index.to_string(),
            "--wait",
            "all",
            "--wait-timeout",
            "2s",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("held by only 25 of 50"), "{stderr}");
    assert!(stderr.contains("us-"), "{stderr}");
    let (fourth, fourth_index) = issue(&cluster, 1);
    let out = cluster.cli(
        1,
        &[
            "revoke",
            "index",
            &fourth_index.to_string(),
            "--wait",
            "50%",
            "--wait-timeout",
            "10s",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    us.signal("CONT");
    eventually(30, "the resumed verifiers catch up", || {
        us.verify_all(&third).0 == 0 && us.verify_all(&fourth).0 == 0
    })
    .await;
}

/// The verdict of every verifier of `process` on `token`, by reason
/// ("valid" when accepted).
fn verdicts(process: &VerifierProcess, token: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for answer in process.verify_all(token).1 {
        let reason = if answer["valid"] == true {
            "valid".to_string()
        } else {
            answer["reason"].as_str().unwrap_or("?").to_string()
        };
        *out.entry(reason).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_verifier_fails_closed_then_resumes_from_its_epoch() {
    let (cluster, _) = start("");
    ready_to_issue(&cluster).await;
    let (revoked, revoked_index) = issue(&cluster, 1);
    let (kept, _) = issue(&cluster, 2);
    let mut proxies = Vec::new();
    for id in 1..=3 {
        proxies.push(Proxy::start(cluster.address(id)).await);
    }
    let via: Vec<String> = proxies.iter().map(|p| p.address.clone()).collect();
    let edge = VerifierProcess::start(
        cluster.dir.path(),
        "edge",
        "eu",
        2,
        &via,
        &["--staleness", "1s", "--idle-timeout", "500ms"],
    );
    eventually(30, "verifiers accept a good credential", || {
        verdicts(&edge, &kept).get("valid") == Some(&2)
    })
    .await;

    // Cut every link; the cluster goes on revoking without the verifiers.
    for proxy in &proxies {
        proxy.cut().await;
    }
    let cut_at = Instant::now();
    let epoch = revoke_anywhere(&cluster, revoke_index("cut-1", revoked_index))
        .await
        .unwrap()
        .epoch;
    // Within the staleness bound they may still accept (they cannot know);
    // after it, they reject everything, the good credential too.
    eventually(10, "cut-off verifiers fail closed", || {
        verdicts(&edge, &kept).get("stale") == Some(&2)
    })
    .await;
    assert!(cut_at.elapsed() >= Duration::from_millis(900));
    assert_eq!(verdicts(&edge, &revoked).get("stale"), Some(&2));
    let status = edge.status();
    assert!(status.values().all(|s| s["fresh"] == false), "{status:?}");
    let (code, _) = http_request(&edge.http, "GET", "/healthz", "").unwrap();
    assert_eq!(code, 503);
    let metrics = http_get(&edge.http, "/metrics");
    assert!(metrics.contains("lapse_verifier_fresh{verifier=\"edge-0\",region=\"eu\"} 0"));

    // Heal: they resume from their epoch (a delta, not a new snapshot),
    // reject the revoked credential and accept the other again.
    for proxy in &proxies {
        proxy.heal();
    }
    eventually(30, "healed verifiers recover", || {
        verdicts(&edge, &kept).get("valid") == Some(&2)
            && verdicts(&edge, &revoked).get("revoked") == Some(&2)
    })
    .await;
    for (id, status) in edge.status() {
        assert_eq!(status["snapshots"], 1, "{id} resynchronised: {status}");
        assert!(status["deltas"].as_u64().unwrap() >= 1, "{id}: {status}");
        assert!(status["epoch"].as_u64().unwrap() >= epoch, "{id}: {status}");
        assert_eq!(status["rejected_events"], 0, "{id}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_followed_broker_moves_verifiers_without_missing_an_epoch() {
    let (mut cluster, _) = start("");
    ready_to_issue(&cluster).await;
    let (credential, index) = issue(&cluster, 3);
    // Three verifiers, each preferring a different broker.
    let edge = VerifierProcess::start(
        cluster.dir.path(),
        "fo",
        "eu",
        3,
        &brokers(&cluster),
        &["--idle-timeout", "500ms"],
    );
    eventually(30, "each verifier follows its own broker", || {
        let status = edge.status();
        status.len() == 3
            && status.values().all(|s| s["fresh"] == true)
            && (1..=3).all(|b| status.values().any(|s| s["broker_id"] == b))
    })
    .await;
    let victim = edge.status()["fo-0"]["broker_id"].as_u64().unwrap();
    cluster.kill9(victim);
    let epoch = revoke_anywhere(&cluster, revoke_index("after-kill", index))
        .await
        .unwrap()
        .epoch;
    eventually(30, "every verifier rejects the revoked credential", || {
        verdicts(&edge, &credential).get("revoked") == Some(&3)
    })
    .await;
    for (id, status) in edge.status() {
        assert_ne!(status["broker_id"], victim, "{id} still on the dead broker");
        assert!(status["epoch"].as_u64().unwrap() >= epoch);
        // One snapshot at start, then deltas only: every epoch in between
        // was applied in order (a delta applies only to its own from-epoch).
        assert_eq!(status["snapshots"], 1, "{id}: {status}");
        assert_eq!(status["rejected_events"], 0, "{id}: {status}");
    }
    assert!(edge.status()["fo-0"]["failovers"].as_u64().unwrap() >= 1);
}

async fn feed_client(address: &str, window: Option<u32>) -> FeedClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .connect()
        .await
        .expect("connect to the feed");
    FeedClient::new(channel).max_decoding_message_size(64 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_refuses_bad_subscribers_and_resyncs_slow_ones() {
    let (cluster, _) = start("max_subscribers = 2\nbuffered_updates = 4\n");
    cluster.wait_for_leader().await;
    let address = cluster.address(1);
    let mut client = feed_client(&address, None).await;

    // A first message that is not a Hello, and a malformed verifier id.
    let ack_first = FeedRequest {
        kind: Some(RequestKind::Ack(lapse_wire::feed::Ack { epoch: 1 })),
    };
    let (reply, _keep) = subscribe(&mut client, [ack_first]).await;
    assert_eq!(reply.unwrap_err().code(), tonic::Code::InvalidArgument);
    let (reply, _keep) = subscribe(&mut client, [hello("bad id\n", None)]).await;
    let status = reply.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("verifier_id"), "{status:?}");

    // A subscriber that acks an epoch it was never sent is cut off.
    let (reply, liar) = subscribe(&mut client, [hello("liar", None)]).await;
    let mut events = reply.unwrap();
    let first = events.message().await.unwrap().unwrap();
    assert!(matches!(first.kind, Some(Kind::Snapshot(_))));
    liar.send(FeedRequest {
        kind: Some(RequestKind::Ack(lapse_wire::feed::Ack {
            epoch: first.epoch + 1000,
        })),
    })
    .await
    .unwrap();
    let refused = loop {
        match events.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a reason"),
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // A slow subscriber (tiny flow-control window, not reading) falls
    // behind the bounded buffer and is resynchronised with a snapshot.
    let mut slow_client = feed_client(&address, Some(1024)).await;
    let (reply, _slow_keep) = subscribe(&mut slow_client, [hello("slow", None)]).await;
    let mut slow = reply.unwrap();
    // Only two subscribers at a time: a third is refused.
    let (reply, _fast_keep) = subscribe(&mut client, [hello("fast", None)]).await;
    let mut fast = reply.unwrap();
    let (reply, _third) = subscribe(&mut client, [hello("third", None)]).await;
    assert_eq!(reply.unwrap_err().code(), tonic::Code::ResourceExhausted);

    let start = lease(&cluster, 1, 2_000).await.start;
    let mut last_epoch = 0;
    for i in 0..200u64 {
        let many = lapse_wire::cluster::RevokeManyRequest {
            request_id: format!("slow-{i}"),
            revocations: (0..8)
                .map(|j| lapse_wire::cluster::Revocation {
                    target: Some(lapse_wire::cluster::revocation::Target::Index(
                        start + i * 8 + j,
                    )),
                })
                .collect(),
        };
        let mut admin = cluster.client(1).await.unwrap();
        last_epoch = admin
            .revoke_many(authorised(many))
            .await
            .expect("revoke many")
            .into_inner()
            .epoch;
    }
    // The fast subscriber saw the deltas; the slow one, once it reads
    // again, gets a second snapshot, and both end at the same state.
    let (fast_snapshots, fast_indices) = follow_to(&mut fast, "fast", last_epoch).await;
    let (slow_snapshots, slow_indices) = follow_to(&mut slow, "slow", last_epoch).await;
    assert_eq!(fast_snapshots, 1);
    assert!(
        slow_snapshots >= 2,
        "the slow subscriber was not resynchronised"
    );
    assert_eq!(fast_indices, 1_600);
    assert_eq!(slow_indices, 1_600);
}

/// Connected verifiers in broker 1's propagation report, with their acked
/// epochs.
fn connected_on_broker_1(cluster: &TestCluster) -> BTreeMap<String, u64> {
    let out = cluster.cli(1, &["propagation", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    connected_verifiers(&serde_json::from_slice(&out.stdout).unwrap())
}

/// A subscriber that reports leaves as a relay does, hostile: more leaves
/// than the broker takes, malformed names, its own name, and epochs it was
/// never sent. The broker takes at most `max_subscribers` leaves, none
/// malformed or named as the relay, each at no more than the epoch sent,
/// and keeps serving; a leaf reported gone is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_leaf_report_is_bounded_and_changes_only_what_it_may() {
    use lapse_wire::feed::{Leaf, LeafReport};
    let (cluster, _) = start("max_subscribers = 4\n");
    cluster.wait_for_leader().await;
    let mut client = feed_client(&cluster.address(1), None).await;
    let (reply, relay) = subscribe(&mut client, [hello("relay-x", None)]).await;
    let mut events = reply.unwrap();
    let first = events.message().await.unwrap().unwrap();
    let sent = first.epoch;
    let leaf = |id: String, acked_epoch: u64, gone: bool| Leaf {
        verifier_id: id,
        region: "edge".into(),
        acked_epoch,
        gone,
    };
    let mut leaves: Vec<Leaf> = (0..10)
        .map(|n| leaf(format!("leaf-{n}"), u64::MAX, false))
        .collect();
    leaves.push(leaf("bad id\n".into(), 1, false));
    leaves.push(leaf("x".repeat(300), 1, false));
    leaves.push(leaf("relay-x".into(), u64::MAX, false));
    let report = |leaves: Vec<Leaf>| FeedRequest {
        kind: Some(RequestKind::Leaves(LeafReport { leaves })),
    };
    relay.send(report(leaves)).await.unwrap();
    let taken = found(30, "the reported leaves in the propagation report", || {
        let connected = connected_on_broker_1(&cluster);
        let leaves: BTreeMap<String, u64> = connected
            .into_iter()
            .filter(|(id, _)| id != "relay-x")
            .collect();
        (!leaves.is_empty()).then_some(leaves)
    })
    .await;
    assert_eq!(taken.len(), 4, "{taken:?}");
    for (id, acked) in &taken {
        assert!(id.starts_with("leaf-"), "{taken:?}");
        assert!(*acked <= sent, "{id} at {acked}, sent {sent}: {taken:?}");
    }
    // Still served: the next event (a heartbeat) arrives.
    assert!(events.message().await.unwrap().is_some());
    // A leaf reported gone is no longer counted as connected.
    let gone = taken.keys().next().unwrap().clone();
    relay
        .send(report(vec![leaf(gone.clone(), 0, true)]))
        .await
        .unwrap();
    eventually(30, "the leaf reported gone leaves the report", || {
        !connected_on_broker_1(&cluster).contains_key(&gone)
    })
    .await;
}

/// Apply a raw subscription's events to a verifier until it holds
/// `epoch`: (snapshots received, revoked indices held).
async fn follow_to(
    events: &mut tonic::Streaming<lapse_wire::feed::FeedEvent>,
    name: &str,
    epoch: u64,
) -> (usize, usize) {
    let verifier = lapse_verifier::Verifier::new(lapse_verifier::VerifyConfig::default());
    let mut snapshots = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while verifier.epoch() < Some(epoch) {
        assert!(Instant::now() < deadline, "{name} did not reach {epoch}");
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("an event");
        if matches!(event.kind, Some(Kind::Snapshot(_))) {
            snapshots += 1;
        }
        verifier
            .apply(&event)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    (snapshots, verifier.status().revoked_indices)
}

#[test]
fn the_verifier_refuses_bad_addresses_on_the_command_line() {
    let out = lapse()
        .args(["verifier", "--brokers", "not an address", "--no-http"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a broker address"));
    let out = lapse()
        .args([
            "verifier",
            "--brokers",
            "127.0.0.1:1",
            "--http",
            "0.0.0.0:0",
            "--any-audience",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    // The signature memory is bounded: more than it allows is refused.
    for memory in ["262145", "lots", "1e3"] {
        let out = lapse()
            .args(["verifier", "--brokers", "127.0.0.1:1", "--any-audience"])
            .args(["--no-http", "--signature-memory", memory])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{memory}: {stderr}");
        assert!(stderr.contains("--signature-memory"), "{memory}: {stderr}");
    }
}

#[test]
fn a_verifier_does_not_start_open_to_every_audience_by_omission() {
    let out = lapse()
        .args(["verifier", "--brokers", "127.0.0.1:1", "--no-http"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--audience") && stderr.contains("--any-audience"),
        "{stderr}"
    );
    // Both at once is a contradiction, and an empty audience matches nothing.
    for flags in [
        &["--audience", "billing", "--any-audience"][..],
        &["--audience", ""][..],
        &["--any-audience", "--issuer", ""][..],
    ] {
        let out = lapse()
            .args(["verifier", "--brokers", "127.0.0.1:1", "--no-http"])
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_cannot_keep_verifiers_fresh_says_why_and_so_do_its_verifiers() {
    // 100 ms feed heartbeats plus 50 ms Raft heartbeats leave no room for
    // any round trip in a 150 ms staleness bound.
    let (mut cluster, http) = start("verifier_staleness_ms = 150");
    cluster.wait_for_leader().await;
    found(60, "timed out waiting for the start-up warning", || {
        std::fs::read_to_string(cluster.log_path(1))
            .ok()?
            .contains("verifiers cannot stay fresh")
            .then_some(())
    })
    .await;
    let out = cluster.cli(1, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("STALE RISK: node 1: feed.heartbeat_ms (100) + raft.heartbeat_ms (50)"),
        "{text}"
    );
    let json = cli_json(&cluster, 2, &["status", "--json"]);
    assert!(
        json["nodes"][0]["freshness"]["problem"]
            .as_str()
            .unwrap()
            .contains("feed.verifier_staleness_ms (150)"),
        "{json}"
    );
    assert!(broker_metrics(&http[&1]).contains("lapse_feed_freshness_problem 1"));

    // A verifier that follows broker 3 alone; once broker 3 cannot reach
    // a leader, it withholds heartbeats and both say why.
    let lone = VerifierProcess::start(
        cluster.dir.path(),
        "lone",
        "eu",
        1,
        &[cluster.address(3)],
        &[],
    );
    // One verifier in the process: named by its id alone.
    let deadline = Instant::now() + Duration::from_secs(60);
    while lone.status()["lone"]["fresh"] != true {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the lone verifier to be fresh:\n{:#?}\n{}\n{}",
            lone.status(),
            lone.log_tail(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.kill9(1);
    cluster.kill9(2);
    let withheld = found(
        60,
        "timed out waiting for broker 3 to report withheld heartbeats",
        || {
            let out = cluster.cli(3, &["status", "--only"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .find(|l| l.starts_with("WITHHELD: node 3 has sent its verifiers no heartbeat for"))
                .map(str::to_owned)
        },
    )
    .await;
    assert!(
        withheld.contains("state not confirmed current"),
        "{withheld}"
    );
    let metrics = broker_metrics(&http[&3]);
    assert!(
        metrics.contains("lapse_feed_heartbeats_withheld{reason=\"state not confirmed current"),
        "{metrics}"
    );
    let status = found(
        60,
        "timed out waiting for the verifier to say why it is stale",
        || {
            let status = lone.status()["lone"].clone();
            status["stale_reason"]
                .as_str()
                .is_some_and(|r| r.contains("broker 3 withholds heartbeats"))
                .then_some(status)
        },
    )
    .await;
    assert_eq!(status["fresh"], false, "{status}");
    assert_eq!(status["heartbeat_broker_id"], 3, "{status}");
    assert!(
        status["stale_reason"]
            .as_str()
            .unwrap()
            .contains("the last came from broker 3"),
        "{status}"
    );
    let (_, text) = http_request(&lone.http, "GET", "/metrics", "").unwrap();
    assert!(
        text.contains("lapse_verifier_heartbeats_withheld{verifier=\"lone\",region=\"eu\",broker=\"3\",reason=\"state not confirmed current"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_report_names_at_most_a_hundred_and_counts_the_rest() {
    let (cluster, _) = start("");
    cluster.wait_for_leader().await;
    let dir = cluster.dir.path();
    let many = VerifierProcess::start(dir, "many", "eu-west", 101, &brokers(&cluster), &[]);
    wait_for_verifiers(&cluster, 101, &[&many]).await;
    // All hold the epoch: a summary names none.
    let summary = cli_json(&cluster, 1, &["propagation", "--summary", "--json"]);
    assert_eq!(summary["verifiers"], serde_json::json!([]), "{summary}");
    assert_eq!(summary["verifier_count"], 101, "{summary}");
    assert_eq!(summary["connected"], 101, "{summary}");
    // All gone: a summary names 100 of them and counts the other.
    drop(many);
    let summary = found(60, "every verifier reported gone", || {
        let summary = cli_json(&cluster, 1, &["propagation", "--summary", "--json"]);
        (summary["connected"] == 0).then_some(summary)
    })
    .await;
    assert_eq!(
        summary["verifiers"].as_array().unwrap().len(),
        100,
        "{summary}"
    );
    assert_eq!(summary["unlisted"], 1, "{summary}");
    assert_eq!(summary["verifier_count"], 101, "{summary}");
    let text = cluster.cli(1, &["propagation", "--summary"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("of 101 verifiers (0 connected)"), "{text}");
    assert!(text.contains("... and 1 more lagging or gone"), "{text}");
    // The full report still names every one.
    let full = cli_json(&cluster, 1, &["propagation", "--all", "--json"]);
    assert_eq!(full["verifiers"].as_array().unwrap().len(), 101, "{full}");
    assert_eq!(full["unlisted"], 0, "{full}");
}
