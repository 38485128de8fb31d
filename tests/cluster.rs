//! End-to-end tests of the replicated ledger on real `lapse broker`
//! processes and real sockets: crashes, elections, catching up, joining.

mod support;

use std::time::Duration;

use lapse_wire::cluster as pb;
use support::*;
use tonic::Code;

/// Every revocation in `acknowledged` is still there: revoking it again is
/// refused as already revoked, at the epoch first acknowledged.
async fn assert_all_present(cluster: &TestCluster, acknowledged: &[(u64, u64)]) {
    for (index, epoch) in acknowledged {
        let again = revoke_anywhere(
            cluster,
            revoke_index(&format!("check-{index}-{}", rand_suffix()), *index),
        )
        .await;
        let status = again.expect_err("an acknowledged revocation was lost");
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
        assert!(
            status.message().contains(&format!("epoch {epoch}")),
            "index {index}: expected epoch {epoch}, got {}",
            status.message()
        );
    }
}

fn assert_same_digest(statuses: &[pb::StatusResponse]) {
    let first = &statuses[0];
    for status in statuses {
        assert_eq!(status.applied_index, first.applied_index);
        assert_eq!(
            status.state_digest, first.state_digest,
            "node {} and node {} differ at index {}",
            status.node_id, first.node_id, first.applied_index
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_revocations_survive_kill_9_of_any_broker_and_a_whole_cluster_restart() {
    let mut cluster = TestCluster::start(3, FAST_RAFT);
    cluster.wait_for_leader().await;
    let block = lease(&cluster, 1, 1000).await;
    let mut acknowledged = Vec::new();
    let mut next = block.start;

    for victim in [1, 2, 3] {
        for _ in 0..10 {
            let reply = revoke_anywhere(&cluster, revoke_index(&format!("r-{next}"), next))
                .await
                .expect("revoke");
            acknowledged.push((next, reply.epoch));
            next += 1;
        }
        cluster.kill9(victim);
        // Writes keep working with one broker down.
        let reply = revoke_anywhere(&cluster, revoke_index(&format!("r-{next}"), next))
            .await
            .expect("revoke with a broker down");
        acknowledged.push((next, reply.epoch));
        next += 1;
        cluster.spawn(victim, &[]);
        cluster.wait_for_leader().await;
    }
    assert_all_present(&cluster, &acknowledged).await;

    // The whole cluster dies at once and comes back.
    for id in [1, 2, 3] {
        cluster.kill9(id);
    }
    for id in [1, 2, 3] {
        cluster.spawn(id, &[]);
    }
    cluster.wait_for_leader().await;
    assert_all_present(&cluster, &acknowledged).await;
    assert_same_digest(&cluster.wait_converged().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_a_restarted_follower_catches_up() {
    let mut cluster = TestCluster::start(3, FAST_RAFT);
    let leader = cluster.wait_for_leader().await;
    let block = lease(&cluster, leader, 100).await;
    let first = revoke_anywhere(&cluster, revoke_index("before", block.start))
        .await
        .unwrap();

    cluster.kill9(leader);
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    let status = cluster.status(new_leader).await.unwrap();
    assert!(status.term > 0);
    let mut acknowledged = vec![(block.start, first.epoch)];
    for n in 1..20 {
        let reply = revoke_anywhere(
            &cluster,
            revoke_index(&format!("after-{n}"), block.start + n),
        )
        .await
        .expect("revokes keep succeeding after the leader dies");
        acknowledged.push((block.start + n, reply.epoch));
    }

    // The old leader comes back as a follower and catches up.
    cluster.spawn(leader, &[]);
    let statuses = cluster.wait_converged().await;
    assert_eq!(statuses.len(), 3);
    assert_same_digest(&statuses);
    let back = cluster.status(leader).await.unwrap();
    assert_eq!(back.leader_id, Some(new_leader));
    assert_all_present(&cluster, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_broker_joins_catches_up_from_a_snapshot_and_is_promoted() {
    let tuning = format!("{FAST_RAFT}snapshot_every_entries = 20\nlogs_kept_after_snapshot = 0\n");
    let mut cluster = TestCluster::start(3, &tuning);
    cluster.wait_for_leader().await;
    let block = lease(&cluster, 1, 500).await;
    for n in 0..80 {
        revoke_anywhere(
            &cluster,
            revoke_index(&format!("early-{n}"), block.start + n),
        )
        .await
        .unwrap();
    }
    // Wait for the leader to snapshot and purge the log the joiner would need.
    let leader = cluster.wait_for_leader().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cluster.status(leader).await.unwrap().snapshot_index < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "leader never snapshotted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let token = cluster.cli(2, &["join-token", "create", "--for-broker", "--json"]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token: serde_json::Value = serde_json::from_slice(&token.stdout).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();

    cluster.add_joiner(4);
    let via = cluster.address(3);
    // The token from a file, not the command line (where `ps` shows it).
    let token_file = cluster.dir.path().join("join.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let token_file = token_file.to_str().unwrap();
    cluster.spawn(4, &["--join", &via, "--join-token-file", token_file]);

    let statuses = cluster.wait_converged().await;
    assert_eq!(statuses.len(), 4);
    assert_same_digest(&statuses);
    let joined = cluster.status(4).await.unwrap();
    assert_eq!(joined.role, "learner");
    assert!(
        joined.snapshot_index > 0,
        "the joiner should have caught up from a snapshot"
    );
    assert!(joined.learners.iter().any(|m| m.node_id == 4));

    let promoted = cluster.cli(1, &["cluster", "promote", "4", "--json"]);
    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    let membership: serde_json::Value = serde_json::from_slice(&promoted.stdout).unwrap();
    assert_eq!(membership["voters"], serde_json::json!([1, 2, 3, 4]));

    // The new voter takes part: writes still commit and it applies them.
    revoke_anywhere(&cluster, revoke_index("late", block.start + 400))
        .await
        .unwrap();
    let statuses = cluster.wait_converged().await;
    assert_same_digest(&statuses);
    assert_eq!(cluster.status(4).await.unwrap().role, "follower");

    // A restarted joiner does not join again: it already belongs.
    cluster.kill9(4);
    cluster.spawn(4, &["--join", &via, "--join-token-file", token_file]);
    assert_same_digest(&cluster.wait_converged().await);

    // Removing it leaves three voters that still commit.
    let removed = cluster.cli(2, &["cluster", "remove", "4", "--json"]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let membership: serde_json::Value = serde_json::from_slice(&removed.stdout).unwrap();
    assert_eq!(membership["voters"], serde_json::json!([1, 2, 3]));
    assert_eq!(membership["learners"], serde_json::json!([]));
    cluster.kill9(4);
    revoke_anywhere(&cluster, revoke_index("after-removal", block.start + 401))
        .await
        .unwrap();
    let unknown = cluster.cli(1, &["cluster", "remove", "9"]);
    assert_eq!(unknown.status.code(), Some(3));
}
