//! Validated identifier types. Parsing is strict and errors say what is wrong.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {length} bytes long; the limit is {limit}")]
    TooLong {
        kind: &'static str,
        length: usize,
        limit: usize,
    },
    #[error("{kind} {value:?} contains {character:?}; allowed are {allowed}")]
    BadCharacter {
        kind: &'static str,
        value: String,
        character: char,
        allowed: &'static str,
    },
    #[error("workload id {value:?} is not a SPIFFE id: {reason}")]
    NotSpiffe { value: String, reason: &'static str },
    #[error("status index {value:?} is not a non-negative integer")]
    BadIndex { value: String },
}

fn check_chars(
    kind: &'static str,
    value: &str,
    limit: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > limit {
        return Err(IdError::TooLong {
            kind,
            length: value.len(),
            limit,
        });
    }
    if let Some(character) = value.chars().find(|c| !ok(*c)) {
        return Err(IdError::BadCharacter {
            kind,
            value: value.to_owned(),
            character,
            allowed,
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $limit:expr, $allowed:literal, $ok:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest accepted value, in bytes.
            pub const MAX_LEN: usize = $limit;

            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_chars($kind, &value, $limit, $allowed, $ok)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A tenant: the unit of isolation for policy and bulk revocation.
    TenantId,
    "tenant id",
    64,
    "lowercase letters, digits, '-', '_' and '.'",
    |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
);

string_id!(
    /// The id of a signing key, as it appears in a credential's `kid` header.
    KeyId,
    "key id",
    64,
    "ASCII letters, digits, '-' and '_'",
    |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')
);

/// A SPIFFE id naming a workload: `spiffe://<trust-domain>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkloadId(String);

impl WorkloadId {
    /// The SPIFFE specification caps ids at 2048 bytes.
    pub const MAX_LEN: usize = 2048;

    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        let refuse = |reason| {
            Err(IdError::NotSpiffe {
                value: value.clone(),
                reason,
            })
        };
        if value.is_empty() {
            return Err(IdError::Empty {
                kind: "workload id",
            });
        }
        if value.len() > Self::MAX_LEN {
            return Err(IdError::TooLong {
                kind: "workload id",
                length: value.len(),
                limit: Self::MAX_LEN,
            });
        }
        let Some(rest) = value.strip_prefix("spiffe://") else {
            return refuse("it must start with \"spiffe://\"");
        };
        let (trust_domain, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        if trust_domain.is_empty() {
            return refuse("the trust domain is empty");
        }
        if !trust_domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'))
        {
            return refuse(
                "the trust domain may hold only lowercase letters, digits, '-', '.', '_'",
            );
        }
        if path.is_empty() {
            return refuse("a workload id needs a path after the trust domain");
        }
        for segment in path[1..].split('/') {
            if segment.is_empty() {
                return refuse("the path has an empty segment or a trailing '/'");
            }
            if segment == "." || segment == ".." {
                return refuse("the path may not contain '.' or '..' segments");
            }
            if !segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            {
                return refuse("path segments may hold only letters, digits, '-', '.', '_'");
            }
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain, the part between `spiffe://` and the path.
    pub fn trust_domain(&self) -> &str {
        let rest = &self.0["spiffe://".len()..];
        &rest[..rest.find('/').unwrap_or(rest.len())]
    }
}

impl FromStr for WorkloadId {
    type Err = IdError;
    fn from_str(value: &str) -> Result<Self, IdError> {
        Self::new(value)
    }
}

impl TryFrom<String> for WorkloadId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::new(value)
    }
}

impl From<WorkloadId> for String {
    fn from(id: WorkloadId) -> String {
        id.0
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The position of one credential in the cluster-wide status list. Every
/// credential gets a distinct index from a block leased through the ledger.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct StatusIndex(pub u64);

impl FromStr for StatusIndex {
    type Err = IdError;
    fn from_str(value: &str) -> Result<Self, IdError> {
        value
            .parse::<u64>()
            .map(StatusIndex)
            .map_err(|_| IdError::BadIndex {
                value: value.to_owned(),
            })
    }
}

impl fmt::Display for StatusIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tenant_ids() {
        assert!(TenantId::new("acme-prod.eu_1").is_ok());
        assert_eq!(TenantId::new(""), Err(IdError::Empty { kind: "tenant id" }));
        assert!(matches!(
            TenantId::new("Acme"),
            Err(IdError::BadCharacter { character: 'A', .. })
        ));
        assert!(matches!(
            TenantId::new("a".repeat(65)),
            Err(IdError::TooLong { length: 65, .. })
        ));
    }

    #[test]
    fn workload_ids() {
        let id = WorkloadId::new("spiffe://example.org/ns/prod/sa/payments").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        for bad in [
            "",
            "http://example.org/a",
            "spiffe://",
            "spiffe:///path",
            "spiffe://example.org",
            "spiffe://example.org/",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/../b",
            "spiffe://Example.org/a",
            "spiffe://example.org/a b",
            "spiffe://user@example.org/a",
        ] {
            assert!(WorkloadId::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn serde_validates() {
        let parsed: Result<TenantId, _> = serde_json_like("\"BAD\"");
        assert!(parsed.is_err());
    }

    fn serde_json_like<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
        // A tiny string-only deserializer is enough to show `try_from` runs.
        let inner = text.trim_matches('"').to_owned();
        T::deserialize(serde::de::value::StringDeserializer::<
            serde::de::value::Error,
        >::new(inner))
        .map_err(|e| e.to_string())
    }

    proptest! {
        #[test]
        fn valid_workload_ids_round_trip(domain in "[a-z0-9]{1,20}(\\.[a-z0-9]{1,10}){0,2}",
                                         path in proptest::collection::vec("[A-Za-z0-9_-]{1,12}", 1..5)) {
            let text = format!("spiffe://{domain}/{}", path.join("/"));
            let id = WorkloadId::new(text.clone()).unwrap();
            prop_assert_eq!(id.as_str(), text.as_str());
            prop_assert_eq!(id.trust_domain(), domain.as_str());
        }

        #[test]
        fn parsing_never_panics(text in ".{0,80}") {
            let _ = WorkloadId::new(text.clone());
            let _ = TenantId::new(text.clone());
            let _ = KeyId::new(text.clone());
            let _ = text.parse::<StatusIndex>();
        }
    }
}
