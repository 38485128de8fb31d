//! Membership changes as the broker's services ask for them, and the
//! membership that results: plain values, carried to the leader over the
//! peer link like any other write.

use serde::{Deserialize, Serialize};

/// One change to the cluster's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a broker that will receive the log but not vote.
    AddLearner { node_id: u64, address: String },
    /// Make a learner a voter.
    Promote { node_id: u64 },
    /// Remove a voter or a learner.
    Remove { node_id: u64 },
}

/// The membership after a change, with the log index it was committed at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    pub log_index: u64,
    /// The broker that made the change: the leader at the time.
    pub leader_id: u64,
    /// `(node id, address)` of each voter.
    pub voters: Vec<(u64, String)>,
    /// `(node id, address)` of each learner.
    pub learners: Vec<(u64, String)>,
}

impl MembershipView {
    /// The view of an openraft membership.
    pub fn of(log_index: u64, leader_id: u64, membership: &lapse_storage::Membership) -> Self {
        let member = |id: u64| {
            let address = membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            (id, address)
        };
        Self {
            log_index,
            leader_id,
            voters: membership.voter_ids().map(member).collect(),
            learners: membership.learner_ids().map(member).collect(),
        }
    }

    pub fn is_voter(&self, node_id: u64) -> bool {
        self.voters.iter().any(|(id, _)| *id == node_id)
    }

    pub fn is_learner(&self, node_id: u64) -> bool {
        self.learners.iter().any(|(id, _)| *id == node_id)
    }

    /// Why `node_id` at `address` cannot be added as a learner: an address
    /// that is not `host:port`, a node id that is a voter, a node id that is
    /// a learner at another address, or an address another member has. A
    /// learner at the same address is no change, and passes (a retried join).
    pub fn refuse_learner(&self, node_id: u64, address: &str) -> Option<crate::BrokerError> {
        use crate::BrokerError;
        if node_id == 0 {
            return Some(BrokerError::invalid("node_id", "must be at least 1"));
        }
        if let Err(e) = check_address(address) {
            return Some(BrokerError::invalid("address", e));
        }
        if self.is_voter(node_id) {
            return Some(BrokerError::Exists(format!(
                "node {node_id} is already a voter of this cluster"
            )));
        }
        if let Some(existing) = self.address_of(node_id)
            && existing != address
        {
            return Some(BrokerError::Exists(format!(
                "node {node_id} is already a learner, at {existing}"
            )));
        }
        if let Some((other, _)) = self
            .voters
            .iter()
            .chain(&self.learners)
            .find(|(id, a)| *id != node_id && a == address)
        {
            return Some(BrokerError::Exists(format!(
                "address {address} is already node {other}'s"
            )));
        }
        None
    }

    /// The address of a member, voter or learner.
    pub fn address_of(&self, node_id: u64) -> Option<&str> {
        self.voters
            .iter()
            .chain(&self.learners)
            .find(|(id, _)| *id == node_id)
            .map(|(_, address)| address.as_str())
    }
}

/// The longest broker address accepted, in bytes (a DNS name is at most 253).
pub const MAX_ADDRESS_BYTES: usize = 261;

/// What is wrong with a broker address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("is empty; give host:port, e.g. 127.0.0.1:7401")]
    Empty,
    #[error("is {length} bytes, more than the {MAX_ADDRESS_BYTES} allowed")]
    TooLong { length: usize },
    #[error("has no port; give host:port, e.g. 127.0.0.1:7401")]
    NoPort,
    #[error("has port {port:?}, not a number in 1..=65535")]
    BadPort { port: String },
    #[error("has host {host:?}, not an IP address or a DNS name")]
    BadHost { host: String },
}

/// Check that `address` is `host:port` a broker can be dialled at: a DNS
/// name, an IPv4 address or a bracketed IPv6 address, and a port in
/// 1..=65535 (a port beyond would wrap around, and 0 reaches nothing).
/// Nothing is resolved. Messages quote at most 64 bytes of the address.
pub fn check_address(address: &str) -> Result<(), AddressError> {
    if address.is_empty() {
        return Err(AddressError::Empty);
    }
    if address.len() > MAX_ADDRESS_BYTES {
        return Err(AddressError::TooLong {
            length: address.len(),
        });
    }
    let (host, port) = address.rsplit_once(':').ok_or(AddressError::NoPort)?;
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok {
        return Err(AddressError::BadPort { port: quoted(port) });
    }
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(host),
    };
    if !host_ok {
        return Err(AddressError::BadHost { host: quoted(host) });
    }
    Ok(())
}

/// At most 64 bytes of `text`, cut at a character boundary.
fn quoted(text: &str) -> String {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A DNS name: dot-separated labels of 1 to 63 letters, digits and
/// hyphens, not starting or ending with a hyphen, at most 253 bytes, and
/// not all digits and dots (that would be a malformed IPv4 address).
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_are_host_and_a_port_in_range() {
        for good in [
            "127.0.0.1:7401",
            "[::1]:7401",
            "broker-1.example.org:1",
            "localhost:65535",
        ] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        let bad = [
            ("", AddressError::Empty),
            ("127.0.0.1", AddressError::NoPort),
            ("127.0.0.1:", AddressError::BadPort { port: "".into() }),
            ("127.0.0.1:0", AddressError::BadPort { port: "0".into() }),
            (
                "127.0.0.1:65536",
                AddressError::BadPort {
                    port: "65536".into(),
                },
            ),
            ("127.0.0.1:-1", AddressError::BadPort { port: "-1".into() }),
            (
                "127.0.0.1:+80",
                AddressError::BadPort { port: "+80".into() },
            ),
            (
                "not an address:80",
                AddressError::BadHost {
                    host: "not an address".into(),
                },
            ),
            (
                "999.1.1.1:80",
                AddressError::BadHost {
                    host: "999.1.1.1".into(),
                },
            ),
            ("::1:80", AddressError::BadHost { host: "::1".into() }),
            (
                "[::1:80",
                AddressError::BadHost {
                    host: "[::1".into(),
                },
            ),
            (":80", AddressError::BadHost { host: "".into() }),
            (
                "http://x:80",
                AddressError::BadHost {
                    host: "http://x".into(),
                },
            ),
        ];
        for (address, expected) in bad {
            assert_eq!(check_address(address), Err(expected), "{address}");
        }
        assert_eq!(
            check_address(&format!("{}:80", "a".repeat(300))),
            Err(AddressError::TooLong { length: 303 })
        );
    }
}
