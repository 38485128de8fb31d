//! Signatures over feed statements: a broker signs with the key of its
//! certificate and sends the chain along; whoever holds the cluster CA
//! checks chain, name and signature, with nothing trusted about the link
//! the bytes came over (a relay in between needs no trust).
//!
//! The signed bytes start with their own domain (see
//! `lapse_filter::vouch`), which no TLS signature input starts with, so a
//! broker's key signing statements cannot be turned into a TLS signature
//! or the other way round.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use rustls::SignatureScheme;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::PkiError;
use crate::inspect::principal_of;
use crate::name::{Principal, Role};
use crate::tls::{Credentials, verify_chain};

/// Most certificates in a signature's chain.
pub const MAX_CHAIN: usize = 4;
/// Largest certificate in a signature's chain, bytes.
pub const MAX_CERT_BYTES: usize = 16 * 1024;
/// Largest signature, bytes.
pub const MAX_SIGNATURE_BYTES: usize = 512;
/// Signatures remembered as checked, per checker.
const CHECKED_CACHE: usize = 64;

/// A signature, the scheme it was made with, and the signer's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// A TLS `SignatureScheme` code (ECDSA P-256 SHA-256 or Ed25519).
    pub scheme: u16,
    pub signature: Vec<u8>,
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
}

const SCHEMES: [SignatureScheme; 2] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ED25519,
];

impl Credentials {
    /// Sign `message` with this process's key; the chain goes along.
    pub fn sign(&self, message: &[u8]) -> Result<Signed, PkiError> {
        let identity = self
            .identity
            .as_ref()
            .ok_or_else(|| PkiError::Invalid("no certificate and key to sign with".into()))?;
        let signer = identity.key.choose_scheme(&SCHEMES).ok_or_else(|| {
            PkiError::Invalid("the key is neither ECDSA P-256 nor Ed25519".into())
        })?;
        let signature = signer
            .sign(message)
            .map_err(|e| PkiError::Invalid(format!("signing failed: {e}")))?;
        Ok(Signed {
            scheme: u16::from(signer.scheme()),
            signature,
            chain: identity.cert.iter().map(|c| c.as_ref().to_vec()).collect(),
        })
    }
}

/// Signatures already checked: a hash of what was checked, and who signed.
/// Signatures checked: what was signed (hashed), the bundle it was checked
/// against (held, so that its address is not reused while remembered),
/// and who signed.
type Checked = VecDeque<([u8; 32], Arc<Credentials>, Principal)>;

/// Where a checker's CA bundle comes from.
#[derive(Clone)]
enum Trust {
    /// Read once.
    Fixed(Arc<Credentials>),
    /// The bundle a process's TLS holds now, which it reads again when
    /// its files change (a CA rollover needs no restart).
    Live(Arc<crate::transport::Tls>),
}

/// Checks signatures against a cluster CA, remembering the last few it
/// accepted (every verifier in a process sees the same heartbeat, so one
/// check serves them all).
#[derive(Clone)]
pub struct SignatureChecker {
    trust: Trust,
    checked: Arc<Mutex<Checked>>,
}

impl std::fmt::Debug for SignatureChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureChecker")
            .field("trust_domain", &self.credentials().trust_domain)
            .finish_non_exhaustive()
    }
}

impl SignatureChecker {
    /// Check against the CA bundle (and trust domain) of `credentials`.
    pub fn new(credentials: Arc<Credentials>) -> Self {
        Self {
            trust: Trust::Fixed(credentials),
            checked: Arc::default(),
        }
    }

    /// Check against the CA bundle `tls` holds at the time of each check:
    /// when its files change (a CA rollover), the new bundle applies.
    pub fn following(tls: Arc<crate::transport::Tls>) -> Self {
        Self {
            trust: Trust::Live(tls),
            checked: Arc::default(),
        }
    }

    fn credentials(&self) -> Arc<Credentials> {
        match &self.trust {
            Trust::Fixed(credentials) => credentials.clone(),
            Trust::Live(tls) => tls.credentials(),
        }
    }

    pub fn trust_domain(&self) -> String {
        self.credentials().trust_domain.clone()
    }

    /// Check that `signed` is a signature over `message` by a broker
    /// certificate of this trust domain, valid at `now`; returns the
    /// broker's id.
    pub fn check_broker(
        &self,
        message: &[u8],
        signed: &Signed,
        now: SystemTime,
    ) -> Result<u64, PkiError> {
        let principal = self.check(message, signed, now)?;
        match principal.role {
            Role::Broker(id) => Ok(id),
            other => Err(PkiError::Invalid(format!(
                "signed by {other}, not by a broker"
            ))),
        }
    }

    /// Check that `signed` is a valid signature over `message` by a
    /// certificate that chains to the CA and is valid at `now`.
    pub fn check(
        &self,
        message: &[u8],
        signed: &Signed,
        now: SystemTime,
    ) -> Result<Principal, PkiError> {
        if signed.chain.is_empty() || signed.chain.len() > MAX_CHAIN {
            return Err(PkiError::Invalid(format!(
                "a signature's chain holds 1 to {MAX_CHAIN} certificates, not {}",
                signed.chain.len()
            )));
        }
        if signed.chain.iter().any(|c| c.len() > MAX_CERT_BYTES)
            || signed.signature.len() > MAX_SIGNATURE_BYTES
        {
            return Err(PkiError::Invalid(
                "a signature or certificate is too large".into(),
            ));
        }
        let key = {
            let mut hash = Sha256::new();
            for part in [message, &signed.signature] {
                hash.update((part.len() as u64).to_le_bytes());
                hash.update(part);
            }
            hash.update(signed.scheme.to_le_bytes());
            for cert in &signed.chain {
                hash.update((cert.len() as u64).to_le_bytes());
                hash.update(cert);
            }
            <[u8; 32]>::from(hash.finalize())
        };
        // A check made against another bundle than the one held now
        // does not count.
        let credentials = self.credentials();
        let remembered = self
            .checked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(k, b, _)| *k == key && Arc::ptr_eq(b, &credentials))
            .map(|(_, _, p)| p.clone());
        let principal = match remembered {
            Some(principal) => principal,
            None => {
                let principal = check_uncached(&credentials, message, signed, now)?;
                let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
                if checked.len() >= CHECKED_CACHE {
                    checked.pop_front();
                }
                checked.push_back((key, credentials.clone(), principal.clone()));
                principal
            }
        };
        // Validity is judged at every use, not only when first checked.
        let leaf = CertificateDer::from(signed.chain[0].as_slice());
        let info = crate::inspect::CertInfo::parse(&leaf)?;
        if now >= info.not_after || now < info.not_before {
            return Err(PkiError::Invalid(
                "the signing certificate is not valid now".into(),
            ));
        }
        Ok(principal)
    }
}

fn check_uncached(
    credentials: &Credentials,
    message: &[u8],
    signed: &Signed,
    now: SystemTime,
) -> Result<Principal, PkiError> {
    let chain: Vec<CertificateDer<'_>> = signed
        .chain
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    verify_chain(&credentials.roots, &chain[0], &chain[1..], now)
        .map_err(|e| PkiError::Invalid(format!("the signing certificate: {e}")))?;
    let principal = principal_of(&chain[0]).ok_or_else(|| {
        PkiError::Invalid("the signing certificate names no Lapse principal".into())
    })?;
    if principal.trust_domain != credentials.trust_domain {
        return Err(PkiError::Invalid(format!(
            "the signing certificate is of trust domain {}, not {}",
            principal.trust_domain, credentials.trust_domain
        )));
    }
    let algorithm: &dyn rustls::pki_types::SignatureVerificationAlgorithm =
        match SignatureScheme::from(signed.scheme) {
            SignatureScheme::ECDSA_NISTP256_SHA256 => webpki::ring::ECDSA_P256_SHA256,
            SignatureScheme::ED25519 => webpki::ring::ED25519,
            other => {
                return Err(PkiError::Invalid(format!(
                    "signature scheme {other:?} is not accepted"
                )));
            }
        };
    let leaf = webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| PkiError::Invalid(format!("the signing certificate: {e}")))?;
    leaf.verify_signature(algorithm, message, &signed.signature)
        .map_err(|_| PkiError::Invalid("the signature does not verify".into()))?;
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::authority::{Authority, LeafRequest};

    fn credentials(authority: &Authority, role: Role, now: SystemTime) -> Arc<Credentials> {
        let pair = authority
            .issue(
                &LeafRequest {
                    role,
                    hosts: Vec::new(),
                    valid_for: Duration::from_secs(3600),
                },
                now,
            )
            .unwrap();
        Arc::new(
            Credentials::from_pem(
                authority.cert_pem().as_bytes(),
                Some((pair.cert_pem.as_bytes(), pair.key_pem.as_bytes())),
                now,
            )
            .unwrap(),
        )
    }

    #[test]
    fn a_broker_signature_checks_and_every_forgery_is_refused() {
        let now = SystemTime::now();
        let (ca, _) = Authority::generate("lapse.test", now, Duration::from_secs(86400)).unwrap();
        let broker = credentials(&ca, Role::Broker(3), now);
        let checker = SignatureChecker::new(broker.clone());
        let signed = broker.sign(b"statement").unwrap();
        assert_eq!(checker.check_broker(b"statement", &signed, now).unwrap(), 3);
        // Twice: the second answer comes from the cache, same result.
        assert_eq!(checker.check_broker(b"statement", &signed, now).unwrap(), 3);

        assert!(checker.check_broker(b"statemenT", &signed, now).is_err());
        let mut bad = signed.clone();
        bad.signature[10] ^= 1;
        assert!(checker.check_broker(b"statement", &bad, now).is_err());
        let mut no_chain = signed.clone();
        no_chain.chain.clear();
        assert!(checker.check_broker(b"statement", &no_chain, now).is_err());
        let later = now + Duration::from_secs(7200);
        assert!(checker.check_broker(b"statement", &signed, later).is_err());

        // Another CA's broker, and this CA's verifier, are refused.
        let (other, _) =
            Authority::generate("lapse.test", now, Duration::from_secs(86400)).unwrap();
        let stranger = credentials(&other, Role::Broker(3), now);
        let forged = stranger.sign(b"statement").unwrap();
        assert!(checker.check_broker(b"statement", &forged, now).is_err());
        let verifier = credentials(&ca, Role::Verifier("v".into()), now);
        let by_verifier = verifier.sign(b"statement").unwrap();
        assert!(
            checker
                .check_broker(b"statement", &by_verifier, now)
                .is_err()
        );
        // The broker's chain with another key's signature.
        let mut swapped = forged.clone();
        swapped.chain = signed.chain.clone();
        assert!(checker.check_broker(b"statement", &swapped, now).is_err());
    }

    #[test]
    fn a_checker_following_tls_files_takes_a_new_ca_bundle_without_a_restart() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let (old, old_pair) = Authority::generate("lapse.test", now, day).unwrap();
        let (new, _) = Authority::generate("lapse.test", now, day).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        crate::files::write(&ca, &old_pair.cert_pem, false, true).unwrap();
        let files = crate::TlsFiles {
            ca: ca.clone(),
            cert: None,
            key: None,
        };
        let tls = crate::Tls::open(files, now).unwrap();
        let checker = SignatureChecker::following(tls.clone());
        let by_old = credentials(&old, Role::Broker(1), now).sign(b"s").unwrap();
        let by_new = credentials(&new, Role::Broker(1), now).sign(b"s").unwrap();
        assert_eq!(checker.check_broker(b"s", &by_old, now).unwrap(), 1);
        assert!(checker.check_broker(b"s", &by_new, now).is_err());

        // The rollover: both CAs in the bundle, then only the new one.
        let both = format!("{}\n{}", old.cert_pem(), new.cert_pem());
        crate::files::write(&ca, &both, false, true).unwrap();
        tls.reload(now, true).unwrap();
        assert_eq!(checker.check_broker(b"s", &by_old, now).unwrap(), 1);
        assert_eq!(checker.check_broker(b"s", &by_new, now).unwrap(), 1);
        crate::files::write(&ca, new.cert_pem(), false, true).unwrap();
        tls.reload(now, true).unwrap();
        assert_eq!(checker.check_broker(b"s", &by_new, now).unwrap(), 1);
        // A signature checked against the old bundle counts no more.
        assert!(checker.check_broker(b"s", &by_old, now).is_err());
    }
}
