//! Issuance evidence on real broker processes: `lapse audit verify` passes
//! on a run with grants and refusals and names a record changed, removed or
//! reordered in an export; `lapse audit explain` reproduces a grant and a
//! refusal, keeps to the recorded policy version after the policy changes,
//! and says when a record has no decision to explain. The export holds no
//! join token and no credential.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const WORKLOAD: &str = "spiffe://example.org/payments";
const POLICY: &str = r#"
permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences) };
"#;
/// The policy after it changes: writing is allowed too.
const WIDER: &str = r#"
permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read", "payments:write"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences) };
"#;

fn workload_token(cluster: &TestCluster) -> String {
    cli_json(
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
    )["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Issue on `broker` with a fresh join token for `scope`; the token and
/// the command's output.
fn issue(cluster: &TestCluster, broker: u64, scope: &str) -> (String, std::process::Output) {
    let token = workload_token(cluster);
    let out = cluster.cli(
        broker,
        &[
            "issue",
            "--join-token",
            &token,
            "--audience",
            "billing",
            "--scope",
            scope,
            "--json",
        ],
    );
    (token, out)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every issuance record, once at least `count` are shipped to the ledger.
async fn shipped_records(cluster: &TestCluster, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let audit = cli_json(cluster, 1, &["audit", "--limit", "10000", "--json"]);
        let records = audit["records"].as_array().unwrap().clone();
        if records.len() >= count && records.iter().all(|r| r["shipped"] == true) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "records were never all shipped: {audit:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `lapse audit verify --file` on `lines`: its exit code and stderr.
fn verify_lines(cluster: &TestCluster, dir: &Path, name: &str, lines: &[String]) -> (i32, String) {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = cluster.cli(1, &["audit", "verify", "--file", path.to_str().unwrap()]);
    (out.status.code().unwrap_or(-1), stderr(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_verifies_names_broken_links_and_explains_decisions() {
    let cluster = TestCluster::start_with(3, FAST_RAFT, |_| {
        "[issuance]\nlease_block = 6\naudit_ship_ms = 200\n".to_owned()
    });
    cluster.wait_for_leader().await;
    wait_for_active_keys(&cluster).await;
    set_policy(&cluster, "acme", POLICY);

    let mut secrets = Vec::new();
    for (broker, scope, granted) in [
        (2, "payments:read", true),
        (2, "payments:write", false),
        (2, "payments:read", true),
        (3, "payments:read", true),
        (2, "payments:read", true),
    ] {
        let (token, out) = issue(&cluster, broker, scope);
        assert_eq!(out.status.success(), granted, "{}", stderr(&out));
        secrets.push(token);
        if granted {
            let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            secrets.push(issued["credential"].as_str().unwrap().to_owned());
        }
    }
    // Refused before any policy was asked: the token is unknown.
    let unknown = cluster.cli(
        2,
        &[
            "issue",
            "--join-token",
            "not-a-real-token-0123456789",
            "--audience",
            "billing",
            "--tenant",
            "acme",
        ],
    );
    assert!(!unknown.status.success());

    let records = shipped_records(&cluster, 6).await;
    let verified = cli_json(&cluster, 1, &["audit", "verify", "--json"]);
    assert_eq!(verified["ok"], true, "{verified:#}");
    assert!(verified["records"].as_u64().unwrap() >= 6, "{verified:#}");
    assert_eq!(verified["unsigned"], 0, "{verified:#}");
    // One tenant's view checks too, counting the links it cannot see.
    let acme = cli_json(
        &cluster,
        3,
        &["audit", "verify", "--tenant", "acme", "--json"],
    );
    assert_eq!(acme["ok"], true, "{acme:#}");

    // The export: whole records, and never a token or a credential.
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("evidence.jsonl");
    let out = cluster.cli(1, &["audit", "export", "--out", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&export).unwrap();
    let audit_json = String::from_utf8(cluster.cli(1, &["audit", "--json"]).stdout).unwrap();
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "the export holds a secret");
        assert!(
            !audit_json.contains(secret.as_str()),
            "the audit holds a secret"
        );
        for part in secret.split('.').filter(|p| p.len() > 20) {
            assert!(
                !text.contains(part),
                "the export holds part of a credential"
            );
        }
    }
    let (code, err) = verify_lines(&cluster, dir.path(), "same.jsonl", &lines(&text));
    assert_eq!(code, 0, "{err}");

    // Broker 2's lines, in chain order.
    let all = lines(&text);
    let of_two: Vec<usize> = (0..all.len())
        .filter(|&i| line(&all[i])["broker_id"] == 2)
        .collect();
    assert!(of_two.len() >= 5, "{text}");
    let seq = |i: usize| line(&all[i])["record"]["sequence"].as_u64().unwrap();

    // A scope changed.
    let mut tampered = all.clone();
    let mut changed = line(&tampered[of_two[2]]);
    changed["record"]["scopes"][0] = "payments:admin".into();
    tampered[of_two[2]] = changed.to_string();
    let (code, err) = verify_lines(&cluster, dir.path(), "tampered.jsonl", &tampered);
    assert_eq!(code, 8, "{err}");
    assert!(
        err.contains(&format!(
            "broker 2, record {}: signature does not verify",
            seq(of_two[2])
        )),
        "{err}"
    );

    // A record removed.
    let mut removed = all.clone();
    removed.remove(of_two[2]);
    let (code, err) = verify_lines(&cluster, dir.path(), "removed.jsonl", &removed);
    assert_eq!(code, 8, "{err}");
    assert!(
        err.contains(&format!(
            "broker 2, record {}: it comes after record {} (expected record {})",
            seq(of_two[3]),
            seq(of_two[1]),
            seq(of_two[2])
        )),
        "{err}"
    );

    // Two records swapped.
    let mut swapped = all.clone();
    swapped.swap(of_two[1], of_two[2]);
    let (code, err) = verify_lines(&cluster, dir.path(), "swapped.jsonl", &swapped);
    assert_eq!(code, 8, "{err}");
    assert!(
        err.contains(&format!("broker 2, record {}:", seq(of_two[2]))) && err.contains("reordered"),
        "{err}"
    );

    // Explain a grant and a refusal of broker 2.
    let find = |allowed: bool, with_inputs: bool| {
        records
            .iter()
            .find(|r| {
                r["broker_id"] == 2
                    && r["allowed"] == allowed
                    && (r["policy_version"] == 1) == with_inputs
            })
            .map(|r| format!("2:{}", r["sequence"]))
            .unwrap()
    };
    let (grant, refusal, undecided) = (find(true, true), find(false, true), find(false, false));
    let explained = cli_json(&cluster, 1, &["audit", "explain", &grant, "--json"]);
    assert_eq!(explained["result"], "reproduced", "{explained:#}");
    assert_eq!(explained["recorded"]["allowed"], true);
    assert_eq!(explained["reproduced"]["allowed"], true);
    let explained = cli_json(&cluster, 1, &["audit", "explain", &refusal, "--json"]);
    assert_eq!(explained["result"], "reproduced", "{explained:#}");
    assert_eq!(explained["reproduced"]["allowed"], false);
    assert_eq!(
        explained["reproduced"]["reason"],
        explained["recorded"]["reason"]
    );
    let explained = cli_json(&cluster, 1, &["audit", "explain", &undecided, "--json"]);
    assert_eq!(explained["result"], "no-decision", "{explained:#}");

    // The policy changes: the refusal is still decided under version 1,
    // and says so, although version 2 would grant it.
    assert_eq!(set_policy(&cluster, "acme", WIDER)["version"], 2);
    let out = cluster.cli(1, &["audit", "explain", &refusal]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{shown}", stderr(&out));
    assert!(
        shown.contains("policy changed since: now version 2; this uses version 1 as recorded"),
        "{shown}"
    );
    assert!(shown.contains("reproduced"), "{shown}");
    assert!(!shown.contains("differs"), "{shown}");
    let (_, out) = issue(&cluster, 2, "payments:write");
    assert!(out.status.success(), "{}", stderr(&out));

    // Once the recorded version is no longer kept, explain says so rather
    // than use another.
    let file = cluster.dir.path().join("wider.cedar");
    std::fs::write(&file, WIDER).unwrap();
    for _ in 0..32 {
        let out = cluster.cli(
            1,
            &[
                "policy",
                "set",
                "--tenant",
                "acme",
                "--file",
                file.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = cluster.cli(1, &["audit", "explain", &refusal]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("was decided by policy version 1, which the ledger no longer keeps")
            && stderr(&out).contains("not decided again under another version"),
        "{}",
        stderr(&out)
    );

    // The whole run still verifies.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = cluster.cli(1, &["audit", "verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn line(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}
