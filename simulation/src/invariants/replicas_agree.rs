//! Replicas agree: any two brokers that have applied the same log index
//! have the same state digest there.

use std::collections::BTreeMap;

use super::Violation;

pub const NAME: &str = "replicas_agree";

/// The digest first seen at each applied index, and who had it.
#[derive(Debug, Default)]
pub struct ReplicaDigests {
    seen: BTreeMap<u64, (u64, [u8; 32])>,
    /// (broker, peer) pairs whose own replica check reported a divergence.
    reported: std::collections::BTreeSet<(u64, u64)>,
}

impl ReplicaDigests {
    /// Whether this is the first time `broker` reported diverging from
    /// `peer` (the brokers' own check, shown in the trace).
    pub fn first_report(&mut self, broker: u64, peer: u64) -> bool {
        self.reported.insert((broker, peer))
    }

    /// Broker `broker` has applied up to `index` with state `digest`.
    pub fn observe(
        &mut self,
        broker: u64,
        index: u64,
        digest: [u8; 32],
        at_ms: f64,
    ) -> Option<Violation> {
        match self.seen.get(&index) {
            None => {
                self.seen.insert(index, (broker, digest));
                None
            }
            Some((_, first)) if *first == digest => None,
            Some((other, first)) => Some(Violation {
                invariant: NAME,
                at_ms,
                detail: format!(
                    "at index {index} broker {broker} has digest {} but broker {other} had {}",
                    hex::encode(&digest[..8]),
                    hex::encode(&first[..8])
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_different_digest_at_the_same_index_is_a_violation() {
        let mut digests = ReplicaDigests::default();
        assert!(digests.observe(1, 5, [1; 32], 0.0).is_none());
        assert!(digests.observe(2, 5, [1; 32], 1.0).is_none());
        assert!(digests.observe(2, 6, [2; 32], 1.0).is_none());
        assert!(digests.observe(3, 5, [9; 32], 2.0).is_some());
    }
}
