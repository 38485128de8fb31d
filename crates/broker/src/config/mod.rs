//! Broker configuration: a TOML file, with command-line overrides applied by
//! the caller. Unknown keys are an error, so a typo is never silently ignored.
//! This file reads, builds and checks a whole configuration; each section's
//! keys and defaults are in [`sections`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lapse_ledger::LedgerParams;
use serde::{Deserialize, Serialize};

mod sections;

pub use sections::{
    AdminToken, AdminTokenEntry, AuthConfig, ClusterConfig, ExternalIssuerConfig, FeedConfig,
    IssuanceConfig, LedgerTuning, Limits, LocalTransport, MAX_ADMIN_TOKENS, Member, RaftTuning,
    TlsConfig, token_hash,
};

/// The most external issuers one broker trusts.
pub const MAX_EXTERNAL_ISSUERS: usize = 32;

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
                config.auth.admin_tokens = vec![AdminTokenEntry::Hashed(AdminToken::for_secret(
                    "local",
                    admin_token,
                ))];
                config.auth.cluster_admins = vec!["token:local".into(), "operator:dev".into()];
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
        if let Some(problem) = self.auth.problem() {
            return invalid(problem);
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
        // Addresses that are dialled: a port out of range would wrap around
        // or be retried for ever.
        let dialled = self
            .advertise
            .iter()
            .map(|a| ("advertise", a))
            .chain(self.cluster.join.iter().map(|a| ("cluster.join", a)))
            .chain(
                self.cluster
                    .members
                    .iter()
                    .map(|m| ("cluster.members", &m.address)),
            );
        for (field, address) in dialled {
            if let Err(e) = crate::membership::check_address(address) {
                return invalid(format!("{field}: {address:?} {e}"));
            }
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
        // A zero timeout gives up before a healthy peer could answer, and a
        // zero interval spins.
        for (field, value) in [
            ("raft.rpc_timeout_ms", r.rpc_timeout_ms),
            ("raft.replica_check_ms", r.replica_check_ms),
            ("limits.write_timeout_ms", self.limits.write_timeout_ms),
            (
                "limits.max_request_bytes",
                self.limits.max_request_bytes as u64,
            ),
            ("issuance.audit_ship_ms", self.issuance.audit_ship_ms),
            (
                "limits.max_grpc_connections",
                self.limits.max_grpc_connections as u64,
            ),
            (
                "limits.max_http_connections",
                self.limits.max_http_connections as u64,
            ),
            (
                "limits.max_connections_per_ip",
                self.limits.max_connections_per_ip as u64,
            ),
            (
                "limits.handshake_timeout_ms",
                self.limits.handshake_timeout_ms,
            ),
            ("limits.request_timeout_ms", self.limits.request_timeout_ms),
            (
                "limits.http_request_timeout_ms",
                self.limits.http_request_timeout_ms,
            ),
            (
                "limits.max_streams_per_connection",
                self.limits.max_streams_per_connection.into(),
            ),
        ] {
            if value == 0 {
                return invalid(format!("{field} must be above zero"));
            }
        }
        let limits = &self.limits;
        if limits.request_timeout_ms <= limits.write_timeout_ms {
            return invalid(format!(
                "limits.request_timeout_ms ({}) must be above limits.write_timeout_ms ({}): a write must be able to answer before the call's deadline",
                limits.request_timeout_ms, limits.write_timeout_ms
            ));
        }
        if limits.http_request_timeout_ms >= limits.handshake_timeout_ms {
            return invalid(format!(
                "limits.http_request_timeout_ms ({}) must be below limits.handshake_timeout_ms ({}): an HTTP/1 connection's handshake ends with its first answer",
                limits.http_request_timeout_ms, limits.handshake_timeout_ms
            ));
        }
        if let Some(problem) = limits.caller_rate().problem() {
            return invalid(format!(
                "limits.caller_burst and max_rate_limited_callers: {problem}"
            ));
        }
        let feed = &self.feed;
        if feed.heartbeat_ms == 0
            || feed.max_subscribers == 0
            || feed.max_subscribers_per_identity == 0
            || feed.buffered_updates == 0
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
        // Every credential carries it, and status list URIs are made from
        // it: a URL (https, or http for tests) with no query or fragment,
        // or a bare name.
        let issuer = &issuance.issuer;
        let url_like = issuer.contains("://");
        if issuer.len() > 512
            || issuer.chars().any(|c| c.is_whitespace() || c.is_control())
            || (url_like
                && (!(issuer.starts_with("https://") || issuer.starts_with("http://"))
                    || issuer.contains(['?', '#'])
                    || issuer
                        .split("://")
                        .nth(1)
                        .is_none_or(|rest| rest.split('/').next().is_none_or(str::is_empty))))
        {
            return invalid(format!(
                "issuance.issuer {:?}: an https URL with a host and no query or fragment (or a bare name), at most 512 bytes",
                issuer.chars().take(80).collect::<String>()
            ));
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
        if issuance.external_issuers.len() > MAX_EXTERNAL_ISSUERS {
            return invalid(format!(
                "issuance.external_issuers: at most {MAX_EXTERNAL_ISSUERS}"
            ));
        }
        if let Some(external) = issuance.external_issuers.iter().find(|e| {
            e.max_token_age_seconds == 0
                || e.jwks_refresh_seconds == 0
                || e.unknown_kid_reread_seconds == 0
        }) {
            return invalid(format!(
                "issuance.external_issuers {:?}: max_token_age_seconds, jwks_refresh_seconds and unknown_kid_reread_seconds must be above zero",
                external.issuer
            ));
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
            admin_tokens = [{ name = "ci", sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }]
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
    fn the_issuer_is_a_url_with_a_host_or_a_bare_name() {
        let mut config = BrokerConfig::new(1, "127.0.0.1:7401".parse().unwrap(), "data".into());
        config.insecure_plaintext = true;
        for good in [
            "lapse",
            "https://lapse.example",
            "https://lapse.example/tenant-a",
            "http://127.0.0.1:7501",
        ] {
            config.issuance.issuer = good.into();
            let error = config.validate().err().map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .is_none_or(|e| !e.contains("issuance.issuer")),
                "{good}: {error:?}"
            );
        }
        for bad in [
            "https://",
            "https:///path",
            "ftp://lapse.example",
            "https://lapse.example/?q=1",
            "https://lapse.example/#f",
            "lapse issuer",
            "lapse\u{7}",
        ] {
            config.issuance.issuer = bad.into();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("issuance.issuer"), "{bad}: {error}");
        }
        config.issuance.issuer = format!("https://{}", "a".repeat(600));
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("issuance.issuer"), "{error}");
    }

    #[test]
    fn admin_tokens_are_kept_by_name_and_hash_never_in_the_clear() {
        let parse = |entries: &str| {
            let text = format!(
                "node_id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\ninsecure_plaintext = true\n[auth]\nadmin_tokens = [{entries}]\n"
            );
            BrokerConfig::from_toml(&text)
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate().map(|()| c).map_err(|e| e.to_string()))
        };
        let hash = token_hash("a-long-enough-admin-token");
        let config = parse(&format!("{{ name = \"ci\", sha256 = \"{hash}\" }}")).unwrap();
        assert_eq!(
            config.auth.hashed_tokens().next(),
            Some(&AdminToken::for_secret("ci", "a-long-enough-admin-token"))
        );
        // A token in the clear is refused, and the refusal does not repeat it.
        let error = parse("\"a-long-enough-admin-token\"").unwrap_err();
        assert!(error.contains("in the clear"), "{error}");
        assert!(!error.contains("a-long-enough"), "{error}");
        let shown = format!("{:?}", parse_entry("\"a-long-enough-admin-token\""));
        assert!(!shown.contains("a-long-enough"), "{shown}");
        for (entries, expect) in [
            (
                format!("{{ name = \"ci\", sha256 = \"{}\" }}", &hash[..63]),
                "64 lowercase hex",
            ),
            (
                format!("{{ name = \"ci\", sha256 = \"{}\" }}", hash.to_uppercase()),
                "64 lowercase hex",
            ),
            (
                format!("{{ name = \"c i\", sha256 = \"{hash}\" }}"),
                "admin_tokens[0].name",
            ),
            (
                format!(
                    "{{ name = \"ci\", sha256 = \"{hash}\" }}, {{ name = \"ci\", sha256 = \"{hash}\" }}"
                ),
                "used twice",
            ),
        ] {
            let error = parse(&entries).unwrap_err();
            assert!(error.contains(expect), "{entries}: {error}");
        }
        let many = vec![format!("{{ name = \"x\", sha256 = \"{hash}\" }}"); MAX_ADMIN_TOKENS + 1];
        let error = parse(&many.join(", ")).unwrap_err();
        assert!(error.contains("at most 64"), "{error}");
    }

    fn parse_entry(entry: &str) -> AdminTokenEntry {
        #[derive(serde::Deserialize)]
        struct One {
            entry: AdminTokenEntry,
        }
        toml::from_str::<One>(&format!("entry = {entry}"))
            .unwrap()
            .entry
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
    fn refuses_addresses_with_ports_out_of_range() {
        let mut config = BrokerConfig::new(1, "127.0.0.1:1".parse().unwrap(), "d".into());
        config.insecure_plaintext = true;
        for (field, address) in [
            ("advertise", "127.0.0.1:70000"),
            ("cluster.members", "127.0.0.1:0"),
            ("cluster.join", "127.0.0.1:-1"),
        ] {
            let mut config = config.clone();
            match field {
                "advertise" => config.advertise = Some(address.into()),
                "cluster.join" => {
                    config.cluster.join = Some(address.into());
                    config.cluster.join_token = Some("lapse-join-x".into());
                }
                _ => {
                    config.cluster.members = vec![Member {
                        id: 1,
                        address: address.into(),
                    }]
                }
            }
            let error = config.validate().unwrap_err().to_string();
            assert!(
                error.contains(field) && error.contains("not a number in 1..=65535"),
                "{error}"
            );
        }
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
