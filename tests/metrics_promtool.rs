//! `/metrics` of real brokers after issuing, refusing and revoking, checked
//! by `promtool check metrics` (Prometheus' own linter): the text parses,
//! and names, units and suffixes follow Prometheus' conventions. promtool
//! comes from `PATH`, else from Debian's `prometheus` package, downloaded
//! and unpacked (no root needed) into the test's target directory once.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::edge::VerifierProcess;
use support::*;

const WORKLOAD: &str = "spiffe://example.org/payments";
const POLICY: &str = r#"
permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900 };
"#;

/// `promtool`: from `PATH`, else unpacked from Debian's package.
fn promtool() -> PathBuf {
    let on_path = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return PathBuf::from("promtool");
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("promtool");
    let unpacked = cache.join("root/usr/bin/promtool");
    if unpacked.exists() {
        return unpacked;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let download = || {
        Command::new("apt-get")
            .args(["download", "prometheus"])
            .current_dir(&cache)
            .output()
            .expect("running apt-get download (promtool is not on PATH)")
    };
    let mut got = download();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !got.status.success() && root {
        let update = Command::new("apt-get").arg("update").output().unwrap();
        assert!(
            update.status.success(),
            "apt-get update: {}",
            String::from_utf8_lossy(&update.stderr)
        );
        got = download();
    }
    assert!(
        got.status.success(),
        "promtool is not on PATH and `apt-get download prometheus` failed: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    let deb = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("apt-get download left a .deb");
    let unpack = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(cache.join("root"))
        .output()
        .expect("running dpkg -x");
    assert!(
        unpack.status.success(),
        "dpkg -x {}: {}",
        deb.display(),
        String::from_utf8_lossy(&unpack.stderr)
    );
    assert!(
        unpacked.exists(),
        "{} has no usr/bin/promtool",
        deb.display()
    );
    unpacked
}

/// promtool's verdict on an exposition: its complaints, empty when none.
fn promtool_problems(promtool: &Path, text: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let problems = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        problems.trim().to_owned()
    } else {
        format!("exit {:?}: {problems}", out.status.code())
    }
}

/// The value of the sample `series` (name and labels exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn issue(cluster: &TestCluster, broker: u64, scope: &str) -> std::process::Output {
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
    cluster.cli(
        broker,
        &[
            "issue",
            "--join-token",
            join["token"].as_str().unwrap(),
            "--audience",
            "billing",
            "--scope",
            scope,
            "--ttl",
            "10m",
            "--json",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_issuing_refusing_and_revoking_pass_promtool() {
    let promtool = promtool();
    let http: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let ports = http.clone();
    let cluster = TestCluster::start_with(3, FAST_RAFT, move |id| {
        format!(
            "[issuance]\nhttp_listen = \"{}\"\nlease_block = 20\n[feed]\nheartbeat_ms = 100\n",
            ports[&id]
        )
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 3).await;
    set_policy(&cluster, "acme", POLICY);

    let brokers: Vec<String> = (1..=3).map(|id| cluster.address(id)).collect();
    let verifiers = VerifierProcess::start(cluster.dir.path(), "edge", "eu-west", 3, &brokers, &[]);

    let granted = issue(&cluster, 2, "payments:read");
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    let issued: serde_json::Value = serde_json::from_slice(&granted.stdout).unwrap();
    let index = issued["status_index"].as_u64().unwrap();
    let refused = issue(&cluster, 2, "payments:write");
    assert!(!refused.status.success(), "a scope the policy denies");

    // Every verifier subscribed and holding the state, then a revocation
    // that reaches them all.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = cli_json(&cluster, 1, &["propagation", "--json"]);
        let ready = report["verifiers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["connected"] == true && v["acked_epoch"].as_u64() > Some(0))
            .count();
        if ready == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "verifiers did not subscribe: {report}\n{}",
            verifiers.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
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
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let scrapes: BTreeMap<u64, String> = http
        .iter()
        .map(|(id, address)| (*id, broker_metrics_text(address)))
        .collect();
    for (id, text) in &scrapes {
        let problems = promtool_problems(&promtool, text);
        if !problems.is_empty() {
            let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("metrics-{id}.txt"));
            std::fs::write(&kept, text).unwrap();
            panic!(
                "broker {id} (scrape kept in {}): {problems}",
                kept.display()
            );
        }
        // Counted from the ledger: every broker agrees.
        assert_eq!(
            sample(text, "lapse_revocations_total{kind=\"index\"}"),
            Some(1.0),
            "broker {id}"
        );
        assert_eq!(
            sample(text, "lapse_feed_stale_verifiers"),
            Some(0.0),
            "{text}"
        );
    }
    let issuer = &scrapes[&2];
    assert_eq!(
        sample(issuer, "lapse_issuance_granted_total{kind=\"issue\"}"),
        Some(1.0),
        "{issuer}"
    );
    assert_eq!(
        sample(
            issuer,
            "lapse_issuance_refused_total{kind=\"issue\",reason=\"policy\"}"
        ),
        Some(1.0),
        "{issuer}"
    );
    assert_eq!(
        sample(
            issuer,
            "lapse_issuance_duration_seconds_count{kind=\"issue\"}"
        ),
        Some(2.0),
        "{issuer}"
    );
    assert_eq!(
        sample(
            issuer,
            "lapse_credential_lifetime_seconds_bucket{le=\"300.0\",tenant=\"acme\"}"
        ),
        Some(0.0),
        "{issuer}"
    );
    assert_eq!(
        sample(
            issuer,
            "lapse_credential_lifetime_seconds_bucket{le=\"600.0\",tenant=\"acme\"}"
        ),
        Some(1.0),
        "{issuer}"
    );
    // The revocation was timed to the last verifier of the region, on the
    // broker (or brokers) the verifiers follow.
    let timed: f64 = scrapes
        .values()
        .filter_map(|text| {
            sample(
                text,
                "lapse_time_to_revoke_seconds_count{region=\"eu-west\"}",
            )
        })
        .sum();
    assert!(timed >= 1.0, "{scrapes:?}");
    // OpenMetrics is still what a client gets by default.
    assert!(broker_metrics(&http[&1]).ends_with("# EOF\n"));
}
