//! Bad input gets a precise error and changes nothing: malformed ids,
//! indices outside any lease, oversized requests, missing credentials,
//! duplicate request ids, joins from the wrong address or with spent tokens.

mod support;

use std::time::Duration;

use lapse_wire::cluster::{self as pb, revocation::Target};
use support::*;
use tonic::Code;

fn revoke(request_id: &str, target: Option<Target>) -> pb::RevokeRequest {
    pb::RevokeRequest {
        request_id: request_id.to_owned(),
        revocation: Some(pb::Revocation { target }),
    }
}

async fn revocation_epoch(cluster: &TestCluster) -> u64 {
    cluster.wait_converged().await[0].revocation_epoch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unauthorised_oversized_and_duplicate_requests() {
    // A small request limit, so an oversized request fits in one flight and
    // its refusal is read whole, never raced by the stream's reset.
    let cluster = TestCluster::start_with(3, FAST_RAFT, |_| {
        "[limits]\nmax_request_bytes = 32768\n".to_owned()
    });
    let leader = cluster.wait_for_leader().await;
    let follower = if leader == 1 { 2 } else { 1 };
    let block = lease(&cluster, leader, 10).await;
    let mut client = cluster.client(follower).await.unwrap();
    // Brokers register their signing keys in the background at start-up,
    // which moves the feed epoch: let them finish before measuring it.
    wait_for_active_keys(&cluster).await;
    let before = revocation_epoch(&cluster).await;

    // No token, and a wrong token.
    let refused = client
        .revoke(revoke("a", Some(Target::Index(block.start))))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let mut wrong = tonic::Request::new(revoke("a", Some(Target::Index(block.start))));
    wrong.metadata_mut().insert(
        "authorization",
        "Bearer not-the-token-at-all".parse().unwrap(),
    );
    assert_eq!(
        client.revoke(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Malformed and empty identifiers, each named in the error.
    let cases: Vec<(pb::RevokeRequest, &str)> = vec![
        (revoke("", Some(Target::Index(block.start))), "request_id"),
        (
            revoke("bad id!", Some(Target::Index(block.start))),
            "request_id",
        ),
        (revoke("b", None), "no target"),
        (
            revoke(
                "c",
                Some(Target::Tenant(pb::TenantTarget {
                    tenant: String::new(),
                    issued_before_ms: None,
                })),
            ),
            "tenant.tenant",
        ),
        (
            revoke(
                "d",
                Some(Target::Subject(pb::SubjectTarget {
                    tenant: "acme".into(),
                    subject: "http://not-spiffe/x".into(),
                    issued_before_ms: None,
                })),
            ),
            "subject.subject",
        ),
        (
            revoke("e", Some(Target::KeyId("key with spaces".into()))),
            "key_id",
        ),
        (
            revoke("f", Some(Target::SecretSha256(vec![1, 2, 3]))),
            "secret_sha256",
        ),
    ];
    for (request, field) in cases {
        let status = client.revoke(authorised(request)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }

    // An index outside every lease (brokers lease blocks of their own in the
    // background, so "just past ours" may be someone's).
    let outside = client
        .revoke(authorised(revoke("g", Some(Target::Index(1 << 60)))))
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::NotFound, "{outside:?}");
    assert_eq!(
        outside.metadata().get("x-lapse-refusal").unwrap(),
        "index-not-issued"
    );

    // An issued-before time in the future.
    let future = client
        .revoke(authorised(revoke(
            "h",
            Some(Target::Tenant(pb::TenantTarget {
                tenant: "acme".into(),
                issued_before_ms: Some(u64::MAX / 2),
            })),
        )))
        .await
        .unwrap_err();
    assert_eq!(future.code(), Code::InvalidArgument, "{future:?}");

    // Oversized: too many items, and too many bytes.
    let many = pb::RevokeManyRequest {
        request_id: "i".into(),
        revocations: (0..5000)
            .map(|i| pb::Revocation {
                target: Some(Target::Index(i)),
            })
            .collect(),
    };
    assert_eq!(
        client
            .revoke_many(authorised(many))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let huge = revoke("j", Some(Target::KeyId("k".repeat(40 << 10))));
    let status = client.revoke(authorised(huge)).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "oversized request: {status:?}"
    );

    assert_eq!(
        revocation_epoch(&cluster).await,
        before,
        "refused requests changed revocation state"
    );

    // A duplicate request id gets the same answer and is applied once.
    let first = client
        .revoke(authorised(revoke("dup", Some(Target::Index(block.start)))))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    let mut other = cluster.client(leader).await.unwrap();
    let second = other
        .revoke(authorised(revoke("dup", Some(Target::Index(block.start)))))
        .await
        .unwrap()
        .into_inner();
    assert!(second.duplicate);
    assert_eq!(
        (second.epoch, second.committed_at_ms),
        (first.epoch, first.committed_at_ms)
    );
    assert_eq!(revocation_epoch(&cluster).await, first.epoch);
    // The same id for a different revocation is refused, and not applied.
    let reused = client
        .revoke(authorised(revoke(
            "dup",
            Some(Target::Index(block.start + 1)),
        )))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::FailedPrecondition, "{reused:?}");
    let still_free = client
        .revoke(authorised(revoke(
            "fresh",
            Some(Target::Index(block.start + 1)),
        )))
        .await
        .unwrap()
        .into_inner();
    assert!(still_free.epoch > first.epoch);

    // The command line maps the same failures to exit codes.
    let unauthorised = lapse()
        .args(["revoke", "index", "1", "--token", "wrong-token-wrong-token"])
        .env("LAPSE_BROKER", cluster.address(follower))
        .output()
        .unwrap();
    assert_eq!(unauthorised.status.code(), Some(4));
    // Far beyond any lease: brokers lease blocks of their own after ours.
    let refused = cluster.cli(follower, &["revoke", "index", &(1u64 << 60).to_string()]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("never leased"));
    let malformed = cluster.cli(
        follower,
        &["revoke", "subject", "spiffe://", "--tenant", "acme"],
    );
    assert_eq!(malformed.status.code(), Some(3));
    let nobody = lapse()
        .args(["status", "--broker", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert_eq!(nobody.status.code(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_from_unknown_addresses_or_with_spent_tokens_are_refused() {
    let mut cluster = TestCluster::start(3, FAST_RAFT);
    cluster.wait_for_leader().await;
    let make_token = |cluster: &TestCluster, extra: &[&str]| {
        let mut args = vec!["join-token", "create", "--for-broker", "--json"];
        args.extend_from_slice(extra);
        let out = cluster.cli(1, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        value["token"].as_str().unwrap().to_owned()
    };
    let mut client = cluster.client(2).await.unwrap();

    // Nothing answers at the claimed address.
    let token = make_token(&cluster, &[]);
    let nowhere = client
        .join(pb::JoinRequest {
            token: token.clone(),
            node_id: 9,
            address: format!("127.0.0.1:{}", free_port()),
        })
        .await
        .unwrap_err();
    assert_eq!(nowhere.code(), Code::FailedPrecondition, "{nowhere:?}");

    // A node id that is taken.
    let taken = client
        .join(pb::JoinRequest {
            token: token.clone(),
            node_id: 3,
            address: format!("127.0.0.1:{}", free_port()),
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");

    // A token bound to another address: the broker exits with a clear error.
    let bound = make_token(&cluster, &["--address", "127.0.0.1:1"]);
    cluster.add_joiner(4);
    let via = cluster.address(1);
    let out = lapse()
        .args(["broker", "--config"])
        .arg(&cluster.nodes[&4].config)
        .args(["--join", &via, "--join-token", &bound])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bound to address 127.0.0.1:1"), "{stderr}");

    // The unused token works once...
    cluster.spawn(4, &["--join", &via, "--join-token", &token]);
    let statuses = cluster.wait_converged().await;
    assert_eq!(statuses.len(), 4);

    // ...and never again, for anyone.
    cluster.add_joiner(5);
    let out = lapse()
        .args(["broker", "--config"])
        .arg(&cluster.nodes[&5].config)
        .args(["--join", &via, "--join-token", &token])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already used"), "{stderr}");

    let status = cluster.status(1).await.unwrap();
    let members: Vec<u64> = status
        .voters
        .iter()
        .chain(&status.learners)
        .map(|m| m.node_id)
        .collect();
    assert_eq!(
        members,
        vec![1, 2, 3, 4],
        "refused joins changed membership"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}
