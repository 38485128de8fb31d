//! Broker configuration: a TOML file, with command-line overrides applied by
//! the caller. Unknown keys are an error, so a typo is never silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lapse_ledger::LedgerParams;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's Raft node id; unique in the cluster, never reused.
    pub node_id: u64,
    /// Where the broker serves gRPC (peers and clients on one port).
    pub listen: SocketAddr,
    /// The address other brokers and clients use to reach this one.
    /// Defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Where the Raft log, snapshots and the cluster secret live.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Mutual TLS on every link: the cluster's CA bundle and this broker's
    /// certificate and key (made with `lapse certs`). Required unless
    /// `insecure_plaintext`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Run without TLS, brokers proving themselves to each other with
    /// `cluster.secret` sent in the clear: for experiments on loopback only.
    /// A broker refuses to start this way on any other address.
    #[serde(default)]
    pub insecure_plaintext: bool,
    #[serde(default)]
    pub raft: RaftTuning,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub ledger: LedgerTuning,
    #[serde(default)]
    pub issuance: IssuanceConfig,
    #[serde(default)]
    pub feed: FeedConfig,
}

/// How this broker issues credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuanceConfig {
    /// The `iss` of every credential; the same on every broker of a cluster.
    pub issuer: String,
    /// Lifetime of a credential when the request names none.
    pub default_ttl_seconds: u64,
    /// A new signing key every this often.
    pub key_rotation_seconds: u64,
    /// How long a replaced key may still sign while the next one registers.
    pub key_overlap_seconds: u64,
    /// Status indices per leased block.
    pub lease_block: u64,
    /// How long the broker may issue from one block.
    pub lease_seconds: u64,
    /// Clock leeway when checking `exp`/`nbf` and DPoP proof times.
    pub leeway_seconds: u64,
    /// How old a DPoP proof may be.
    pub dpop_max_age_seconds: u64,
    /// Where to serve the JWKS and issuer metadata over HTTP; off if unset.
    pub http_listen: Option<SocketAddr>,
    /// The base URL clients reach `http_listen` at; defaults to http://<http_listen>.
    pub http_advertise: Option<String>,
    /// Ship local audit records to the ledger this often.
    pub audit_ship_ms: u64,
    /// External issuers whose JWTs attest a workload.
    pub external_issuers: Vec<ExternalIssuerConfig>,
}

impl Default for IssuanceConfig {
    fn default() -> Self {
        Self {
            issuer: "lapse".into(),
            default_ttl_seconds: 600,
            key_rotation_seconds: 3600,
            key_overlap_seconds: 300,
            lease_block: 10_000,
            lease_seconds: 600,
            leeway_seconds: 30,
            dpop_max_age_seconds: 60,
            http_listen: None,
            http_advertise: None,
            audit_ship_ms: 1000,
            external_issuers: Vec::new(),
        }
    }
}

impl IssuanceConfig {
    /// The URI a DPoP proof for refresh must name (`htu`).
    pub fn refresh_uri(&self) -> String {
        format!("{}/refresh", self.issuer.trim_end_matches('/'))
    }
}

/// An external issuer (Kubernetes service accounts, CI OIDC) whose JWTs
/// attest a workload, checked against a JWKS read from a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuerConfig {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// The audience its tokens must name.
    pub audience: String,
    /// Path of its JWKS (JSON).
    pub jwks_file: PathBuf,
    /// The tenant its workloads belong to.
    pub tenant: String,
    /// The claim that names the workload (for example `sub`).
    #[serde(default = "default_workload_claim")]
    pub workload_claim: String,
    /// Prepended to the claim's value to form the SPIFFE id.
    pub workload_prefix: String,
}

fn default_workload_claim() -> String {
    "sub".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The voters a new cluster starts with. Only read on first start of a
    /// broker whose id is the lowest listed; others wait to be contacted.
    #[serde(default)]
    pub members: Vec<Member>,
    /// With `insecure_plaintext` only: the shared secret brokers present to
    /// each other. A joining broker gets it from the cluster and keeps it in
    /// its data directory. With TLS a broker's certificate proves who it is.
    #[serde(default)]
    pub secret: Option<String>,
    /// Address of a running broker to join through, on first start.
    #[serde(default)]
    pub join: Option<String>,
    /// The single-use join token to present when joining.
    #[serde(default)]
    pub join_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: u64,
    pub address: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens accepted for admin and revoke calls.
    #[serde(default)]
    pub admin_tokens: Vec<String>,
}

/// Where a broker's TLS files are. They are read again when they change
/// (or on SIGHUP), so a certificate can be replaced without a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA bundle (`ca.pem`; during a CA rollover, both CAs).
    pub ca: PathBuf,
    /// This broker's certificate, naming `spiffe://<trust domain>/broker/<node_id>`.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl TlsConfig {
    pub fn files(&self) -> lapse_pki::TlsFiles {
        lapse_pki::TlsFiles {
            ca: self.ca.clone(),
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
        }
    }
}

/// How the brokers of a local cluster secure their links.
#[derive(Debug, Clone)]
pub enum LocalTransport {
    /// Mutual TLS with the certificates in this directory: `ca.pem`, and
    /// `broker-<id>.pem` and `.key` for each broker.
    Tls { certs: PathBuf },
    /// Plaintext on loopback, brokers sharing this secret.
    Plaintext { secret: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every_entries: u64,
    /// Log entries kept after a snapshot, for followers slightly behind.
    pub logs_kept_after_snapshot: u64,
    /// Timeout of one peer RPC when openraft gives none.
    pub rpc_timeout_ms: u64,
    /// Record a digest of the applied state at every log index divisible
    /// by this, for comparing replicas.
    pub checkpoint_every_entries: u64,
    /// How often to compare checkpoint digests with every peer; 0: never.
    pub replica_check_ms: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_every_entries: 20_000,
            logs_kept_after_snapshot: 2_000,
            rpc_timeout_ms: 2_000,
            checkpoint_every_entries: 1_000,
            replica_check_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest client request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Largest message between brokers (append entries), in bytes.
    pub max_peer_message_bytes: usize,
    /// Largest snapshot accepted from a leader, in bytes.
    pub max_snapshot_bytes: usize,
    /// How long a write may wait for the cluster before the client is told
    /// it is unavailable.
    pub write_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 1 << 20,
            max_peer_message_bytes: 64 << 20,
            max_snapshot_bytes: 1 << 30,
            write_timeout_ms: 10_000,
        }
    }
}

/// The revocation feed this broker serves to edge verifiers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// How often subscribers get a heartbeat, each one confirmed with the
    /// leader first (a read index), so a broker cut off from the cluster
    /// stops sending them and its verifiers notice.
    pub heartbeat_ms: u64,
    /// Most verifiers this broker serves at once; more are refused with
    /// RESOURCE_EXHAUSTED and go to another broker.
    pub max_subscribers: usize,
    /// Updates kept for subscribers that are behind; one further behind is
    /// resynchronised with a snapshot.
    pub buffered_updates: usize,
    /// Events queued for one subscriber's connection.
    pub subscriber_queue: usize,
    /// A subscriber that takes longer than this to accept an event is
    /// disconnected.
    pub send_timeout_ms: u64,
    /// How long a disconnected verifier stays in propagation reports.
    pub forget_after_seconds: u64,
    /// The staleness bound this broker's verifiers use (`lapse verifier
    /// --staleness`). The broker does not enforce it; it checks that its
    /// heartbeats and measured round trips can keep such verifiers fresh,
    /// and says so in `lapse status` and `/metrics` when they cannot.
    pub verifier_staleness_ms: u64,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 200,
            max_subscribers: 10_000,
            buffered_updates: 1024,
            subscriber_queue: 16,
            send_timeout_ms: 10_000,
            forget_after_seconds: 600,
            verifier_staleness_ms: 2_000,
        }
    }
}

/// Ledger parameters, fixed when the cluster is created. Every broker of a
/// cluster must use the same values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerTuning {
    pub max_credential_ttl_seconds: u64,
    pub max_lease_seconds: u64,
    pub request_dedup_seconds: u64,
}

impl Default for LedgerTuning {
    fn default() -> Self {
        let params = LedgerParams::default();
        Self {
            max_credential_ttl_seconds: params.max_credential_ttl_ms / 1000,
            max_lease_seconds: params.max_lease_ms / 1000,
            request_dedup_seconds: params.request_dedup_ms / 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl BrokerConfig {
    /// A local cluster's configurations (`lapse dev`, the benchmarks): one
    /// broker per address, ids from 1, every address a member, the given
    /// transport and admin token, data under `dir/node-N`.
    pub fn local_cluster(
        dir: &Path,
        addresses: &[SocketAddr],
        transport: &LocalTransport,
        admin_token: &str,
    ) -> Vec<Self> {
        let members: Vec<Member> = addresses
            .iter()
            .enumerate()
            .map(|(n, address)| Member {
                id: n as u64 + 1,
                address: address.to_string(),
            })
            .collect();
        addresses
            .iter()
            .enumerate()
            .map(|(n, address)| {
                let id = n as u64 + 1;
                let mut config = Self::new(id, *address, dir.join(format!("node-{id}")));
                config.cluster.members = members.clone();
                match transport {
                    LocalTransport::Tls { certs } => {
                        config.tls = Some(TlsConfig {
                            ca: certs.join("ca.pem"),
                            cert: certs.join(format!("broker-{id}.pem")),
                            key: certs.join(format!("broker-{id}.key")),
                        });
                    }
                    LocalTransport::Plaintext { secret } => {
                        config.insecure_plaintext = true;
                        config.cluster.secret = Some(secret.clone());
                    }
                }
                config.auth.admin_tokens = vec![admin_token.to_owned()];
                config
            })
            .collect()
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// A single-node default for `node_id` listening on `listen`.
    pub fn new(node_id: u64, listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            node_id,
            listen,
            advertise: None,
            data_dir,
            cluster: ClusterConfig::default(),
            auth: AuthConfig::default(),
            tls: None,
            insecure_plaintext: false,
            raft: RaftTuning::default(),
            limits: Limits::default(),
            ledger: LedgerTuning::default(),
            issuance: IssuanceConfig::default(),
            feed: FeedConfig::default(),
        }
    }

    pub fn advertise_address(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    pub fn ledger_params(&self) -> LedgerParams {
        LedgerParams {
            max_credential_ttl_ms: self.ledger.max_credential_ttl_seconds * 1000,
            max_lease_ms: self.ledger.max_lease_seconds * 1000,
            request_dedup_ms: self.ledger.request_dedup_seconds * 1000,
            ..LedgerParams::default()
        }
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.write_timeout_ms)
    }

    /// For a plaintext broker on real sockets: every address it listens on,
    /// advertises or dials must be loopback.
    pub fn check_plaintext_on_loopback(&self) -> Result<(), ConfigError> {
        if !self.insecure_plaintext {
            return Ok(());
        }
        let mut addresses = vec![("listen", self.listen.to_string())];
        if let Some(advertise) = &self.advertise {
            addresses.push(("advertise", advertise.clone()));
        }
        if let Some(http) = self.issuance.http_listen {
            addresses.push(("issuance.http_listen", http.to_string()));
        }
        if let Some(join) = &self.cluster.join {
            addresses.push(("cluster.join", join.clone()));
        }
        for member in &self.cluster.members {
            addresses.push(("cluster.members", member.address.clone()));
        }
        for (field, address) in addresses {
            if !lapse_pki::is_loopback(&address) {
                return Err(ConfigError::Invalid(format!(
                    "insecure_plaintext is for loopback only, but {field} is {address}; configure [tls] (see `lapse certs`)"
                )));
            }
        }
        Ok(())
    }

    /// Check what a TOML parser cannot: consistency between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.node_id == 0 {
            return invalid("node_id must be at least 1".into());
        }
        match (&self.tls, self.insecure_plaintext) {
            (Some(_), true) => {
                return invalid("give either [tls] or insecure_plaintext = true, not both".into());
            }
            (None, false) => {
                return invalid("no [tls]: give ca, cert and key (make them with `lapse certs`), or set insecure_plaintext = true for an experiment on loopback".into());
            }
            (Some(_), false) if self.cluster.secret.is_some() => {
                return invalid("cluster.secret is for insecure_plaintext brokers; with [tls] a broker's certificate proves who it is: remove it".into());
            }
            _ => {}
        }
        if self.auth.admin_tokens.iter().any(|t| t.len() < 16) {
            return invalid("every admin token must be at least 16 characters".into());
        }
        if let Some(secret) = &self.cluster.secret
            && secret.len() < 16
        {
            return invalid("cluster.secret must be at least 16 characters".into());
        }
        if self.cluster.join.is_some() != self.cluster.join_token.is_some() {
            return invalid("cluster.join and cluster.join_token go together".into());
        }
        if self.cluster.join.is_some() && !self.cluster.members.is_empty() {
            return invalid("a broker either joins (cluster.join) or starts a cluster (cluster.members), not both".into());
        }
        let mut ids: Vec<u64> = self.cluster.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return invalid("cluster.members lists a node id twice".into());
        }
        if !self.cluster.members.is_empty() && !ids.contains(&self.node_id) {
            return invalid(format!(
                "cluster.members does not list this broker's node_id {}",
                self.node_id
            ));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0
            || r.election_timeout_min_ms <= r.heartbeat_ms
            || r.election_timeout_max_ms <= r.election_timeout_min_ms
        {
            return invalid("raft timeouts need 0 < heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms".into());
        }
        if r.checkpoint_every_entries == 0 {
            return invalid("raft.checkpoint_every_entries must be above zero".into());
        }
        let feed = &self.feed;
        if feed.heartbeat_ms == 0
            || feed.max_subscribers == 0
            || feed.buffered_updates == 0
            || feed.subscriber_queue == 0
            || feed.send_timeout_ms == 0
            || feed.verifier_staleness_ms == 0
        {
            return invalid("every [feed] setting must be above zero".into());
        }
        let issuance = &self.issuance;
        if issuance.issuer.is_empty()
            || issuance.lease_block == 0
            || issuance.key_rotation_seconds == 0
        {
            return invalid(
                "issuance.issuer, lease_block and key_rotation_seconds must be set".into(),
            );
        }
        if issuance.default_ttl_seconds == 0
            || issuance.default_ttl_seconds > self.ledger.max_credential_ttl_seconds
        {
            return invalid(
                "issuance.default_ttl_seconds must be within ledger.max_credential_ttl_seconds"
                    .into(),
            );
        }
        if issuance.lease_seconds == 0 || issuance.lease_seconds > self.ledger.max_lease_seconds {
            return invalid(
                "issuance.lease_seconds must be within ledger.max_lease_seconds".into(),
            );
        }
        if self.ledger.max_credential_ttl_seconds == 0 || self.ledger.max_lease_seconds == 0 {
            return invalid("ledger durations must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file_and_refuses_typos() {
        let text = r#"
            node_id = 2
            listen = "127.0.0.1:7402"
            data_dir = "data/2"
            insecure_plaintext = true
            [cluster]
            secret = "0123456789abcdef0123"
            [[cluster.members]]
            id = 1
            address = "127.0.0.1:7401"
            [[cluster.members]]
            id = 2
            address = "127.0.0.1:7402"
            [auth]
            admin_tokens = ["0123456789abcdef"]
            [raft]
            heartbeat_ms = 50
        "#;
        let config = BrokerConfig::from_toml(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.cluster.members.len(), 2);
        assert_eq!(config.raft.heartbeat_ms, 50);
        assert_eq!(config.raft.election_timeout_min_ms, 500);

        let typo = text.replace("heartbeat_ms", "heartbeat_msec");
        let error = BrokerConfig::from_toml(&typo).unwrap_err().to_string();
        assert!(error.contains("heartbeat_msec"), "{error}");
    }

    #[test]
    fn refuses_inconsistent_settings() {
        let mut config = BrokerConfig::new(1, "127.0.0.1:1".parse().unwrap(), "d".into());
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("no [tls]"), "{error}");
        config.tls = Some(TlsConfig {
            ca: "ca.pem".into(),
            cert: "c".into(),
            key: "k".into(),
        });
        config.validate().unwrap();
        config.insecure_plaintext = true;
        assert!(config.validate().is_err(), "both TLS and plaintext");
        config.insecure_plaintext = false;
        config.cluster.secret = Some("0123456789abcdef0123".into());
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("cluster.secret"), "{error}");
        config.cluster.secret = None;
        config.cluster.join = Some("127.0.0.1:2".into());
        assert!(config.validate().is_err());
    }

    #[test]
    fn plaintext_is_for_loopback_only() {
        let mut config = BrokerConfig::new(1, "127.0.0.1:1".parse().unwrap(), "d".into());
        config.insecure_plaintext = true;
        config.validate().unwrap();
        config.check_plaintext_on_loopback().unwrap();
        config.advertise = Some("localhost:1".into());
        config.check_plaintext_on_loopback().unwrap();
        config.cluster.members = vec![Member {
            id: 1,
            address: "[::1]:7401".into(),
        }];
        config.check_plaintext_on_loopback().unwrap();
        for (field, outside) in [
            ("advertise", "10.0.0.5:7401"),
            ("listen", "0.0.0.0:7401"),
            ("cluster.members", "broker-2.internal:7401"),
        ] {
            let mut config = config.clone();
            match field {
                "advertise" => config.advertise = Some(outside.into()),
                "listen" => config.listen = outside.parse().unwrap(),
                _ => config.cluster.members.push(Member {
                    id: 2,
                    address: outside.into(),
                }),
            }
            let error = config
                .check_plaintext_on_loopback()
                .unwrap_err()
                .to_string();
            assert!(error.contains(field) && error.contains(outside), "{error}");
        }
    }
}
