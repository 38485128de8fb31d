//! Shared Signals (OpenID SSF 1.0, CAEP 1.0) in the ledger: receivers (a
//! bearer token kept by its SHA-256, scoped to a tenant or to all), their
//! streams (configuration, status and delivery position), and the bounded
//! log of revocation events every stream is delivered from. Each applied
//! revocation adds one event, numbered in log order, so every broker holds
//! the same events and a stream's committed position says where any
//! broker resumes delivering it.

use lapse_credential::{KeyId, TenantId, WorkloadId};
use serde::{Deserialize, Serialize};

use crate::command::Sha256;

/// The most receivers the ledger holds.
pub const MAX_SSF_RECEIVERS: usize = 256;
/// The most streams the ledger holds, over every receiver.
pub const MAX_SSF_STREAMS: usize = 64;
/// The most revocation events kept; the oldest leave first.
pub const MAX_SSF_EVENTS: usize = 10_000;
/// The longest receiver name, in bytes.
pub const MAX_SSF_NAME_BYTES: usize = 64;
/// The longest push endpoint URL, in bytes.
pub const MAX_SSF_URL_BYTES: usize = 2048;
/// The longest `authorization_header` for a push endpoint, in bytes.
pub const MAX_SSF_AUTHORIZATION_BYTES: usize = 1024;
/// The most audiences a stream names, and the longest one, in bytes.
pub const MAX_SSF_AUDIENCES: usize = 8;
pub const MAX_SSF_AUDIENCE_BYTES: usize = 256;
/// The longest description or status reason, in bytes.
pub const MAX_SSF_TEXT_BYTES: usize = 256;

/// CAEP's session-revoked event type.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP's credential-change event type.
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// The event types a stream can be delivered.
pub const SSF_EVENTS_SUPPORTED: [&str; 2] = [SESSION_REVOKED, CREDENTIAL_CHANGE];

/// An SSF receiver: who may manage streams and read events with the token
/// whose SHA-256 is `token_hash`, for one tenant or (`None`) all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsfReceiver {
    pub token_hash: Sha256,
    pub tenant: Option<TenantId>,
    pub created_at_ms: u64,
    pub created_epoch: u64,
}

/// A secret a receiver gave for its push endpoint (the `Authorization`
/// header the transmitter sends). Debug output names it by its SHA-256.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SsfSecret(pub String);

impl std::fmt::Debug for SsfSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        write!(f, "SsfSecret(sha256:{})", hex::encode(&digest[..8]))
    }
}

/// How a stream's events reach its receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SsfDelivery {
    /// RFC 8935: the transmitter POSTs each SET to `endpoint_url`.
    Push {
        endpoint_url: String,
        authorization_header: Option<SsfSecret>,
    },
    /// RFC 8936: the receiver polls the transmitter.
    Poll,
}

/// What a receiver asks of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsfStreamConfig {
    /// The SETs' `aud`.
    pub audiences: Vec<String>,
    /// Event type URIs; those in [`SSF_EVENTS_SUPPORTED`] are delivered.
    pub events_requested: Vec<String>,
    pub delivery: SsfDelivery,
    pub description: Option<String>,
}

/// Whether a stream is being delivered (SSF §8.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SsfStatus {
    Enabled,
    /// Events are kept, not delivered; delivery resumes where it stopped.
    Paused,
    /// Events are neither kept for it nor delivered.
    Disabled,
}

impl SsfStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SsfStatus::Enabled => "enabled",
            SsfStatus::Paused => "paused",
            SsfStatus::Disabled => "disabled",
        }
    }
}

/// A stream: its receiver, configuration, status, and the sequence number
/// of the last event delivered and acknowledged (every later event is
/// still to be delivered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsfStream {
    pub receiver: String,
    pub config: SsfStreamConfig,
    pub status: SsfStatus,
    pub reason: Option<String>,
    pub acked: u64,
    pub created_epoch: u64,
    pub updated_at_ms: u64,
}

impl SsfStream {
    /// Whether `event_type` is among those delivered on this stream.
    pub fn delivers(&self, event_type: &str) -> bool {
        self.config
            .events_requested
            .iter()
            .any(|e| e == event_type && SSF_EVENTS_SUPPORTED.contains(&e.as_str()))
    }
}

/// What a revocation revoked, as an event tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SsfTarget {
    /// One credential, by status index.
    Index(u64),
    /// Every credential of a workload issued before a time.
    Subject {
        subject: WorkloadId,
        issued_before_ms: u64,
    },
    /// Every credential of the tenant issued before a time.
    Tenant { issued_before_ms: u64 },
    /// Every credential of the tenant carrying a task id.
    Task(String),
    /// Every credential a signing key (or a break-glass key) signed.
    Key(KeyId),
    /// A leaked secret, by its SHA-256.
    Secret(Sha256),
}

impl SsfTarget {
    /// The CAEP event type: a group revocation ends sessions; revoking one
    /// credential, a key or a secret changes a credential.
    pub fn event_type(&self) -> &'static str {
        match self {
            SsfTarget::Subject { .. } | SsfTarget::Tenant { .. } | SsfTarget::Task(_) => {
                SESSION_REVOKED
            }
            SsfTarget::Index(_) | SsfTarget::Key(_) | SsfTarget::Secret(_) => CREDENTIAL_CHANGE,
        }
    }
}

/// One applied revocation, as streams deliver it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsfEvent {
    /// The log index of the revocation.
    pub epoch: u64,
    /// Its commit time.
    pub at_ms: u64,
    /// The tenant it concerns; `None` when it is not one tenant's (a key, a
    /// secret, an index the ledger holds no issuance record of), which only
    /// receivers of every tenant are delivered.
    pub tenant: Option<TenantId>,
    pub target: SsfTarget,
}

impl SsfEvent {
    /// Whether a receiver of `scope` (`None`: every tenant) sees it.
    pub fn visible_to(&self, scope: Option<&TenantId>) -> bool {
        match scope {
            None => true,
            Some(tenant) => self.tenant.as_ref() == Some(tenant),
        }
    }
}

/// Why a push endpoint URL is refused, if it is: `https://`, or `http://`
/// to a loopback host only; at most [`MAX_SSF_URL_BYTES`]; no spaces or
/// control characters.
pub fn endpoint_problem(url: &str) -> Option<String> {
    if url.len() > MAX_SSF_URL_BYTES {
        return Some(format!(
            "endpoint_url is {} bytes; at most {MAX_SSF_URL_BYTES}",
            url.len()
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("endpoint_url holds a space or a control character".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some("endpoint_url is not an absolute URL (https://host/path)".into());
    };
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Some("endpoint_url needs a host and no user information".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    match scheme.as_str() {
        "https" => None,
        "http" if matches!(host, "127.0.0.1" | "localhost" | "::1") => None,
        "http" => Some("endpoint_url must be https (http only to a loopback host)".into()),
        _ => Some(format!(
            "endpoint_url scheme {scheme:?} is not supported; use https"
        )),
    }
}

/// Why a stream configuration is refused, if it is.
pub fn config_problem(config: &SsfStreamConfig) -> Option<String> {
    if config.audiences.is_empty() || config.audiences.len() > MAX_SSF_AUDIENCES {
        return Some(format!(
            "aud names {} audiences; 1 to {MAX_SSF_AUDIENCES}",
            config.audiences.len()
        ));
    }
    if let Some(aud) = config.audiences.iter().find(|a| {
        a.is_empty() || a.len() > MAX_SSF_AUDIENCE_BYTES || a.chars().any(char::is_control)
    }) {
        return Some(format!(
            "an audience is {} bytes or holds a control character; 1 to {MAX_SSF_AUDIENCE_BYTES} printable bytes",
            aud.len()
        ));
    }
    if config.events_requested.len() > 16 {
        return Some("events_requested names more than 16 event types".into());
    }
    if config
        .events_requested
        .iter()
        .any(|e| e.len() > MAX_SSF_AUDIENCE_BYTES)
    {
        return Some(format!(
            "an event type is longer than {MAX_SSF_AUDIENCE_BYTES} bytes"
        ));
    }
    if let Some(text) = &config.description
        && text.len() > MAX_SSF_TEXT_BYTES
    {
        return Some(format!(
            "description is {} bytes; at most {MAX_SSF_TEXT_BYTES}",
            text.len()
        ));
    }
    if let SsfDelivery::Push {
        endpoint_url,
        authorization_header,
    } = &config.delivery
    {
        if endpoint_url.is_empty() {
            return Some("push delivery needs an endpoint_url".into());
        }
        if let Some(problem) = endpoint_problem(endpoint_url) {
            return Some(problem);
        }
        if let Some(SsfSecret(header)) = authorization_header
            && (header.len() > MAX_SSF_AUTHORIZATION_BYTES
                || header.chars().any(|c| c.is_control() || !c.is_ascii()))
        {
            return Some(format!(
                "authorization_header is longer than {MAX_SSF_AUTHORIZATION_BYTES} bytes or not printable ASCII"
            ));
        }
    }
    None
}

/// Why a receiver name is refused, if it is.
pub fn name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SSF_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    (!ok).then(|| {
        format!("a receiver name is 1 to {MAX_SSF_NAME_BYTES} letters, digits, '.', '_' or '-'")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_endpoints_are_https_or_loopback_http() {
        assert_eq!(endpoint_problem("https://rx.example/ssf"), None);
        assert_eq!(endpoint_problem("http://127.0.0.1:8080/events"), None);
        assert_eq!(endpoint_problem("http://localhost/events"), None);
        assert_eq!(endpoint_problem("http://[::1]:9/x"), None);
        assert!(endpoint_problem("http://rx.example/ssf").is_some());
        assert!(endpoint_problem("http://127.0.0.1.evil.example/").is_some());
        assert!(endpoint_problem("ftp://rx.example/").is_some());
        assert!(endpoint_problem("rx.example").is_some());
        assert!(endpoint_problem("https://user@rx.example/").is_some());
        assert!(endpoint_problem("https://rx.example/a b").is_some());
        assert!(endpoint_problem(&format!("https://rx.example/{}", "a".repeat(3000))).is_some());
    }

    #[test]
    fn secrets_are_hashed_in_debug_output() {
        let text = format!("{:?}", SsfSecret("Bearer hunter2".into()));
        assert!(!text.contains("hunter2"), "{text}");
    }
}
