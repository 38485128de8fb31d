//! Who a certificate names. Every Lapse certificate carries exactly one
//! SPIFFE id as its URI SAN: `spiffe://<trust domain>/<role>/<name>`, where
//! the role is `broker` (the name is the Raft node id), `verifier` or
//! `operator`.

use std::fmt;

/// The longest trust domain accepted (SPIFFE allows 255).
pub const MAX_TRUST_DOMAIN: usize = 255;
/// The longest verifier or operator name.
pub const MAX_NAME: usize = 64;

/// What a certificate's holder is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A broker, by its Raft node id.
    Broker(u64),
    /// An edge verifier, by name.
    Verifier(String),
    /// A person or tool administering the cluster, by name.
    Operator(String),
}

impl Role {
    /// The role's path segment in a SPIFFE id.
    pub fn kind(&self) -> &'static str {
        match self {
            Role::Broker(_) => "broker",
            Role::Verifier(_) => "verifier",
            Role::Operator(_) => "operator",
        }
    }

    /// The name within the role: the node id of a broker.
    pub fn name(&self) -> String {
        match self {
            Role::Broker(id) => id.to_string(),
            Role::Verifier(name) | Role::Operator(name) => name.clone(),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

/// A certificate holder in a trust domain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Principal {
    pub trust_domain: String,
    pub role: Role,
}

/// Why a string is not a Lapse name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "trust domain {0:?}: use 1 to {MAX_TRUST_DOMAIN} lowercase letters, digits, '.', '-' or '_'"
    )]
    TrustDomain(String),
    #[error("name {0:?}: use 1 to {MAX_NAME} letters, digits, '.', '-' or '_'")]
    Name(String),
    #[error(
        "{0:?} is not a Lapse SPIFFE id (spiffe://<trust domain>/<broker|verifier|operator>/<name>)"
    )]
    Uri(String),
}

/// Check a trust domain: the SPIFFE character set, lowercase.
pub fn check_trust_domain(domain: &str) -> Result<(), NameError> {
    let ok = !domain.is_empty()
        && domain.len() <= MAX_TRUST_DOMAIN
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NameError::TrustDomain(cap(domain)))
    }
}

/// Check a verifier or operator name.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(NameError::Name(cap(name)))
    }
}

/// At most 80 characters of a caller's string, for an error message.
fn cap(text: &str) -> String {
    text.chars().take(80).collect()
}

impl Principal {
    /// A principal, with its names checked.
    pub fn new(trust_domain: &str, role: Role) -> Result<Self, NameError> {
        check_trust_domain(trust_domain)?;
        if let Role::Verifier(name) | Role::Operator(name) = &role {
            check_name(name)?;
        }
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            role,
        })
    }

    /// The SPIFFE id.
    pub fn uri(&self) -> String {
        format!(
            "spiffe://{}/{}/{}",
            self.trust_domain,
            self.role.kind(),
            self.role.name()
        )
    }

    /// Parse a SPIFFE id of this form; anything else is refused.
    pub fn parse(uri: &str) -> Result<Self, NameError> {
        let refuse = || NameError::Uri(cap(uri));
        let rest = uri.strip_prefix("spiffe://").ok_or_else(refuse)?;
        let mut parts = rest.split('/');
        let (Some(domain), Some(kind), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refuse());
        };
        let role = match kind {
            "broker" => {
                // Canonical decimal only, so one broker has one id.
                if name.is_empty() || name.len() > 20 || (name.len() > 1 && name.starts_with('0')) {
                    return Err(refuse());
                }
                Role::Broker(name.parse().map_err(|_| refuse())?)
            }
            "verifier" => Role::Verifier(name.to_owned()),
            "operator" => Role::Operator(name.to_owned()),
            _ => return Err(refuse()),
        };
        Self::new(domain, role).map_err(|_| refuse())
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_their_uri() {
        for role in [
            Role::Broker(0),
            Role::Broker(u64::MAX),
            Role::Verifier("edge-1".into()),
            Role::Operator("alice.ops_2".into()),
        ] {
            let principal = Principal::new("prod.example", role).unwrap();
            assert_eq!(Principal::parse(&principal.uri()).unwrap(), principal);
        }
    }

    #[test]
    fn anything_but_the_exact_form_is_refused() {
        for bad in [
            "",
            "http://td/broker/1",
            "spiffe://td/broker",
            "spiffe://td/broker/1/x",
            "spiffe://td/broker/01",
            "spiffe://td/broker/-1",
            "spiffe://td/broker/18446744073709551616",
            "spiffe://td/admin/x",
            "spiffe://TD/broker/1",
            "spiffe:///broker/1",
            "spiffe://td/verifier/",
            "spiffe://td/verifier/a b",
            "spiffe://td/operator/..",
            &format!("spiffe://td/verifier/{}", "v".repeat(MAX_NAME + 1)),
        ] {
            assert!(Principal::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn errors_quote_at_most_80_characters_of_the_input() {
        let long = "x".repeat(10_000);
        let message = check_name(&long).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }
}
