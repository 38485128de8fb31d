//! Who may do what, on real processes: a TLS cluster, operators with
//! certificates bound to each role, and every control-plane call tried by
//! each of them through the `lapse` command line. Each call is allowed or
//! refused as the default access policy says; a tenant admin of acme
//! reaches nothing of beta's; every write, allowed or refused, leaves
//! exactly one control-plane audit event; a tenant auditor sees only its
//! tenant's events; and a call allowed only by one broker's own
//! configuration is refused again by the leader.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use lapse_pki::Role;
use lapse_wire::cluster::{self as pb, cluster_client::ClusterClient};
use serde_json::Value;
use support::*;

const DAY: Duration = Duration::from_secs(86_400);
const POLICY: &str = r#"
permit(principal, action == Action::"issue", resource)
when { ["payments:read"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900 };
"#;

struct Operators {
    certs: PathBuf,
    files: BTreeMap<String, (PathBuf, PathBuf)>,
}

impl Operators {
    fn new(cluster: &TestCluster, names: &[&str]) -> Self {
        let certs = cluster.certs().to_owned();
        let files = names
            .iter()
            .map(|name| {
                let pair = issue_cert(
                    &certs,
                    Role::Operator((*name).into()),
                    SystemTime::now(),
                    DAY,
                );
                ((*name).to_owned(), pair)
            })
            .collect();
        Self { certs, files }
    }

    /// A gRPC channel to `broker` with operator `name`'s certificate.
    async fn channel(&self, name: &str, broker: &str) -> tonic::transport::Channel {
        let (cert, key) = &self.files[name];
        let files = lapse_pki::TlsFiles {
            ca: self.certs.join("ca.pem"),
            cert: Some(cert.clone()),
            key: Some(key.clone()),
        };
        let tls = lapse_pki::Tls::open(files, SystemTime::now()).unwrap();
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{broker}")).unwrap();
        lapse_pki::TlsConnector::new(tls, lapse_pki::Expect::AnyBroker)
            .connect(endpoint)
            .await
            .unwrap()
    }

    /// Run `lapse` as operator `name` against `broker`.
    fn run(&self, name: &str, broker: &str, args: &[&str]) -> Output {
        let (cert, key) = &self.files[name];
        lapse()
            .env_remove("LAPSE_INSECURE_PLAINTEXT")
            .env_remove("LAPSE_TOKEN")
            .env("LAPSE_CA", self.certs.join("ca.pem"))
            .env("LAPSE_CERT", cert)
            .env("LAPSE_KEY", key)
            .env("LAPSE_BROKER", broker)
            .current_dir(self.certs.parent().unwrap())
            .args(args)
            .output()
            .expect("run lapse")
    }
}

fn said(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", said(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Issue a credential for `tenant`'s workload; its status index.
fn issue(cluster: &TestCluster, tenant: &str) -> u64 {
    let workload = format!("spiffe://{tenant}.example/app");
    let token = cli_json(
        cluster,
        1,
        &[
            "join-token",
            "create",
            "--tenant",
            tenant,
            "--workload",
            &workload,
            "--json",
        ],
    );
    let issued = cli_json(
        cluster,
        1,
        &[
            "issue",
            "--join-token",
            token["token"].as_str().unwrap(),
            "--audience",
            "billing",
            "--scope",
            "payments:read",
            "--json",
        ],
    );
    issued["status_index"].as_u64().unwrap()
}

/// The control-plane events as the cluster admin sees them.
fn events(cluster: &TestCluster) -> Vec<Value> {
    let out = cluster.cli(1, &["audit", "--control", "--limit", "10000", "--json"]);
    json(&out)["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_what_it_names_every_write_is_audited_and_the_leader_decides_again() {
    let http: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let cluster = TestCluster::start_tls_with(3, FAST_RAFT, |id| {
        format!(
            "[issuance]\nhttp_listen = \"{}\"\nlease_block = 20\n",
            http[id as usize - 1]
        )
    });
    let leader = cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 3).await;
    set_policy(&cluster, "acme", POLICY);
    set_policy(&cluster, "beta", POLICY);
    let broker = cluster.address(1);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let rogue = format!("only-on-broker-{follower}");
    let ops = Operators::new(
        &cluster,
        &[
            "ca", "ta", "rv", "au", "all", "vf", "nobody", "opener", &rogue,
        ],
    );

    // The cluster admin (a bootstrap admin in every broker's configuration)
    // binds the roles.
    for (principal, role, tenant) in [
        ("operator:ca", "cluster-admin", None),
        ("operator:opener", "auditor", Some("zeta")),
        ("operator:ta", "tenant-admin", Some("acme")),
        ("operator:rv", "revoker", Some("acme")),
        ("operator:au", "auditor", Some("acme")),
        ("operator:all", "auditor", None),
        ("operator:vf", "verifier", None),
    ] {
        let mut args = vec!["role", "bind", principal, role, "--json"];
        if let Some(tenant) = tenant {
            args.extend(["--tenant", tenant]);
        }
        let out = cluster.cli(1, &args);
        assert!(out.status.success(), "{}", said(&out));
    }
    let roles = json(&cluster.cli(1, &["role", "list", "--json"]));
    assert_eq!(roles["version"], 7, "{roles}");

    // One credential of each tenant, whose issuance records the ledger
    // holds (brokers ship them within seconds).
    let acme_index = issue(&cluster, "acme");
    let beta_index = issue(&cluster, "beta");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shipped = json(&cluster.cli(1, &["audit", "--json"]))["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["shipped"] == true && r["allowed"] == true)
            .count();
        if shipped >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "issuance records were not shipped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let policy_file = cluster.certs().parent().unwrap().join("p.cedar");
    std::fs::write(&policy_file, POLICY).unwrap();
    let policy_file = policy_file.to_str().unwrap().to_owned();
    // The cluster admin sets the access policy in force again (its version
    // moves; what it allows does not, so the rest of the matrix holds).
    let in_force = json(&cluster.cli(1, &["access-policy", "show", "--json"]));
    let access_file = cluster.certs().parent().unwrap().join("access.cedar");
    std::fs::write(&access_file, in_force["text"].as_str().unwrap()).unwrap();
    let access_file = access_file.to_str().unwrap().to_owned();
    let acme_idx = acme_index.to_string();
    let beta_idx = beta_index.to_string();
    // A grant of a harmless role, for the approve and close calls.
    let opened = json(&ops.run(
        "opener",
        &broker,
        &[
            "break-glass",
            "open",
            "--role",
            "auditor",
            "--tenant",
            "zeta",
            "--for",
            "10m",
            "--why",
            "matrix",
            "--json",
        ],
    ));
    let grant = opened["id"].as_u64().unwrap().to_string();

    // Each call: its name, whether it writes, its arguments, and who may
    // make it under the default policy.
    type Call<'a> = (&'a str, bool, Vec<&'a str>, &'a [&'a str]);
    let calls: Vec<Call> = vec![
        (
            "revoke acme's index",
            true,
            vec!["revoke", "index", &acme_idx, "--as-tenant", "acme"],
            &["ca", "ta", "rv"],
        ),
        (
            "revoke beta's index as acme",
            true,
            vec!["revoke", "index", &beta_idx, "--as-tenant", "acme"],
            &[],
        ),
        (
            "revoke beta's index as beta",
            true,
            vec!["revoke", "index", &beta_idx, "--as-tenant", "beta"],
            &["ca"],
        ),
        (
            "revoke a beta subject",
            true,
            vec![
                "revoke",
                "subject",
                "spiffe://beta.example/app",
                "--tenant",
                "beta",
            ],
            &["ca"],
        ),
        (
            "set acme's policy",
            true,
            vec!["policy", "set", "--tenant", "acme", "--file", &policy_file],
            &["ca", "ta"],
        ),
        (
            "set beta's policy",
            true,
            vec!["policy", "set", "--tenant", "beta", "--file", &policy_file],
            &["ca"],
        ),
        (
            "acme join token",
            true,
            vec![
                "join-token",
                "create",
                "--tenant",
                "acme",
                "--workload",
                "spiffe://acme.example/x",
            ],
            &["ca", "ta"],
        ),
        (
            "beta join token",
            true,
            vec![
                "join-token",
                "create",
                "--tenant",
                "beta",
                "--workload",
                "spiffe://beta.example/x",
            ],
            &["ca"],
        ),
        (
            "lease",
            true,
            vec!["lease", "--broker-id", "1", "--count", "1"],
            &["ca"],
        ),
        (
            "bind a role",
            true,
            vec!["role", "bind", "operator:x", "cluster-admin"],
            &["ca"],
        ),
        (
            "promote a node",
            true,
            vec!["cluster", "promote", "9"],
            &["ca"],
        ),
        (
            "unbind a role",
            true,
            vec!["role", "unbind", "operator:x", "cluster-admin"],
            &["ca"],
        ),
        (
            "set the access policy",
            true,
            vec!["access-policy", "set", &access_file],
            &["ca"],
        ),
        ("rotate a key", true, vec!["keys", "rotate"], &["ca"]),
        (
            "remove a node",
            true,
            vec!["cluster", "remove", "9"],
            &["ca"],
        ),
        (
            "add a learner",
            true,
            vec!["cluster", "add-learner", "9", "127.0.0.1:9"],
            &["ca"],
        ),
        (
            "open a break-glass grant",
            true,
            vec![
                "break-glass",
                "open",
                "--role",
                "auditor",
                "--tenant",
                "zeta",
                "--for",
                "10m",
                "--why",
                "matrix",
            ],
            &["ca", "ta", "rv", "au", "all", "vf"],
        ),
        (
            "approve another's grant",
            true,
            vec!["break-glass", "approve", &grant],
            &["ca", "ta", "rv", "au", "all", "vf"],
        ),
        (
            "close another's grant",
            true,
            vec!["break-glass", "close", &grant],
            &["ca"],
        ),
        (
            "read acme's policy",
            false,
            vec!["policy", "show", "--tenant", "acme"],
            &["ca", "ta"],
        ),
        (
            "read beta's policy",
            false,
            vec!["policy", "show", "--tenant", "beta"],
            &["ca"],
        ),
        (
            "the status",
            false,
            vec!["status", "--json"],
            &["ca", "ta", "rv", "au", "all", "vf"],
        ),
        (
            "list the signing keys",
            false,
            vec!["keys", "list"],
            &["ca", "ta", "rv", "au", "all", "vf"],
        ),
        (
            "acme's issuance audit",
            false,
            vec!["audit", "--tenant", "acme"],
            &["ca", "ta", "au", "all"],
        ),
        (
            "beta's issuance audit",
            false,
            vec!["audit", "--tenant", "beta"],
            &["ca", "all"],
        ),
        (
            "the whole issuance audit",
            false,
            vec!["audit"],
            &["ca", "all"],
        ),
        (
            "list roles",
            false,
            vec!["role", "list"],
            &["ca", "ta", "rv", "au", "all", "vf"],
        ),
        (
            "show the access policy",
            false,
            vec!["access-policy", "show"],
            &["ca", "ta", "rv", "au", "all", "vf"],
        ),
        (
            "list break-glass grants",
            false,
            vec!["break-glass", "list"],
            &["ca", "ta", "rv", "au", "all", "vf"],
        ),
        (
            "acme's audit",
            false,
            vec![
                "audit",
                "--control",
                "--as-tenant",
                "acme",
                "--tenant",
                "acme",
            ],
            &["ca", "ta", "au", "all"],
        ),
        (
            "beta's audit",
            false,
            vec!["audit", "--control", "--tenant", "beta"],
            &["ca", "all"],
        ),
        (
            "the whole audit",
            false,
            vec!["audit", "--control"],
            &["ca", "all"],
        ),
        (
            "propagation",
            false,
            vec!["propagation"],
            &["ca", "ta", "rv", "au", "all", "vf"],
        ),
    ];
    // The cluster admin goes last: it closes the grant the others may
    // only approve.
    let everyone = ["ta", "rv", "au", "all", "vf", "nobody", "ca"];
    let before = events(&cluster).len();
    let mut writes = 0;
    // Writes made over gRPC below, each leaving one event too.
    let mut writes_outside_cli = 0;
    for (what, write, args, allowed) in &calls {
        for who in everyone {
            let out = ops.run(who, &broker, args);
            let text = said(&out);
            if allowed.contains(&who) {
                // Done, or refused by the ledger for a reason of its own
                // (already revoked), never for want of permission.
                assert!(
                    matches!(out.status.code(), Some(0 | 3)),
                    "{who} {what}: {text}"
                );
            } else {
                assert_eq!(out.status.code(), Some(4), "{who} {what}: {text}");
                assert!(
                    text.contains(&format!("operator:{who} may not"))
                        || text.contains("outside the tenant acme"),
                    "{who} {what}: {text}"
                );
            }
            writes += usize::from(*write);
        }
    }

    // A tenant auditor sees its tenant's events and nothing else.
    let seen = json(&ops.run(
        "au",
        &broker,
        &["audit", "--control", "--tenant", "acme", "--json"],
    ));
    let seen = seen["events"].as_array().unwrap();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|e| e["tenant"] == "acme"), "{seen:#?}");

    // The calls the command line does not make, over gRPC with each
    // operator's certificate: a batch revocation (allowed as the policy
    // says), and the services that are not for operators at all (the
    // feed is for verifiers, the peer service for brokers, joining and
    // issuance for holders of a join token), refused for every operator.
    for who in everyone {
        let channel = ops.channel(who, &broker).await;
        let mut client = ClusterClient::new(channel.clone());
        let mut request = tonic::Request::new(pb::RevokeManyRequest {
            request_id: format!("many-{who}"),
            revocations: vec![pb::Revocation {
                target: Some(pb::revocation::Target::Index(acme_index)),
            }],
        });
        request
            .metadata_mut()
            .insert("x-lapse-tenant", "acme".parse().unwrap());
        let answer = client.revoke_many(request).await;
        if ["ca", "ta", "rv"].contains(&who) {
            assert!(answer.is_ok(), "{who} revoke many: {answer:?}");
        } else {
            let status = answer.unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::PermissionDenied,
                "{who}: {status:?}"
            );
            assert!(
                status
                    .message()
                    .contains(&format!("operator:{who} may not")),
                "{who}: {status:?}"
            );
        }
        writes_outside_cli += 1;

        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(lapse_wire::feed::FeedRequest {
            kind: Some(lapse_wire::feed::feed_request::Kind::Hello(
                lapse_wire::feed::Hello {
                    verifier_id: who.into(),
                    region: String::new(),
                    resume_epoch: None,
                },
            )),
        })
        .await
        .unwrap();
        let feed = lapse_wire::feed::feed_client::FeedClient::new(channel.clone())
            .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let status = feed.expect_err("an operator may not subscribe");
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{who}: {status:?}"
        );
        assert!(
            status.message().contains("the feed is for verifiers"),
            "{status:?}"
        );

        let peer = lapse_wire::peer::raft_peer_client::RaftPeerClient::new(channel.clone())
            .read_index(lapse_wire::peer::ReadIndexRequest::default())
            .await;
        let status = peer.expect_err("an operator may not make peer calls");
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{who}: {status:?}"
        );
        assert!(
            status.message().contains("peer calls are for brokers"),
            "{status:?}"
        );

        let join = client
            .join(pb::JoinRequest {
                token: "not-a-token".into(),
                node_id: 9,
                address: "127.0.0.1:9".into(),
            })
            .await;
        let status = join.expect_err("a join needs a join token");
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ),
            "{who}: {status:?}"
        );
    }

    // HTTP: the metrics for brokers and operators who may read the
    // status; the keys and issuer metadata for anyone, certificate or not.
    let ca_pem = cluster.certs().join("ca.pem");
    for who in everyone {
        let (cert, key) = &ops.files[who];
        let identity = Some((cert.as_path(), key.as_path()));
        let (code, body) = tls::https_get(&http[0], "/metrics", &ca_pem, identity).unwrap();
        if who == "nobody" {
            assert_eq!(code, 403, "{body}");
            assert!(body.contains("operator:nobody may not"), "{body}");
            assert!(body.trim_start().starts_with('{'), "a JSON body: {body}");
        } else {
            assert_eq!(code, 200, "{who}: {body}");
            assert!(body.contains("lapse_"), "{body}");
        }
        for public in [
            "/.well-known/jwks.json",
            "/.well-known/openid-configuration",
            "/healthz",
        ] {
            let (code, body) = tls::https_get(&http[0], public, &ca_pem, identity).unwrap();
            assert_eq!(code, 200, "{who} {public}: {body}");
        }
    }
    let (code, body) = tls::https_get(&http[0], "/metrics", &ca_pem, None).unwrap();
    assert_eq!(code, 401, "{body}");
    for public in ["/.well-known/jwks.json", "/healthz"] {
        let (code, body) = tls::https_get(&http[0], public, &ca_pem, None).unwrap();
        assert_eq!(code, 200, "{public}: {body}");
    }

    // Every write above left exactly one event (refusals are recorded in
    // the background: wait for them).
    let deadline = Instant::now() + Duration::from_secs(30);
    let all = loop {
        let all = events(&cluster);
        if all.len() >= before + writes + writes_outside_cli || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(all.len(), before + writes + writes_outside_cli, "{all:#?}");
    // beta's credential was revoked by the cluster admin alone: no tenant
    // operator of acme reached it.
    let beta_revokers: Vec<&Value> = all[before..]
        .iter()
        .filter(|e| e["action"] == "revoke" && e["tenant"] == "beta" && e["allowed"] == true)
        .map(|e| &e["principal"])
        .collect();
    assert!(
        !beta_revokers.is_empty() && beta_revokers.iter().all(|p| *p == "operator:ca"),
        "{beta_revokers:?}"
    );
    for who in everyone {
        let theirs: Vec<&Value> = all[before..]
            .iter()
            .filter(|e| e["principal"] == format!("operator:{who}"))
            .collect();
        // Each write call of the command line, and the batch revocation.
        let expected = calls.iter().filter(|c| c.1).count() + 1;
        assert_eq!(theirs.len(), expected, "{who}: {theirs:#?}");
        for event in theirs {
            assert!(!event["request_id"].as_str().unwrap().is_empty());
            assert!(event["action"].as_str().is_some_and(|a| !a.is_empty()));
            assert!(event["bindings_version"].as_u64() >= Some(5), "{event}");
        }
    }
    let refused_revoke = all[before..]
        .iter()
        .find(|e| {
            e["principal"] == "operator:ta"
                && e["action"] == "revoke"
                && e["tenant"] == "acme"
                && e["allowed"] == false
        })
        .expect("ta's refused revocation of beta's index as acme");
    assert!(
        refused_revoke["outcome"]
            .as_str()
            .unwrap()
            .contains("issued for tenant beta"),
        "{refused_revoke}"
    );

    // A credential presented whole proves its tenant by its signature
    // (RFC 7009): acme's revoker revokes one issued a moment ago, before
    // its issuance record can have reached the ledger, without naming the
    // tenant (the command line reads it from the credential); beta's,
    // presented as acme, is refused.
    let fresh = |tenant: &str| {
        let token = cli_json(
            &cluster,
            1,
            &[
                "join-token",
                "create",
                "--tenant",
                tenant,
                "--workload",
                &format!("spiffe://{tenant}.example/app"),
                "--json",
            ],
        );
        let issued = cli_json(
            &cluster,
            1,
            &[
                "issue",
                "--join-token",
                token["token"].as_str().unwrap(),
                "--audience",
                "billing",
                "--scope",
                "payments:read",
                "--json",
            ],
        );
        let file = cluster
            .certs()
            .parent()
            .unwrap()
            .join(format!("{tenant}.jwt"));
        std::fs::write(&file, issued["credential"].as_str().unwrap()).unwrap();
        (
            file.to_str().unwrap().to_owned(),
            issued["status_index"].as_u64().unwrap(),
        )
    };
    let (acme_file, acme_fresh) = fresh("acme");
    let revoked = json(&ops.run(
        "rv",
        &broker,
        &["revoke", "credential", &acme_file, "--json"],
    ));
    assert_eq!(revoked["status_index"], acme_fresh, "{revoked}");
    let (beta_file, _) = fresh("beta");
    let out = ops.run(
        "rv",
        &broker,
        &["revoke", "credential", &beta_file, "--as-tenant", "acme"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));
    assert!(said(&out).contains("tenant is beta"), "{}", said(&out));
    let out = ops.run("rv", &broker, &["revoke", "credential", &beta_file]);
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));
    assert!(said(&out).contains("operator:rv may not"), "{}", said(&out));

    // An operator only broker `follower` names as an admin: allowed there,
    // refused by the leader, and nothing changes.
    let out = ops.run(
        &rogue,
        &cluster.address(follower),
        &["lease", "--broker-id", "1", "--count", "1"],
    );
    let text = said(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains("refused by the leader"), "{text}");
    let out = ops.run(
        &rogue,
        &cluster.address(leader),
        &["lease", "--broker-id", "1", "--count", "1"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let refused = events(&cluster)
            .into_iter()
            .filter(|e| e["principal"] == format!("operator:{rogue}") && e["allowed"] == false)
            .count();
        if refused == 2 {
            break;
        }
        assert!(refused < 2 && Instant::now() < deadline, "{refused} events");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_glass_grant_counts_once_approved_until_it_is_closed_or_expires() {
    let cluster = TestCluster::start_tls(3, FAST_RAFT);
    cluster.wait_for_leader().await;
    let broker = cluster.address(1);
    let ops = Operators::new(&cluster, &["ta", "bob", "nobody"]);
    for (principal, role) in [("operator:ta", "tenant-admin"), ("operator:bob", "revoker")] {
        let out = cluster.cli(1, &["role", "bind", principal, role, "--tenant", "acme"]);
        assert!(out.status.success(), "{}", said(&out));
    }
    let lease = ["lease", "--broker-id", "1", "--count", "1"];
    let out = ops.run("ta", &broker, &lease);
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));

    let open = |seconds: &str| {
        json(&ops.run(
            "ta",
            &broker,
            &[
                "break-glass",
                "open",
                "--role",
                "cluster-admin",
                "--for",
                seconds,
                "--why",
                "pager 7: the admins are unreachable",
                "--json",
            ],
        ))["id"]
            .as_u64()
            .unwrap()
            .to_string()
    };
    let id = open("10m");
    // Not in force before a second operator approves it.
    let out = ops.run("ta", &broker, &lease);
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));
    let own = ops.run("ta", &broker, &["break-glass", "approve", &id]);
    assert!(!own.status.success(), "{}", said(&own));
    assert!(said(&own).contains("another operator"), "{}", said(&own));
    let stranger = ops.run("nobody", &broker, &["break-glass", "approve", &id]);
    assert_eq!(stranger.status.code(), Some(4), "{}", said(&stranger));
    let approved = ops.run("bob", &broker, &["break-glass", "approve", &id]);
    assert!(approved.status.success(), "{}", said(&approved));

    // In force: what it names is allowed, tagged with the grant, and the
    // status says so.
    let out = ops.run("ta", &broker, &lease);
    assert!(out.status.success(), "{}", said(&out));
    let tagged = json(&cluster.cli(
        1,
        &[
            "audit",
            "--control",
            "--operator",
            "operator:ta",
            "--action",
            "lease",
            "--json",
        ],
    ));
    let tagged = tagged["events"].as_array().unwrap();
    assert!(
        tagged
            .iter()
            .any(|e| e["allowed"] == true && e["grant"].as_u64() == id.parse().ok()),
        "{tagged:#?}"
    );
    let status = cluster.cli(1, &["status"]);
    assert!(
        said(&status).contains(&format!(
            "BREAK-GLASS: grant {id} gives operator:ta cluster-admin"
        )),
        "{}",
        said(&status)
    );

    // Closed: nothing more.
    let closed = ops.run("ta", &broker, &["break-glass", "close", &id]);
    assert!(closed.status.success(), "{}", said(&closed));
    let out = ops.run("ta", &broker, &lease);
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));

    // A short one: allowed while in force, refused once it has expired by
    // cluster time.
    let id = open("15s");
    let approved = ops.run("bob", &broker, &["break-glass", "approve", &id]);
    assert!(approved.status.success(), "{}", said(&approved));
    let out = ops.run("ta", &broker, &lease);
    assert!(out.status.success(), "{}", said(&out));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let grants = json(&ops.run("ta", &broker, &["break-glass", "list", "--json"]));
        let this = grants["grants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"].as_u64() == id.parse().ok())
            .cloned()
            .unwrap();
        if this["in_force"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "{this}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let out = ops.run("ta", &broker, &lease);
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));
}
