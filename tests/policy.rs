//! Setting a policy that would not do what its author meant is refused
//! before anything is proposed: a syntax error or a field Lapse never gives
//! Cedar comes back as INVALID_ARGUMENT with the line and column, an empty
//! policy must be said as deny-all, and a refusal leaves the ledger as it was.

mod support;

use lapse_wire::cluster as pb;
use support::*;
use tonic::Code;

const README_POLICY: &str = r#"permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900 };
"#;

fn set(request_id: &str, text: &str) -> tonic::Request<pb::SetPolicyRequest> {
    authorised(pb::SetPolicyRequest {
        request_id: request_id.to_owned(),
        tenant: "acme".to_owned(),
        text: text.to_owned(),
        expected_version: None,
    })
}

async fn version(cluster: &TestCluster) -> u64 {
    let mut client = cluster.client(1).await.unwrap();
    client
        .get_policy(authorised(pb::GetPolicyRequest {
            tenant: "acme".to_owned(),
            version: None,
        }))
        .await
        .unwrap()
        .into_inner()
        .version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policies_are_refused_with_line_and_column_and_change_nothing() {
    let cluster = TestCluster::start(1, FAST_RAFT);
    cluster.wait_for_leader().await;
    let mut client = cluster.client(1).await.unwrap();

    let syntax = "permit(principal, action, resource)\nwhen { context.ttl_seconds <= 900\n       && context.scopes.contains(\"a\") ;";
    let unknown_field = "permit(principal, action, resource)\nwhen { context.ttl <= 900 };";
    let wrong_type =
        "permit(principal, action, resource)\nwhen { context.ttl_seconds <= \"900\" };";
    let unknown_action = r#"permit(principal, action == Action::"revoke", resource);"#;
    let cases = [
        (syntax, "policy line 3, column 40: unexpected token `;`"),
        (
            unknown_field,
            "policy line 2, column 8: attribute `ttl` in context for Action::\"issue\" not found",
        ),
        (
            wrong_type,
            "policy line 2, column 31: unexpected type: expected Long but saw String",
        ),
        (
            unknown_action,
            "policy line 1, column 1: unable to find an applicable action",
        ),
        ("", "policy is empty"),
        ("// only a comment\n\n", "policy is empty"),
    ];
    for (text, message) in cases {
        // The same request id each time: a refused request is never proposed,
        // so it is never remembered either.
        let refused = client.set_policy(set("p-1", text)).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().starts_with(message),
            "{text:?}: {}",
            refused.message()
        );
        assert!(refused.message().chars().count() <= 1000);
    }
    let oversized = "// x\n".repeat(lapse_ledger::MAX_POLICY_BYTES / 5 + 1);
    let refused = client.set_policy(set("p-1", &oversized)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        refused
            .metadata()
            .get(lapse_broker::REFUSAL_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some("policy-too-large")
    );
    assert_eq!(version(&cluster).await, 0);

    // Deny-all said explicitly is a policy, and takes the refused requests' id.
    let denied = client
        .set_policy(set("p-1", "forbid(principal, action, resource);"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.version, 1);

    // Through the CLI: exit code 3, the plain message, nothing written.
    let file = cluster.dir.path().join("bad.cedar");
    std::fs::write(&file, unknown_field).unwrap();
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("policy line 2, column 8: attribute `ttl` in context"),
        "{stderr}"
    );
    assert_eq!(version(&cluster).await, 1);

    assert_eq!(set_policy(&cluster, "acme", README_POLICY)["version"], 2);
}
