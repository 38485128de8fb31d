//! The standards relying parties use, on a real broker: a credential's
//! `status.status_list.uri` resolves to a signed Token Status List that an
//! implementation Lapse did not write (`@sd-jwt/jwt-status-list` from npm,
//! run by Node) reads as VALID, then INVALID after `lapse revoke index`;
//! RFC 7662 introspection says `active: true`, then `active: false`, and
//! answers only callers the access policy lets read the status; RFC 7009
//! revocation by the holder or by an operator.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

const POLICY: &str = r#"permit(principal, action == Action::"issue", resource == Tenant::"acme");"#;

/// A folder with `@sd-jwt/jwt-status-list` installed from npm, made once
/// under the target directory and reused. The tests of this file run in
/// parallel and would otherwise both install into the same folder at once,
/// so the first caller installs (into a folder of its own, renamed into
/// place when complete) and the others wait for it.
fn status_list_reader() -> PathBuf {
    static READER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    READER.get_or_init(install_status_list_reader).clone()
}

fn install_status_list_reader() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("npm-status-list");
    let package = Path::new("node_modules/@sd-jwt/jwt-status-list/package.json");
    if dir.join(package).exists() {
        return dir;
    }
    let partial = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).unwrap();
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&partial)
        .arg("@sd-jwt/jwt-status-list@0.17.0")
        .output()
        .expect("npm must be installed to run this test");
    assert!(
        out.status.success() && partial.join(package).exists(),
        "npm install @sd-jwt/jwt-status-list failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another process may have finished first; its folder is as good.
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::rename(&partial, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    assert!(
        dir.join(package).exists(),
        "the status list reader is not installed"
    );
    dir
}

/// The credential's status as the npm implementation reads it.
fn status_by_npm(reader: &Path, credential: &str, jwks_url: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standards/status_list.js");
    let out = Command::new("node")
        .arg(&script)
        .args([credential, jwks_url])
        .env("NODE_PATH", reader.join("node_modules"))
        .output()
        .expect("node must be installed to run this test");
    assert!(
        out.status.success(),
        "the status list reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// POST `token` to `/introspect` with `authorization` (if any).
fn introspect(http: &str, token: &str, authorization: Option<&str>) -> (u16, serde_json::Value) {
    post_token(http, "/introspect", token, authorization)
}

/// POST `token=<token>` to `path` with `authorization` (if any).
fn post_token(
    http: &str,
    path: &str,
    token: &str,
    authorization: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
        .post(&format!("http://{http}{path}"));
    if let Some(value) = authorization {
        request = request.set("Authorization", value);
    }
    let response = match request.send_form(&[("token", token)]) {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("POST {path}: {error}"),
    };
    (response.status(), response.into_json().unwrap())
}

fn get_status(http: &str, path: &str) -> u16 {
    match ureq::get(&format!("http://{http}{path}")).call() {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response.status(),
        Err(error) => panic!("GET {path}: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_status_list_reader_and_introspection_see_a_revocation() {
    let reader = status_list_reader();
    let http = format!("127.0.0.1:{}", free_port());
    let listen = http.clone();
    let cluster = TestCluster::start_with(1, FAST_RAFT, move |_| {
        format!("[issuance]\nhttp_listen = \"{listen}\"\nissuer = \"http://{listen}\"\n")
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 1).await;
    set_policy(&cluster, "acme", POLICY);
    let token = join_token(&cluster, "acme", "spiffe://example.org/payments");
    let issued = cli_json(
        &cluster,
        1,
        &[
            "issue",
            "--join-token",
            &token,
            "--audience",
            "billing",
            "--json",
        ],
    );
    let credential = issued["credential"].as_str().unwrap().to_owned();
    let index = issued["status_index"].as_u64().unwrap();
    let jwks = format!("http://{http}/.well-known/jwks.json");

    let valid = status_by_npm(&reader, &credential, &jwks);
    assert_eq!(
        valid["uri"],
        format!("http://{http}/statuslists/1"),
        "{valid}"
    );
    assert_eq!(valid["idx"], index, "{valid}");
    assert_eq!(
        (valid["status"].as_u64(), valid["bits"].as_u64()),
        (Some(0), Some(1)),
        "{valid}"
    );
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let (status, active) = introspect(&http, &credential, Some(&admin));
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["tenant"], "acme");
    assert_eq!(active["sub"], "spiffe://example.org/payments");
    // Introspection is not for anyone: no credentials, 401.
    let (status, refused) = introspect(&http, &credential, None);
    assert_eq!(status, 401, "{refused}");
    // A malformed or forged token is simply inactive.
    let (_, forged) = introspect(&http, "eyJhbGciOiJub25lIn0.e30.", Some(&admin));
    assert_eq!(forged, serde_json::json!({ "active": false }));

    let out = cluster.cli(1, &["revoke", "index", &index.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The broker answers from what it has applied, which the revoke's
    // answer already covers on a one-broker cluster.
    let invalid = status_by_npm(&reader, &credential, &jwks);
    assert_eq!(invalid["status"], 1, "{invalid}");
    let (_, inactive) = introspect(&http, &credential, Some(&admin));
    assert_eq!(inactive, serde_json::json!({ "active": false }));

    // RFC 7009: the holder revokes its own credential with no client
    // authentication; an operator revokes one with its own; a token that
    // is not a current credential is answered 200 and changes nothing.
    let issue = |extra: &[&str]| {
        let token = join_token(&cluster, "acme", "spiffe://example.org/payments");
        let mut args = vec![
            "issue",
            "--join-token",
            &token,
            "--audience",
            "billing",
            "--json",
        ];
        args.extend_from_slice(extra);
        cli_json(&cluster, 1, &args)["credential"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let own = issue(&[]);
    let (status, reply) = post_token(&http, "/revoke", &own, None);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(introspect(&http, &own, Some(&admin)).1["active"], false);
    assert_eq!(status_by_npm(&reader, &own, &jwks)["status"], 1);
    let by_operator = issue(&[]);
    let (status, reply) = post_token(&http, "/revoke", &by_operator, Some(&admin));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        introspect(&http, &by_operator, Some(&admin)).1["active"],
        false
    );
    // A key-bound credential needs its key's proof to be revoked by its
    // holder; a stolen copy cannot take it away from its owner.
    let key = cluster.dir.path().join("holder.key");
    let issuer = format!("http://{http}");
    let bound = issue(&[
        "--dpop-key-file",
        key.to_str().unwrap(),
        "--issuer",
        &issuer,
    ]);
    let (status, reply) = post_token(&http, "/revoke", &bound, None);
    assert_eq!(status, 401, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("DPoP proof is required"),
        "{reply}"
    );
    assert_eq!(introspect(&http, &bound, Some(&admin)).1["active"], true);
    // Nothing to revoke, nothing changed; a wrong admin token is refused.
    let revocations = || -> u64 {
        broker_metrics(&http)
            .lines()
            .filter(|l| l.starts_with("lapse_revocations_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = revocations();
    assert_eq!(before, 3, "index, holder and operator revocations");
    let (status, _) = post_token(&http, "/revoke", "eyJhbGciOiJub25lIn0.e30.", None);
    assert_eq!(status, 200);
    assert_eq!(revocations(), before, "a bad token revoked something");
    let (status, reply) = post_token(&http, "/revoke", &bound, Some("Bearer not-the-token"));
    assert_eq!(status, 401, "{reply}");
    assert_eq!(introspect(&http, &bound, Some(&admin)).1["active"], true);

    // Lists that do not exist are 404s.
    for path in [
        "/statuslists/0",
        "/statuslists/x",
        "/statuslists/2",
        "/statuslists/99999999999999999999999",
    ] {
        assert_eq!(get_status(&http, path), 404, "{path}");
    }
}

/// Run `lapse` in `dir` against the dev cluster's broker at `broker`.
fn dev_cli(dir: &Path, broker: &str, args: &[&str]) -> serde_json::Value {
    let out = lapse()
        .env_remove("LAPSE_INSECURE_PLAINTEXT")
        .current_dir(dir)
        .args(args)
        .args(["--broker", broker, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lapse {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// A child process stopped with SIGINT (as Ctrl-C stops `lapse dev`) when
/// dropped, so a failing test leaves no cluster behind.
struct Interrupted(std::process::Child);

impl Drop for Interrupted {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn a_lapse_dev_credential_names_a_status_list_that_resolves_over_https() {
    use std::io::{BufRead, BufReader};
    let reader = status_list_reader();
    let dir = tempfile::tempdir().unwrap();
    // Brokers on base..=base+2, their HTTPS on base+100..=base+102.
    let base = free_ports(103);
    let mut dev = lapse()
        .env_remove("LAPSE_INSECURE_PLAINTEXT")
        .current_dir(dir.path())
        .args(["dev", "--base-port", &base.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let _dev = Interrupted(dev);
    let mut printed = String::new();
    while !printed.contains("Ctrl-C stops the cluster") {
        match lines.next() {
            Some(Ok(line)) => printed.push_str(&(line + "\n")),
            _ => panic!("lapse dev ended: {printed}"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let broker = format!("127.0.0.1:{base}");
    let issuer = format!("https://127.0.0.1:{}", base + 100);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".lapse-dev/issuer")).unwrap(),
        issuer
    );
    std::fs::write(dir.path().join("acme.cedar"), POLICY).unwrap();
    dev_cli(
        dir.path(),
        &broker,
        &["policy", "set", "--tenant", "acme", "--file", "acme.cedar"],
    );
    let token = dev_cli(
        dir.path(),
        &broker,
        &[
            "join-token",
            "create",
            "--tenant",
            "acme",
            "--workload",
            "spiffe://example.org/payments",
        ],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The brokers register keys and lease indices just after start.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let issued = loop {
        let out = lapse()
            .env_remove("LAPSE_INSECURE_PLAINTEXT")
            .current_dir(dir.path())
            .args([
                "issue",
                "--join-token",
                &token,
                "--audience",
                "billing",
                "--json",
            ])
            .args(["--broker", &broker])
            .output()
            .unwrap();
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
        assert!(
            out.status.code() == Some(5) && std::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let credential = issued["credential"].as_str().unwrap().to_owned();
    let index = issued["status_index"].as_u64().unwrap().to_string();
    let read = || {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standards/status_list.js");
        let out = Command::new("node")
            .arg(&script)
            .args([
                credential.as_str(),
                &format!("{issuer}/.well-known/jwks.json"),
            ])
            .env("NODE_PATH", reader.join("node_modules"))
            .env(
                "NODE_EXTRA_CA_CERTS",
                dir.path().join(".lapse-dev/certs/ca.pem"),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let valid = read();
    assert_eq!(valid["uri"], format!("{issuer}/statuslists/1"), "{valid}");
    assert_eq!(valid["status"], 0, "{valid}");
    dev_cli(dir.path(), &broker, &["revoke", "index", &index]);
    // Broker 1 serves the list; the revoke was answered once committed,
    // and broker 1 applies it at once or within a heartbeat: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read()["status"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the list never showed the revocation"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
