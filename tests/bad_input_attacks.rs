//! The attacks and faults a bad-input corpus found against Lapse, one test
//! each, named for what it attacks: every one is refused with a precise
//! error, and the brokers stay up with their state unchanged.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use lapse_wire::cluster::{self as pb, revocation::Target};
use support::edge::{VerifierProcess, http_request};
use support::*;
use tonic::Code;

/// Cedar text nested `depth` parentheses deep: a few hundred bytes that
/// overflowed the stack of Cedar's parser and aborted the broker.
fn nested_policy(depth: usize) -> String {
    format!(
        "permit(principal, action == Action::\"issue\", resource) when {{ {}true{} }};",
        "(".repeat(depth),
        ")".repeat(depth)
    )
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every broker of `cluster` answers `Status`.
async fn assert_all_up(cluster: &TestCluster) {
    for id in cluster.running() {
        assert!(
            cluster.status(id).await.is_some(),
            "broker {id} is down\n{}",
            cluster.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cedar_policy_nested_hundreds_deep_is_refused_and_no_broker_aborts() {
    let cluster = TestCluster::start(3, FAST_RAFT);
    let leader = cluster.wait_for_leader().await;
    let follower = if leader == 1 { 2 } else { 1 };
    let deep = nested_policy(400);
    assert!(deep.len() < 1_000, "a few hundred bytes");

    // The issuance policy, through the CLI to a follower.
    let file = cluster.dir.path().join("deep.cedar");
    std::fs::write(&file, &deep).unwrap();
    let out = cluster.cli(
        follower,
        &[
            "policy",
            "set",
            "--tenant",
            "acme",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("nests brackets 401 deep; the limit is 32"),
        "{}",
        stderr_of(&out)
    );

    // The access policy, over gRPC to the leader.
    let mut client = cluster.client(leader).await.unwrap();
    let refused = client
        .set_access_policy(authorised(pb::SetAccessPolicyRequest {
            request_id: "deep-access".into(),
            text: nested_policy(400),
            expected_version: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("nests brackets 401 deep"),
        "{refused:?}"
    );

    // Brackets, braces and records nest the same way.
    let records = format!(
        "permit(principal, action, resource) when {{ {}1{} == 1 }};",
        "{a:".repeat(300),
        "}".repeat(300)
    );
    let refused = client
        .set_policy(authorised(pb::SetPolicyRequest {
            request_id: "deep-records".into(),
            tenant: "acme".into(),
            text: records,
            expected_version: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        refused.metadata().get("x-lapse-refusal").unwrap(),
        "policy-too-deep"
    );

    assert_all_up(&cluster).await;
    let policy = cli_json(
        &cluster,
        leader,
        &["policy", "show", "--tenant", "acme", "--json"],
    );
    assert_eq!(policy["version"], 0, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cedar_parse_error_is_readable_text_not_a_debug_dump() {
    let cluster = TestCluster::start(1, FAST_RAFT);
    cluster.wait_for_leader().await;
    let mut client = cluster.client(1).await.unwrap();
    for text in [
        "permit(principal, action, resource) when { context. };",
        "permit(principal, action resource);",
    ] {
        let refused = client
            .set_access_policy(authorised(pb::SetAccessPolicyRequest {
                request_id: format!("bad-{}", rand_suffix()),
                text: text.into(),
                expected_version: None,
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        let message = refused.message();
        assert!(
            message.starts_with("access policy line 1, column "),
            "{message}"
        );
        for dump in ["ParseErrors", "Diagnostic", "{ ", "\n"] {
            assert!(!message.contains(dump), "{dump:?} in {message}");
        }
        let refused = client
            .set_policy(authorised(pb::SetPolicyRequest {
                request_id: format!("bad-{}", rand_suffix()),
                tenant: "acme".into(),
                text: text.into(),
                expected_version: None,
            }))
            .await
            .unwrap_err();
        assert!(
            refused.message().starts_with("policy line 1, column "),
            "{refused:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_into_a_closed_pipe_exits_quietly() {
    let cluster = TestCluster::start(1, FAST_RAFT);
    cluster.wait_for_leader().await;
    // `lapse status | head -0`: the reader is gone before anything is written.
    for args in [&["status"][..], &["status", "--json"], &["--help"]] {
        let mut child = lapse()
            .args(args)
            .env("LAPSE_BROKER", cluster.address(1))
            .env("LAPSE_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(0), "lapse {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "lapse {args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_hash_of_an_empty_secret_is_refused() {
    use sha2::Digest as _;
    let cluster = TestCluster::start(1, FAST_RAFT);
    cluster.wait_for_leader().await;
    wait_for_active_keys(&cluster).await;
    let before = cluster.wait_converged().await[0].revocation_epoch;
    let mut client = cluster.client(1).await.unwrap();
    let refused = client
        .revoke(authorised(pb::RevokeRequest {
            request_id: "empty-secret".into(),
            revocation: Some(pb::Revocation {
                target: Some(Target::SecretSha256(sha2::Sha256::digest(b"").to_vec())),
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("secret_sha256")
            && refused.message().contains("SHA-256 of the empty string"),
        "{refused:?}"
    );
    // The command line refuses empty input before it hashes anything.
    let mut child = lapse()
        .args(["revoke", "secret", "--stdin"])
        .env("LAPSE_BROKER", cluster.address(1))
        .env("LAPSE_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_eq!(
        cluster.wait_converged().await[0].revocation_epoch,
        before,
        "refused revocations changed the revocation state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storing_an_empty_policy_is_refused() {
    let cluster = TestCluster::start(1, FAST_RAFT);
    cluster.wait_for_leader().await;
    let mut client = cluster.client(1).await.unwrap();
    for (n, text) in ["", "   \n\t", "// nothing but a comment\n"]
        .into_iter()
        .enumerate()
    {
        let refused = client
            .set_policy(authorised(pb::SetPolicyRequest {
                request_id: format!("empty-{n}"),
                tenant: "acme".into(),
                text: text.into(),
                expected_version: None,
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{text:?}");
        assert!(
            refused.message().contains("empty") && refused.message().contains("deny"),
            "{refused:?}"
        );
        let refused = client
            .set_access_policy(authorised(pb::SetAccessPolicyRequest {
                request_id: format!("empty-access-{n}"),
                text: text.into(),
                expected_version: None,
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{text:?}");
    }
    let shown = cli_json(
        &cluster,
        1,
        &["policy", "show", "--tenant", "acme", "--json"],
    );
    assert_eq!(shown["version"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leasing_indices_to_a_broker_that_is_not_a_member_is_refused() {
    let cluster = TestCluster::start(1, FAST_RAFT);
    cluster.wait_for_leader().await;
    let mut client = cluster.client(1).await.unwrap();
    for broker_id in [0, 2, u64::MAX] {
        let refused = client
            .lease_indices(authorised(pb::LeaseRequest {
                request_id: format!("lease-{broker_id}"),
                broker_id,
                count: 10,
                lease_ms: 60_000,
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(
            refused
                .message()
                .contains(&format!("broker_id {broker_id} is not a member")),
            "{refused:?}"
        );
    }
    let out = cluster.cli(1, &["lease", "--broker-id", "7", "--count", "10"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    // A member still gets its lease.
    lease(&cluster, 1, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_learner_at_an_unparseable_address_is_refused() {
    let cluster = TestCluster::start(3, FAST_RAFT);
    let leader = cluster.wait_for_leader().await;
    let follower = if leader == 1 { 2 } else { 1 };
    let mut client = cluster.client(follower).await.unwrap();
    for (address, words) in [
        ("not an address", "has no port"),
        (
            "127.0.0.1:99999",
            "port \"99999\", not a number in 1..=65535",
        ),
        ("127.0.0.1:0", "port \"0\""),
        ("", "is empty"),
        ("bad host!:80", "not an IP address or a DNS name"),
    ] {
        let refused = client
            .add_learner(authorised(pb::AddLearnerRequest {
                node_id: 9,
                address: address.into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{address:?}");
        assert!(
            refused.message().contains("address") && refused.message().contains(words),
            "{address:?}: {refused:?}"
        );
    }
    let status = cluster.status(leader).await.unwrap();
    assert_eq!(status.voters.len(), 3);
    assert!(status.learners.is_empty(), "{:?}", status.learners);
    // `revoke --wait`, which asks every member, still answers (no verifier
    // is subscribed, so it says so rather than failing to reach a member).
    let block = lease(&cluster, leader, 10).await;
    let out = cluster.cli(
        follower,
        &[
            "revoke",
            "index",
            &block.start.to_string(),
            "--wait",
            "all",
            "--wait-timeout",
            "1s",
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr_of(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_adding_an_existing_voter_is_refused() {
    let cluster = TestCluster::start(3, FAST_RAFT);
    let leader = cluster.wait_for_leader().await;
    let before = cluster.status(leader).await.unwrap();
    let mut client = cluster.client(leader).await.unwrap();
    let voter = if leader == 3 { 2 } else { 3 };
    // At its own address, at another, and another's address for a new id.
    for (node_id, address, words) in [
        (voter, cluster.address(voter), "already a voter"),
        (voter, "127.0.0.1:1".to_owned(), "already a voter"),
        (9, cluster.address(voter), "is already node"),
    ] {
        let refused = client
            .add_learner(authorised(pb::AddLearnerRequest {
                node_id,
                address: address.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
        assert!(refused.message().contains(words), "{refused:?}");
    }
    let refused = client
        .promote(authorised(pb::PromoteRequest { node_id: voter }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    let after = cluster.status(leader).await.unwrap();
    assert_eq!(after.voters, before.voters);
    assert_eq!(after.learners, before.learners);
    assert_all_up(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_survives_an_issue_refused_for_its_ttl() {
    const POLICY: &str = r#"
permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { context.ttl_seconds <= 900 };
"#;
    let cluster = TestCluster::start(1, FAST_RAFT);
    cluster.wait_for_leader().await;
    wait_for_active_keys(&cluster).await;
    set_policy(&cluster, "acme", POLICY);
    let join = cli_json(
        &cluster,
        1,
        &[
            "join-token",
            "create",
            "--tenant",
            "acme",
            "--workload",
            "spiffe://example.org/payments",
            "--json",
        ],
    );
    let token = join["token"].as_str().unwrap();
    let issue = |ttl: &str| {
        cluster.cli(
            1,
            &[
                "issue",
                "--join-token",
                token,
                "--audience",
                "billing",
                "--ttl",
                ttl,
                "--json",
            ],
        )
    };
    // Beyond the cluster's maximum, and beyond what the policy permits.
    let beyond = issue("10000h");
    assert_eq!(beyond.status.code(), Some(3), "{}", stderr_of(&beyond));
    assert!(
        stderr_of(&beyond).contains("beyond the cluster's maximum"),
        "{}",
        stderr_of(&beyond)
    );
    let denied = issue("1h");
    assert_eq!(denied.status.code(), Some(4), "{}", stderr_of(&denied));
    // The token was not spent by either.
    let issued = issue("10m");
    assert!(issued.status.success(), "{}", stderr_of(&issued));
    let again = issue("10m");
    assert_eq!(again.status.code(), Some(3), "{}", stderr_of(&again));
    assert!(
        stderr_of(&again).contains("already used"),
        "{}",
        stderr_of(&again)
    );
}

#[test]
fn ports_out_of_range_are_refused_as_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["status".into(), "--broker".into(), "127.0.0.1:70000".into()],
            "port \"70000\", not a number in 1..=65535",
        ),
        (
            vec!["status".into(), "--broker".into(), "127.0.0.1:0".into()],
            "port \"0\"",
        ),
        (
            vec!["status".into(), "--broker".into(), "127.0.0.1:-1".into()],
            "port \"-1\"",
        ),
        (
            vec![
                "cluster".into(),
                "add-learner".into(),
                "4".into(),
                "127.0.0.1:65536".into(),
            ],
            "port \"65536\"",
        ),
        (
            vec![
                "verifier".into(),
                "--brokers".into(),
                "127.0.0.1:7401,127.0.0.1:123456".into(),
            ],
            "port \"123456\"",
        ),
        (
            vec!["dev".into(), "--base-port".into(), "65500".into()],
            "65500 is not in 1..=65433",
        ),
        (
            vec![
                "broker".into(),
                "--node-id".into(),
                "1".into(),
                "--listen".into(),
                "127.0.0.1:70000".into(),
                "--data-dir".into(),
                dir.path().display().to_string(),
            ],
            "--listen",
        ),
    ];
    for (args, words) in cases {
        let out = lapse().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains(words),
            "{args:?}: {}",
            stderr_of(&out)
        );
    }
    // In a configuration file: a member's port that would wrap around.
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\ninsecure_plaintext = true\n[cluster]\nsecret = \"{SECRET}\"\n[[cluster.members]]\nid = 1\naddress = \"127.0.0.1:70000\"\n",
            free_port(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = lapse()
        .args(["broker", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("cluster.members: \"127.0.0.1:70000\" has port"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_zero_timeout_is_refused_as_a_usage_error() {
    for args in [
        &["status", "--timeout", "0s"][..],
        &["status", "--timeout", "0ms"],
        &[
            "revoke",
            "index",
            "1",
            "--wait",
            "all",
            "--wait-timeout",
            "0s",
        ],
        &[
            "verifier",
            "--brokers",
            "127.0.0.1:7401",
            "--idle-timeout",
            "0s",
        ],
        &[
            "verifier",
            "--brokers",
            "127.0.0.1:7401",
            "--staleness",
            "0s",
        ],
        &["join-token", "create", "--for-broker", "--ttl", "0s"],
    ] {
        let started = Instant::now();
        let out = lapse().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains("is zero; give a duration above zero"),
            "{args:?}: {}",
            stderr_of(&out)
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{args:?}");
    }
}

#[test]
fn local_errors_exit_with_the_codes_the_readme_promises() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let binary = dir.path().join("binary.cedar");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x9c, 0x01]).unwrap();
    let missing = missing.to_str().unwrap();
    let binary = binary.to_str().unwrap();
    // No broker is needed to see any of these: the broker address is one
    // nothing listens on, and each must fail before it is dialled.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["policy", "set", "--tenant", "acme", "--file", missing],
            2,
            "--file",
        ),
        (
            vec!["policy", "set", "--tenant", "acme", "--file", binary],
            3,
            "is not text",
        ),
        (
            vec!["access-policy", "set", missing],
            2,
            "access policy file",
        ),
        (vec!["access-policy", "set", binary], 3, "is not text"),
        (
            vec![
                "break-glass",
                "mint",
                "--key",
                missing,
                "--sub",
                "spiffe://example.org/x",
                "--tenant",
                "acme",
                "--aud",
                "a",
                "--ttl",
                "10m",
                "--reason",
                "r",
            ],
            2,
            "--key",
        ),
        (vec!["revoke", "credential", missing], 2, "cannot read"),
        (vec!["status", "--broker", "not an address"], 2, "--broker"),
        (
            vec!["sim", "run", "no-such-scenario"],
            2,
            "no scenario named",
        ),
        (vec!["broker", "--config", missing], 2, "cannot read"),
    ];
    for (args, code, words) in cases {
        let out = lapse()
            .args(&args)
            .env("LAPSE_BROKER", &nowhere)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr_of(&out)
        );
        assert!(
            stderr_of(&out).contains(words),
            "{args:?}: {}",
            stderr_of(&out)
        );
    }
}

#[test]
fn sim_tells_bad_arguments_from_a_broken_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let malformed = dir.path().join("bad.toml");
    std::fs::write(&malformed, "name = \"bad\"\nduration_s = \"ten\"\n").unwrap();
    let cases: Vec<(Vec<String>, i32)> = vec![
        (vec!["sim".into(), "run".into(), "no-such".into()], 2),
        (
            vec![
                "sim".into(),
                "run".into(),
                "leader-crash".into(),
                "--seeds".into(),
                "5..1".into(),
            ],
            2,
        ),
        (
            vec!["sim".into(), "run".into(), malformed.display().to_string()],
            3,
        ),
    ];
    for (args, code) in cases {
        let out = lapse().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr_of(&out)
        );
    }
    // A broken invariant has a code of its own, in the help and the README.
    let help = lapse().args(["sim", "run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Exits 7 if any run breaks an invariant"),
        "{help}"
    );
    let help = lapse().arg("--help").output().unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout)
            .contains("7  lapse sim run: a simulation run broke an invariant")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifier_refusals_are_json_with_an_error_field() {
    let cluster = TestCluster::start(1, FAST_RAFT);
    cluster.wait_for_leader().await;
    let edge = VerifierProcess::start(
        cluster.dir.path(),
        "json",
        "eu",
        1,
        &[cluster.address(1)],
        &["--insecure-plaintext"],
    );
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("GET", "/no/such/path", String::new(), 404, "no such path"),
        (
            "GET",
            "/v1/verify",
            String::new(),
            405,
            "GET is not allowed",
        ),
        (
            "POST",
            "/v1/verify",
            "{not json".into(),
            400,
            "not a verify request",
        ),
        (
            "POST",
            "/v1/verify",
            format!("{{\"token\": \"{}\"}}", "a".repeat(100_000)),
            413,
            "larger than the 65536 bytes",
        ),
        ("POST", "/v1/check-secret", "[]".into(), 400, "sha256"),
        (
            "POST",
            "/v1/verify?verifier=nobody",
            "{\"token\": \"x\"}".into(),
            404,
            "no verifier \"nobody\"",
        ),
    ];
    for (method, path, body, code, words) in cases {
        let (status, text) = http_request(&edge.http, method, path, &body).unwrap();
        assert_eq!(status, code, "{method} {path}: {text}");
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "{method} {path}: {text}");
    }
    // A content type that is not JSON.
    let response = ureq::post(&format!("http://{}/v1/verify", edge.http))
        .set("Content-Type", "text/plain")
        .send_string("{\"token\": \"x\"}");
    let Err(ureq::Error::Status(415, response)) = response else {
        panic!("text/plain was not refused with 415: {response:?}");
    };
    let json: serde_json::Value = response.into_json().unwrap();
    assert!(json["error"].as_str().unwrap().contains("application/json"));
}
