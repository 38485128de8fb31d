//! End-to-end issuance on real broker processes: join tokens, Cedar policy,
//! signing, the published JWKS checked by a second JWT library, refresh
//! with DPoP, key rotation, revocation, audit, and issuing while cut off
//! from the leader.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::*;

const WORKLOAD: &str = "spiffe://example.org/payments";
const POLICY: &str = r#"
permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read", "payments:write"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900 };
"#;

struct Issuing {
    cluster: TestCluster,
    http: BTreeMap<u64, String>,
}

fn start(tuning: &str) -> Issuing {
    let http: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let ports = http.clone();
    let cluster = TestCluster::start_with(3, tuning, move |id| {
        format!(
            "[issuance]\nhttp_listen = \"{}\"\nlease_block = 6\naudit_ship_ms = 200\n",
            ports[&id]
        )
    });
    Issuing { cluster, http }
}

fn workload_token(cluster: &TestCluster) -> String {
    let token = cli_json(
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
    token["token"].as_str().unwrap().to_owned()
}

/// Verify with jwt-simple against the JWKS served over HTTP by `broker`.
fn verify_with_jwks(
    issuing: &Issuing,
    broker: u64,
    credential: &str,
) -> Result<serde_json::Value, String> {
    use jwt_simple::prelude::*;
    let jwks: serde_json::Value =
        serde_json::from_str(&http_get(&issuing.http[&broker], "/.well-known/jwks.json")).unwrap();
    let kid = lapse_credential::peek_key_id(credential).unwrap().unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let key = Ed25519PublicKey::from_bytes(&x).unwrap();
    let options = VerificationOptions {
        allowed_audiences: Some(HashSet::from_strings(&["billing"])),
        allowed_issuers: Some(HashSet::from_strings(&["lapse"])),
        ..Default::default()
    };
    key.verify_token::<serde_json::Value>(credential, Some(options))
        .map(|claims| claims.custom)
        .map_err(|e| e.to_string())
}

fn issue(cluster: &TestCluster, broker: u64, token: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "issue",
        "--join-token",
        token,
        "--audience",
        "billing",
        "--scope",
        "payments:read",
        "--json",
    ];
    args.extend_from_slice(extra);
    cluster.cli(broker, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_verify_refresh_rotate_revoke_and_audit() {
    let issuing = start(FAST_RAFT);
    let cluster = &issuing.cluster;
    cluster.wait_for_leader().await;
    wait_for_keys(cluster, 3).await;

    // No policy yet: the default denies, with a reason, and it is audited.
    let denied = issue(cluster, 2, &workload_token(cluster), &[]);
    assert_eq!(
        denied.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    assert!(String::from_utf8_lossy(&denied.stderr).contains("default denies"));

    let set = set_policy(cluster, "acme", POLICY);
    assert_eq!(set["version"], 1);
    std::fs::write(
        cluster.dir.path().join("bad.cedar"),
        "permit(principal, action",
    )
    .unwrap();
    let bad = cluster.cli(
        1,
        &[
            "policy",
            "set",
            "--tenant",
            "acme",
            "--file",
            cluster.dir.path().join("bad.cedar").to_str().unwrap(),
        ],
    );
    assert_eq!(bad.status.code(), Some(3));

    // Issue with a join token; a second JWT library verifies it against the JWKS.
    let token = workload_token(cluster);
    let out = issue(cluster, 2, &token, &["--ttl", "10m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let credential = issued["credential"].as_str().unwrap().to_owned();
    assert_eq!(issued["policy_version"], 1);
    let claims = verify_with_jwks(&issuing, 3, &credential).unwrap();
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(
        claims["status"]["status_list"]["idx"],
        issued["status_index"]
    );
    let metadata: serde_json::Value = serde_json::from_str(&http_get(
        &issuing.http[&1],
        "/.well-known/openid-configuration",
    ))
    .unwrap();
    assert_eq!(metadata["issuer"], "lapse");
    assert!(
        metadata["jwks_uri"]
            .as_str()
            .unwrap()
            .ends_with("/.well-known/jwks.json")
    );

    // Refused with precise reasons: a spent token, scope and TTL beyond policy.
    let spent = issue(cluster, 3, &token, &[]);
    assert_eq!(
        spent.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&spent.stderr)
    );
    assert!(String::from_utf8_lossy(&spent.stderr).contains("already used"));
    let beyond = issue(
        cluster,
        2,
        &workload_token(cluster),
        &["--scope", "payments:admin"],
    );
    assert_eq!(beyond.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&beyond.stderr).contains("policy version 1 does not permit"));
    let too_long = issue(cluster, 2, &workload_token(cluster), &["--ttl", "1h"]);
    assert_eq!(too_long.status.code(), Some(4));

    // Refresh gives a new credential in the same chain: the same status
    // index, and the chain's attestation time.
    let refreshed = cli_json(
        cluster,
        1,
        &["refresh", "--credential", &credential, "--json"],
    );
    let refreshed_credential = refreshed["credential"].as_str().unwrap().to_owned();
    assert_eq!(refreshed["status_index"], issued["status_index"]);
    verify_with_jwks(&issuing, 1, &refreshed_credential).unwrap();
    let (first, renewed) = (payload(&credential), payload(&refreshed_credential));
    assert_eq!(renewed["chain"]["idx"], issued["status_index"]);
    assert_eq!(first["chain"]["iat"], first["iat"]);
    assert_eq!(renewed["chain"]["iat"], first["iat"]);

    // A key-bound credential needs a DPoP proof from its key.
    let key_file = cluster.dir.path().join("dpop.key");
    let bound = cli_json(
        cluster,
        2,
        &[
            "issue",
            "--join-token",
            &workload_token(cluster),
            "--audience",
            "billing",
            "--dpop-key-file",
            key_file.to_str().unwrap(),
            "--json",
        ],
    );
    let bound_credential = bound["credential"].as_str().unwrap().to_owned();
    let no_proof = cluster.cli(2, &["refresh", "--credential", &bound_credential]);
    assert_eq!(no_proof.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&no_proof.stderr).contains("DPoP proof is required"));
    let other_key = cluster.dir.path().join("other.key");
    let wrong_key = cluster.cli(
        2,
        &[
            "refresh",
            "--credential",
            &bound_credential,
            "--dpop-key-file",
            other_key.to_str().unwrap(),
        ],
    );
    assert_eq!(wrong_key.status.code(), Some(4));
    let with_proof = cli_json(
        cluster,
        2,
        &[
            "refresh",
            "--credential",
            &bound_credential,
            "--dpop-key-file",
            key_file.to_str().unwrap(),
            "--json",
        ],
    );
    let rebound =
        verify_with_jwks(&issuing, 2, with_proof["credential"].as_str().unwrap()).unwrap();
    assert_eq!(
        rebound["cnf"]["jkt"],
        verify_with_jwks(&issuing, 2, &bound_credential).unwrap()["cnf"]["jkt"]
    );

    // Rotation: broker 2 signs with a new key; the old one stays published.
    let old_kid = lapse_credential::peek_key_id(&credential).unwrap().unwrap();
    let rotated = cli_json(cluster, 2, &["keys", "rotate", "--json"]);
    assert_eq!(rotated["retired_key_id"], old_kid.as_str());
    let after = cli_json(
        cluster,
        2,
        &["refresh", "--credential", &refreshed_credential, "--json"],
    );
    let new_kid = lapse_credential::peek_key_id(after["credential"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(rotated["key_id"], new_kid.as_str());
    verify_with_jwks(&issuing, 1, &credential).expect("the retired key is still published");

    // Revoking a credential stops its refresh; revoking a key drops it from the JWKS.
    let index = issued["status_index"].as_u64().unwrap().to_string();
    assert!(
        cluster
            .cli(1, &["revoke", "index", &index])
            .status
            .success()
    );
    let revoked = cluster.cli(3, &["refresh", "--credential", &credential]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut revoked = revoked;
    while revoked.status.success() && Instant::now() < deadline {
        revoked = cluster.cli(3, &["refresh", "--credential", &credential]);
    }
    assert_eq!(revoked.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&revoked.stderr).contains("revoked"));
    assert!(
        cluster
            .cli(1, &["revoke", "key", &old_kid])
            .status
            .success()
    );
    // Broker 1 serves the JWKS from its applied state: wait until it has
    // applied the key's revocation.
    let deadline = Instant::now() + Duration::from_secs(30);
    while verify_with_jwks(&issuing, 1, &credential).is_ok() {
        assert!(
            Instant::now() < deadline,
            "broker 1 still publishes the revoked key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        verify_with_jwks(&issuing, 1, &credential)
            .unwrap_err()
            .contains("not in the JWKS")
    );
    // Broker 2 signed the key-bound credential with the revoked key.
    assert_eq!(
        lapse_credential::peek_key_id(&bound_credential)
            .unwrap()
            .unwrap(),
        old_kid
    );
    let by_revoked_key = cluster.cli(
        1,
        &[
            "refresh",
            "--credential",
            &bound_credential,
            "--dpop-key-file",
            key_file.to_str().unwrap(),
        ],
    );
    assert_eq!(by_revoked_key.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&by_revoked_key.stderr).contains("no published key"));

    // The audit log holds grants and refusals with policy versions, shipped to the ledger.
    // Records reach the ledger in batches: wait for the ones checked below.
    let deadline = Instant::now() + Duration::from_secs(30);
    let audit = loop {
        let audit = cli_json(cluster, 1, &["audit", "--tenant", "acme", "--json"]);
        let records = audit["records"].as_array().unwrap();
        let shipped = records
            .iter()
            .any(|r| r["allowed"] == true && r["index"] == issued["status_index"])
            && records.iter().any(|r| {
                r["allowed"] == false
                    && r["reason"]
                        .as_str()
                        .unwrap_or("")
                        .contains("does not permit")
            })
            && records
                .iter()
                .any(|r| r["allowed"] == false && r["policy_version"] == 0)
            && records.iter().any(|r| r["shipped"] == true);
        if shipped {
            break audit;
        }
        assert!(
            Instant::now() < deadline,
            "audit records never shipped: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let records = audit["records"].as_array().unwrap();
    assert!(records.iter().any(|r| r["allowed"] == true
        && r["index"] == issued["status_index"]
        && r["policy_version"] == 1));
    assert!(
        records
            .iter()
            .any(|r| r["allowed"] == false && r["policy_version"] == 0)
    );
    assert!(records.iter().any(
        |r| r["allowed"] == false && r["reason"].as_str().unwrap().contains("does not permit")
    ));
    assert!(records.iter().any(|r| r["shipped"] == true));
    // The index's chain: one issue on a join token, and the refreshes that
    // continued it (each on its own line, whichever broker made it).
    let by_index = cli_json(cluster, 1, &["audit", "--index", &index, "--json"]);
    let chain = by_index["records"].as_array().unwrap();
    let issues = chain
        .iter()
        .filter(|r| r["attestation"] == "join-token")
        .count();
    assert_eq!(issues, 1, "{by_index}");
    assert!(
        chain.len() >= 2
            && chain.iter().all(|r| r["attestation"] == "join-token"
                || r["attestation"] == format!("refresh:{index}")),
        "{by_index}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_off_from_the_leader_keeps_refreshing_its_chains_and_never_reuses_an_index() {
    let mut issuing = start(FAST_RAFT);
    issuing.cluster.wait_for_leader().await;
    wait_for_keys(&issuing.cluster, 3).await;
    set_policy(&issuing.cluster, "acme", POLICY);
    let first = issue(&issuing.cluster, 3, &workload_token(&issuing.cluster), &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let mut credential = first["credential"].as_str().unwrap().to_owned();
    let chain_index = first["status_index"].as_u64().unwrap();
    let mut indices = BTreeSet::from([chain_index]);

    // Broker 3 alone: no leader, yet refresh keeps renewing the chain from
    // its applied state (a refresh keeps the chain's index: no lease, no
    // Raft round trip).
    issuing.cluster.kill9(1);
    issuing.cluster.kill9(2);
    for _ in 0..5 {
        let out = issuing.cluster.cli(
            3,
            &[
                "refresh",
                "--credential",
                &credential,
                "--json",
                "--timeout",
                "20s",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply["status_index"], chain_index);
        credential = reply["credential"].as_str().unwrap().to_owned();
    }

    // Restarted alone it has no committed key, so it signs nothing.
    issuing.cluster.kill9(3);
    issuing.cluster.spawn(3, &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let unsigned = issuing.cluster.cli(
        3,
        &["refresh", "--credential", &credential, "--timeout", "20s"],
    );
    assert!(!unsigned.status.success());

    // With the cluster back, issuing resumes from new blocks: no index repeats.
    issuing.cluster.spawn(1, &[]);
    issuing.cluster.spawn(2, &[]);
    issuing.cluster.wait_for_leader().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut more = 0;
    while more < 8 {
        let out = issue(&issuing.cluster, 3, &workload_token(&issuing.cluster), &[]);
        if out.status.success() {
            let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(
                indices.insert(reply["status_index"].as_u64().unwrap()),
                "index reused after restart"
            );
            more += 1;
        } else {
            assert!(
                Instant::now() < deadline,
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let _ = &mut issuing;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_issuer_jwts_attest_workloads_and_bad_ones_are_refused_and_audited() {
    use lapse_credential::{
        Claims, KeyId, SigningKeyPair, StatusClaim, StatusListRef, TenantId, WorkloadId,
    };
    let files = tempfile::tempdir().unwrap();
    let ci = SigningKeyPair::from_seed(KeyId::new("ci-1").unwrap(), [9; 32]);
    let jwks = serde_json::json!({"keys": [serde_json::to_value(ci.public_jwk()).unwrap()]});
    let jwks_file = files.path().join("ci-jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let http: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let ports = http.clone();
    let jwks_path = jwks_file.display().to_string();
    let cluster = TestCluster::start_with(3, FAST_RAFT, move |id| {
        format!(
            "[issuance]\nhttp_listen = \"{}\"\n[[issuance.external_issuers]]\nissuer = \"https://ci.example\"\naudience = \"lapse\"\njwks_file = \"{jwks_path}\"\ntenant = \"acme\"\nworkload_prefix = \"\"\nunknown_kid_reread_seconds = 1\n",
            ports[&id]
        )
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 3).await;
    set_policy(&cluster, "acme", POLICY);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ci_token = |signer: &SigningKeyPair, iss: &str, exp: u64| {
        let token = signer
            .sign(&Claims {
                iss: iss.into(),
                sub: WorkloadId::new(WORKLOAD).unwrap(),
                aud: vec!["lapse".into()],
                iat: now,
                nbf: now,
                exp,
                jti: "ci".into(),
                tenant: TenantId::new("ci").unwrap(),
                scopes: vec![],
                status: StatusClaim {
                    status_list: StatusListRef {
                        idx: 0,
                        uri: String::new(),
                    },
                },
                cnf: None,
                chain: None,
                agent: Default::default(),
            })
            .unwrap();
        let path = files.path().join(format!("token-{}", rand_suffix()));
        std::fs::write(&path, token).unwrap();
        path.display().to_string()
    };
    let issue_external = |path: &str, extra: &[&str]| {
        let mut args = vec![
            "issue",
            "--external-jwt-file",
            path,
            "--audience",
            "billing",
            "--scope",
            "payments:read",
            "--json",
        ];
        args.extend_from_slice(extra);
        cluster.cli(2, &args)
    };

    let good = issue_external(&ci_token(&ci, "https://ci.example", now + 300), &[]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let issued: serde_json::Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!(issued["workload"], WORKLOAD);
    assert_eq!(issued["tenant"], "acme");

    let cases = [
        (
            ci_token(&ci, "https://ci.example", now - 120),
            vec![],
            "expired",
        ),
        (
            ci_token(&ci, "https://elsewhere.example", now + 300),
            vec![],
            "not configured",
        ),
        (
            ci_token(
                &SigningKeyPair::from_seed(KeyId::new("ci-1").unwrap(), [10; 32]),
                "https://ci.example",
                now + 300,
            ),
            vec!["--tenant", "acme"],
            "signature",
        ),
        (
            ci_token(&ci, "https://ci.example", now + 300),
            vec!["--tenant", "other"],
            "tenant mismatch",
        ),
    ];
    for (path, extra, reason) in &cases {
        let out = issue_external(path, extra);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{reason}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(reason),
            "{reason}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let audit = cli_json(&cluster, 2, &["audit", "--json"]);
    let refused: Vec<String> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["allowed"] == false)
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect();
    for (_, _, reason) in &cases {
        assert!(
            refused.iter().any(|r| r.contains(reason)),
            "no audited refusal mentioning {reason}: {refused:?}"
        );
    }
    // A refusal before attestation is recorded under the tenant the
    // request named, so that tenant's audit shows the attempt.
    assert!(
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["allowed"] == false
                && r["tenant"] == "acme"
                && r["reason"].as_str().unwrap().contains("signature")),
        "{audit:#}"
    );

    // The issuer rotates to ci-2 and withdraws ci-1: the first token naming
    // ci-2 makes the broker read the JWKS again (at most once a second
    // here), and from then on ci-1 is refused.
    let rotated = SigningKeyPair::from_seed(KeyId::new("ci-2").unwrap(), [11; 32]);
    let jwks = serde_json::json!({"keys": [serde_json::to_value(rotated.public_jwk()).unwrap()]});
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = issue_external(&ci_token(&rotated, "https://ci.example", now + 300), &[]);
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    let withdrawn = issue_external(&ci_token(&ci, "https://ci.example", now + 300), &[]);
    assert_eq!(withdrawn.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&withdrawn.stderr).contains("ci-1"));
    let _ = http;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_dpop_proofs_and_expired_join_tokens_are_refused_and_audited() {
    use lapse_credential::{KeyId, SigningKeyPair, make_proof, make_proof_with_nonce};
    use lapse_wire::issuer::issuer_client::IssuerClient;
    use lapse_wire::issuer::{IssueRequest, RefreshRequest, issue_request::Attestation};

    let mut issuing = start(FAST_RAFT);
    let cluster = &issuing.cluster;
    cluster.wait_for_leader().await;
    wait_for_keys(cluster, 3).await;
    set_policy(cluster, "acme", POLICY);

    // An expired join token.
    let short = cli_json(
        cluster,
        1,
        &[
            "join-token",
            "create",
            "--tenant",
            "acme",
            "--workload",
            WORKLOAD,
            "--ttl",
            "1s",
            "--json",
        ],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expired = issue(cluster, 2, short["token"].as_str().unwrap(), &[]);
    assert_eq!(
        expired.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&expired.stderr)
    );
    assert!(String::from_utf8_lossy(&expired.stderr).contains("expired"));

    // A key-bound credential, then the same DPoP proof twice.
    let holder = SigningKeyPair::from_seed(KeyId::new("holder").unwrap(), [4; 32]);
    let connect = |broker: u64| {
        let address = cluster.address(broker);
        async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            IssuerClient::new(channel)
        }
    };
    let mut issuer = connect(2).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let proof = |key: &SigningKeyPair, uri: &str, token: Option<&str>, jti: &str, nonce: &str| {
        make_proof_with_nonce(key, "POST", uri, token, now, jti, Some(nonce)).unwrap()
    };
    // A broker takes proofs only with a nonce it handed out: the first
    // answer (to a proof without one) carries it.
    let nonce_of = |status: &tonic::Status| -> String {
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("use_dpop_nonce"), "{status:?}");
        status
            .metadata()
            .get("dpop-nonce")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    // Binding a credential to a key needs a proof that the caller holds
    // it: none, or one by another key, is refused and spends no token; the
    // right one works once.
    let token = workload_token(cluster);
    let bind = |proof: String| IssueRequest {
        attestation: Some(Attestation::JoinToken(token.clone())),
        audiences: vec!["billing".into()],
        scopes: vec![],
        ttl_seconds: 300,
        dpop_jkt: holder.public_jwk().thumbprint(),
        dpop_proof: proof,
        tenant: "acme".into(),
        request_id: String::new(),
        ..Default::default()
    };
    let asked = issuer
        .issue(bind(
            make_proof(&holder, "POST", "lapse/issue", None, now, "h0").unwrap(),
        ))
        .await
        .unwrap_err();
    let nonce = nonce_of(&asked);
    let stranger = SigningKeyPair::from_seed(KeyId::new("stranger").unwrap(), [5; 32]);
    for (proof, words) in [
        (String::new(), "needs a DPoP proof"),
        (
            proof(&stranger, "lapse/issue", None, "s1", &nonce),
            "another key",
        ),
        (
            proof(&holder, "lapse/refresh", None, "h0", &nonce),
            "DPoP proof",
        ),
    ] {
        let refused = issuer.issue(bind(proof)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        assert!(refused.message().contains(words), "{refused:?}");
    }
    let right = proof(&holder, "lapse/issue", None, "h1", &nonce);
    let bound = issuer
        .issue(bind(right.clone()))
        .await
        .unwrap()
        .into_inner();
    let replayed = issuer
        .issue(bind(right))
        .await
        .expect_err("a replayed issuance proof is refused");
    assert!(
        replayed
            .message()
            .contains("DPoP proof \"h1\" was already used"),
        "{replayed:?}"
    );
    let refresh = |dpop_proof: String| RefreshRequest {
        credential: bound.credential.clone(),
        dpop_proof,
        ttl_seconds: 300,
        audiences: vec![],
        scopes: vec![],
    };
    let once = proof(
        &holder,
        "lapse/refresh",
        Some(&bound.credential),
        "once",
        &nonce,
    );
    issuer
        .refresh(refresh(once.clone()))
        .await
        .expect("the first use of a proof is accepted");
    let replayed = issuer.refresh(refresh(once.clone())).await.unwrap_err();
    assert_eq!(replayed.code(), tonic::Code::Unauthenticated);
    assert!(
        replayed.message().contains("already used"),
        "{}",
        replayed.message()
    );
    // Played to another broker, the proof is refused: its nonce is not
    // that broker's (which offers its own).
    let mut other = connect(3).await;
    let elsewhere = other.refresh(refresh(once.clone())).await.unwrap_err();
    let their_nonce = nonce_of(&elsewhere);
    assert_ne!(their_nonce, nonce);
    // A proof for another URI is refused too.
    let wrong = issuer
        .refresh(refresh(proof(
            &holder,
            "https://elsewhere/refresh",
            Some(&bound.credential),
            "twice",
            &nonce,
        )))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    let unused = proof(
        &holder,
        "lapse/refresh",
        Some(&bound.credential),
        "late",
        &nonce,
    );

    let audit = cli_json(cluster, 2, &["audit", "--json"]);
    let reasons: Vec<String> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["allowed"] == false)
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect();
    for expected in ["expired", "already used", "DPoP proof", "use_dpop_nonce"] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no audited refusal with {expected:?}: {reasons:?}"
        );
    }

    // After a restart, the broker has forgotten the proofs it saw, but no
    // proof made before carries a nonce it accepts.
    issuing.cluster.kill9(2);
    issuing.cluster.spawn(2, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let restarted = loop {
        let answer = connect_retrying(&issuing.cluster, 2).await;
        if let Some(mut issuer) = answer {
            match issuer.refresh(refresh(unused.clone())).await {
                Err(status) if status.code() == tonic::Code::Unauthenticated => break status,
                other => assert!(Instant::now() < deadline, "{other:?}"),
            }
        }
        assert!(Instant::now() < deadline, "broker 2 did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(nonce_of(&restarted), nonce);
}

/// The attacks on refresh: a leaked credential revoked by its hash, a
/// descendant of a revoked credential, a refresh that widens what it was
/// given, and a chain beyond its age. Each fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_never_outlives_a_revocation_never_widens_and_ends_with_its_chain() {
    let http: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let ports = http.clone();
    let cluster = TestCluster::start_with(3, FAST_RAFT, move |id| {
        format!(
            "[issuance]\nhttp_listen = \"{}\"\nlease_block = 6\nmax_chain_age_seconds = 600\n",
            ports[&id]
        )
    });
    let issuing = Issuing { cluster, http };
    let cluster = &issuing.cluster;
    cluster.wait_for_leader().await;
    wait_for_keys(cluster, 3).await;
    set_policy(cluster, "acme", POLICY);
    let brokers: Vec<String> = (1..=3).map(|id| cluster.address(id)).collect();
    let edge = edge::VerifierProcess::start(cluster.dir.path(), "edge", "eu", 1, &brokers, &[]);
    let verify = |token: &str| -> u16 {
        let body = serde_json::json!({ "token": token }).to_string();
        edge::http_request(&edge.http, "POST", "/v1/verify", &body)
            .expect("the verifier answers")
            .0
    };
    let fresh = |ttl: &str| -> String {
        let out = issue(
            cluster,
            2,
            &workload_token(cluster),
            &["--ttl", ttl, "--scope", "payments:read"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        issued["credential"].as_str().unwrap().to_owned()
    };
    let refresh = |broker: u64, credential: &str, extra: &[&str]| {
        let mut args = vec!["refresh", "--credential", credential, "--json"];
        args.extend_from_slice(extra);
        cluster.cli(broker, &args)
    };
    let refused = |out: &std::process::Output, words: &str| {
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{text}");
        assert!(text.contains(words), "{words:?} not in: {text}");
    };

    // Widening: a scope or audience the credential does not hold.
    let original = fresh("15m");
    refused(
        &refresh(1, &original, &["--scope", "payments:write"]),
        "may only narrow: scope \"payments:write\"",
    );
    refused(
        &refresh(1, &original, &["--audience", "ledger"]),
        "may only narrow: audience \"ledger\"",
    );

    // A chain's age caps what a refresh may live: 600 s from the
    // attestation, however long the refresh asks for.
    let child = refresh(3, &original, &["--ttl", "15m"]);
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
    let child: serde_json::Value = serde_json::from_slice(&child.stdout).unwrap();
    let child_token = child["credential"].as_str().unwrap().to_owned();
    verify_with_jwks(&issuing, 3, &child_token).unwrap();
    let child_claims = payload(&child_token);
    let root_iat = payload(&original)["iat"].as_u64().unwrap();
    assert_eq!(child_claims["chain"]["iat"], root_iat);
    assert!(
        child_claims["exp"].as_u64().unwrap() <= root_iat + 600,
        "{child_claims}"
    );
    let grandchild = refresh(1, &child_token, &[]);
    assert!(grandchild.status.success());
    let grandchild: serde_json::Value = serde_json::from_slice(&grandchild.stdout).unwrap();
    let grandchild_token = grandchild["credential"].as_str().unwrap().to_owned();

    // Revoking the original revokes every credential refreshed from it, at
    // the verifier, which holds no more than the revoked index.
    eventually(30, || edge.log_tail(), || verify(&grandchild_token) == 200).await;
    let index = child["status_index"].as_u64().unwrap().to_string();
    let out = cluster.cli(1, &["revoke", "index", &index, "--wait", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for token in [&original, &child_token, &grandchild_token] {
        assert_eq!(verify(token), 403);
    }
    refused(&refresh(2, &grandchild_token, &[]), "revoked");

    // A key-bound credential at the edge: refused as a bearer token (a
    // copy from a log), accepted with its holder's DPoP proof for the
    // request, refused when that proof is replayed.
    let key_file = cluster.dir.path().join("holder.key");
    let bound = cli_json(
        cluster,
        2,
        &[
            "issue",
            "--join-token",
            &workload_token(cluster),
            "--audience",
            "billing",
            "--dpop-key-file",
            key_file.to_str().unwrap(),
            "--json",
        ],
    );
    let bound = bound["credential"].as_str().unwrap().to_owned();
    let seed: [u8; 32] = hex::decode(std::fs::read_to_string(&key_file).unwrap().trim())
        .unwrap()
        .try_into()
        .unwrap();
    let holder = lapse_credential::SigningKeyPair::from_seed(
        lapse_credential::KeyId::new("holder").unwrap(),
        seed,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let uri = "https://api.example/payments";
    let proof =
        lapse_credential::make_proof(&holder, "GET", uri, Some(&bound), now, "edge-1").unwrap();
    let ask = |with_proof: bool| {
        let body = serde_json::json!({
            "token": bound,
            "dpop": {"method": "GET", "uri": uri},
        });
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let mut request = agent
            .post(&format!("http://{}/v1/verify", edge.http))
            .set("Content-Type", "application/json");
        if with_proof {
            request = request.set("DPoP", &proof);
        }
        match request.send_string(&body.to_string()) {
            Ok(response) | Err(ureq::Error::Status(_, response)) => (
                response.status(),
                response.into_string().unwrap_or_default(),
            ),
            Err(e) => panic!("{e}"),
        }
    };
    eventually(30, || edge.log_tail(), || verify(&original) == 403).await;
    let (code, body) = ask(false);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("proof_of_possession"), "{body}");
    let (code, body) = ask(true);
    assert_eq!(code, 200, "{body}");
    let (code, body) = ask(true);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("already used"), "{body}");

    // A leaked credential revoked by its hash neither verifies nor
    // refreshes, on any broker.
    let leaked = fresh("10m");
    let file = cluster.dir.path().join("leaked.jwt");
    std::fs::write(&file, format!("{leaked}\n")).unwrap();
    let out = lapse()
        .args([
            "revoke",
            "secret",
            "--stdin",
            "--broker",
            &cluster.address(1),
        ])
        .env("LAPSE_TOKEN", ADMIN_TOKEN)
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(30, || edge.log_tail(), || verify(&leaked) == 403).await;
    for broker in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = refresh(broker, &leaked, &[]);
        // Each broker refuses once it has applied the revocation.
        while out.status.success() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            out = refresh(broker, &leaked, &[]);
        }
        refused(&out, "revoked");
    }
}

/// Wait until `check` holds, at most `seconds`; fail with `what` if not.
async fn eventually(seconds: u64, what: impl Fn() -> String, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "not within {seconds} s:\n{}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A credential's claims, read without checking it.
fn payload(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// An issuer client for `broker`, or `None` while it does not answer.
async fn connect_retrying(
    cluster: &TestCluster,
    broker: u64,
) -> Option<lapse_wire::issuer::issuer_client::IssuerClient<tonic::transport::Channel>> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.address(broker)))
            .ok()?
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .await
            .ok()?;
    Some(lapse_wire::issuer::issuer_client::IssuerClient::new(
        channel,
    ))
}
