//! Decoding feed events from untrusted bytes, and the errors a verifier
//! gives for events it will not apply.

use lapse_filter::{DeltaMessage, FilterError, Message, Snapshot, decode_message};
use lapse_wire::feed::FeedEvent;
use lapse_wire::feed::feed_event::Kind;
use prost::Message as _;

/// Largest feed event a verifier accepts, in bytes.
pub const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;
/// Longest heartbeat interval a broker may announce.
pub const MAX_HEARTBEAT_INTERVAL_MS: u64 = 3_600_000;

/// Why a feed event was not applied. The verifier's state is unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeedError {
    #[error("feed event is {len} bytes; at most {max}")]
    TooLarge { len: usize, max: usize },
    #[error("feed event does not decode: {0}")]
    Malformed(String),
    #[error("feed event carries nothing")]
    Empty,
    #[error("feed event answers a use report; it holds no state")]
    NotState,
    #[error("filter payload rejected: {0}")]
    Filter(#[from] FilterError),
    #[error("a {expected} event carries a {found} payload")]
    WrongPayload {
        expected: &'static str,
        found: &'static str,
    },
    #[error("event says epoch {envelope} but its payload is at {payload}")]
    EnvelopeMismatch { envelope: u64, payload: u64 },
    #[error("a delta from epoch {from} cannot apply before any snapshot")]
    NoSnapshot { from: u64 },
    #[error("event would move the verifier back from epoch {held} to {offered}")]
    EpochBackwards { held: u64, offered: u64 },
    #[error("heartbeat for epoch {offered} while the verifier holds {held}")]
    HeartbeatEpoch { held: u64, offered: u64 },
    #[error("heartbeat interval {0} ms is out of range")]
    BadInterval(u64),
    #[error("heartbeat carries no broker signature, and this verifier trusts only signed ones")]
    Unsigned,
    #[error("heartbeat signature refused: {0}")]
    Signature(String),
    #[error(
        "broker {broker_id} vouches for epoch {vouched} with another state than the one received \
         (epoch {held}); the unvouched state is dropped"
    )]
    Unvouched {
        broker_id: u64,
        vouched: u64,
        held: u64,
    },
}

/// A feed event, checked and decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub body: Body,
    pub epoch: u64,
    pub cluster_time_ms: u64,
    pub broker_id: u64,
    pub max_credential_ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Snapshot(Box<Snapshot>),
    Delta(DeltaMessage),
    Heartbeat {
        interval_ms: u64,
        /// The broker's signed statement, if it sent one.
        voucher: Option<lapse_wire::feed::Voucher>,
    },
    /// The broker withholds heartbeats, for this reason (capped).
    Withheld {
        reason: String,
    },
}

/// Decode a protobuf-encoded `FeedEvent` (what arrives on the wire).
pub fn decode_event_bytes(bytes: &[u8]) -> Result<Decoded, FeedError> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(FeedError::TooLarge {
            len: bytes.len(),
            max: MAX_EVENT_BYTES,
        });
    }
    let event = FeedEvent::decode(bytes).map_err(|e| FeedError::Malformed(e.to_string()))?;
    decode_event(&event)
}

fn kind_name(message: &Message) -> &'static str {
    match message {
        Message::Full(_) => "snapshot",
        Message::Delta(_) => "delta",
    }
}

/// Check a `FeedEvent` and decode its payload. Never panics; nothing is
/// applied here.
pub fn decode_event(event: &FeedEvent) -> Result<Decoded, FeedError> {
    let body = match &event.kind {
        None => return Err(FeedError::Empty),
        Some(Kind::Snapshot(bytes)) => match decode_message(bytes)? {
            Message::Full(snapshot) => {
                if snapshot.epoch != event.epoch {
                    return Err(FeedError::EnvelopeMismatch {
                        envelope: event.epoch,
                        payload: snapshot.epoch,
                    });
                }
                Body::Snapshot(snapshot)
            }
            other => {
                return Err(FeedError::WrongPayload {
                    expected: "snapshot",
                    found: kind_name(&other),
                });
            }
        },
        Some(Kind::Delta(bytes)) => match decode_message(bytes)? {
            Message::Delta(delta) => {
                let (from, to) = (delta.revoked.from_epoch(), delta.revoked.to_epoch());
                if to != event.epoch || from != event.from_epoch {
                    return Err(FeedError::EnvelopeMismatch {
                        envelope: event.epoch,
                        payload: to,
                    });
                }
                Body::Delta(delta)
            }
            other => {
                return Err(FeedError::WrongPayload {
                    expected: "delta",
                    found: kind_name(&other),
                });
            }
        },
        Some(Kind::Heartbeat(heartbeat)) => {
            if heartbeat.interval_ms == 0 || heartbeat.interval_ms > MAX_HEARTBEAT_INTERVAL_MS {
                return Err(FeedError::BadInterval(heartbeat.interval_ms));
            }
            Body::Heartbeat {
                interval_ms: heartbeat.interval_ms,
                voucher: heartbeat.voucher.clone(),
            }
        }
        Some(Kind::Withheld(notice)) => Body::Withheld {
            reason: cap_reason(&notice.reason),
        },
        Some(Kind::UsesRecorded(_)) => return Err(FeedError::NotState),
    };
    Ok(Decoded {
        body,
        epoch: event.epoch,
        cluster_time_ms: event.cluster_time_ms,
        broker_id: event.broker_id,
        max_credential_ttl_ms: event.max_credential_ttl_ms,
    })
}

/// The longest withheld reason kept, in bytes.
pub const MAX_REASON_BYTES: usize = 256;

/// A broker's reason, cut to [`MAX_REASON_BYTES`] on a character boundary
/// and stripped of control characters (it reaches logs and status pages).
fn cap_reason(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars() {
        if out.len() + c.len_utf8() > MAX_REASON_BYTES {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}
