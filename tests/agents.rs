//! The trust chain for agents, end to end on real processes: a planner's
//! credential delegated twice (planner → executor → tool) with RFC 8693
//! token exchange, scopes narrowing at each step; what must be refused is
//! refused and audited; revoking the planner's credential, or the task, makes
//! every verifier refuse everything delegated from it, confirmed with
//! `revoke --wait all`.

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::edge::VerifierProcess;
use support::*;

const PLANNER: &str = "spiffe://example.org/planner";
const EXECUTOR: &str = "spiffe://example.org/executor";
const TOOL: &str = "spiffe://example.org/tool";
const SUBTOOL: &str = "spiffe://example.org/subtool";

/// The planner may get three scopes; delegation goes at most two steps
/// deep, only to the executor and then the tool.
const POLICY: &str = r#"
permit(principal == Workload::"spiffe://example.org/planner",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read", "payments:write", "payments:refund"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900
       && context.delegation_depth <= 2 };
"#;

fn payload(credential: &str) -> serde_json::Value {
    let part = credential.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A credential for the planner, on a fresh join token, for `task`.
fn planner_credential(cluster: &TestCluster, task: &str, plan: &std::path::Path) -> String {
    let token = join_token(cluster, "acme", PLANNER);
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
            "--scope",
            "payments:write",
            "--scope",
            "payments:refund",
            "--ttl",
            "10m",
            "--task",
            task,
            "--on-behalf-of",
            "user:ada",
            "--intent-of",
            plan.to_str().unwrap(),
            "--json",
        ],
    );
    issued["credential"].as_str().unwrap().to_owned()
}

/// `lapse exchange` of `credential` for `actor`, with `extra` flags.
fn exchange(
    cluster: &TestCluster,
    broker: u64,
    credential: &str,
    actor: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "exchange",
        "--credential",
        credential,
        "--actor",
        actor,
        "--json",
    ];
    args.extend_from_slice(extra);
    cluster.cli(broker, &args)
}

fn exchanged(out: std::process::Output) -> (String, u64) {
    assert!(out.status.success(), "{}", stderr(&out));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        reply["credential"].as_str().unwrap().to_owned(),
        reply["status_index"].as_u64().unwrap(),
    )
}

/// Poll `check` until it holds, or fail with `what` after `seconds`.
async fn eventually(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `revoke ARGS --wait all`, which returns once every subscribed verifier
/// has acknowledged the revocation.
fn revoke_and_wait(cluster: &TestCluster, what: &[&str]) -> serde_json::Value {
    let mut args = vec!["revoke"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["--wait", "all", "--wait-timeout", "30s", "--json"]);
    let out = cluster.cli(1, &args);
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_delegates_twice_and_one_revocation_stops_the_whole_chain() {
    let cluster = TestCluster::start_with(3, FAST_RAFT, |_| {
        "[issuance]\nlease_block = 16\naudit_ship_ms = 200\n".to_owned()
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 3).await;
    set_policy(&cluster, "acme", POLICY);
    let plan = cluster.dir.path().join("plan.txt");
    std::fs::write(&plan, "refund order 1234 for ada").unwrap();

    let planner = planner_credential(&cluster, "t-1", &plan);
    let root = payload(&planner);
    let planner_index = root["status"]["status_list"]["idx"].as_u64().unwrap();
    assert_eq!(root["task"], "t-1");
    assert_eq!(root["on_behalf_of"], "user:ada");
    assert_eq!(root["intent"].as_str().unwrap().len(), 64);
    assert!(root.get("act").is_none() && root.get("ancestors").is_none());

    // planner → executor (two of three scopes) → tool (one), each on a
    // different broker: exchange is broker-local.
    let (executor, executor_index) = exchanged(exchange(
        &cluster,
        1,
        &planner,
        EXECUTOR,
        &["--scope", "payments:read", "--scope", "payments:write"],
    ));
    let (tool, tool_index) = exchanged(exchange(
        &cluster,
        3,
        &executor,
        TOOL,
        &["--scope", "payments:read", "--ttl", "2m"],
    ));
    let (mid, leaf) = (payload(&executor), payload(&tool));
    assert_eq!(mid["sub"], PLANNER, "sub stays the attested root");
    assert_eq!(mid["act"], serde_json::json!({ "sub": EXECUTOR }));
    assert_eq!(
        leaf["act"],
        serde_json::json!({ "sub": TOOL, "act": { "sub": EXECUTOR } })
    );
    assert_eq!(mid["ancestors"], serde_json::json!([planner_index]));
    assert_eq!(
        leaf["ancestors"],
        serde_json::json!([planner_index, executor_index])
    );
    assert_eq!(
        mid["scopes"],
        serde_json::json!(["payments:read", "payments:write"])
    );
    assert_eq!(leaf["scopes"], serde_json::json!(["payments:read"]));
    assert_eq!(leaf["task"], "t-1");
    assert_eq!(leaf["on_behalf_of"], "user:ada");
    assert!(leaf["exp"].as_u64() <= mid["exp"].as_u64());
    assert!(mid["exp"].as_u64() <= root["exp"].as_u64());
    assert_ne!(tool_index, executor_index);

    // Refused, with the reason, each audited: a wider scope, a longer
    // life than the parent's, a depth beyond the policy, a different task,
    // and a refresh of a delegated credential.
    let wider = exchange(&cluster, 2, &tool, SUBTOOL, &["--scope", "payments:write"]);
    assert_eq!(wider.status.code(), Some(4), "{}", stderr(&wider));
    assert!(
        stderr(&wider).contains("may only narrow"),
        "{}",
        stderr(&wider)
    );
    let longer = exchange(&cluster, 2, &executor, TOOL, &["--ttl", "1h"]);
    assert_eq!(longer.status.code(), Some(4), "{}", stderr(&longer));
    assert!(stderr(&longer).contains("may not outlive its parent"));
    let deeper = exchange(&cluster, 2, &tool, SUBTOOL, &[]);
    assert_eq!(deeper.status.code(), Some(4), "{}", stderr(&deeper));
    assert!(
        stderr(&deeper).contains("to delegate to spiffe://example.org/subtool at depth 3"),
        "{}",
        stderr(&deeper)
    );
    let other_task = exchange(&cluster, 2, &executor, TOOL, &["--task", "t-9"]);
    assert_eq!(other_task.status.code(), Some(4), "{}", stderr(&other_task));
    assert!(stderr(&other_task).contains("keeps its parent's task"));
    let refresh = cluster.cli(2, &["refresh", "--credential", &tool]);
    assert_eq!(refresh.status.code(), Some(4), "{}", stderr(&refresh));
    assert!(stderr(&refresh).contains("is not refreshed"));
    let bad_actor = exchange(&cluster, 2, &executor, "not-a-spiffe-id", &[]);
    assert_eq!(bad_actor.status.code(), Some(3), "{}", stderr(&bad_actor));

    // Every verifier accepts the chain while nothing is revoked.
    let edge = VerifierProcess::start(
        cluster.dir.path(),
        "edge",
        "eu",
        3,
        &[cluster.address(1), cluster.address(2), cluster.address(3)],
        &[],
    );
    for credential in [&planner, &executor, &tool] {
        eventually(30, "verifiers accept the chain", || {
            edge.verify_all(credential).0 == 3
        })
        .await;
    }

    // The kill switch: revoking the planner's credential reaches every
    // verifier (--wait all), and each then refuses the executor's and the
    // tool's, offline, by the ancestors they carry.
    let revoked = revoke_and_wait(&cluster, &["chain", &planner_index.to_string()]);
    assert_eq!(revoked["propagated"]["verifiers"], 3, "{revoked}");
    for credential in [&planner, &executor, &tool] {
        let (valid, answers) = edge.verify_all(credential);
        assert_eq!(valid, 0, "{answers:?}");
        assert!(
            answers.iter().all(|a| a["reason"] == "revoked"),
            "{answers:?}"
        );
    }
    // A revoked chain cannot be exchanged any further either.
    let after = exchange(&cluster, 1, &executor, TOOL, &[]);
    assert_eq!(after.status.code(), Some(4), "{}", stderr(&after));
    assert!(
        stderr(&after).contains(&format!("delegated from status index {planner_index}")),
        "{}",
        stderr(&after)
    );

    // `revoke task` does the same for every credential of a task.
    let second = planner_credential(&cluster, "t-2", &plan);
    let (delegate, _) = exchanged(exchange(&cluster, 3, &second, EXECUTOR, &[]));
    for credential in [&second, &delegate] {
        eventually(30, "verifiers accept the second task", || {
            edge.verify_all(credential).0 == 3
        })
        .await;
    }
    let revoked = revoke_and_wait(&cluster, &["task", "acme", "t-2"]);
    assert_eq!(revoked["propagated"]["verifiers"], 3, "{revoked}");
    for credential in [&second, &delegate] {
        assert_eq!(edge.verify_all(credential).0, 0);
    }
    // The revoked task gets no new credentials, on issue or by exchange.
    let token = join_token(&cluster, "acme", PLANNER);
    let reissue = cluster.cli(
        2,
        &[
            "issue",
            "--join-token",
            &token,
            "--audience",
            "billing",
            "--task",
            "t-2",
        ],
    );
    assert_eq!(reissue.status.code(), Some(4), "{}", stderr(&reissue));
    assert!(stderr(&reissue).contains("task t-2 of tenant acme has been revoked"));

    // Every exchange, granted or refused, is in the audit with its
    // delegation and task context.
    let mut exchanges: Vec<serde_json::Value> = Vec::new();
    eventually(30, "the audit holds every exchange", || {
        let audit = cli_json(&cluster, 1, &["audit", "--tenant", "acme", "--json"]);
        let records = audit["records"].as_array().cloned().unwrap_or_default();
        exchanges = records
            .into_iter()
            .filter(|r| {
                r["attestation"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("exchange:"))
            })
            .collect();
        let granted = exchanges.iter().filter(|r| r["allowed"] == true).count();
        let refused = exchanges.iter().filter(|r| r["allowed"] == false).count();
        granted == 3
            && refused >= 4
            && exchanges.iter().any(|r| {
                r["actors"] == serde_json::json!([TOOL, EXECUTOR])
                    && r["task"] == "t-1"
                    && r["on_behalf_of"] == "user:ada"
                    && r["delegation_depth"] == 2
            })
    })
    .await;

    // The decisions are evidence: the chains and signatures check, and the
    // grant to the tool and the refusal at depth 3 are decided the same way
    // again from what was recorded.
    let verified = cli_json(&cluster, 1, &["audit", "verify", "--json"]);
    assert_eq!(verified["ok"], true, "{verified:#}");
    let id = |r: &serde_json::Value| format!("{}:{}", r["broker_id"], r["sequence"]);
    let to_tool = exchanges
        .iter()
        .find(|r| r["allowed"] == true && r["delegation_depth"] == 2)
        .map(id)
        .expect("the grant to the tool");
    let too_deep = exchanges
        .iter()
        .find(|r| r["allowed"] == false && r["delegation_depth"] == 3)
        .map(id)
        .expect("the refusal at depth 3");
    for (record, allowed) in [(&to_tool, true), (&too_deep, false)] {
        let explained = cli_json(&cluster, 1, &["audit", "explain", record, "--json"]);
        assert_eq!(explained["result"], "reproduced", "{explained:#}");
        assert_eq!(explained["reproduced"]["allowed"], allowed, "{explained:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_parent_cannot_be_exchanged() {
    // No leeway, so a credential of one second is expired a second later.
    let cluster = TestCluster::start_with(1, FAST_RAFT, |_| {
        "[issuance]\nleeway_seconds = 0\naudit_ship_ms = 200\n".to_owned()
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 1).await;
    set_policy(&cluster, "acme", POLICY);
    let token = join_token(&cluster, "acme", PLANNER);
    let issued = cli_json(
        &cluster,
        1,
        &[
            "issue",
            "--join-token",
            &token,
            "--audience",
            "billing",
            "--ttl",
            "1s",
            "--json",
        ],
    );
    let credential = issued["credential"].as_str().unwrap().to_owned();
    // Wait for the fact: the broker calls it expired.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = exchange(&cluster, 1, &credential, EXECUTOR, &[]);
        if out.status.code() == Some(4) && stderr(&out).contains("expired") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never expired: {:?} {}",
            out.status.code(),
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_bound_parent_needs_its_proof_and_the_delegate_gets_its_own_key() {
    let cluster = TestCluster::start_with(1, FAST_RAFT, |_| {
        "[issuance]\naudit_ship_ms = 200\n".to_owned()
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 1).await;
    set_policy(&cluster, "acme", POLICY);
    let dir = cluster.dir.path();
    let (planner_key, executor_key) = (dir.join("planner.key"), dir.join("executor.key"));
    let token = join_token(&cluster, "acme", PLANNER);
    let issued = cli_json(
        &cluster,
        1,
        &[
            "issue",
            "--join-token",
            &token,
            "--audience",
            "billing",
            "--dpop-key-file",
            planner_key.to_str().unwrap(),
            "--json",
        ],
    );
    let planner = issued["credential"].as_str().unwrap().to_owned();
    assert!(payload(&planner)["cnf"]["jkt"].is_string());

    // Stolen without its key, the planner's credential delegates nothing.
    let stolen = exchange(&cluster, 1, &planner, EXECUTOR, &[]);
    assert_eq!(stolen.status.code(), Some(4), "{}", stderr(&stolen));
    assert!(stderr(&stolen).contains("DPoP proof is required"));

    // With the key it does; the delegate's credential is bound to the
    // delegate's own key, not the planner's.
    let (executor, _) = exchanged(exchange(
        &cluster,
        1,
        &planner,
        EXECUTOR,
        &[
            "--dpop-key-file",
            planner_key.to_str().unwrap(),
            "--actor-key-file",
            executor_key.to_str().unwrap(),
        ],
    ));
    let (parent, child) = (payload(&planner), payload(&executor));
    assert!(child["cnf"]["jkt"].is_string());
    assert_ne!(child["cnf"]["jkt"], parent["cnf"]["jkt"]);
    // The delegate proves its key to delegate further; the planner's key
    // does not do.
    let wrong_key = exchange(
        &cluster,
        1,
        &executor,
        TOOL,
        &["--dpop-key-file", planner_key.to_str().unwrap()],
    );
    assert_eq!(wrong_key.status.code(), Some(4), "{}", stderr(&wrong_key));
    exchanged(exchange(
        &cluster,
        1,
        &executor,
        TOOL,
        &["--dpop-key-file", executor_key.to_str().unwrap()],
    ));
}

/// POST a form to `address` `path`: (status, JSON body).
fn post_form(address: &str, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let response = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
        .post(&format!("http://{address}{path}"))
        .send_form(form);
    let response = match response {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("POST {path}: {error}"),
    };
    (response.status(), response.into_json().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_exchanges_as_rfc_8693_says() {
    let http = format!("127.0.0.1:{}", free_port());
    let listen = http.clone();
    let cluster = TestCluster::start_with(1, FAST_RAFT, move |_| {
        format!("[issuance]\nhttp_listen = \"{listen}\"\naudit_ship_ms = 200\n")
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 1).await;
    set_policy(&cluster, "acme", POLICY);
    let plan = cluster.dir.path().join("plan.txt");
    std::fs::write(&plan, "plan").unwrap();
    let planner = planner_credential(&cluster, "t-1", &plan);

    // Discovery names the endpoint and the grant.
    let metadata: serde_json::Value =
        serde_json::from_str(&http_get(&http, "/.well-known/openid-configuration")).unwrap();
    assert_eq!(
        metadata["token_endpoint"],
        format!("http://{http}/exchange")
    );
    assert_eq!(
        metadata["grant_types_supported"],
        serde_json::json!(["urn:ietf:params:oauth:grant-type:token-exchange"])
    );

    const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
    const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
    let (status, reply) = post_form(
        &http,
        "/exchange",
        &[
            ("grant_type", GRANT),
            ("subject_token", &planner),
            ("subject_token_type", JWT),
            ("actor", EXECUTOR),
            ("scope", "payments:read"),
            ("expires_in", "120"),
        ],
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["issued_token_type"], JWT);
    assert_eq!(reply["token_type"], "Bearer");
    assert_eq!(reply["scope"], "payments:read");
    assert!(reply["expires_in"].as_u64().unwrap() <= 120, "{reply}");
    let delegated = payload(reply["access_token"].as_str().unwrap());
    assert_eq!(delegated["act"]["sub"], EXECUTOR);

    // RFC 6749 §5.2 errors: a wider scope is invalid_grant, a missing
    // parameter invalid_request, another grant type likewise.
    let (status, reply) = post_form(
        &http,
        "/exchange",
        &[
            ("grant_type", GRANT),
            ("subject_token", &planner),
            ("subject_token_type", JWT),
            ("actor", EXECUTOR),
            ("scope", "payments:admin"),
        ],
    );
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_grant")),
        "{reply}"
    );
    assert!(
        reply["error_description"]
            .as_str()
            .unwrap()
            .contains("may only narrow")
    );
    let (status, reply) = post_form(&http, "/exchange", &[("grant_type", GRANT)]);
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_request")),
        "{reply}"
    );
    let (status, reply) = post_form(&http, "/exchange", &[("grant_type", "password")]);
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_request")),
        "{reply}"
    );
    // A forged subject token gets nothing.
    let (status, reply) = post_form(
        &http,
        "/exchange",
        &[
            ("grant_type", GRANT),
            ("subject_token", "eyJhbGciOiJub25lIn0.e30."),
            ("subject_token_type", JWT),
            ("actor", EXECUTOR),
        ],
    );
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_grant")),
        "{reply}"
    );
}
