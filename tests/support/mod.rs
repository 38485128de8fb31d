//! A cluster of real `lapse broker` processes on loopback for end-to-end
//! tests: start, `kill -9`, restart, and talk to them over gRPC.

#![allow(dead_code)]

pub mod edge;
pub mod soak;
pub mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::cluster::{self as pb, revocation::Target};
use tonic::transport::Channel;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The SHA-256 of [`ADMIN_TOKEN`], as broker configurations hold it.
pub fn admin_token_hash() -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(ADMIN_TOKEN.as_bytes()))
}
pub const SECRET: &str = "test-cluster-secret-0123456789";

/// The `lapse` binary, talking plaintext to the plaintext test clusters
/// (`lapse dev` tests remove `LAPSE_INSECURE_PLAINTEXT`; `tests/mtls.rs`
/// runs clusters with TLS).
pub fn lapse() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lapse"));
    command.env("LAPSE_INSECURE_PLAINTEXT", "true");
    command
}

/// A loopback port no other test of this process was given, that was
/// free when chosen. See [`free_ports`].
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `count` consecutive loopback ports, none given to another
/// test of this process, all free when chosen. Taken below the kernel's
/// ephemeral range: a port the kernel hands out for `:0` is also where it
/// puts the local end of outgoing connections, so one bound, read and
/// released could be taken by any connection before the server it was
/// meant for binds it.
pub fn free_ports(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let count = u32::from(count.max(1));
    // The ephemeral range starts at 32768 unless configured otherwise.
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let top = ephemeral_low.clamp(12_000, 65_000);
    let span = 10_000;
    let bottom = top - span;
    // Test binaries run one after another, but a process of the last may
    // linger: each starts at its own offset.
    let start = (std::process::id() * 7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(count, Ordering::Relaxed);
        let first = bottom + (start + n) % span;
        if first + count > top {
            continue;
        }
        let free = |port: u32| std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok();
        if (first..first + count).all(free) {
            return first as u16;
        }
    }
    panic!("no {count} free loopback ports in {bottom}..{top}");
}

pub struct Node {
    pub id: u64,
    pub address: String,
    pub config: PathBuf,
    pub child: Option<Child>,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, Node>,
    /// Extra TOML appended to every broker's configuration.
    pub tuning: String,
    /// With TLS: the directory of the CA (`ca.pem`, `ca.key`) and every
    /// certificate (`broker-N`, `operator-ops`).
    pub certs: Option<PathBuf>,
}

/// The operator the TLS test clusters certify for their clients. Every
/// test broker treats it (and the admin token) as a cluster admin, and
/// broker N also `operator:only-on-broker-N`: an identity only one broker
/// trusts, for tests of what the leader decides.
pub const OPERATOR: &str = "ops";

/// Issue `role`'s certificate with the CA in `certs`, valid from `now` for
/// `valid_for`: the certificate and key paths.
pub fn issue_cert(
    certs: &Path,
    role: lapse_pki::Role,
    now: std::time::SystemTime,
    valid_for: Duration,
) -> (PathBuf, PathBuf) {
    let read = |name: &str| std::fs::read_to_string(certs.join(name)).expect("CA file");
    let authority = lapse_pki::Authority::load(&read("ca.pem"), &read("ca.key")).expect("the CA");
    let stem = format!("{}-{}", role.kind(), role.name());
    let hosts = vec!["127.0.0.1".to_owned()];
    let pair = authority
        .issue(
            &lapse_pki::LeafRequest {
                role,
                hosts,
                valid_for,
            },
            now,
        )
        .expect("a certificate");
    let (cert, key) = (
        certs.join(format!("{stem}.pem")),
        certs.join(format!("{stem}.key")),
    );
    lapse_pki::files::write(&key, &pair.key_pem, true, true).expect("write key");
    lapse_pki::files::write(&cert, &pair.cert_pem, false, true).expect("write cert");
    (cert, key)
}

/// A new CA for trust domain `domain` in `certs`.
pub fn new_ca(certs: &Path, domain: &str) {
    std::fs::create_dir_all(certs).expect("certs directory");
    let (_, pair) = lapse_pki::Authority::generate(
        domain,
        std::time::SystemTime::now(),
        Duration::from_secs(86_400),
    )
    .expect("a CA");
    lapse_pki::files::write(&certs.join("ca.key"), &pair.key_pem, true, true).expect("write");
    lapse_pki::files::write(&certs.join("ca.pem"), &pair.cert_pem, false, true).expect("write");
}

pub const FAST_RAFT: &str = "
[raft]
heartbeat_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
rpc_timeout_ms = 1000
";

impl TestCluster {
    /// Write configurations for voters `1..=voters` and start them.
    pub fn start(voters: u64, tuning: &str) -> Self {
        Self::start_with(voters, tuning, |_| String::new())
    }

    /// Like `start`, with mutual TLS: a CA, a certificate per broker and
    /// one for the operator the clients act as.
    pub fn start_tls(voters: u64, tuning: &str) -> Self {
        Self::start_inner(voters, tuning, |_| String::new(), true)
    }

    /// Like `start_tls`, with extra TOML for each node from `per_node(id)`.
    pub fn start_tls_with(voters: u64, tuning: &str, per_node: impl Fn(u64) -> String) -> Self {
        Self::start_inner(voters, tuning, per_node, true)
    }

    /// The directory of a TLS cluster's CA and certificates.
    pub fn certs(&self) -> &Path {
        self.certs.as_deref().expect("a TLS cluster")
    }

    /// The TOML `[tls]` section of broker `id`.
    pub fn tls_section(&self, id: u64) -> String {
        let certs = self.certs.as_ref().expect("a TLS cluster");
        format!(
            "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            certs.join("ca.pem").display(),
            certs.join(format!("broker-{id}.pem")).display(),
            certs.join(format!("broker-{id}.key")).display()
        )
    }

    /// Like `start`, with extra TOML for each node from `per_node(id)`.
    pub fn start_with(voters: u64, tuning: &str, per_node: impl Fn(u64) -> String) -> Self {
        Self::start_inner(voters, tuning, per_node, false)
    }

    fn start_inner(voters: u64, tuning: &str, per_node: impl Fn(u64) -> String, tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let certs = tls.then(|| dir.path().join("certs"));
        if let Some(certs) = &certs {
            new_ca(certs, "test.lapse");
            let now = std::time::SystemTime::now();
            for id in 1..=voters {
                issue_cert(
                    certs,
                    lapse_pki::Role::Broker(id),
                    now,
                    Duration::from_secs(86_400),
                );
            }
            issue_cert(
                certs,
                lapse_pki::Role::Operator(OPERATOR.into()),
                now,
                Duration::from_secs(86_400),
            );
        }
        let mut cluster = Self {
            dir,
            nodes: BTreeMap::new(),
            tuning: tuning.to_owned(),
            certs,
        };
        let addresses: Vec<(u64, String)> = (1..=voters)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let members: String = addresses
            .iter()
            .map(|(id, address)| {
                format!("[[cluster.members]]\nid = {id}\naddress = \"{address}\"\n")
            })
            .collect();
        for (id, address) in &addresses {
            let (top, secret, section) = if tls {
                (String::new(), String::new(), cluster.tls_section(*id))
            } else {
                (
                    "insecure_plaintext = true\n".to_owned(),
                    format!("secret = \"{SECRET}\"\n"),
                    String::new(),
                )
            };
            let text = format!(
                "node_id = {id}\nlisten = \"{address}\"\ndata_dir = \"{}\"\n{top}[cluster]\n{secret}{members}[auth]\nadmin_tokens = [{{ name = \"tests\", sha256 = \"{}\" }}]\ncluster_admins = [\"token:tests\", \"operator:ops\", \"operator:only-on-broker-{id}\"]\n{section}{}\n{}",
                cluster.dir.path().join(format!("node-{id}")).display(),
                admin_token_hash(),
                cluster.tuning,
                per_node(*id)
            );
            cluster.add_node(*id, address, &text);
        }
        for id in 1..=voters {
            cluster.spawn(id, &[]);
        }
        cluster
    }

    /// Write a config for a node that will join (no members, no secret).
    pub fn add_joiner(&mut self, id: u64) -> String {
        let address = format!("127.0.0.1:{}", free_port());
        let text = format!(
            "node_id = {id}\nlisten = \"{address}\"\ndata_dir = \"{}\"\ninsecure_plaintext = true\n[auth]\nadmin_tokens = [{{ name = \"tests\", sha256 = \"{}\" }}]\ncluster_admins = [\"token:tests\", \"operator:ops\", \"operator:only-on-broker-{id}\"]\n{}",
            self.dir.path().join(format!("node-{id}")).display(),
            admin_token_hash(),
            self.tuning
        );
        self.add_node(id, &address, &text);
        address
    }

    fn add_node(&mut self, id: u64, address: &str, text: &str) {
        let config = self.dir.path().join(format!("node-{id}.toml"));
        std::fs::write(&config, text).expect("write config");
        self.nodes.insert(
            id,
            Node {
                id,
                address: address.to_owned(),
                config,
                child: None,
            },
        );
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    /// Start broker `id` with extra command-line arguments.
    pub fn spawn(&mut self, id: u64, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("log file");
        let node = self.nodes.get_mut(&id).expect("known node");
        let child = lapse()
            .arg("broker")
            .arg("--config")
            .arg(&node.config)
            .args(extra)
            .env("LAPSE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn broker");
        node.child = Some(child);
    }

    /// SIGKILL broker `id` and reap it.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    pub fn address(&self, id: u64) -> String {
        self.nodes[&id].address.clone()
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    pub async fn client(&self, id: u64) -> Option<ClusterClient<Channel>> {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.address(id)))
                .ok()?
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(15));
        match &self.certs {
            None => endpoint.connect().await.ok().map(ClusterClient::new),
            Some(certs) => {
                let files = lapse_pki::TlsFiles {
                    ca: certs.join("ca.pem"),
                    cert: Some(certs.join(format!("operator-{OPERATOR}.pem"))),
                    key: Some(certs.join(format!("operator-{OPERATOR}.key"))),
                };
                let tls = lapse_pki::Tls::open(files, std::time::SystemTime::now()).ok()?;
                lapse_pki::TlsConnector::new(tls, lapse_pki::Expect::AnyBroker)
                    .connect(endpoint)
                    .await
                    .ok()
                    .map(ClusterClient::new)
            }
        }
    }

    pub async fn status(&self, id: u64) -> Option<pb::StatusResponse> {
        let mut client = self.client(id).await?;
        client
            .status(authorised(pb::StatusRequest {}))
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Wait until the running brokers agree on a leader; return its id.
    pub async fn wait_for_leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut leaders = Vec::new();
            for id in self.running() {
                if let Some(status) = self.status(id).await {
                    leaders.push(status.leader_id);
                }
            }
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*leader)) && self.running().contains(leader) {
                    return *leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within 30 s: {leaders:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until every running broker has applied the same index, and
    /// return the statuses.
    pub async fn wait_converged(&self) -> Vec<pb::StatusResponse> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut statuses = Vec::new();
            for id in self.running() {
                if let Some(status) = self.status(id).await {
                    statuses.push(status);
                }
            }
            let running = self.running().len();
            if statuses.len() == running
                && statuses
                    .windows(2)
                    .all(|w| w[0].applied_index == w[1].applied_index)
                && statuses
                    .iter()
                    .all(|s| s.applied_index == s.committed_index && s.applied_index > 0)
            {
                return statuses;
            }
            assert!(
                Instant::now() < deadline,
                "brokers did not converge within 30 s: {:?}\n{}",
                statuses
                    .iter()
                    .map(|s| (s.node_id, s.applied_index, s.committed_index))
                    .collect::<Vec<_>>(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The tail of every broker's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for id in self.nodes.keys() {
            let text = std::fs::read_to_string(self.log_path(*id)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            all.push_str(&format!("--- node {id} ---\n"));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }

    /// Run the `lapse` command against broker `id`.
    pub fn cli(&self, id: u64, args: &[&str]) -> Output {
        let mut command = lapse();
        command
            .args(args)
            .env("LAPSE_BROKER", self.address(id))
            .env("LAPSE_TOKEN", ADMIN_TOKEN);
        if let Some(certs) = &self.certs {
            command
                .env_remove("LAPSE_INSECURE_PLAINTEXT")
                .env_remove("LAPSE_TOKEN")
                .env("LAPSE_CA", certs.join("ca.pem"))
                .env("LAPSE_CERT", certs.join(format!("operator-{OPERATOR}.pem")))
                .env("LAPSE_KEY", certs.join(format!("operator-{OPERATOR}.key")));
        }
        command.output().expect("run lapse")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill9(id);
        }
    }
}

pub fn authorised<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().expect("ascii"),
    );
    request
}

pub fn revoke_index(request_id: &str, index: u64) -> pb::RevokeRequest {
    pb::RevokeRequest {
        request_id: request_id.to_owned(),
        revocation: Some(pb::Revocation {
            target: Some(Target::Index(index)),
        }),
    }
}

/// Send `message` to each running broker in turn until one answers with
/// something other than "unavailable".
pub async fn revoke_anywhere(
    cluster: &TestCluster,
    message: pb::RevokeRequest,
) -> Result<pb::RevokeResponse, tonic::Status> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for id in cluster.running() {
            let Some(mut client) = cluster.client(id).await else {
                continue;
            };
            match client.revoke(authorised(message.clone())).await {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(status) if status.code() == tonic::Code::Unavailable => {}
                Err(status) => return Err(status),
            }
        }
        assert!(
            Instant::now() < deadline,
            "no broker took the revocation within 30 s\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lease `count` indices through broker `id`.
pub async fn lease(cluster: &TestCluster, id: u64, count: u64) -> pb::LeaseResponse {
    let mut client = cluster.client(id).await.expect("connect");
    client
        .lease_indices(authorised(pb::LeaseRequest {
            request_id: format!("lease-{}", rand_suffix()),
            broker_id: id,
            count,
            lease_ms: 3_600_000,
        }))
        .await
        .expect("lease")
        .into_inner()
}

pub fn rand_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

pub fn data_dir(cluster: &TestCluster, id: u64) -> PathBuf {
    cluster.dir.path().join(format!("node-{id}"))
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// GET `path` from an HTTP server and return the body (which must be 200).
pub fn http_get(address: &str, path: &str) -> String {
    let (status, body) = edge::http_request(address, "GET", path, "").expect("an HTTP response");
    assert_eq!(status, 200, "{body}");
    body
}

/// A plaintext broker's `/metrics`, read with the admin token (200 only).
pub fn broker_metrics(address: &str) -> String {
    let response = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
        .get(&format!("http://{address}/metrics"))
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .expect("/metrics answers 200");
    response.into_string().expect("a text body")
}

/// A broker's `/metrics` in the classic Prometheus text format (asked for
/// by `Accept`), as `promtool check metrics` reads it.
pub fn broker_metrics_text(address: &str) -> String {
    let response = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
        .get(&format!("http://{address}/metrics"))
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .set("Accept", "text/plain;version=0.0.4")
        .call()
        .expect("/metrics answers 200");
    assert!(
        response.content_type() == "text/plain",
        "asked for the text format, got {}",
        response.content_type()
    );
    response.into_string().expect("a text body")
}

/// A fresh join token for `workload` of `tenant`, made through broker 1.
pub fn join_token(cluster: &TestCluster, tenant: &str, workload: &str) -> String {
    cli_json(
        cluster,
        1,
        &[
            "join-token",
            "create",
            "--tenant",
            tenant,
            "--workload",
            workload,
            "--json",
        ],
    )["token"]
        .as_str()
        .expect("a join token")
        .to_owned()
}

/// Run `lapse` and parse its JSON output, failing with its stderr.
pub fn cli_json(cluster: &TestCluster, id: u64, args: &[&str]) -> serde_json::Value {
    let out = cluster.cli(id, args);
    assert!(
        out.status.success(),
        "lapse {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "lapse {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Wait until the cluster publishes at least `count` signing keys.
pub async fn wait_for_keys(cluster: &TestCluster, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cluster.cli(1, &["keys", "--json"]);
        if out.status.success() {
            let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if keys["keys"].as_array().unwrap().len() >= count {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "brokers did not register keys\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Set `tenant`'s Cedar policy to `text` through `lapse policy set`, and
/// wait until every running broker has applied it (brokers decide from
/// their own applied state); the command's JSON answer.
pub fn set_policy(cluster: &TestCluster, tenant: &str, text: &str) -> serde_json::Value {
    let file = cluster.dir.path().join(format!("{tenant}.cedar"));
    std::fs::write(&file, text).unwrap();
    let set = cli_json(
        cluster,
        1,
        &[
            "policy",
            "set",
            "--tenant",
            tenant,
            "--file",
            file.to_str().unwrap(),
            "--json",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in cluster.running() {
        while cli_json(
            cluster,
            id,
            &["policy", "show", "--tenant", tenant, "--json"],
        )["version"]
            .as_u64()
            < set["version"].as_u64()
        {
            assert!(
                Instant::now() < deadline,
                "broker {id} did not apply the policy"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    set
}

/// Wait until every running broker has its own signing key registered and
/// active: after that, no start-up write moves the feed epoch (keys are
/// the only start-up writes that do), so a test can compare epochs.
pub async fn wait_for_active_keys(cluster: &TestCluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending: Vec<u64> = cluster
            .running()
            .into_iter()
            .filter(|id| {
                !std::fs::read_to_string(cluster.log_path(*id))
                    .unwrap_or_default()
                    .contains("signing key registered and active")
            })
            .collect();
        if pending.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "brokers {pending:?} have no active signing key\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The verifiers a `lapse propagation --json` report names as connected,
/// with the epoch each acked.
pub fn connected_verifiers(report: &serde_json::Value) -> BTreeMap<String, u64> {
    report["verifiers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|v| v["connected"] == true)
        .map(|v| {
            (
                v["verifier"].as_str().unwrap_or_default().to_owned(),
                v["acked_epoch"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}
