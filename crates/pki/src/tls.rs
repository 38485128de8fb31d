//! rustls configurations for Lapse's links. TLS 1.3 only, the ring
//! provider only. Servers ask for a client certificate and verify it
//! against the cluster CA when one is offered; which services need one is
//! decided per call from the peer's [`Principal`]. Clients check a server's
//! chain and that it names a broker of the trust domain (a specific broker
//! when dialling a peer), not the host name they dialled: brokers are
//! dialled by address, and their identity is their node id.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::PkiError;
use crate::inspect::{CertInfo, certs, principal_of};
use crate::name::{Principal, Role};

/// ALPN for gRPC.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for the HTTP listener (HTTP/1.1 only).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The one crypto provider Lapse uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trust anchors in a PEM bundle (several CAs during a rollover).
pub fn roots(pem: &[u8]) -> Result<RootCertStore, PkiError> {
    let mut store = RootCertStore::empty();
    for cert in certs(pem)? {
        store
            .add(cert)
            .map_err(|e| PkiError::Invalid(format!("CA certificate: {e}")))?;
    }
    Ok(store)
}

/// Check that `der` chains to `roots` and is valid at `now` for a server.
pub fn verify_chain(
    roots: &RootCertStore,
    der: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), rustls::Error> {
    let parsed = rustls::server::ParsedCertificate::try_from(der)?;
    let now = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        intermediates,
        now,
        provider().signature_verification_algorithms.all,
    )
}

/// A trust bundle, its trust domain, and this process's certificate.
#[derive(Clone)]
pub struct Credentials {
    pub trust_domain: String,
    pub roots: Arc<RootCertStore>,
    /// This process's certificate and key; `None` for a client with none.
    pub identity: Option<Arc<CertifiedKey>>,
    /// Who `identity` names.
    pub principal: Option<Principal>,
    /// What the identity certificate says (expiry for status and metrics).
    pub cert: Option<CertInfo>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("trust_domain", &self.trust_domain)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Read a CA bundle and, optionally, a certificate chain and key. An
    /// identity that is expired or not yet valid at `now`, that does not
    /// chain to the bundle, or whose key does not match is refused.
    pub fn from_pem(
        ca_pem: &[u8],
        identity: Option<(&[u8], &[u8])>,
        now: SystemTime,
    ) -> Result<Self, PkiError> {
        let bundle = certs(ca_pem)?;
        let mut trust_domain = None;
        for ca in &bundle {
            let info = CertInfo::parse(ca)?;
            let Some(domain) = info.trust_domain.filter(|_| info.is_ca) else {
                return Err(PkiError::Invalid(
                    "the CA bundle holds a certificate that is not a Lapse CA (no spiffe://<trust domain>)"
                        .into(),
                ));
            };
            match &trust_domain {
                None => trust_domain = Some(domain),
                Some(first) if *first == domain => {}
                Some(first) => {
                    return Err(PkiError::Invalid(format!(
                        "the CA bundle mixes trust domains {first} and {domain}"
                    )));
                }
            }
        }
        let trust_domain = trust_domain.expect("certs() refuses an empty bundle");
        let roots = roots(ca_pem)?;
        let (identity, principal, cert) = match identity {
            None => (None, None, None),
            Some((cert_pem, key_pem)) => {
                let chain = certs(cert_pem)?;
                let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
                    PkiError::Invalid("the key file holds no PEM private key".into())
                })?;
                let info = CertInfo::parse(&chain[0])?;
                if now >= info.not_after {
                    return Err(PkiError::Expired {
                        what: info
                            .principal
                            .as_ref()
                            .map_or("the certificate".into(), |p| p.to_string()),
                        at: humantime::format_rfc3339_seconds(info.not_after).to_string(),
                    });
                }
                if now < info.not_before {
                    return Err(PkiError::Invalid(format!(
                        "the certificate is not valid before {}",
                        humantime::format_rfc3339_seconds(info.not_before)
                    )));
                }
                let principal = info
                    .principal
                    .clone()
                    .filter(|p| p.trust_domain == trust_domain)
                    .ok_or_else(|| {
                        PkiError::Invalid(format!(
                            "the certificate names no Lapse identity in trust domain {trust_domain}"
                        ))
                    })?;
                verify_client_chain(&roots, &chain, now)?;
                let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
                    PkiError::Invalid(format!("the key does not match the certificate: {e}"))
                })?;
                (Some(Arc::new(key)), Some(principal), Some(info))
            }
        };
        Ok(Self {
            trust_domain,
            roots: Arc::new(roots),
            identity,
            principal,
            cert,
        })
    }

    /// A server configuration: this identity, client certificates asked for
    /// and verified when given, TLS 1.3, the given ALPN protocol.
    pub fn server_config(&self, alpn: &[u8]) -> Result<ServerConfig, PkiError> {
        let identity = self
            .identity
            .clone()
            .ok_or_else(|| PkiError::Invalid("a server needs a certificate and key".into()))?;
        let clients = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Invalid(format!("client verifier: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PkiError::Invalid(e.to_string()))?
            .with_client_cert_verifier(clients)
            .with_cert_resolver(Arc::new(Fixed(identity)));
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }

    /// A client configuration that accepts only a server naming `expect`,
    /// and presents this identity if there is one.
    pub fn client_config(&self, expect: Expect, alpn: &[u8]) -> Result<ClientConfig, PkiError> {
        let verifier = Arc::new(BrokerVerifier {
            roots: self.roots.clone(),
            algorithms: provider().signature_verification_algorithms,
            trust_domain: self.trust_domain.clone(),
            expect,
        });
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PkiError::Invalid(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.identity {
            Some(identity) => builder.with_client_cert_resolver(Arc::new(Fixed(identity.clone()))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }

    /// The principal a peer's verified certificate chain names, if it is
    /// of this trust domain.
    pub fn peer(&self, chain: &[CertificateDer<'_>]) -> Option<Principal> {
        principal_of(chain.first()?).filter(|p| p.trust_domain == self.trust_domain)
    }
}

fn verify_client_chain(
    roots: &RootCertStore,
    chain: &[CertificateDer<'static>],
    now: SystemTime,
) -> Result<(), PkiError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider())
        .build()
        .map_err(|e| PkiError::Invalid(format!("client verifier: {e}")))?;
    let now = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    verifier
        .verify_client_cert(&chain[0], &chain[1..], now)
        .map(|_| ())
        .map_err(|e| {
            PkiError::Invalid(format!(
                "the certificate does not chain to the CA bundle: {e}"
            ))
        })
}

/// Which server a client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Expect {
    /// Any broker of the trust domain (clients, verifiers).
    AnyBroker,
    /// Exactly this broker (a peer by its node id).
    Broker(u64),
    /// A source of the revocation feed: a broker, or a verifier relaying
    /// it (`lapse verifier --relay`). The feed's state is signed by the
    /// brokers, so who relays it needs no more trust than membership.
    FeedSource,
}

/// Always the same certificate; a reload builds new configurations.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl rustls::client::ResolvesClientCert for Fixed {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks a broker's chain to the CA and its SPIFFE id, not a host name.
#[derive(Debug)]
struct BrokerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    trust_domain: String,
    expect: Expect,
}

impl ServerCertVerifier for BrokerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let principal = principal_of(end_entity).filter(|p| p.trust_domain == self.trust_domain);
        let acceptable = match (&principal, self.expect) {
            (
                Some(Principal {
                    role: Role::Broker(_),
                    ..
                }),
                Expect::AnyBroker,
            ) => true,
            (
                Some(Principal {
                    role: Role::Broker(id),
                    ..
                }),
                Expect::Broker(want),
            ) => *id == want,
            (
                Some(Principal {
                    role: Role::Broker(_) | Role::Verifier(_),
                    ..
                }),
                Expect::FeedSource,
            ) => true,
            _ => false,
        };
        if acceptable {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
