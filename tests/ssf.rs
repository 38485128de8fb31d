//! Shared Signals end to end: three real brokers, a receiver created with
//! `lapse ssf receiver create`, a push stream and a poll stream made over
//! the SSF configuration endpoint, and a receiver written apart from Lapse
//! (`tests/ssf_receiver.py`: Python, PyJWT, in a venv made under the
//! target directory) that verifies every SET against the cluster's JWKS.
//! A burst of revocations of every group kind runs while the leader is
//! killed with `kill -9`; afterwards every acknowledged revocation's event
//! has reached the receiver by push and by poll, in epoch order, none
//! missing (a duplicate must carry the jti and epoch it carried before).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapse_wire::cluster::{self as pb, revocation::Target};
use support::*;

const PACKAGES: [&str; 2] = ["PyJWT==2.10.1", "cryptography==44.0.0"];
const AUDIENCE: &str = "https://receiver.test";
const PUSH_AUTH: &str = "Bearer push-secret-for-tests";
const REVOCATIONS: usize = 40;
/// The leader is killed after this many revocations of the burst.
const KILL_AFTER: usize = 15;

/// The receiver's virtual environment, made once per target directory
/// (built under a temporary name and renamed into place). PyPI must be
/// reachable the first time: the test fails loudly otherwise.
fn python() -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ssf-receiver");
    let venv = cache.join(PACKAGES.join("-").replace("==", "-"));
    let python = venv.join("bin/python");
    if python.exists() && venv.join("installed").exists() {
        return python;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let building = cache.join(format!("building.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&building)
        .output()
        .expect("python3 -m venv (Python 3 with venv is needed for the SSF receiver)");
    assert!(
        made.status.success(),
        "python3 -m venv: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let installed = Command::new(building.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--timeout",
            "30",
            "--retries",
            "2",
        ])
        .args(PACKAGES)
        .output()
        .expect("run pip");
    assert!(
        installed.status.success(),
        "pip install {PACKAGES:?} failed (is PyPI reachable?): {}",
        String::from_utf8_lossy(&installed.stderr)
    );
    std::fs::write(building.join("installed"), PACKAGES.join("\n")).unwrap();
    if std::fs::rename(&building, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    venv.join("bin/python")
}

struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTP request with the receiver's bearer token; the status and JSON.
fn ssf_call(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(15))
        .build();
    let request = agent
        .request(method, &format!("{base}{path}"))
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", "application/json");
    let sent = if body.is_null() {
        request.call()
    } else {
        request.send_string(&body.to_string())
    };
    let response = match sent {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{method} {path}: {error}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The receiver's lines for one method: `(jti, epoch)` in arrival order.
fn received(path: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.ends_with('}'))
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                v["jti"].as_str().unwrap().to_owned(),
                v["txn"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// First arrivals in order, checking that every repeat of a jti carries
/// the epoch it carried first.
fn deduplicated(lines: &[(String, u64)]) -> (Vec<u64>, usize) {
    let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
    let mut order = Vec::new();
    let mut repeats = 0;
    for (jti, epoch) in lines {
        match seen.get(jti.as_str()) {
            Some(first) => {
                assert_eq!(first, epoch, "jti {jti} came again for another epoch");
                repeats += 1;
            }
            None => {
                seen.insert(jti, *epoch);
                order.push(*epoch);
            }
        }
    }
    (order, repeats)
}

fn revocation(i: usize) -> Target {
    match i % 5 {
        0 => Target::Subject(pb::SubjectTarget {
            tenant: "acme".into(),
            subject: format!("spiffe://example.org/w{i}"),
            issued_before_ms: None,
        }),
        1 => Target::Tenant(pb::TenantTarget {
            tenant: format!("t{i}"),
            issued_before_ms: None,
        }),
        2 => Target::Task(pb::TaskTarget {
            tenant: "acme".into(),
            task: format!("task-{i}"),
        }),
        3 => Target::SecretSha256({
            use sha2::Digest as _;
            sha2::Sha256::digest(format!("leaked-{i}")).to_vec()
        }),
        _ => Target::Subject(pb::SubjectTarget {
            tenant: format!("t{i}"),
            subject: format!("spiffe://example.org/agent-{i}"),
            issued_before_ms: None,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_reach_a_python_receiver_by_push_and_poll_in_order_across_a_leader_kill() {
    let started = Instant::now();
    let python = python();
    let http: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let ports = http.clone();
    let mut cluster = TestCluster::start_with(3, FAST_RAFT, move |id| {
        format!("[issuance]\nhttp_listen = \"{}\"\n", ports[&id])
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 3).await;
    let bases: Vec<String> = http.values().map(|a| format!("http://{a}")).collect();

    let created = cli_json(
        &cluster,
        1,
        &["ssf", "receiver", "create", "--name", "rx", "--json"],
    );
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("lapse-ssf-"), "{created}");

    // The metadata names the endpoints; a request without the token is refused.
    let metadata: serde_json::Value =
        serde_json::from_str(&http_get(&http[&1], "/.well-known/ssf-configuration")).unwrap();
    assert_eq!(
        metadata["delivery_methods_supported"],
        serde_json::json!(["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"])
    );
    let (status, _) = ssf_call(
        &bases[0],
        "GET",
        "/ssf/stream",
        "not-a-token",
        &serde_json::Value::Null,
    );
    assert_eq!(status, 401);

    let port = free_port();
    let events = [
        "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
        "https://schemas.openid.net/secevent/caep/event-type/credential-change",
    ];
    let (status, push) = ssf_call(
        &bases[0],
        "POST",
        "/ssf/stream",
        &token,
        &serde_json::json!({
            "aud": AUDIENCE,
            "events_requested": events,
            "delivery": {
                "method": "urn:ietf:rfc:8935",
                "endpoint_url": format!("http://127.0.0.1:{port}/events"),
                "authorization_header": PUSH_AUTH,
            },
        }),
    );
    assert_eq!(status, 201, "{push}");
    assert!(
        push.get("authorization_header").is_none() && !push.to_string().contains("push-secret")
    );
    let (status, poll) = ssf_call(
        &bases[1],
        "POST",
        "/ssf/stream",
        &token,
        &serde_json::json!({
            "aud": AUDIENCE,
            "events_requested": events,
            "delivery": {"method": "urn:ietf:rfc:8936"},
        }),
    );
    assert_eq!(status, 201, "{poll}");
    let poll_stream = poll["stream_id"].as_str().unwrap().to_owned();
    assert_eq!(poll["events_delivered"], serde_json::json!(events));

    // Bad input is refused precisely and changes nothing.
    let (status, body) = ssf_call(
        &bases[0],
        "POST",
        "/ssf/stream",
        &token,
        &serde_json::json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "http://receiver.example/x"}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("https"),
        "{body}"
    );

    let dir = cluster.dir.path().to_owned();
    let push_out = dir.join("push.jsonl");
    let poll_out = dir.join("poll.jsonl");
    let receiver_log = std::fs::File::create(dir.join("receiver.log")).unwrap();
    let _receiver = Receiver(
        Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ssf_receiver.py"))
            .args(["--port", &port.to_string()])
            .args(["--brokers", &bases.join(",")])
            .args(["--issuer", "lapse", "--aud", AUDIENCE])
            .arg("--push-out")
            .arg(&push_out)
            .args(["--push-auth", PUSH_AUTH])
            .args(["--token", &token, "--poll-stream", &poll_stream])
            .arg("--poll-out")
            .arg(&poll_out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(receiver_log)
            .spawn()
            .expect("start the Python receiver"),
    );

    // The burst, with the leader killed part-way.
    let mut epochs = Vec::new();
    let mut killed = None;
    for i in 0..REVOCATIONS {
        if i == KILL_AFTER {
            let leader = cluster.wait_for_leader().await;
            cluster.kill9(leader);
            killed = Some(leader);
        }
        let reply = revoke_anywhere(
            &cluster,
            pb::RevokeRequest {
                request_id: format!("ssf-burst-{i}"),
                revocation: Some(pb::Revocation {
                    target: Some(revocation(i)),
                }),
            },
        )
        .await
        .unwrap_or_else(|status| panic!("revocation {i}: {status}\n{}", cluster.logs()));
        epochs.push(reply.epoch);
    }
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
    if let Some(id) = killed {
        cluster.spawn(id, &[]);
    }

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (pushed, push_repeats) = deduplicated(&received(&push_out));
        let (polled, poll_repeats) = deduplicated(&received(&poll_out));
        if pushed.len() >= epochs.len() && polled.len() >= epochs.len() {
            assert_eq!(
                pushed, epochs,
                "push: every event, once each, in epoch order"
            );
            assert_eq!(
                polled, epochs,
                "poll: every event, once each, in epoch order"
            );
            eprintln!(
                "ssf: {} events by push ({push_repeats} repeated) and by poll ({poll_repeats} repeated) in {:?}",
                epochs.len(),
                started.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "within 90 s, push brought {pushed:?} and poll {polled:?} of {epochs:?}\nreceiver: {}\n{}",
            std::fs::read_to_string(dir.join("receiver.log")).unwrap_or_default(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Both positions are committed: a new deliverer would start after them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = cluster.running()[0];
        let listed = cli_json(&cluster, running, &["ssf", "receiver", "list", "--json"]);
        let last = listed["last_event"].as_u64().unwrap();
        let streams = listed["receivers"][0]["streams"]
            .as_array()
            .unwrap()
            .clone();
        if streams.len() == 2 && streams.iter().all(|s| s["acked"].as_u64() == Some(last)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "positions not committed: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
