//! Attacks on the limits of every listener, each shown to fail: a host
//! opening connections until none are left, connections that never finish
//! their handshake, and a caller sending more than its rate.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lapse_wire::cluster::StatusRequest;
use lapse_wire::cluster::cluster_client::ClusterClient;
use support::*;

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let to: SocketAddr = to.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = runtime.block_on(socket.connect(to)).unwrap();
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// Whether the broker kept the connection: an admitted one gets the
/// server's HTTP/2 settings at once; a refused one is closed at once.
fn kept(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(n) => n > 0,
        Err(error) => {
            assert!(
                error.kind() != std::io::ErrorKind::WouldBlock
                    && error.kind() != std::io::ErrorKind::TimedOut,
                "neither kept nor closed within 10 s"
            );
            false
        }
    }
}

/// Read until the server closes the connection; panics if it does not
/// within `within`. Returns what was read.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the server kept the connection open");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server kept the connection open past {within:?}")
            }
            Err(_) => return received,
        }
    }
}

/// The value of the sample of `metric` whose line contains every label.
fn sample(metrics: &str, metric: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .find(|line| line.starts_with(metric) && labels.iter().all(|l| line.contains(l)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {metric} {labels:?} in\n{metrics}")) as u64
}

fn start(limits: &str) -> (TestCluster, String) {
    let http = format!("127.0.0.1:{}", free_port());
    let listen = http.clone();
    let cluster = TestCluster::start_with(1, limits, move |_| {
        format!("[issuance]\nhttp_listen = \"{listen}\"\n")
    });
    (cluster, http)
}

async fn status_from(cluster: &TestCluster, from: &str) -> Result<(), tonic::Status> {
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.address(1)))
            .unwrap()
            .local_address(Some(from.parse::<IpAddr>().unwrap()))
            .timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = ClusterClient::new(channel);
    client
        .status(authorised(StatusRequest {}))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_host_opening_thousands_of_connections_is_capped_and_others_still_connect() {
    let (cluster, http) = start(
        "[limits]\nmax_grpc_connections = 12\nmax_connections_per_ip = 8\nhandshake_timeout_ms = 60000\n",
    );
    cluster.wait_for_leader().await;
    let grpc = cluster.address(1);
    let attack = tokio::task::spawn_blocking(move || {
        // One host: its share, then every further connection closed.
        let mut held = Vec::new();
        let mut closed_for_ip = 0;
        for _ in 0..8 + 20 {
            let mut stream = connect_from("127.0.0.2", &grpc);
            if kept(&mut stream) {
                held.push(stream);
            } else {
                closed_for_ip += 1;
            }
        }
        // A second host fills the listener to its cap.
        let mut closed_for_listener = 0;
        for _ in 0..8 {
            let mut stream = connect_from("127.0.0.3", &grpc);
            if kept(&mut stream) {
                held.push(stream);
            } else {
                closed_for_listener += 1;
            }
        }
        (held, closed_for_ip, closed_for_listener)
    });
    let (held, closed_for_ip, closed_for_listener) = attack.await.unwrap();
    assert_eq!(closed_for_ip, 20, "one host got more than its 8");
    // Earlier clients' connections may still be closing: at most 12 open.
    assert!(held.len() <= 12, "the listener held {}", held.len());
    assert!(closed_for_listener >= 4, "{closed_for_listener}");
    let metrics = broker_metrics(&http);
    assert_eq!(
        sample(
            &metrics,
            "lapse_connections_refused_total",
            &["port=\"grpc\"", "reason=\"ip_full\""]
        ),
        20
    );
    assert!(
        sample(
            &metrics,
            "lapse_connections_refused_total",
            &["port=\"grpc\"", "reason=\"listener_full\""]
        ) >= 4
    );
    // While the listener is full, no one else gets in; once the attack's
    // connections close, a normal client does.
    assert!(status_from(&cluster, "127.0.0.1").await.is_err());
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match status_from(&cluster, "127.0.0.1").await {
            Ok(()) => break,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("a normal client could not connect: {error}"),
        }
    }
}

#[tokio::test]
async fn a_slowloris_connection_is_dropped_after_the_handshake_timeout() {
    let (cluster, http) =
        start("[limits]\nhandshake_timeout_ms = 300\nhttp_request_timeout_ms = 200\n");
    cluster.wait_for_leader().await;
    let grpc = cluster.address(1);
    let http_address = http.clone();
    tokio::task::spawn_blocking(move || {
        // gRPC: the first bytes of the HTTP/2 preface, then nothing.
        let mut stream = connect_from("127.0.0.1", &grpc);
        stream.write_all(b"PRI * HT").unwrap();
        read_until_closed(&mut stream, Duration::from_secs(10));
        // HTTP: a request head that never ends.
        let mut stream = connect_from("127.0.0.1", &http_address);
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: lapse\r\n")
            .unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(10));
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
        // A silent connection.
        let mut stream = connect_from("127.0.0.1", &http_address);
        read_until_closed(&mut stream, Duration::from_secs(10));
    })
    .await
    .unwrap();
    let metrics = broker_metrics(&http);
    assert!(
        sample(
            &metrics,
            "lapse_connections_handshake_timeouts_total",
            &["port=\"grpc\""]
        ) >= 1
    );
    assert!(
        sample(
            &metrics,
            "lapse_connections_handshake_timeouts_total",
            &["port=\"http\""]
        ) >= 2
    );
    // Clients that speak promptly are served.
    status_from(&cluster, "127.0.0.1").await.unwrap();
}

#[tokio::test]
async fn a_caller_over_its_rate_is_refused_and_others_are_not() {
    let (cluster, http) = start("[limits]\ncaller_requests_per_second = 1\ncaller_burst = 5\n");
    cluster.wait_for_leader().await;
    let mut refused = None;
    for _ in 0..20 {
        if let Err(status) = status_from(&cluster, "127.0.0.2").await {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("20 calls at once passed a limit of 5");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("limits.caller_requests_per_second"),
        "{status:?}"
    );
    // Another host has its own allowance.
    status_from(&cluster, "127.0.0.3").await.unwrap();
    let metrics = broker_metrics(&http);
    assert!(sample(&metrics, "lapse_requests_rate_limited_total", &[]) >= 1);
}

#[test]
fn a_verify_api_caller_over_its_rate_is_refused_with_json() {
    let cluster = TestCluster::start(1, "");
    let api = format!("127.0.0.1:{}", free_port());
    let mut verifier = lapse()
        .args([
            "verifier",
            "--brokers",
            &cluster.address(1),
            "--any-audience",
            "--insecure-plaintext",
            "--http",
            &api,
            "--http-rate-per-ip",
            "1",
            "--http-burst-per-ip",
            "3",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = |from: &str| -> Option<(u16, String)> {
        let mut stream = std::panic::catch_unwind(|| connect_from(from, &api)).ok()?;
        stream
            .write_all(b"GET /v1/status HTTP/1.1\r\nHost: lapse\r\nConnection: close\r\n\r\n")
            .ok()?;
        let answer =
            String::from_utf8(read_until_closed(&mut stream, Duration::from_secs(10))).ok()?;
        let code = answer.split(' ').nth(1)?.parse().ok()?;
        Some((code, answer))
    };
    // Wait for the API to listen.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get("127.0.0.3").is_none() {
        assert!(Instant::now() < deadline, "the verify API never answered");
    }
    let answers: Vec<(u16, String)> = (0..20).filter_map(|_| get("127.0.0.2")).collect();
    let limited = answers
        .iter()
        .find(|(code, _)| *code == 429)
        .expect("20 requests at once passed a burst of 3");
    assert!(
        limited.1.contains("\"reason\":\"rate_limited\""),
        "{}",
        limited.1
    );
    assert!(limited.1.contains("--http-rate-per-ip"), "{}", limited.1);
    // Another address has its own allowance.
    assert_eq!(get("127.0.0.4").map(|(code, _)| code), Some(200));
    let _ = verifier.kill();
    let _ = verifier.wait();
}
