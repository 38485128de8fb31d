//! A workload's first credential, asked for while the cluster is still
//! electing its first leader and registering signing keys: a join token is
//! consumed exactly once, by the issuance that succeeds. A refused or
//! unavailable issuance leaves the token usable, and a retry of the same
//! request (same request id, any broker) gets the first answer.

mod support;

use std::time::{Duration, Instant};

use lapse_wire::issuer::issue_request::Attestation;
use lapse_wire::issuer::issuer_client::IssuerClient;
use lapse_wire::issuer::{IssueRequest, IssueResponse};
use support::*;
use tonic::Code;

const WORKLOAD: &str = "spiffe://example.org/payments";
const POLICY: &str = r#"
permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900 };
"#;

/// Run a CLI command against `broker` until it stops answering
/// "unavailable" (exit 5: no leader yet, or the broker is still starting).
fn cli_when_available(cluster: &TestCluster, broker: u64, args: &[&str]) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cluster.cli(broker, args);
        if out.status.code() != Some(5) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "broker {broker} stayed unavailable for {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn issue_request(token: &str, ttl_seconds: u64, request_id: &str) -> IssueRequest {
    IssueRequest {
        attestation: Some(Attestation::JoinToken(token.to_owned())),
        audiences: vec!["billing".into()],
        scopes: vec!["payments:read".into()],
        ttl_seconds,
        dpop_jkt: String::new(),
        dpop_proof: String::new(),
        tenant: "acme".into(),
        request_id: request_id.to_owned(),
        ..Default::default()
    }
}

async fn issuer(cluster: &TestCluster, broker: u64) -> IssuerClient<tonic::transport::Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.address(broker)))
            .unwrap()
            .connect()
            .await
            .unwrap();
    IssuerClient::new(channel)
}

/// Issue through `broker` until the answer is not "unavailable" (no
/// committed signing key yet, or no leader to consume the token through).
async fn issue_when_available(
    cluster: &TestCluster,
    broker: u64,
    request: IssueRequest,
) -> Result<IssueResponse, tonic::Status> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut client = issuer(cluster, broker).await;
    loop {
        match client.issue(request.clone()).await {
            Err(status) if status.code() == Code::Unavailable => {
                assert!(
                    Instant::now() < deadline,
                    "issuance stayed unavailable: {status:?}\n{}",
                    cluster.logs()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other.map(|r| r.into_inner()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_is_spent_only_by_the_issuance_it_pays_for_even_during_start_up() {
    let cluster = TestCluster::start(3, FAST_RAFT);
    // No wait for a leader or for keys: everything below races start-up.
    let policy = cluster.dir.path().join("acme.cedar");
    std::fs::write(&policy, POLICY).unwrap();
    let set = cli_when_available(
        &cluster,
        1,
        &[
            "policy",
            "set",
            "--tenant",
            "acme",
            "--file",
            policy.to_str().unwrap(),
        ],
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let create = |cluster: &TestCluster| {
        let out = cli_when_available(
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
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["token"].as_str().unwrap().to_owned()
    };
    let token = create(&cluster);

    // Refused by policy (too long a lifetime), through another broker: the
    // token is not spent.
    let refused = issue_when_available(&cluster, 2, issue_request(&token, 3600, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Fixed and retried: granted, whatever the cluster was doing.
    let first = issue_when_available(&cluster, 2, issue_request(&token, 600, "first-try"))
        .await
        .expect("the fixed request is granted with the unspent token");
    assert!(first.status_index > 0 || !first.credential.is_empty());

    // The same request again, at another broker: the first answer (a
    // credential for the same workload), not "already used".
    let again = issue_when_available(&cluster, 3, issue_request(&token, 600, "first-try"))
        .await
        .expect("a retry of the same request is granted again");
    assert_eq!(again.tenant, first.tenant);

    // Anyone else with the token finds it spent, at any broker.
    for broker in [1, 2, 3] {
        let spent = issue_when_available(&cluster, broker, issue_request(&token, 600, ""))
            .await
            .unwrap_err();
        assert_eq!(spent.code(), Code::FailedPrecondition, "{spent:?}");
        assert!(spent.message().contains("already used"), "{spent:?}");
    }

    // The CLI, as the README uses it, ten times in a row on fresh tokens.
    for _ in 0..10 {
        let token = create(&cluster);
        let out = cli_when_available(
            &cluster,
            3,
            &[
                "issue",
                "--join-token",
                &token,
                "--audience",
                "billing",
                "--scope",
                "payments:read",
                "--ttl",
                "10m",
                "--json",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A guessed token is refused without spending anything.
    let guessed = issue_when_available(
        &cluster,
        1,
        issue_request("lapse-join-0000000000000000000000000000", 600, ""),
    )
    .await
    .unwrap_err();
    assert_eq!(guessed.code(), Code::NotFound, "{guessed:?}");
}
