//! Shared Signals (OpenID SSF 1.0 / CAEP 1.0) transmitter: revocation
//! events from the ledger's event log as Security Event Tokens (RFC 8417)
//! signed with this broker's committed key, receivers authenticated by
//! their bearer token, and the push deliverer ([`push`]). The HTTP
//! endpoints are in `http/ssf.rs`.
//!
//! Delivery is at least once, from the replicated log: a stream's position
//! (the sequence number of the last event acknowledged) is committed
//! through Raft before it counts, so whichever broker delivers next starts
//! after it. A SET's `jti` is `<stream id>-<sequence number>`, so an event
//! delivered again carries the same `jti`.

pub mod push;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lapse_credential::{SigningKeyPair, TenantId};
use lapse_ledger::LedgerState;
use lapse_ledger::ssf::{SsfEvent, SsfStatus as Delivering, SsfStream, SsfTarget};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::core::SharedCore;
use crate::error::BrokerError;

/// The JOSE `typ` of a Security Event Token (RFC 8417 §2.3).
pub const SET_TYPE: &str = "secevent+jwt";
/// RFC 8935 push delivery's method URI.
pub const PUSH_METHOD: &str = "urn:ietf:rfc:8935";
/// RFC 8936 poll delivery's method URI.
pub const POLL_METHOD: &str = "urn:ietf:rfc:8936";
/// The longest bearer token read from a request, in bytes.
const MAX_TOKEN_BYTES: usize = 256;

/// A receiver, as its bearer token showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub name: String,
    /// `None`: every tenant.
    pub tenant: Option<TenantId>,
}

/// The receiver whose token `authorization` (an HTTP `Authorization`
/// header's value) carries. Tokens are compared by their SHA-256, in
/// constant time, with every receiver's; a token is never logged.
pub fn authenticate(
    core: &SharedCore,
    authorization: Option<&str>,
) -> Result<Receiver, BrokerError> {
    let token = authorization
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            BrokerError::Unauthenticated(
                "an SSF endpoint needs `Authorization: Bearer <receiver token>` (lapse ssf receiver create)".into(),
            )
        })?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(BrokerError::Unauthenticated(
            "the bearer token is no receiver token".into(),
        ));
    }
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut found = None;
    core.view().read(|a| {
        for (name, receiver) in &a.ledger.ssf_receivers {
            if crate::link::constant_time_eq(&receiver.token_hash, &presented) {
                found = Some(Receiver {
                    name: name.clone(),
                    tenant: receiver.tenant.clone(),
                });
            }
        }
    });
    found.ok_or_else(|| {
        BrokerError::Unauthenticated("the bearer token is no receiver token of this cluster".into())
    })
}

/// The `jti` of the event numbered `seq` on `stream_id`.
pub fn jti(stream_id: &str, seq: u64) -> String {
    format!("{stream_id}-{seq}")
}

/// The sequence number a `jti` of `stream_id` names, if it is one.
pub fn seq_of(stream_id: &str, jti: &str) -> Option<u64> {
    let rest = jti.strip_prefix(stream_id)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) || rest.len() > 19 {
        return None;
    }
    rest.parse().ok()
}

/// The events still to be delivered on a stream, in order, at most `max`:
/// after its position, of its receiver's tenant, of a type it asked for.
pub fn pending(ledger: &LedgerState, stream: &SsfStream, max: usize) -> Vec<(u64, SsfEvent)> {
    if stream.status != Delivering::Enabled {
        return Vec::new();
    }
    let scope = ledger
        .ssf_receivers
        .get(&stream.receiver)
        .map(|r| r.tenant.clone());
    let Some(scope) = scope else {
        return Vec::new();
    };
    ledger
        .ssf_events
        .range(stream.acked.saturating_add(1)..)
        .filter(|(_, event)| {
            event.visible_to(scope.as_ref()) && stream.delivers(event.target.event_type())
        })
        .take(max)
        .map(|(seq, event)| (*seq, event.clone()))
        .collect()
}

/// RFC 9493 subject identifier of what an event revoked.
fn subject_id(event: &SsfEvent) -> Value {
    let tenant = |t: &TenantId| json!({"format": "opaque", "id": t.to_string()});
    match (&event.target, &event.tenant) {
        (SsfTarget::Subject { subject, .. }, Some(t)) => json!({
            "format": "complex",
            "user": {"format": "uri", "uri": subject.to_string()},
            "tenant": tenant(t),
        }),
        (SsfTarget::Subject { subject, .. }, None) => {
            json!({"format": "uri", "uri": subject.to_string()})
        }
        (SsfTarget::Tenant { .. }, Some(t)) => json!({"format": "complex", "tenant": tenant(t)}),
        (SsfTarget::Task(task), Some(t)) => json!({
            "format": "complex",
            "session": {"format": "opaque", "id": format!("task:{task}")},
            "tenant": tenant(t),
        }),
        (SsfTarget::Index(index), Some(t)) => json!({
            "format": "complex",
            "session": {"format": "opaque", "id": format!("status-index:{index}")},
            "tenant": tenant(t),
        }),
        (SsfTarget::Index(index), None) => {
            json!({"format": "opaque", "id": format!("status-index:{index}")})
        }
        (SsfTarget::Key(key), _) => json!({"format": "opaque", "id": format!("key:{key}")}),
        (SsfTarget::Secret(hash), _) => {
            json!({"format": "opaque", "id": format!("secret-sha256:{}", hex::encode(hash))})
        }
        (SsfTarget::Tenant { .. } | SsfTarget::Task(_), None) => {
            json!({"format": "opaque", "id": "unknown"})
        }
    }
}

/// The CAEP event body of an event.
fn event_body(event: &SsfEvent) -> Value {
    let mut body = json!({
        "event_timestamp": event.at_ms / 1000,
        "initiating_entity": "admin",
    });
    let (reason, credential_type) = match &event.target {
        SsfTarget::Index(index) => (format!("status index {index} revoked"), Some("jwt")),
        SsfTarget::Subject {
            issued_before_ms, ..
        } => (
            format!("every credential of the workload issued before {issued_before_ms} ms revoked"),
            None,
        ),
        SsfTarget::Tenant { issued_before_ms } => (
            format!("every credential of the tenant issued before {issued_before_ms} ms revoked"),
            None,
        ),
        SsfTarget::Task(task) => (format!("every credential of task {task} revoked"), None),
        SsfTarget::Key(key) => (
            format!("signing key {key} revoked: every credential it signed"),
            Some("signing-key"),
        ),
        SsfTarget::Secret(_) => ("a leaked secret revoked".to_owned(), Some("secret")),
    };
    body["reason_admin"] = json!({ "en": reason });
    if let Some(kind) = credential_type {
        body["credential_type"] = json!(kind);
        body["change_type"] = json!("revoke");
    }
    body
}

/// The SET for event `seq` of `stream_id`, signed with `key`: header
/// `alg: EdDSA`, `typ: secevent+jwt`, `kid`; claims `iss`, `iat`, `jti`,
/// `aud`, `txn` (the revocation's epoch), `sub_id` and one CAEP event.
pub fn sign_set(
    key: &SigningKeyPair,
    issuer: &str,
    now_ms: u64,
    stream_id: &str,
    stream: &SsfStream,
    seq: u64,
    event: &SsfEvent,
) -> String {
    let header = json!({"alg": "EdDSA", "typ": SET_TYPE, "kid": key.key_id().to_string()});
    let audience = match stream.config.audiences.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    let claims = json!({
        "iss": issuer,
        "iat": now_ms / 1000,
        "jti": jti(stream_id, seq),
        "aud": audience,
        "txn": event.epoch.to_string(),
        "sub_id": subject_id(event),
        "events": { event.target.event_type(): event_body(event) },
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign_raw(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use lapse_credential::{KeyId, WorkloadId};
    use lapse_ledger::ssf::{SESSION_REVOKED, SsfDelivery, SsfStreamConfig};

    use super::*;

    fn stream() -> SsfStream {
        SsfStream {
            receiver: "rx".into(),
            config: SsfStreamConfig {
                audiences: vec!["https://rx.example".into()],
                events_requested: vec![SESSION_REVOKED.into()],
                delivery: SsfDelivery::Poll,
                description: None,
            },
            status: Delivering::Enabled,
            reason: None,
            acked: 0,
            created_epoch: 1,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn a_set_is_signed_eddsa_with_typ_secevent_and_carries_one_caep_event() {
        let key = SigningKeyPair::from_seed(KeyId::new("k1").unwrap(), [7; 32]);
        let event = SsfEvent {
            epoch: 42,
            at_ms: 5_000,
            tenant: Some(TenantId::new("acme").unwrap()),
            target: SsfTarget::Subject {
                subject: WorkloadId::new("spiffe://example.org/api").unwrap(),
                issued_before_ms: 5_000,
            },
        };
        let token = sign_set(&key, "lapse", 6_000, "s9", &stream(), 3, &event);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["typ"], SET_TYPE);
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], "k1");
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["jti"], "s9-3");
        assert_eq!(claims["txn"], "42");
        assert_eq!(claims["aud"], "https://rx.example");
        assert_eq!(claims["sub_id"]["format"], "complex");
        assert_eq!(claims["sub_id"]["tenant"]["id"], "acme");
        assert_eq!(
            claims["events"][SESSION_REVOKED]["event_timestamp"],
            json!(5)
        );
        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap()
            .try_into()
            .unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(lapse_credential::verify_raw(
            &key.public_key(),
            signed.as_bytes(),
            &signature
        ));
    }

    #[test]
    fn a_jti_names_its_stream_and_sequence_number_only() {
        assert_eq!(seq_of("s9", &jti("s9", 17)), Some(17));
        assert_eq!(seq_of("s9", "s90-17"), None);
        assert_eq!(seq_of("s9", "s9-"), None);
        assert_eq!(seq_of("s9", "s9-1x"), None);
        assert_eq!(seq_of("s9", "s9-99999999999999999999999"), None);
    }
}
