//! The sections of a broker's configuration: every key, what it means, and
//! its default.

use std::net::SocketAddr;
use std::path::PathBuf;

use lapse_ledger::LedgerParams;
use serde::{Deserialize, Serialize};

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
    /// How long a refresh chain may go on from its attestation; after it
    /// the workload must attest again. A tenant's policy may ask for less
    /// (`context.chain_age_seconds`).
    pub max_chain_age_seconds: u64,
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
            issuer: lapse_credential::DEFAULT_ISSUER.into(),
            default_ttl_seconds: 600,
            key_rotation_seconds: 3600,
            key_overlap_seconds: 300,
            lease_block: 10_000,
            lease_seconds: 600,
            leeway_seconds: 30,
            dpop_max_age_seconds: 60,
            max_chain_age_seconds: 86_400,
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

    /// The URI a DPoP proof for exchanging a key-bound credential must
    /// name (`htu`).
    pub fn exchange_uri(&self) -> String {
        format!("{}/exchange", self.issuer.trim_end_matches('/'))
    }

    /// The URI a DPoP proof for revoking a key-bound credential as its
    /// holder must name (`htu`).
    pub fn revoke_uri(&self) -> String {
        format!("{}/revoke", self.issuer.trim_end_matches('/'))
    }

    /// The URI a DPoP proof for a key-bound issuance must name (`htu`).
    pub fn issue_uri(&self) -> String {
        format!("{}/issue", self.issuer.trim_end_matches('/'))
    }
}

/// An external issuer (Kubernetes service accounts, CI OIDC) whose JWTs
/// attest a workload, checked against a JWKS read from a file (again on a
/// schedule, and on a token naming an unknown key, rate-limited).
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
    /// Refuse a token whose header names no key (`kid`). When false, a
    /// token without one is checked against the JWKS's only key.
    #[serde(default = "default_require_kid")]
    pub require_kid: bool,
    /// Refuse a token issued (`iat`) longer ago than this.
    #[serde(default = "default_max_token_age_seconds")]
    pub max_token_age_seconds: u64,
    /// Read the JWKS file again this often.
    #[serde(default = "default_jwks_refresh_seconds")]
    pub jwks_refresh_seconds: u64,
    /// A token naming a key the JWKS lacks makes the broker read the file
    /// again, at most once per this many seconds.
    #[serde(default = "default_unknown_kid_reread_seconds")]
    pub unknown_kid_reread_seconds: u64,
}

fn default_workload_claim() -> String {
    "sub".into()
}

fn default_require_kid() -> bool {
    true
}

fn default_max_token_age_seconds() -> u64 {
    lapse_credential::DEFAULT_MAX_TOKEN_AGE_SECONDS
}

fn default_jwks_refresh_seconds() -> u64 {
    300
}

fn default_unknown_kid_reread_seconds() -> u64 {
    10
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
    /// Bearer tokens accepted for admin and revoke calls, a fallback for
    /// operators without a certificate: each by name and the SHA-256 of
    /// its value (`lapse admin-token create` makes one).
    #[serde(default)]
    pub admin_tokens: Vec<AdminTokenEntry>,
    /// Principals (`operator:<name>` for an operator certificate,
    /// `token:<name>` for an admin token) this broker treats as cluster
    /// admins whatever the ledger's role bindings say: how a new cluster
    /// gets its first admin. A broker decides calls with its own list
    /// when it leads.
    #[serde(default)]
    pub cluster_admins: Vec<String>,
}

impl AuthConfig {
    /// The admin tokens that are configured properly: by name and hash.
    pub fn hashed_tokens(&self) -> impl Iterator<Item = &AdminToken> {
        self.admin_tokens.iter().filter_map(|t| match t {
            AdminTokenEntry::Hashed(token) => Some(token),
            AdminTokenEntry::InTheClear(_) => None,
        })
    }

    /// What is wrong with the admin tokens or the admins, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.cluster_admins.len() > MAX_ADMIN_TOKENS {
            return Some(format!(
                "auth.cluster_admins has {} entries; at most {MAX_ADMIN_TOKENS}",
                self.cluster_admins.len()
            ));
        }
        if let Some(bad) = self.cluster_admins.iter().find(|p| {
            !matches!(p.split_once(':'), Some(("operator" | "token", name))
                if lapse_pki::name::check_name(name).is_ok())
        }) {
            return Some(format!(
                "auth.cluster_admins: {bad:?} is not operator:<name> or token:<name>"
            ));
        }
        if self.admin_tokens.len() > MAX_ADMIN_TOKENS {
            return Some(format!(
                "auth.admin_tokens has {} tokens; at most {MAX_ADMIN_TOKENS}",
                self.admin_tokens.len()
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (n, entry) in self.admin_tokens.iter().enumerate() {
            let token = match entry {
                AdminTokenEntry::InTheClear(_) => {
                    return Some(format!(
                        "auth.admin_tokens[{n}] is a token in the clear; a broker keeps only each token's name and SHA-256: write {{ name = \"<who uses it>\", sha256 = \"<hex>\" }} (`lapse admin-token create --name NAME` makes a token and prints its entry; `lapse admin-token hash --name NAME` prints the entry for a token read from standard input)"
                    ));
                }
                AdminTokenEntry::Hashed(token) => token,
            };
            if let Err(e) = lapse_pki::name::check_name(&token.name) {
                return Some(format!("auth.admin_tokens[{n}].name: {e}"));
            }
            if !names.insert(token.name.as_str()) {
                return Some(format!(
                    "auth.admin_tokens: the name {:?} is used twice",
                    token.name
                ));
            }
            if token.sha256.len() != 64
                || !token
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Some(format!(
                    "auth.admin_tokens[{n}].sha256 must be 64 lowercase hex digits (the SHA-256 of the token)"
                ));
            }
        }
        None
    }
}

/// Most admin tokens a broker takes.
pub const MAX_ADMIN_TOKENS: usize = 64;

/// An admin bearer token as configured: by name and hash; a token written
/// in the clear is read only to be refused with a clear message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AdminTokenEntry {
    Hashed(AdminToken),
    InTheClear(String),
}

/// An admin bearer token, known by the name it acts under and the SHA-256
/// of its value (hex). The value itself is never stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub name: String,
    pub sha256: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AdminToken {
    /// The entry for a token whose value is `secret`.
    pub fn for_secret(name: &str, secret: &str) -> Self {
        Self {
            name: name.to_owned(),
            sha256: token_hash(secret),
        }
    }
}

/// The SHA-256 of a token's value, as configured (lowercase hex).
pub fn token_hash(secret: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

impl std::fmt::Debug for AdminTokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hashed(token) => token.fmt(f),
            // Never print a secret, even one misplaced in a configuration.
            Self::InTheClear(_) => f.write_str("InTheClear(..)"),
        }
    }
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
    /// Connections open at once on the gRPC port; more are closed at once.
    pub max_grpc_connections: usize,
    /// Connections open at once on the HTTP port (`issuance.http_listen`).
    pub max_http_connections: usize,
    /// Connections open at once from one IP address, on each port.
    pub max_connections_per_ip: usize,
    /// How long a new connection has to finish its TLS handshake and its
    /// HTTP/2 preface or first HTTP/1 request before it is dropped.
    pub handshake_timeout_ms: u64,
    /// Server-side deadline of every unary gRPC call (not the feed's
    /// stream, a snapshot's upload or `WaitPropagated`, which have their
    /// own bounds); above `write_timeout_ms`.
    pub request_timeout_ms: u64,
    /// Server-side deadline of every HTTP request; below
    /// `handshake_timeout_ms`.
    pub http_request_timeout_ms: u64,
    /// HTTP/2 streams (calls) open at once on one gRPC connection.
    pub max_streams_per_connection: u32,
    /// Requests per second each caller (its certificate's identity, else
    /// its IP address) may make to the Cluster and Issuer services; 0 for
    /// no limit. Broker-to-broker calls are not limited.
    pub caller_requests_per_second: u64,
    /// Requests a caller may make at once after being idle.
    pub caller_burst: u64,
    /// Callers whose rates are remembered at once (idle ones are forgotten
    /// first).
    pub max_rate_limited_callers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 1 << 20,
            max_peer_message_bytes: 64 << 20,
            max_snapshot_bytes: 1 << 30,
            write_timeout_ms: 10_000,
            max_grpc_connections: 4_096,
            max_http_connections: 1_024,
            max_connections_per_ip: 256,
            handshake_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            http_request_timeout_ms: 5_000,
            max_streams_per_connection: 1_024,
            caller_requests_per_second: 2_000,
            caller_burst: 4_000,
            max_rate_limited_callers: 16_384,
        }
    }
}

impl Limits {
    /// The gRPC port's connection caps.
    pub fn grpc_connections(&self) -> lapse_pki::ConnectionLimits {
        lapse_pki::ConnectionLimits {
            max_connections: self.max_grpc_connections,
            max_per_ip: self.max_connections_per_ip,
            handshake_timeout: std::time::Duration::from_millis(self.handshake_timeout_ms),
        }
    }

    /// The HTTP port's connection caps.
    pub fn http_connections(&self) -> lapse_pki::ConnectionLimits {
        lapse_pki::ConnectionLimits {
            max_connections: self.max_http_connections,
            ..self.grpc_connections()
        }
    }

    /// Each caller's allowance on the Cluster and Issuer services.
    pub fn caller_rate(&self) -> lapse_pki::RateLimits {
        lapse_pki::RateLimits {
            per_second: self.caller_requests_per_second,
            burst: self.caller_burst,
            max_callers: self.max_rate_limited_callers,
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
    /// Most of those one verifier certificate may hold at once (a process
    /// running many verifiers under one name, or a relay, holds one per
    /// verifier); more are refused with RESOURCE_EXHAUSTED, so one leaked
    /// or misused certificate cannot take every slot.
    pub max_subscribers_per_identity: usize,
    /// Updates kept for subscribers that are behind; one further behind is
    /// resynchronised with a snapshot.
    pub buffered_updates: usize,
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
            max_subscribers_per_identity: 1_000,
            buffered_updates: 1024,
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
