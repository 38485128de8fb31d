//! Mutual TLS on real `lapse broker` processes: operators get in by
//! certificate; clients without one, with one from another CA, with an
//! expired one, or with the wrong role are refused with a precise error;
//! a join without a broker certificate or a valid token changes nothing
//! and makes the broker contact nothing; a certificate replaced on disk is
//! served without a restart.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lapse_pki::{Expect, Role, Tls, TlsConnector, TlsFiles};
use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::feed::feed_client::FeedClient;
use lapse_wire::feed::feed_request::Kind;
use lapse_wire::feed::{FeedRequest, Hello};
use lapse_wire::peer::raft_peer_client::RaftPeerClient;
use support::*;
use tonic::Code;

const DAY: Duration = Duration::from_secs(86_400);

/// A TLS channel to `address` presenting `role`'s certificate (made on
/// first use with the cluster CA), or none.
async fn channel_as(certs: &Path, role: Option<Role>, address: &str) -> tonic::transport::Channel {
    let (cert, key) = match role {
        Some(role) => {
            let (cert, key) = issue_cert(certs, role, SystemTime::now(), DAY);
            (Some(cert), Some(key))
        }
        None => (None, None),
    };
    let files = TlsFiles {
        ca: certs.join("ca.pem"),
        cert,
        key,
    };
    let tls = Tls::open(files, SystemTime::now()).unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .timeout(Duration::from_secs(15));
    TlsConnector::new(tls, Expect::AnyBroker)
        .connect(endpoint)
        .await
        .unwrap()
}

/// Accepts any server: the attacker's client, which presents whatever
/// certificate it is given.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Present `cert`/`key` to the broker at `address` and send a little: the
/// broker's verdict (`Ok` if it kept talking), and its certificate.
fn present(
    address: &str,
    cert: &Path,
    key: &Path,
) -> (
    Result<(), String>,
    Vec<rustls::pki_types::CertificateDer<'static>>,
) {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut stream = rustls::StreamOwned::new(connection, socket);
    // The HTTP/2 preface and an empty SETTINGS frame: a broker that
    // accepted the certificate answers with its own SETTINGS.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let verdict = stream
        .write_all(&hello)
        .and_then(|_| stream.flush())
        .and_then(|_| {
            let mut frame = [0u8; 9];
            stream.read_exact(&mut frame)
        })
        .map_err(|e| e.to_string());
    let served = stream.conn.peer_certificates().unwrap_or_default().to_vec();
    (verdict, served)
}

/// Run the CLI against `address` over TLS, trusting the CA in `certs` and
/// presenting `identity` (none: anonymous), from `certs`' parent, so no
/// `.lapse-dev/` is found by default.
fn cli_as(
    certs: &Path,
    identity: Option<(&Path, &Path)>,
    address: &str,
    args: &[&str],
) -> std::process::Output {
    let mut command = lapse();
    command
        .env_remove("LAPSE_INSECURE_PLAINTEXT")
        .env_remove("LAPSE_TOKEN")
        .env("LAPSE_CA", certs.join("ca.pem"))
        .env("LAPSE_BROKER", address)
        .current_dir(certs.parent().unwrap())
        .args(args);
    if let Some((cert, key)) = identity {
        command.env("LAPSE_CERT", cert).env("LAPSE_KEY", key);
    }
    command.output().unwrap()
}

/// Start `lapse broker` with `config`, which must refuse: what it said.
fn refused_start(config: &Path) -> String {
    let started = lapse()
        .args(["broker", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!started.status.success());
    String::from_utf8_lossy(&started.stderr).into_owned()
}

fn serial(cert: &rustls::pki_types::CertificateDer<'_>) -> String {
    lapse_pki::CertInfo::parse(cert).unwrap().serial
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_operators_and_refuses_everyone_else() {
    let mut cluster = TestCluster::start_tls(
        3,
        &format!("{FAST_RAFT}[feed]\nmax_subscribers_per_identity = 3\n"),
    );
    let leader = cluster.wait_for_leader().await;
    let certs = cluster.certs.clone().unwrap();
    let address = cluster.address(leader);

    // The operator the CLI acts as gets in, with no token anywhere.
    let status = cluster.cli(leader, &["status"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // No client certificate: admin calls say what they need.
    let lease = ["lease", "--broker-id", "1", "--count", "10"];
    let anonymous = cli_as(&certs, None, &address, &lease);
    assert_eq!(anonymous.status.code(), Some(4));
    let said = String::from_utf8_lossy(&anonymous.stderr);
    assert!(said.contains("operator certificate"), "{said}");

    // A verifier's certificate is not an operator's.
    let (vcert, vkey) = issue_cert(
        &certs,
        Role::Verifier("edge".into()),
        SystemTime::now(),
        DAY,
    );
    let as_verifier = cli_as(&certs, Some((&vcert, &vkey)), &address, &lease);
    assert_eq!(as_verifier.status.code(), Some(4));
    let said = String::from_utf8_lossy(&as_verifier.stderr);
    assert!(
        said.contains("admin calls are for operators") && said.contains("verifier edge"),
        "{said}"
    );

    // The CLI will not present a certificate its own CA does not vouch for.
    let elsewhere = cluster.dir.path().join("elsewhere");
    new_ca(&elsewhere, "test.lapse");
    let (foreign_cert, foreign_key) = issue_cert(
        &elsewhere,
        Role::Operator(OPERATOR.into()),
        SystemTime::now(),
        DAY,
    );
    let foreign = cli_as(
        &certs,
        Some((&foreign_cert, &foreign_key)),
        &address,
        &["status"],
    );
    // A certificate of another CA is invalid input here.
    assert_eq!(foreign.status.code(), Some(3));
    let said = String::from_utf8_lossy(&foreign.stderr);
    assert!(said.contains("does not chain to the CA bundle"), "{said}");

    // The broker refuses them itself: a certificate from another CA (same
    // trust domain, same name), and an expired one from ours.
    let (verdict, _) = present(&address, &foreign_cert, &foreign_key);
    // (Its CA has our CA's name, so the check fails on the signature.)
    let refused = verdict.unwrap_err();
    assert!(refused.contains("received fatal alert"), "{refused}");
    let (old_cert, old_key) = issue_cert(
        &certs,
        Role::Operator("former".into()),
        SystemTime::now() - 10 * DAY,
        DAY,
    );
    let (verdict, _) = present(&address, &old_cert, &old_key);
    let refused = verdict.unwrap_err();
    assert!(refused.contains("CertificateExpired"), "{refused}");
    // A valid one gets the HTTP/2 conversation going.
    let (ops_cert, ops_key) = (
        certs.join(format!("operator-{OPERATOR}.pem")),
        certs.join(format!("operator-{OPERATOR}.key")),
    );
    present(&address, &ops_cert, &ops_key).0.unwrap();

    // Peer calls are for brokers.
    let operator = channel_as(&certs, None, &address).await;
    let mut peer = RaftPeerClient::new(operator.clone());
    let refused = peer
        .checkpoints(lapse_wire::peer::CheckpointsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let as_operator = channel_as(&certs, Some(Role::Operator("eve".into())), &address).await;
    let refused = RaftPeerClient::new(as_operator.clone())
        .checkpoints(lapse_wire::peer::CheckpointsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("operator eve"), "{refused:?}");

    // The feed: a verifier subscribes under its own name only.
    let edge = channel_as(&certs, Some(Role::Verifier("edge".into())), &address).await;
    let subscribe = |id: &str| {
        let hello = FeedRequest {
            kind: Some(Kind::Hello(Hello {
                verifier_id: id.into(),
                region: "test".into(),
                resume_epoch: None,
            })),
        };
        let mut client = FeedClient::new(edge.clone());
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(hello).await.unwrap();
            let answer = client
                .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await;
            drop(tx);
            answer.map(|_| ())
        }
    };
    let refused = subscribe("someone-else").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("\"edge\""), "{refused:?}");
    subscribe("edge").await.unwrap();
    subscribe("edge/2").await.unwrap();

    // One certificate holds at most three of this broker's subscriptions
    // (as configured); others are not affected, and a slot comes back
    // when its subscription ends.
    let greedy = channel_as(&certs, Some(Role::Verifier("greedy".into())), &address).await;
    let hold = |id: String| {
        let mut client = FeedClient::new(greedy.clone());
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(FeedRequest {
                kind: Some(Kind::Hello(Hello {
                    verifier_id: id,
                    region: "test".into(),
                    resume_epoch: None,
                })),
            })
            .await
            .unwrap();
            client
                .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map(|events| (tx, events.into_inner()))
        }
    };
    let mut held = Vec::new();
    for n in 0..3 {
        held.push(hold(format!("greedy/{n}")).await.unwrap());
    }
    let refused = hold("greedy/3".into()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("max_subscribers_per_identity"),
        "{refused:?}"
    );
    let other = channel_as(&certs, Some(Role::Verifier("other".into())), &address).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(FeedRequest {
        kind: Some(Kind::Hello(Hello {
            verifier_id: "other".into(),
            region: "test".into(),
            resume_epoch: None,
        })),
    })
    .await
    .unwrap();
    FeedClient::new(other)
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("another certificate still subscribes");
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match hold("greedy/3".into()).await {
            Ok(subscription) => {
                held.push(subscription);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "the slot never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(held);

    // The broker signs its heartbeats: a verifier trusting the CA takes
    // the feed as it comes and becomes fresh only on a checked signature.
    let trust = lapse_pki::Credentials::from_pem(
        &std::fs::read(certs.join("ca.pem")).unwrap(),
        None,
        SystemTime::now(),
    )
    .unwrap();
    let verifier = lapse_verifier::Verifier::new(lapse_verifier::VerifyConfig {
        trust: Some(lapse_pki::SignatureChecker::new(Arc::new(trust))),
        ..Default::default()
    });
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(FeedRequest {
        kind: Some(Kind::Hello(Hello {
            verifier_id: "edge/signed".into(),
            region: "test".into(),
            resume_epoch: None,
        })),
    })
    .await
    .unwrap();
    let mut events = FeedClient::new(edge.clone())
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let signed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let event = events.message().await.unwrap().expect("the feed ended");
            verifier.apply(&event).unwrap();
            if let Some(lapse_wire::feed::feed_event::Kind::Heartbeat(beat)) = &event.kind {
                return beat.clone();
            }
        }
    })
    .await
    .expect("no heartbeat within 30 s");
    assert!(
        signed.voucher.is_some(),
        "a TLS broker sent an unsigned heartbeat"
    );
    let status = verifier.status();
    assert!(status.fresh && status.signed_heartbeats, "{status:?}");
    assert_eq!(status.vouched_epoch, status.epoch);
    drop(tx);
    let refused = FeedClient::new(as_operator.clone())
        .subscribe(tokio_stream::iter(Vec::<FeedRequest>::new()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // A join: without a broker certificate, or without a valid token, it
    // is refused before the broker contacts the claimed address.
    let bait = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    bait.set_nonblocking(true).unwrap();
    let bait_address = bait.local_addr().unwrap().to_string();
    let join = |token: &str| lapse_wire::cluster::JoinRequest {
        token: token.into(),
        node_id: 4,
        address: bait_address.clone(),
    };
    let refused = ClusterClient::new(as_operator.clone())
        .join(join("lapse-join-00"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let as_broker_4 = channel_as(&certs, Some(Role::Broker(4)), &address).await;
    let refused = ClusterClient::new(as_broker_4.clone())
        .join(join(&format!("lapse-join-{}", "ab".repeat(32))))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    assert!(
        refused.message().contains("join token is unknown"),
        "{refused:?}"
    );
    assert!(
        matches!(bait.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the broker contacted the claimed address"
    );
    // Adding a learner at an address whose certificate names another node
    // is refused, and the membership is unchanged: here the address is a
    // member's, which is refused before anything is dialled.
    let other = cluster.address(if leader == 1 { 2 } else { 1 });
    let added = cluster.cli(leader, &["cluster", "add-learner", "7", &other]);
    assert_eq!(added.status.code(), Some(3));
    let said = String::from_utf8_lossy(&added.stderr);
    assert!(said.contains("is already node"), "{said}");
    // Through a proxy, the same broker has a new address: the probe finds
    // its certificate names another node.
    let proxy = support::edge::Proxy::start(other.clone()).await;
    let added = cluster.cli(leader, &["cluster", "add-learner", "7", &proxy.address]);
    assert!(!added.status.success());
    let said = String::from_utf8_lossy(&added.stderr);
    assert!(said.contains("does not name broker 7"), "{said}");
    let status = cluster.status(leader).await.unwrap();
    assert!(
        status
            .voters
            .iter()
            .chain(&status.learners)
            .all(|n| n.node_id != 7),
        "{status:?}"
    );

    // Rotation: broker `leader`'s certificate is replaced on disk; new
    // connections get the new one, and the cluster keeps serving. A
    // verifier following that broker across the rotation takes every
    // event, and its heartbeats come signed with the new certificate.
    let (_, before) = present(&address, &ops_cert, &ops_key);
    let old = serial(&before[0]);
    let follower = lapse_verifier::Verifier::new(lapse_verifier::VerifyConfig {
        trust: Some(lapse_pki::SignatureChecker::new(Arc::new(
            lapse_pki::Credentials::from_pem(
                &std::fs::read(certs.join("ca.pem")).unwrap(),
                None,
                SystemTime::now(),
            )
            .unwrap(),
        ))),
        ..Default::default()
    });
    let rotation = channel_as(&certs, Some(Role::Verifier("rotation".into())), &address).await;
    let (follow_tx, follow_rx) = tokio::sync::mpsc::channel(4);
    follow_tx
        .send(FeedRequest {
            kind: Some(Kind::Hello(Hello {
                verifier_id: "rotation".into(),
                region: "test".into(),
                resume_epoch: None,
            })),
        })
        .await
        .unwrap();
    let mut stream = FeedClient::new(rotation)
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(follow_rx))
        .await
        .unwrap()
        .into_inner();
    let signer = Arc::new(std::sync::Mutex::new(String::new()));
    let following = {
        let (follower, signer) = (follower.clone(), signer.clone());
        tokio::spawn(async move {
            while let Ok(Some(event)) = stream.message().await {
                let _ = follower.apply(&event);
                if let Some(lapse_wire::feed::feed_event::Kind::Heartbeat(beat)) = &event.kind
                    && let Some(voucher) = &beat.voucher
                {
                    *signer.lock().unwrap() = serial(&rustls::pki_types::CertificateDer::from(
                        voucher.chain[0].clone(),
                    ));
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(follower.status().fresh && *signer.lock().unwrap() == old) {
        assert!(Instant::now() < deadline, "{:?}", follower.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    issue_cert(&certs, Role::Broker(leader), SystemTime::now(), DAY);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (verdict, served) = present(&address, &ops_cert, &ops_key);
        verdict.unwrap();
        if serial(&served[0]) != old {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leased = cluster.cli(leader, &["lease", "--broker-id", "1", "--count", "10"]);
    assert!(
        leased.status.success(),
        "{}",
        String::from_utf8_lossy(&leased.stderr)
    );
    cluster.wait_converged().await;
    let (_, after) = present(&address, &ops_cert, &ops_key);
    let new = serial(&after[0]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while *signer.lock().unwrap() != new {
        assert!(
            Instant::now() < deadline,
            "heartbeats never came signed with the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = follower.status();
    assert!(status.fresh, "{status:?}");
    assert_eq!(status.rejected_events, 0, "{status:?}");
    following.abort();
    drop(follow_tx);
    for id in [1, 2, 3] {
        cluster.kill9(id);
    }
}

#[test]
fn a_broker_refuses_to_start_on_an_expired_certificate_or_in_plaintext_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    new_ca(&certs, "test.lapse");
    issue_cert(&certs, Role::Broker(1), SystemTime::now() - 10 * DAY, DAY);
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n[[cluster.members]]\nid = 1\naddress = \"127.0.0.1:1\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            free_port(),
            dir.path().join("data").display(),
            certs.join("ca.pem").display(),
            certs.join("broker-1.pem").display(),
            certs.join("broker-1.key").display()
        ),
    )
    .unwrap();
    let said = refused_start(&config);
    assert!(
        said.contains("expired at") && said.contains("broker-1.pem"),
        "{said}"
    );

    std::fs::write(
        &config,
        format!(
            "node_id = 1\nlisten = \"0.0.0.0:{}\"\ndata_dir = \"{}\"\ninsecure_plaintext = true\n[cluster]\nsecret = \"0123456789abcdef0123\"\n[[cluster.members]]\nid = 1\naddress = \"127.0.0.1:1\"\n",
            free_port(),
            dir.path().join("data").display(),
        ),
    )
    .unwrap();
    let said = refused_start(&config);
    assert!(
        said.contains("loopback only") && said.contains("listen"),
        "{said}"
    );
}

#[test]
fn lapse_certs_makes_a_ca_and_named_certificates_with_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let certs_arg = certs.to_str().unwrap();
    let run = |args: &[&str]| lapse().arg("certs").args(args).output().unwrap();
    let init = run(&["init", "--trust-domain", "prod.example", "--dir", certs_arg]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let broker = run(&[
        "broker",
        "--id",
        "3",
        "--address",
        "10.0.0.3:7401",
        "--dir",
        certs_arg,
    ]);
    assert!(
        broker.status.success(),
        "{}",
        String::from_utf8_lossy(&broker.stderr)
    );
    let printed = String::from_utf8_lossy(&broker.stdout);
    assert!(
        printed.contains("spiffe://prod.example/broker/3"),
        "{printed}"
    );
    assert!(!printed.contains("PRIVATE KEY"), "{printed}");
    let shown = run(&["show", certs.join("broker-3.pem").to_str().unwrap()]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("spiffe://prod.example/broker/3") && shown.contains("left"),
        "{shown}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "broker-3.key"] {
            let mode = std::fs::metadata(certs.join(key))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
    }
    // Nothing is overwritten unless asked, and bad names change nothing.
    let again = run(&["init", "--trust-domain", "prod.example", "--dir", certs_arg]);
    assert_eq!(again.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    let bad = run(&["verifier", "--name", "../etc", "--dir", certs_arg]);
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("name \"../etc\""));
    let bad = run(&[
        "init",
        "--trust-domain",
        "Bad Domain",
        "--dir",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(3));
    assert!(!dir.path().join("x").exists());
    let mut names: Vec<String> = std::fs::read_dir(&certs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["broker-3.key", "broker-3.pem", "ca.key", "ca.pem"]);
}
