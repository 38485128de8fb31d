//! RFC 8935 push to an `https://` receiver: a TLS cluster's leader delivers
//! a revocation's SET to a receiver whose certificate chains to the
//! cluster's CA (public web PKI roots are trusted the same way), checking
//! the receiver's name, and the receiver gets a signed `secevent+jwt`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use support::tls::https_request;
use support::*;

/// An HTTPS receiver on a free loopback port answering every POST 202:
/// its address and the bodies it received.
fn https_receiver(certs: &std::path::Path) -> (String, mpsc::Receiver<String>) {
    let (cert, key) = issue_cert(
        certs,
        lapse_pki::Role::Broker(99),
        SystemTime::now(),
        Duration::from_secs(3600),
    );
    let credentials = lapse_pki::TlsFiles {
        ca: certs.join("ca.pem"),
        cert: Some(cert),
        key: Some(key),
    }
    .load(SystemTime::now())
    .unwrap();
    let config = Arc::new(credentials.server_config(b"http/1.1").unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (sets, received) = mpsc::channel();
    std::thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(connection) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut stream = rustls::StreamOwned::new(connection, socket);
            let mut reader = BufReader::new(&mut stream);
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; length.min(1 << 20)];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = sets.send(String::from_utf8_lossy(&body).into_owned());
            let _ = stream.write_all(
                b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            stream.conn.send_close_notify();
            let _ = stream.flush();
        }
    });
    (address, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_pushed_to_an_https_receiver() {
    let http = format!("127.0.0.1:{}", free_port());
    let listen = http.clone();
    let cluster = TestCluster::start_tls_with(1, FAST_RAFT, move |_| {
        format!("[issuance]\nhttp_listen = \"{listen}\"\n")
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 1).await;
    let ca = cluster.certs().join("ca.pem");
    let (receiver, received) = https_receiver(cluster.certs());
    let created = cli_json(
        &cluster,
        1,
        &["ssf", "receiver", "create", "--name", "siem", "--json"],
    );
    let token = format!("Bearer {}", created["token"].as_str().unwrap());
    let stream = serde_json::json!({
        "delivery": { "method": "urn:ietf:rfc:8935", "endpoint_url": format!("https://{receiver}/events") },
    })
    .to_string();
    let (status, body) = https_request(
        &http,
        "POST",
        "/ssf/stream",
        &ca,
        None,
        &[
            ("Authorization", &token),
            ("Content-Type", "application/json"),
        ],
        &stream,
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");

    let out = cluster.cli(1, &["revoke", "index", "7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let set = received
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no SET arrived over HTTPS\n{}", cluster.logs()));
    let part = |n: usize| -> serde_json::Value {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(set.trim().split('.').nth(n).unwrap())
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    assert_eq!(part(0)["typ"], "secevent+jwt");
    let events = part(1)["events"].to_string();
    assert!(events.contains("credential-change"), "{events}");
}
