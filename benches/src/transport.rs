//! How the benchmarks' clients and brokers talk: plaintext on loopback
//! (`insecure_plaintext`, brokers proving themselves with a shared secret),
//! or mutual TLS as Lapse is deployed. For TLS every run makes its own
//! certificates with `lapse-pki` in the cluster's temporary directory: a
//! CA, the three brokers', an operator's (admin calls) and a verifier's
//! (the feed). Brokers then sign every feed heartbeat, and verifiers check
//! those signatures (see [`Dialer::verify_config`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use lapse_pki::{Authority, Expect, LeafRequest, Role, SignatureChecker, Tls, TlsConnector};
use lapse_verifier::VerifyConfig;
use tonic::transport::{Channel, Endpoint};

/// The trust domain of benchmark clusters.
const TRUST_DOMAIN: &str = "bench.lapse";

/// The name in the benchmarks' operator certificate.
pub const OPERATOR: &str = "bench";

/// The name in the benchmarks' verifier certificate; verifier ids are
/// `bench/<n>` under it.
pub const VERIFIER: &str = "bench";

/// How long the certificates of one run are valid.
const VALIDITY: Duration = Duration::from_secs(86_400);

/// How a benchmark's cluster and clients talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Plaintext gRPC on loopback; peers share a cluster secret.
    Plaintext,
    /// Mutual TLS 1.3 (ECDSA P-256 certificates), as deployed: signed
    /// heartbeats on the feed, checked by the verifiers.
    Tls,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Plaintext => "plaintext",
            Transport::Tls => "tls",
        }
    }
}

/// Who a benchmark's client is when the cluster runs TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// An operator certificate: admin calls (lease, revoke, policy).
    Operator,
    /// A verifier certificate: the feed.
    Verifier,
    /// No client certificate: a workload asking for a credential.
    Workload,
}

/// The client identities of a TLS run.
#[derive(Debug)]
struct Identities {
    operator: Arc<Tls>,
    verifier: Arc<Tls>,
    workload: Arc<Tls>,
}

/// Opens the benchmark's connections to the brokers, in plaintext or with
/// TLS as the given caller.
#[derive(Debug, Clone)]
pub struct Dialer {
    tls: Option<Arc<Identities>>,
}

impl Dialer {
    /// Plaintext connections.
    pub fn plaintext() -> Self {
        Self { tls: None }
    }

    /// TLS connections with the client certificates in `certs` (made by
    /// [`make_certificates`]).
    pub fn tls(certs: &Path) -> anyhow::Result<Self> {
        let now = SystemTime::now();
        let open = |stem: Option<String>| {
            let files = lapse_pki::TlsFiles {
                ca: certs.join("ca.pem"),
                cert: stem.as_ref().map(|s| certs.join(format!("{s}.pem"))),
                key: stem.as_ref().map(|s| certs.join(format!("{s}.key"))),
            };
            Tls::open(files, now).map_err(|e| anyhow::anyhow!("client TLS: {e}"))
        };
        Ok(Self {
            tls: Some(Arc::new(Identities {
                operator: open(Some(format!("operator-{OPERATOR}")))?,
                verifier: open(Some(format!("verifier-{VERIFIER}")))?,
                workload: open(None)?,
            })),
        })
    }

    pub fn transport(&self) -> Transport {
        match self.tls {
            Some(_) => Transport::Tls,
            None => Transport::Plaintext,
        }
    }

    fn identity(&self, caller: Caller) -> Option<Arc<Tls>> {
        self.tls.as_ref().map(|ids| match caller {
            Caller::Operator => ids.operator.clone(),
            Caller::Verifier => ids.verifier.clone(),
            Caller::Workload => ids.workload.clone(),
        })
    }

    /// One connection to `address` (host:port), made now; with
    /// `TCP_NODELAY` when `nodelay` (TLS connections always have it).
    pub async fn connect(
        &self,
        address: &str,
        caller: Caller,
        nodelay: bool,
    ) -> anyhow::Result<Channel> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))?;
        let connected = match self.identity(caller) {
            Some(tls) => {
                TlsConnector::new(tls, Expect::AnyBroker)
                    .connect(endpoint)
                    .await
            }
            None if nodelay => endpoint.tcp_nodelay(true).connect().await,
            None => endpoint.connect().await,
        };
        connected.with_context(|| format!("connecting to {address} ({})", self.transport().name()))
    }

    /// A connection to `address` made on first use, with `TCP_NODELAY`.
    pub fn lazy(&self, address: &str, caller: Caller) -> anyhow::Result<Channel> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))?.tcp_nodelay(true);
        Ok(match self.identity(caller) {
            // A verifier's feed may come from a broker or a relay.
            Some(tls) if caller == Caller::Verifier => {
                TlsConnector::new(tls, Expect::FeedSource).channel(endpoint)
            }
            Some(tls) => TlsConnector::new(tls, Expect::AnyBroker).channel(endpoint),
            None => endpoint.connect_lazy(),
        })
    }

    /// The verifier's TLS, for a follower that opens its own connections.
    pub fn verifier_tls(&self) -> Option<Arc<Tls>> {
        self.identity(Caller::Verifier)
    }

    /// A verifier's configuration as `lapse verifier` runs it: with TLS,
    /// heartbeats must carry a broker's signature that chains to the
    /// cluster CA, over a digest of the state the verifier holds. One
    /// checker, shared by every verifier of the process, so that a
    /// heartbeat's signature is checked once and its digest by each.
    pub fn verify_config(&self) -> VerifyConfig {
        VerifyConfig {
            trust: self
                .verifier_tls()
                .map(|tls| SignatureChecker::new(tls.credentials())),
            ..VerifyConfig::default()
        }
    }
}

/// Make a CA and the certificates of a TLS benchmark cluster in `dir`:
/// `ca.pem`, `broker-N.pem`/`.key` for brokers 1 to `brokers` (naming
/// 127.0.0.1), `operator-bench` and `verifier-bench`.
pub fn make_certificates(dir: &Path, brokers: u64) -> anyhow::Result<()> {
    let now = SystemTime::now();
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let pki = |e: lapse_pki::PkiError| anyhow::anyhow!("certificates: {e}");
    let (authority, ca) = Authority::generate(TRUST_DOMAIN, now, VALIDITY).map_err(pki)?;
    lapse_pki::files::write(&dir.join("ca.pem"), &ca.cert_pem, false, true).map_err(pki)?;
    let roles = (1..=brokers).map(Role::Broker).chain([
        Role::Operator(OPERATOR.into()),
        Role::Verifier(VERIFIER.into()),
    ]);
    for role in roles {
        let stem = format!("{}-{}", role.kind(), role.name());
        let hosts = match role {
            Role::Broker(_) => vec!["127.0.0.1".into()],
            _ => Vec::new(),
        };
        let pair = authority
            .issue(
                &LeafRequest {
                    role,
                    hosts,
                    valid_for: VALIDITY,
                },
                now,
            )
            .map_err(pki)?;
        lapse_pki::files::write(&dir.join(format!("{stem}.key")), &pair.key_pem, true, true)
            .map_err(pki)?;
        lapse_pki::files::write(
            &dir.join(format!("{stem}.pem")),
            &pair.cert_pem,
            false,
            true,
        )
        .map_err(pki)?;
    }
    Ok(())
}
