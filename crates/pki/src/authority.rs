//! The cluster's certificate authority: one self-signed ECDSA P-256 CA per
//! trust domain, and the leaves it signs for brokers, verifiers and
//! operators. Time and validity are arguments; serial numbers are random.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::PkiError;
use crate::inspect::CertInfo;
use crate::name::{Principal, Role, check_trust_domain};

/// How far back a certificate's `notBefore` is set, so a host whose clock
/// is a little behind the one that issued it still accepts it.
pub const BACKDATE: Duration = Duration::from_secs(3600);

/// A PEM certificate and its PKCS#8 private key.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("cert_pem", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A CA able to sign leaves.
pub struct Authority {
    trust_domain: String,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    pub role: Role,
    /// DNS names and IP addresses the holder serves under (brokers: the
    /// hosts clients dial, so HTTP clients without Lapse's verifier can
    /// check the JWKS endpoint).
    pub hosts: Vec<String>,
    pub valid_for: Duration,
}

fn offset(at: SystemTime) -> Result<OffsetDateTime, PkiError> {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| PkiError::Invalid("the clock is before 1970".into()))?;
    OffsetDateTime::from_unix_timestamp(since.as_secs() as i64)
        .map_err(|_| PkiError::Invalid("time out of range".into()))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and exactly 16 bytes long
    SerialNumber::from_slice(&bytes)
}

fn rcgen_error(error: rcgen::Error) -> PkiError {
    PkiError::Invalid(format!("certificate: {error}"))
}

impl Authority {
    /// A new CA for `trust_domain`, valid from `now` for `valid_for`.
    pub fn generate(
        trust_domain: &str,
        now: SystemTime,
        valid_for: Duration,
    ) -> Result<(Self, Pair), PkiError> {
        check_trust_domain(trust_domain)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_error)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Lapse");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Lapse CA {trust_domain}"));
        params.subject_alt_names = vec![SanType::URI(
            Ia5String::try_from(format!("spiffe://{trust_domain}")).map_err(rcgen_error)?,
        )];
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        params.not_before = offset(now - BACKDATE)?;
        params.not_after = offset(now + valid_for)?;
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        let pair = Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let authority = Self {
            trust_domain: trust_domain.to_owned(),
            cert_pem: pair.cert_pem.clone(),
            issuer: Issuer::new(params, key),
        };
        Ok((authority, pair))
    }

    /// Load a CA written by [`Authority::generate`]: its certificate and
    /// key must match, and it must be a CA naming a trust domain.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|_| PkiError::Invalid("the CA key is not a PKCS#8 PEM private key".into()))?;
        let der = crate::inspect::first_cert(cert_pem.as_bytes())?;
        let info = CertInfo::parse(&der)?;
        if !info.is_ca {
            return Err(PkiError::Invalid("the CA certificate is not a CA".into()));
        }
        let trust_domain = info.trust_domain.clone().ok_or_else(|| {
            PkiError::Invalid("the CA certificate names no spiffe://<trust domain>".into())
        })?;
        if rcgen::PublicKeyData::subject_public_key_info(&key) != info.public_key_info {
            return Err(PkiError::Invalid(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(rcgen_error)?;
        Ok(Self {
            trust_domain,
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Sign a new key pair for `request`, valid from `now`.
    pub fn issue(&self, request: &LeafRequest, now: SystemTime) -> Result<Pair, PkiError> {
        let principal = Principal::new(&self.trust_domain, request.role.clone())?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_error)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Lapse");
        params
            .distinguished_name
            .push(DnType::CommonName, principal.role.to_string());
        params.subject_alt_names.push(SanType::URI(
            Ia5String::try_from(principal.uri()).map_err(rcgen_error)?,
        ));
        for host in &request.hosts {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    crate::inspect::check_dns_name(host)?;
                    SanType::DnsName(Ia5String::try_from(host).map_err(rcgen_error)?)
                }
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match request.role {
            // A broker serves, and dials its peers.
            Role::Broker(_) => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            // A verifier dials brokers, and may serve the feed on to
            // other verifiers (a relay).
            Role::Verifier(_) => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Operator(_) => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = offset(now - BACKDATE)?;
        params.not_after = offset(now + request.valid_for)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_loaded_authority_signs_leaves_that_chain_to_its_certificate() {
        let now = SystemTime::now();
        let (_, ca) = Authority::generate("test.lapse", now, 10 * DAY).unwrap();
        let authority = Authority::load(&ca.cert_pem, &ca.key_pem).unwrap();
        assert_eq!(authority.trust_domain(), "test.lapse");
        let leaf = authority
            .issue(
                &LeafRequest {
                    role: Role::Broker(3),
                    hosts: vec!["127.0.0.1".into(), "broker-3.internal".into()],
                    valid_for: DAY,
                },
                now,
            )
            .unwrap();
        let der = crate::inspect::first_cert(leaf.cert_pem.as_bytes()).unwrap();
        let info = CertInfo::parse(&der).unwrap();
        assert_eq!(
            info.principal.unwrap(),
            Principal::new("test.lapse", Role::Broker(3)).unwrap()
        );
        assert!(!info.is_ca);
        let roots = crate::tls::roots(ca.cert_pem.as_bytes()).unwrap();
        crate::tls::verify_chain(&roots, &der, &[], now).unwrap();
    }

    #[test]
    fn a_key_from_another_authority_is_refused() {
        let now = SystemTime::now();
        let (_, one) = Authority::generate("one", now, DAY).unwrap();
        let (_, two) = Authority::generate("two", now, DAY).unwrap();
        let error = Authority::load(&one.cert_pem, &two.key_pem).unwrap_err();
        assert!(error.to_string().contains("does not belong"), "{error}");
    }

    #[test]
    fn a_leaf_is_not_a_ca() {
        let now = SystemTime::now();
        let (authority, _) = Authority::generate("td", now, DAY).unwrap();
        let leaf = authority
            .issue(
                &LeafRequest {
                    role: Role::Operator("alice".into()),
                    hosts: vec![],
                    valid_for: DAY,
                },
                now,
            )
            .unwrap();
        let error = Authority::load(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
        assert!(error.to_string().contains("not a CA"), "{error}");
    }

    #[test]
    fn the_debug_form_of_a_pair_hides_the_key() {
        let (_, ca) = Authority::generate("td", SystemTime::now(), DAY).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }
}
