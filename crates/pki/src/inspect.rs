//! Reading certificates: who they name, when they expire.

use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName};
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;

use crate::PkiError;
use crate::name::Principal;

/// What Lapse reads from a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The Lapse SPIFFE id of a leaf, if it carries exactly one.
    pub principal: Option<Principal>,
    /// The trust domain a CA names (`spiffe://<domain>`).
    pub trust_domain: Option<String>,
    pub is_ca: bool,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Lowercase hex.
    pub serial: String,
    /// sha256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// The DER SubjectPublicKeyInfo.
    pub public_key_info: Vec<u8>,
}

fn at(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds as u64)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

impl CertInfo {
    pub fn parse(der: &CertificateDer<'_>) -> Result<Self, PkiError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| PkiError::Invalid(format!("not an X.509 certificate: {e}")))?;
        let uris: Vec<&str> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .filter(|uri| uri.starts_with("spiffe://"))
                .collect(),
            _ => Vec::new(),
        };
        let (principal, trust_domain) = match uris.as_slice() {
            [one] => match Principal::parse(one) {
                Ok(principal) => (Some(principal), None),
                Err(_) => {
                    let domain = one.trim_start_matches("spiffe://");
                    let domain = crate::name::check_trust_domain(domain)
                        .is_ok()
                        .then(|| domain.to_owned());
                    (None, domain)
                }
            },
            _ => (None, None),
        };
        Ok(Self {
            principal,
            trust_domain,
            is_ca: cert.is_ca(),
            not_before: at(cert.validity().not_before.timestamp()),
            not_after: at(cert.validity().not_after.timestamp()),
            serial: hex::encode(cert.raw_serial()),
            fingerprint: hex::encode(Sha256::digest(der.as_ref())),
            public_key_info: cert.public_key().raw.to_vec(),
        })
    }

    /// Whole seconds from `now` until it expires; negative once expired.
    pub fn seconds_left(&self, now: SystemTime) -> i64 {
        match self.not_after.duration_since(now) {
            Ok(left) => left.as_secs() as i64,
            Err(past) => -(past.duration().as_secs() as i64),
        }
    }
}

/// Every certificate in a PEM text, in order.
pub fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Invalid(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(PkiError::Invalid("no certificate in the PEM text".into()));
    }
    Ok(certs)
}

/// The first certificate in a PEM text.
pub fn first_cert(pem: &[u8]) -> Result<CertificateDer<'static>, PkiError> {
    Ok(certs(pem)?.swap_remove(0))
}

/// Check a DNS name for a certificate.
pub fn check_dns_name(host: &str) -> Result<(), PkiError> {
    DnsName::try_from(host).map(|_| ()).map_err(|_| {
        PkiError::Invalid(format!(
            "{:?} is neither an IP address nor a DNS name",
            cap(host)
        ))
    })
}

fn cap(text: &str) -> String {
    text.chars().take(80).collect()
}

/// The Lapse principal a verified certificate names, if exactly one.
pub fn principal_of(der: &CertificateDer<'_>) -> Option<Principal> {
    let cert = webpki::EndEntityCert::try_from(der).ok()?;
    let mut ids = cert
        .valid_uri_names()
        .filter(|uri| uri.starts_with("spiffe://"));
    let id = ids.next()?;
    if ids.next().is_some() {
        return None;
    }
    Principal::parse(id).ok()
}
