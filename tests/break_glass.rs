//! Break-glass end to end on real processes: `lapse break-glass keygen`
//! and `mint` with no cluster, a `lapse verifier` configured with the key
//! accepting the credential within its limits and refusing it beyond them
//! (wrong audience, too long, wrong key, revoked), still accepting it when
//! cut off from every broker, and its uses, and a fail-open verifier's,
//! reaching the brokers once the verifiers reconnect; and a leaf's uses
//! reaching the brokers through its relay, which forwards only the uses a
//! leaf reports under its own name.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::edge::{Proxy, VerifierProcess, hello, http_request, subscribe};
use support::*;

const ONCALL: &str = "spiffe://example.org/oncall";
const WORKLOAD: &str = "spiffe://example.org/payments";
const POLICY: &str = r#"
permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["billing"].containsAll(context.audiences) && context.ttl_seconds <= 900 };
"#;

/// Poll `check` until it holds, or fail with `what()` after `seconds`.
async fn eventually(seconds: u64, what: impl Fn() -> String, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "{}", what());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `lapse break-glass mint` with `key` and the extra arguments: the JSON
/// answer.
fn mint(key: &Path, sub: &str, extra: &[&str]) -> serde_json::Value {
    let out = lapse()
        .args(["break-glass", "mint", "--key"])
        .arg(key)
        .args(["--sub", sub, "--reason", "INC-7: every broker unreachable"])
        .args(extra)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mint {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `lapse break-glass keygen --out dir`: the private key and the public JWK.
fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let out = lapse()
        .args(["break-glass", "keygen", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.join("break-glass.key"), dir.join("break-glass.pub.jwk"))
}

/// A verifier's flags to accept break-glass credentials signed by
/// `public`, for `billing`, living at most 30 minutes.
fn glass_flags(public: &Path) -> [&str; 6] {
    [
        "--break-glass-key",
        public.to_str().unwrap(),
        "--break-glass-audience",
        "billing",
        "--break-glass-max-ttl",
        "30m",
    ]
}

fn token(minted: &serde_json::Value) -> &str {
    minted["token"].as_str().unwrap()
}

/// POST /v1/verify: (HTTP status, body).
fn verify(edge: &VerifierProcess, token: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({ "token": token }).to_string();
    let (code, text) = http_request(&edge.http, "POST", "/v1/verify", &body).expect("verify");
    (code, serde_json::from_str(&text).expect("json"))
}

fn first_status(edge: &VerifierProcess) -> serde_json::Value {
    edge.status().into_values().next().expect("a verifier")
}

/// Every broker's log, whole.
fn broker_logs(cluster: &TestCluster) -> String {
    cluster
        .nodes
        .keys()
        .map(|id| std::fs::read_to_string(cluster.log_path(*id)).unwrap_or_default())
        .collect()
}

/// Whether a use of `kind` naming `jti` is in the replicated control-plane
/// audit (a broker logged the report, and recorded it there).
fn reported(cluster: &TestCluster, kind: &str, jti: &str) -> bool {
    let logged = broker_logs(cluster).lines().any(|line| {
        line.contains("emergency use reported by a verifier")
            && line.contains(kind)
            && line.contains(jti)
    });
    let out = cluster.cli(
        1,
        &[
            "audit",
            "--control",
            "--action",
            &format!("{kind}_use"),
            "--json",
        ],
    );
    let audited = out.status.success()
        && serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["events"].as_array().cloned())
            .is_some_and(|events| {
                events.iter().any(|e| {
                    e["allowed"] == true
                        && e["principal"]
                            .as_str()
                            .is_some_and(|p| p.starts_with("verifier:"))
                        && e["outcome"].as_str().is_some_and(|o| o.contains(jti))
                })
            });
    logged && audited
}

#[test]
fn keygen_and_mint_work_offline_and_refuse_what_they_must() {
    let dir = tempfile::tempdir().unwrap();
    let out = lapse()
        .args(["break-glass", "keygen", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(public.get("d").is_none(), "the private key was printed");
    assert!(public["kid"].as_str().unwrap().starts_with("bg-"));
    let key = dir.path().join("break-glass.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No overwrite without --overwrite.
    let again = lapse()
        .args(["break-glass", "keygen", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
    // Minting, with no broker anywhere.
    let minted = mint(&key, ONCALL, &["--aud", "billing", "--ttl", "10m"]);
    assert_eq!(minted["key_id"], public["kid"]);
    assert_eq!(minted["tenant"], "break-glass");
    assert_eq!(token(&minted).split('.').count(), 3);
    // Refused: longer than 1 h, a reason too long, the public key as --key.
    let refused = |key: &Path, extra: &[&str]| {
        let out = lapse()
            .args(["break-glass", "mint", "--key"])
            .arg(key)
            .args(["--sub", ONCALL, "--aud", "billing"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.stdout.is_empty(), "{extra:?} printed a credential");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, words) = refused(&key, &["--ttl", "2h", "--reason", "x"]);
    assert_eq!(code, Some(3), "{words}");
    assert!(words.contains("--ttl"), "{words}");
    let long = "x".repeat(300);
    let (code, words) = refused(&key, &["--ttl", "5m", "--reason", &long]);
    assert_eq!(code, Some(3), "{words}");
    assert!(words.contains("--reason"), "{words}");
    let (code, words) = refused(
        &dir.path().join("break-glass.pub.jwk"),
        &["--ttl", "5m", "--reason", "x"],
    );
    assert_eq!(code, Some(3), "{words}");
    assert!(words.contains("no private key"), "{words}");
    // The help says how it goes.
    let help = lapse().args(["break-glass", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--break-glass-key"), "{help}");
    assert!(help.contains("lapse revoke secret"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_is_accepted_within_limits_refused_beyond_and_reported_after_reconnecting() {
    let cluster = TestCluster::start_with(3, FAST_RAFT, |_| {
        "[issuance]\nlease_block = 20\n[feed]\nheartbeat_ms = 100\n".to_owned()
    });
    let (key, public) = keygen(&cluster.dir.path().join("glass"));
    let (other_key, _) = keygen(&cluster.dir.path().join("other"));

    // The verifiers reach the brokers through proxies that can cut them off.
    let mut proxies = Vec::new();
    for id in 1..=3 {
        proxies.push(Proxy::start(cluster.address(id)).await);
    }
    let via: Vec<String> = proxies.iter().map(|p| p.address.clone()).collect();
    let edge_flags = [
        &["--staleness", "1s", "--idle-timeout", "500ms"][..],
        &glass_flags(&public),
    ]
    .concat();
    let edge = VerifierProcess::start(cluster.dir.path(), "edge", "eu", 1, &via, &edge_flags);
    let open = VerifierProcess::start(
        cluster.dir.path(),
        "open",
        "eu",
        1,
        &via,
        &[
            "--staleness",
            "1s",
            "--idle-timeout",
            "500ms",
            "--fail-open",
        ],
    );
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 3).await;
    set_policy(&cluster, "acme", POLICY);
    let describe = || {
        format!(
            "{}\n{}\n{}",
            cluster.logs(),
            edge.log_tail(),
            open.log_tail()
        )
    };
    eventually(60, describe, || {
        first_status(&edge)["fresh"] == true && first_status(&open)["fresh"] == true
    })
    .await;

    // Within the limits: accepted, and the use reaches a broker.
    let good = mint(&key, ONCALL, &["--aud", "billing", "--ttl", "10m"]);
    let (code, body) = verify(&edge, token(&good));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["break_glass"]["reason"],
        "INC-7: every broker unreachable"
    );
    assert_eq!(body["stale"], false);
    let jti = good["jti"].as_str().unwrap().to_owned();
    eventually(
        30,
        || broker_logs(&cluster),
        || reported(&cluster, "break_glass", &jti),
    )
    .await;

    // Beyond them: the wrong audience, too long a lifetime, the wrong key.
    for (minted, words) in [
        (
            mint(&key, ONCALL, &["--aud", "payroll", "--ttl", "10m"]),
            "\"payroll\"",
        ),
        (
            mint(&key, ONCALL, &["--aud", "billing", "--ttl", "45m"]),
            "longer than the 1800 s",
        ),
        (
            mint(&other_key, ONCALL, &["--aud", "billing", "--ttl", "10m"]),
            "no published key",
        ),
    ] {
        let (code, body) = verify(&edge, token(&minted));
        assert_eq!(code, 401, "{body}");
        assert!(body["detail"].as_str().unwrap().contains(words), "{body}");
    }
    // A verifier without break-glass keys accepts none.
    let (code, body) = verify(&open, token(&good));
    assert_eq!(code, 401, "{body}");

    // Revoked like any other: by its own hash (one credential), by a
    // subject rule (every one minted for a workload before now).
    let by_hash = mint(&key, ONCALL, &["--aud", "billing", "--ttl", "10m"]);
    let by_subject = mint(
        &key,
        "spiffe://example.org/leaked-laptop",
        &["--aud", "billing", "--ttl", "10m"],
    );
    let by_file = mint(&key, ONCALL, &["--aud", "billing", "--ttl", "10m"]);
    for minted in [&by_hash, &by_subject, &by_file] {
        assert_eq!(verify(&edge, token(minted)).0, 200);
    }
    // `revoke credential` takes a break-glass credential too (it has no
    // status index: it is revoked by its hash).
    let file = cluster.dir.path().join("glass.jwt");
    std::fs::write(&file, format!("{}\n", token(&by_file))).unwrap();
    let revoked = cli_json(
        &cluster,
        1,
        &["revoke", "credential", file.to_str().unwrap(), "--json"],
    );
    assert!(revoked["status_index"].is_null(), "{revoked}");
    let sha256 = by_hash["sha256"].as_str().unwrap();
    cli_json(
        &cluster,
        1,
        &["revoke", "secret", "--sha256", sha256, "--json"],
    );
    cli_json(
        &cluster,
        2,
        &[
            "revoke",
            "subject",
            "spiffe://example.org/leaked-laptop",
            "--tenant",
            "break-glass",
            "--json",
        ],
    );
    eventually(30, describe, || {
        verify(&edge, token(&by_hash)).0 == 403
            && verify(&edge, token(&by_subject)).0 == 403
            && verify(&edge, token(&by_file)).0 == 403
    })
    .await;
    assert_eq!(verify(&edge, token(&good)).0, 200, "the others stay valid");

    // A regular credential for the fail-open verifier.
    let join = cli_json(
        &cluster,
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
        &cluster,
        1,
        &[
            "issue",
            "--join-token",
            join["token"].as_str().unwrap(),
            "--audience",
            "billing",
            "--json",
        ],
    );
    let regular = issued["credential"].as_str().unwrap().to_owned();
    let regular_jti = {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(regular.split('.').nth(1).unwrap())
            .unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        claims["jti"].as_str().unwrap().to_owned()
    };
    eventually(30, describe, || verify(&open, &regular).0 == 200).await;
    assert_eq!(first_status(&open)["accepted_while_stale"], 0);

    // Every use so far has been recorded by the brokers (their answer
    // came back), so the one made while cut off is the only one pending:
    // none is queued, and none reported and awaiting its answer (which
    // would be queued again when the cut ends the subscription).
    eventually(30, describe, || {
        let status = first_status(&edge);
        status["emergency_uses_pending"] == 0 && status["emergency_uses_unconfirmed"] == 0
    })
    .await;

    // Cut off from every broker: the break-glass credential is still
    // accepted (and counted as accepted while stale), a regular one is
    // refused by the fail-closed verifier and accepted by the fail-open one.
    for proxy in &proxies {
        proxy.cut().await;
    }
    eventually(10, describe, || {
        first_status(&edge)["fresh"] == false && first_status(&open)["fresh"] == false
    })
    .await;
    let cut_off = mint(&key, ONCALL, &["--aud", "billing", "--ttl", "10m"]);
    let (code, body) = verify(&edge, token(&cut_off));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["stale"], true);
    assert_eq!(verify(&edge, &regular).0, 503);
    let (code, body) = verify(&open, &regular);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["stale"], true);
    let status = first_status(&edge);
    assert_eq!(status["accepted_while_stale"], 1, "{status}");
    assert_eq!(status["emergency_uses_pending"], 1, "{status}");
    assert_eq!(status["emergency_uses_unconfirmed"], 0, "{status}");
    let status = first_status(&open);
    assert_eq!(status["fail_open"], true, "{status}");
    assert_eq!(status["accepted_while_stale"], 1, "{status}");
    let metrics = support::http_get(&open.http, "/metrics");
    assert!(
        metrics.contains("lapse_verifier_fail_open{verifier=\"open\",region=\"eu\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "lapse_verifier_accepted_while_stale_total{verifier=\"open\",region=\"eu\"} 1"
        ),
        "{metrics}"
    );
    let metrics = support::http_get(&edge.http, "/metrics");
    assert!(
        metrics.contains(
            "lapse_verifier_break_glass_verifications_total{verifier=\"edge\",region=\"eu\",result=\"accepted\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("lapse_verifier_fail_open{verifier=\"edge\",region=\"eu\"} 0"),
        "{metrics}"
    );

    // Reconnected: both uses reach a broker.
    for proxy in &proxies {
        proxy.heal();
    }
    let cut_off_jti = cut_off["jti"].as_str().unwrap().to_owned();
    let reports = || {
        let logs = broker_logs(&cluster);
        let lines: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("emergency use"))
            .collect();
        format!(
            "reports: {lines:#?}\nedge: {:?}\n{}\nopen: {:?}\n{}",
            first_status(&edge),
            edge.log_tail(),
            first_status(&open),
            open.log_tail()
        )
    };
    eventually(30, reports, || {
        reported(&cluster, "break_glass", &cut_off_jti)
            && reported(&cluster, "fail_open", &regular_jti)
    })
    .await;
    eventually(10, describe, || {
        first_status(&edge)["emergency_uses_pending"] == 0
            && first_status(&open)["emergency_uses_pending"] == 0
    })
    .await;

    // Retired for good: the cluster never registered the break-glass key,
    // yet revoking it by its id refuses everything it signed, before and
    // after.
    let jwk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&public).unwrap()).unwrap();
    let kid = jwk["kid"].as_str().unwrap();
    let revoked = cli_json(&cluster, 2, &["revoke", "key", kid, "--json"]);
    assert!(revoked["epoch"].as_u64().is_some(), "{revoked}");
    let after = mint(&key, ONCALL, &["--aud", "billing", "--ttl", "10m"]);
    eventually(30, describe, || {
        verify(&edge, token(&good)).0 == 403 && verify(&edge, token(&after)).0 == 403
    })
    .await;
    let (_, body) = verify(&edge, token(&after));
    assert!(body["detail"].as_str().unwrap().contains(kid), "{body}");
    // Again: already revoked, and a key id that is neither registered nor
    // a break-glass key's is unknown.
    let again = cluster.cli(1, &["revoke", "key", kid]);
    assert_eq!(again.status.code(), Some(3), "{again:?}");
    let unknown = cluster.cli(1, &["revoke", "key", "k-nobody"]);
    assert_eq!(unknown.status.code(), Some(3), "{unknown:?}");
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no signing key with id k-nobody"),
        "{unknown:?}"
    );
}

/// The relay's answer to a subscriber saying hello as `id` and then
/// sending `report`: the status that ended the stream, if one did within
/// ten seconds.
async fn relay_answer(
    relay: &str,
    id: &str,
    report: lapse_wire::feed::UseReport,
) -> Option<tonic::Status> {
    use lapse_wire::feed::feed_client::FeedClient;
    use lapse_wire::feed::feed_request::Kind as RequestKind;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{relay}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let report = lapse_wire::feed::FeedRequest {
        kind: Some(RequestKind::UseReport(report)),
    };
    let (reply, _requests) =
        subscribe(&mut FeedClient::new(channel), [hello(id, None), report]).await;
    let mut stream = reply.ok()?;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_uses_behind_a_relay_reach_the_cluster_through_it() {
    let cluster = TestCluster::start_with(3, FAST_RAFT, |_| {
        "[issuance]\nlease_block = 20\n[feed]\nheartbeat_ms = 100\n".to_owned()
    });
    let (key, public) = keygen(&cluster.dir.path().join("glass"));
    let brokers: Vec<String> = (1..=3).map(|id| cluster.address(id)).collect();
    let relay_address = format!("127.0.0.1:{}", free_port());
    let relay = VerifierProcess::start(
        cluster.dir.path(),
        "relay",
        "eu",
        1,
        &brokers,
        &["--relay", &relay_address],
    );
    // The leaf knows only the relay: it never follows a broker.
    let leaf = VerifierProcess::start(
        cluster.dir.path(),
        "leaf",
        "edge",
        1,
        std::slice::from_ref(&relay_address),
        &glass_flags(&public),
    );
    cluster.wait_for_leader().await;
    let describe = || {
        format!(
            "{}\n{}\n{}",
            cluster.logs(),
            relay.log_tail(),
            leaf.log_tail()
        )
    };
    eventually(60, describe, || {
        let status = first_status(&leaf);
        status["fresh"] == true
            && status["following_broker"]["address"].as_str() == Some(relay_address.as_str())
    })
    .await;
    let leaf_id = leaf.status().keys().next().unwrap().clone();

    let minted = mint(&key, ONCALL, &["--aud", "billing", "--ttl", "10m"]);
    let (code, body) = verify(&leaf, token(&minted));
    assert_eq!(code, 200, "{body}");
    let jti = minted["jti"].as_str().unwrap().to_owned();
    // The use goes up through the relay, is recorded, and the answer comes
    // back down: the leaf holds nothing more, without ever meeting a broker.
    eventually(60, describe, || {
        let status = first_status(&leaf);
        reported(&cluster, "break_glass", &jti)
            && status["emergency_uses_pending"] == 0
            && status["emergency_uses_unconfirmed"] == 0
            && status["following_broker"]["address"].as_str() == Some(relay_address.as_str())
    })
    .await;
    let audit = cli_json(
        &cluster,
        1,
        &[
            "audit",
            "--control",
            "--action",
            "break_glass_use",
            "--json",
        ],
    );
    let event = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["outcome"].as_str().is_some_and(|o| o.contains(&jti)))
        .unwrap_or_else(|| panic!("no event for {jti}: {audit}"))
        .clone();
    assert!(
        event["principal"]
            .as_str()
            .is_some_and(|p| p.starts_with("verifier:relay")),
        "{event}"
    );
    assert!(
        event["outcome"]
            .as_str()
            .unwrap()
            .contains(&format!("by verifier {leaf_id} (relayed)")),
        "{event}"
    );
    let (_, relay_status) = relay.status().into_iter().next().unwrap();
    eventually(30, describe, || {
        relay.status().into_values().next().unwrap()["relay"]["forwarded_use_reports"] == 0
    })
    .await;
    assert_eq!(relay_status["relay"]["leaves"], 1, "{relay_status}");

    // A subscriber reporting uses under another verifier's name, or more
    // uses than a verifier sends, is cut off, and nothing is forwarded.
    let foreign = lapse_wire::feed::UseReport {
        uses: vec![lapse_wire::feed::EmergencyUse {
            verifier_id: "someone-else".into(),
            jti: "forged".into(),
            ..Default::default()
        }],
        report_id: 7,
    };
    let status = relay_answer(&relay_address, "mallory", foreign)
        .await
        .expect("the relay must end the stream");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("only its own"), "{status:?}");
    let flood = lapse_wire::feed::UseReport {
        uses: (0..65)
            .map(|n| lapse_wire::feed::EmergencyUse {
                verifier_id: "mallory".into(),
                jti: format!("flood-{n}"),
                ..Default::default()
            })
            .collect(),
        report_id: 8,
    };
    let status = relay_answer(&relay_address, "mallory", flood)
        .await
        .expect("the relay must end the stream");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(
        relay.status().into_values().next().unwrap()["relay"]["forwarded_use_reports"],
        0
    );
    assert!(
        !broker_logs(&cluster).contains("forged"),
        "a forged use reached a broker"
    );
}
