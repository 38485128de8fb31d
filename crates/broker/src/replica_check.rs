//! Divergence made loud: every broker compares the digests of its applied
//! state at checkpoint indices with each peer's, in the background. Raft
//! promises that replicas which applied the same index hold the same state;
//! if that ever fails, this says so (`lapse status`, the
//! `lapse_replica_divergences` metric, an error log naming both brokers
//! and the index) instead of letting one broker's verifiers silently
//! enforce a different revocation set.

use std::collections::BTreeMap;
use std::sync::Mutex;

use lapse_storage::{NodeId, Sha256Digest};

/// A peer whose state differs from ours at the same applied index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    pub peer: NodeId,
    pub index: u64,
    pub own_digest: Sha256Digest,
    pub peer_digest: Sha256Digest,
    pub detected_at_ms: u64,
}

/// The first index both lists hold with different digests, if any, and the
/// highest index both hold with the same digest.
pub fn compare(
    own: &[(u64, Sha256Digest)],
    peer: &[(u64, Sha256Digest)],
) -> (Option<(u64, Sha256Digest, Sha256Digest)>, Option<u64>) {
    let peer: BTreeMap<u64, Sha256Digest> = peer.iter().copied().collect();
    let mut first_difference = None;
    let mut last_agreement = None;
    for (index, digest) in own {
        match peer.get(index) {
            Some(theirs) if theirs == digest => last_agreement = Some(*index),
            Some(theirs) if first_difference.is_none() => {
                first_difference = Some((*index, *digest, *theirs));
            }
            _ => {}
        }
    }
    (first_difference, last_agreement)
}

/// The divergences this broker has found, one per peer at most (bounded
/// by the cluster's membership).
#[derive(Debug, Default)]
pub struct ReplicaCheck {
    found: Mutex<BTreeMap<NodeId, Divergence>>,
}

impl ReplicaCheck {
    pub fn divergences(&self) -> Vec<Divergence> {
        self.found
            .lock()
            .expect("replica check lock")
            .values()
            .cloned()
            .collect()
    }

    /// Compare our checkpoints with `peer`'s; return a divergence newly
    /// found. A divergence stays reported until the two agree at a later
    /// checkpoint (the replica was rebuilt).
    pub fn observe(
        &self,
        own_id: NodeId,
        peer: NodeId,
        own: &[(u64, Sha256Digest)],
        theirs: &[(u64, Sha256Digest)],
        now_ms: u64,
    ) -> Option<Divergence> {
        let (difference, agreement) = compare(own, theirs);
        let mut found = self.found.lock().expect("replica check lock");
        if let (Some(old), Some(agreed)) = (found.get(&peer), agreement)
            && agreed > old.index
            && difference.is_none_or(|(index, ..)| index < agreed)
        {
            tracing::info!(
                broker = own_id,
                peer,
                index = agreed,
                "replica agrees with this broker again"
            );
            found.remove(&peer);
        }
        let (index, own_digest, peer_digest) = difference?;
        if found.contains_key(&peer) {
            return None;
        }
        let divergence = Divergence {
            peer,
            index,
            own_digest,
            peer_digest,
            detected_at_ms: now_ms,
        };
        tracing::error!(
            broker = own_id,
            peer,
            index,
            own_digest = %hex::encode(own_digest),
            peer_digest = %hex::encode(peer_digest),
            "replicas diverged: broker {own_id} and broker {peer} hold different states at log index {index}"
        );
        found.insert(peer, divergence.clone());
        Some(divergence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(byte: u8) -> Sha256Digest {
        [byte; 32]
    }

    #[test]
    fn equal_digests_at_shared_indices_agree() {
        let own = [(1000, d(1)), (2000, d(2))];
        let theirs = [(2000, d(2)), (3000, d(3))];
        assert_eq!(compare(&own, &theirs), (None, Some(2000)));
    }

    #[test]
    fn different_digests_at_the_same_index_are_a_divergence_naming_it() {
        let check = ReplicaCheck::default();
        let own = [(1000, d(1)), (2000, d(2))];
        let theirs = [(1000, d(1)), (2000, d(9))];
        let found = check.observe(1, 3, &own, &theirs, 77).expect("divergence");
        assert_eq!(
            found,
            Divergence {
                peer: 3,
                index: 2000,
                own_digest: d(2),
                peer_digest: d(9),
                detected_at_ms: 77
            }
        );
        // Reported once, kept while it lasts.
        assert!(check.observe(1, 3, &own, &theirs, 78).is_none());
        assert_eq!(check.divergences().len(), 1);
    }

    #[test]
    fn no_shared_index_says_nothing() {
        let check = ReplicaCheck::default();
        assert!(
            check
                .observe(1, 2, &[(1000, d(1))], &[(2000, d(2))], 0)
                .is_none()
        );
        assert!(check.divergences().is_empty());
    }

    #[test]
    fn a_later_agreement_clears_a_divergence() {
        let check = ReplicaCheck::default();
        check.observe(1, 2, &[(1000, d(1))], &[(1000, d(5))], 0);
        assert_eq!(check.divergences().len(), 1);
        check.observe(1, 2, &[(2000, d(2))], &[(2000, d(2))], 1);
        assert!(check.divergences().is_empty());
    }
}
