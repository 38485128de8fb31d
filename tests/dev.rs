//! `lapse dev`, the README's first command: it starts three brokers, they
//! serve, and Ctrl-C stops them cleanly with the data kept.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn dev_cluster_serves_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    // Run where a newcomer would: the cluster keeps everything in
    // ./.lapse-dev, and the CLI finds its certificate there.
    let data = dir.path().join(".lapse-dev");
    let certs = data.join("certs");
    // Three consecutive free ports, found by probing.
    // Brokers on base..=base+2, their HTTPS on base+100..=base+102.
    let base = free_ports(103);
    let mut child = lapse()
        .env_remove("LAPSE_INSECURE_PLAINTEXT")
        .current_dir(dir.path())
        .args(["dev", "--base-port", &base.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut printed = String::new();
    while !printed.contains("Ctrl-C stops the cluster") {
        assert!(
            Instant::now() < deadline,
            "dev cluster did not start: {printed}"
        );
        printed.push_str(&lines.next().unwrap().unwrap());
        printed.push('\n');
    }
    for n in 0..3 {
        assert!(
            printed.contains(&format!("127.0.0.1:{}", base + n)),
            "{printed}"
        );
    }
    // Each broker serves its JWKS; keys appear once they are registered.
    let jwks_address = format!("127.0.0.1:{}", base + 100);
    assert!(printed.contains(&jwks_address), "{printed}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Over HTTPS, with no client certificate: relying parties have none.
        let (code, body) = tls::https_get(
            &jwks_address,
            "/.well-known/jwks.json",
            &certs.join("ca.pem"),
            None,
        )
        .unwrap();
        assert_eq!(code, 200, "{body}");
        let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
        if jwks["keys"].as_array().unwrap().len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "brokers did not publish their keys: {jwks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Metrics need a client certificate: the operator's.
    let (code, body) =
        tls::https_get(&jwks_address, "/metrics", &certs.join("ca.pem"), None).unwrap();
    assert_eq!(code, 401, "{body}");
    let (code, body) = tls::https_get(
        &jwks_address,
        "/metrics",
        &certs.join("ca.pem"),
        Some((
            &certs.join("operator-dev.pem"),
            &certs.join("operator-dev.key"),
        )),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("lapse_tls_certificate_expiry_timestamp_seconds"),
        "{body}"
    );

    // The printed suggestions work: the CLI finds the CA and the operator's
    // certificate in ./.lapse-dev/certs, with no token.
    let broker = format!("127.0.0.1:{base}");
    let run = |args: &[&str]| {
        lapse()
            .env_remove("LAPSE_INSECURE_PLAINTEXT")
            .env_remove("LAPSE_TOKEN")
            .current_dir(dir.path())
            .args(args)
            .env("LAPSE_BROKER", &broker)
            .output()
            .unwrap()
    };
    let leased = run(&["lease", "--broker-id", "1", "--count", "10"]);
    assert!(
        leased.status.success(),
        "{}",
        String::from_utf8_lossy(&leased.stderr)
    );
    let revoked = run(&["revoke", "index", "3"]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let status = run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3);

    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let mut rest = String::new();
    for line in lines {
        rest.push_str(&line.unwrap());
        rest.push('\n');
    }
    let exit = child.wait().unwrap();
    assert!(exit.success(), "dev exited with {exit:?}: {rest}");
    assert!(rest.contains("stopped"), "{rest}");
    assert!(
        data.join("node-1").join("raft").exists(),
        "data should be kept"
    );
    assert!(data.join("node-2.toml").exists());
}
