//! TLS between real loopback sockets: who each side sees, and who is
//! refused.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use lapse_pki::transport::Tls;
use lapse_pki::{
    Authority, Expect, LeafRequest, Principal, Role, TlsConnector, TlsFiles, TlsIncoming,
};
use tokio::net::TcpListener;
use tower::Service;

const DAY: Duration = Duration::from_secs(86_400);

fn write_leaf(dir: &Path, authority: &Authority, role: Role, file: &str) -> TlsFiles {
    let pair = authority
        .issue(
            &LeafRequest {
                role,
                hosts: vec!["127.0.0.1".into()],
                valid_for: DAY,
            },
            SystemTime::now(),
        )
        .unwrap();
    let (cert, key) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    );
    lapse_pki::files::write(&cert, &pair.cert_pem, false, true).unwrap();
    lapse_pki::files::write(&key, &pair.key_pem, true, true).unwrap();
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: Some(cert),
        key: Some(key),
    }
}

fn new_ca(dir: &Path, domain: &str) -> Authority {
    let (authority, pair) = Authority::generate(domain, SystemTime::now(), DAY).unwrap();
    lapse_pki::files::write(&dir.join("ca.pem"), &pair.cert_pem, false, true).unwrap();
    authority
}

/// A TLS server for one broker; yields who each accepted client is.
async fn server(
    tls: Arc<Tls>,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::Receiver<Option<Principal>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut incoming = Box::pin(TlsIncoming::stream(
        tls,
        b"h2",
        accepted,
        lapse_pki::ConnectionGate::new(Default::default()),
    ));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(Ok(secured)) = incoming.next().await {
            let _ = tx.send(secured.identity().principal.clone()).await;
            // Keep the connection open until the test ends.
            std::mem::forget(secured);
        }
    });
    (address, rx)
}

async fn dial(tls: Arc<Tls>, expect: Expect, address: std::net::SocketAddr) -> std::io::Result<()> {
    let mut connector = TlsConnector::new(tls, expect);
    connector
        .call(format!("http://{address}").parse().unwrap())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn brokers_see_each_others_node_ids() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path(), "test.lapse");
    let one = Tls::open(
        write_leaf(dir.path(), &ca, Role::Broker(1), "b1"),
        SystemTime::now(),
    )
    .unwrap();
    let two = Tls::open(
        write_leaf(dir.path(), &ca, Role::Broker(2), "b2"),
        SystemTime::now(),
    )
    .unwrap();
    let (address, mut seen) = server(one).await;
    dial(two.clone(), Expect::Broker(1), address).await.unwrap();
    assert_eq!(seen.recv().await.unwrap().unwrap().role, Role::Broker(2));
    dial(two.clone(), Expect::AnyBroker, address).await.unwrap();
    assert_eq!(seen.recv().await.unwrap().unwrap().role, Role::Broker(2));
    let error = dial(two, Expect::Broker(3), address).await.unwrap_err();
    assert!(
        error.to_string().contains("does not name broker 3"),
        "{error}"
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path(), "test.lapse");
    let broker = Tls::open(
        write_leaf(dir.path(), &ca, Role::Broker(1), "b1"),
        SystemTime::now(),
    )
    .unwrap();
    let anonymous = Tls::open(
        TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: None,
            key: None,
        },
        SystemTime::now(),
    )
    .unwrap();
    let (address, mut seen) = server(broker).await;
    dial(anonymous, Expect::AnyBroker, address).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), None);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_both_ways() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let ca = new_ca(ours.path(), "test.lapse");
    // Same trust domain, same names: only the CA differs.
    let other = new_ca(theirs.path(), "test.lapse");
    let broker = Tls::open(
        write_leaf(ours.path(), &ca, Role::Broker(1), "b1"),
        SystemTime::now(),
    )
    .unwrap();
    let intruder = Tls::open(
        write_leaf(
            theirs.path(),
            &other,
            Role::Operator("mallory".into()),
            "op",
        ),
        SystemTime::now(),
    )
    .unwrap();
    let (address, mut seen) = server(broker.clone()).await;
    let error = dial(intruder.clone(), Expect::AnyBroker, address)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not valid"), "{error}");
    // An impostor broker: our client refuses it.
    let impostor = Tls::open(
        write_leaf(theirs.path(), &other, Role::Broker(1), "b1"),
        SystemTime::now(),
    )
    .unwrap();
    let (impostor_address, _) = server(impostor).await;
    let error = dial(broker.clone(), Expect::Broker(1), impostor_address)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not valid"), "{error}");
    // A server that sees a client certificate from another CA drops it:
    // an operator of our CA still gets through afterwards, and is the only
    // one seen.
    let operator = Tls::open(
        write_leaf(ours.path(), &ca, Role::Operator("alice".into()), "op"),
        SystemTime::now(),
    )
    .unwrap();
    let impostor_client = {
        // A client that trusts our CA but presents their certificate.
        let files = write_leaf(
            theirs.path(),
            &other,
            Role::Operator("mallory".into()),
            "op2",
        );
        let files = TlsFiles {
            ca: ours.path().join("ca.pem"),
            ..files
        };
        Tls::open(files, SystemTime::now())
    };
    // Loading a certificate that does not chain to the bundle is refused
    // before it is ever presented.
    let error = impostor_client.unwrap_err().to_string();
    assert!(error.contains("does not chain"), "{error}");
    dial(operator, Expect::AnyBroker, address).await.unwrap();
    assert_eq!(
        seen.recv().await.unwrap().unwrap().role,
        Role::Operator("alice".into())
    );
}

#[tokio::test]
async fn an_expired_certificate_refuses_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, pair) = Authority::generate("td", SystemTime::now() - 30 * DAY, 60 * DAY).unwrap();
    lapse_pki::files::write(&dir.path().join("ca.pem"), &pair.cert_pem, false, true).unwrap();
    let leaf = ca
        .issue(
            &LeafRequest {
                role: Role::Broker(1),
                hosts: vec![],
                valid_for: DAY,
            },
            SystemTime::now() - 10 * DAY,
        )
        .unwrap();
    let (cert, key) = (dir.path().join("b.pem"), dir.path().join("b.key"));
    lapse_pki::files::write(&cert, &leaf.cert_pem, false, true).unwrap();
    lapse_pki::files::write(&key, &leaf.key_pem, true, true).unwrap();
    let error = Tls::open(
        TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: Some(cert),
            key: Some(key),
        },
        SystemTime::now(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("expired at"), "{error}");
    assert!(error.contains("broker/1"), "{error}");
}

#[tokio::test]
async fn rewritten_files_are_used_by_the_next_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path(), "test.lapse");
    let files = write_leaf(dir.path(), &ca, Role::Broker(1), "b1");
    let broker = Tls::open(files.clone(), SystemTime::now()).unwrap();
    let before = broker.credentials().cert.clone().unwrap().serial;
    assert!(
        !broker.reload(SystemTime::now(), false).unwrap(),
        "nothing changed"
    );
    write_leaf(dir.path(), &ca, Role::Broker(1), "b1");
    assert!(broker.reload(SystemTime::now(), true).unwrap());
    let after = broker.credentials().cert.clone().unwrap().serial;
    assert_ne!(before, after);
    // A broken rewrite keeps the credentials in use.
    std::fs::write(files.cert.as_ref().unwrap(), "not a certificate").unwrap();
    assert!(broker.reload(SystemTime::now(), true).is_err());
    assert_eq!(broker.credentials().cert.clone().unwrap().serial, after);
}

#[cfg(unix)]
#[test]
fn keys_are_written_for_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.key");
    lapse_pki::files::write(&path, "secret", true, false).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let error = lapse_pki::files::write(&path, "again", true, false).unwrap_err();
    assert!(
        error.to_string().contains("refusing to overwrite"),
        "{error}"
    );
    // A temporary file an earlier crash left behind, readable by all, does
    // not lend its mode to a key written next.
    let stale = dir.path().join("n.key.tmp");
    std::fs::write(&stale, "old").unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key = dir.path().join("n.key");
    lapse_pki::files::write(&key, "secret", true, false).unwrap();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "secret");
    assert!(!stale.exists());
}
