//! The names a feed subscriber gives in its `Hello` (and a relay for its
//! leaves): what brokers and relays accept as a verifier id or a region;
//! and the `Hello` itself, read alike by both.

use std::time::Duration;

use tonic::Status;

use crate::feed::feed_request::Kind;
use crate::feed::{FeedRequest, Hello};

/// How long a new subscriber has to send its `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Check a subscriber's `Hello`: its verifier id and region are names
/// ([`check_name`]), and with a certified verifier name (TLS) the id is
/// that name or under it ([`verifier_id_matches`]); else
/// INVALID_ARGUMENT or PERMISSION_DENIED saying why.
pub fn check_hello(hello: &Hello, certified: Option<&str>) -> Result<(), Status> {
    check_name("verifier_id", &hello.verifier_id, false)?;
    if let Some(name) = certified
        && !verifier_id_matches(name, &hello.verifier_id)
    {
        return Err(Status::permission_denied(format!(
            "verifier_id {:?} is not this verifier's: its certificate names {name:?} (use {name:?} or \"{name}/<suffix>\")",
            hello.verifier_id
        )));
    }
    check_name("region", &hello.region, true)
}

/// A subscription's first message as its `Hello`. `first` is `None` when
/// nothing came within [`HELLO_TIMEOUT`]; anything but a `Hello` is
/// INVALID_ARGUMENT saying what came instead, and a stream error is
/// passed on.
pub fn hello_of(first: Option<Result<Option<FeedRequest>, Status>>) -> Result<Hello, Status> {
    match first {
        None => Err(Status::invalid_argument(format!(
            "no Hello within {} s",
            HELLO_TIMEOUT.as_secs()
        ))),
        Some(Err(status)) => Err(status),
        Some(Ok(None)) => Err(Status::invalid_argument("the stream closed before a Hello")),
        Some(Ok(Some(FeedRequest {
            kind: Some(Kind::Hello(hello)),
        }))) => Ok(hello),
        Some(Ok(Some(_))) => Err(Status::invalid_argument(
            "the first message of a subscription must be a Hello",
        )),
    }
}

/// Longest verifier id and region accepted.
pub const MAX_NAME_BYTES: usize = 128;

/// `Ok` when `value` may be a verifier id or region called `what`: at most
/// [`MAX_NAME_BYTES`] of letters, digits and `. _ - : / @`, and not empty
/// unless `allow_empty`; else INVALID_ARGUMENT saying why.
pub fn check_name(what: &str, value: &str, allow_empty: bool) -> Result<(), Status> {
    if value.is_empty() && !allow_empty {
        return Err(Status::invalid_argument(format!("{what} is empty")));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "{what} is {} bytes; at most {MAX_NAME_BYTES}",
            value.len()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-:/@".contains(*c)))
    {
        return Err(Status::invalid_argument(format!(
            "{what} {value:?} contains {c:?}; use letters, digits and . _ - : / @"
        )));
    }
    Ok(())
}

/// Whether a `Hello`'s verifier id belongs to the certified `name`: the
/// name itself, or `name/<suffix>`.
pub fn verifier_id_matches(name: &str, id: &str) -> bool {
    id == name
        || id
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_id_is_its_certificates_name_or_under_it() {
        assert!(verifier_id_matches("edge", "edge"));
        assert!(verifier_id_matches("edge", "edge/7"));
        assert!(!verifier_id_matches("edge", "edge/"));
        assert!(!verifier_id_matches("edge", "edge-2"));
        assert!(!verifier_id_matches("edge", "edg"));
        assert!(!verifier_id_matches("edge", "other/edge"));
    }

    #[test]
    fn names_are_capped_and_spelled_plainly() {
        assert!(check_name("region", "", true).is_ok());
        assert!(check_name("verifier_id", "", false).is_err());
        assert!(check_name("verifier_id", "edge-1/a@b:c.d_e", false).is_ok());
        assert!(check_name("verifier_id", &"a".repeat(MAX_NAME_BYTES), false).is_ok());
        assert!(check_name("verifier_id", &"a".repeat(MAX_NAME_BYTES + 1), false).is_err());
        assert!(check_name("verifier_id", "edge 1", false).is_err());
    }

    #[test]
    fn only_a_hello_in_time_opens_a_subscription() {
        let hello = Hello {
            verifier_id: "edge".into(),
            ..Hello::default()
        };
        let sent = |kind| Some(Ok(Some(FeedRequest { kind })));
        assert_eq!(
            hello_of(sent(Some(Kind::Hello(hello.clone())))).ok(),
            Some(hello)
        );
        let refused = |first| hello_of(first).unwrap_err();
        let late = refused(None);
        assert_eq!(late.code(), tonic::Code::InvalidArgument);
        assert_eq!(late.message(), "no Hello within 5 s");
        assert!(
            refused(Some(Ok(None)))
                .message()
                .contains("closed before a Hello")
        );
        let ack = Kind::Ack(crate::feed::Ack { epoch: 1 });
        assert!(
            refused(sent(Some(ack)))
                .message()
                .contains("must be a Hello")
        );
        assert!(refused(sent(None)).message().contains("must be a Hello"));
        let broken = refused(Some(Err(Status::cancelled("gone"))));
        assert_eq!(broken.code(), tonic::Code::Cancelled);
    }
}
