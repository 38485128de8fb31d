//! The run's certificates: a cluster CA and one broker certificate per
//! broker, so heartbeats are signed and verifiers check them, as in a
//! deployment. Links stay plaintext (turmoil cannot seed rustls); the
//! signatures do not depend on the link.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use lapse_pki::{Authority, Credentials, LeafRequest, Role, SignatureChecker};

use crate::clock::EPOCH_MS;

pub(super) struct SimPki {
    brokers: BTreeMap<u64, Arc<Credentials>>,
    checker: SignatureChecker,
}

impl SimPki {
    /// A CA valid around the run's start, and a certificate for each of
    /// `brokers`.
    pub fn new(brokers: impl IntoIterator<Item = u64>) -> Self {
        let now = UNIX_EPOCH + Duration::from_millis(EPOCH_MS);
        let day = Duration::from_secs(86_400);
        let (ca, _) = Authority::generate("lapse.sim", now, day).expect("a simulation CA");
        let identity = |id: u64| {
            let pair = ca
                .issue(
                    &LeafRequest {
                        role: Role::Broker(id),
                        hosts: Vec::new(),
                        valid_for: day,
                    },
                    now,
                )
                .expect("a simulation broker certificate");
            Arc::new(
                Credentials::from_pem(
                    ca.cert_pem().as_bytes(),
                    Some((pair.cert_pem.as_bytes(), pair.key_pem.as_bytes())),
                    now,
                )
                .expect("the simulation's own certificates load"),
            )
        };
        let brokers: BTreeMap<u64, Arc<Credentials>> =
            brokers.into_iter().map(|id| (id, identity(id))).collect();
        let trust = Credentials::from_pem(ca.cert_pem().as_bytes(), None, now)
            .expect("the simulation CA loads");
        Self {
            brokers,
            checker: SignatureChecker::new(Arc::new(trust)),
        }
    }

    /// Broker `id`'s certificate and key.
    pub fn broker(&self, id: u64) -> Option<Arc<Credentials>> {
        self.brokers.get(&id).cloned()
    }

    /// What verifiers check heartbeats with.
    pub fn checker(&self) -> SignatureChecker {
        self.checker.clone()
    }
}
