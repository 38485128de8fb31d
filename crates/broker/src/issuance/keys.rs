//! The broker's ephemeral signing keys. Each is generated in memory, its
//! public half registered through the ledger, and used for signing only once
//! that registration is committed. Keys rotate on an interval; a retired key
//! stays published (the ledger keeps it) until every credential it signed
//! has expired. No private key is written to disk or sent anywhere.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use lapse_credential::{KeyId, SigningKeyPair};
use lapse_ledger::{Applied, Command, RequestId};

use super::signed::RecentlySigned;
use crate::core::SharedCore;
use crate::error::{BrokerError, answer};

/// The key this broker signs with, once committed, and the credentials it
/// signed recently.
#[derive(Default)]
pub struct KeyRing {
    active: RwLock<Option<Arc<SigningKeyPair>>>,
    signed: RecentlySigned,
}

impl KeyRing {
    /// The credentials this broker signed recently (see [`RecentlySigned`]).
    pub fn recently_signed(&self) -> &RecentlySigned {
        &self.signed
    }

    /// The committed key to sign with, if there is one and the ledger has
    /// not revoked it.
    pub fn signing_key(&self, core: &SharedCore) -> Option<Arc<SigningKeyPair>> {
        let key = self.active.read().expect("key lock").clone()?;
        let usable = core.view().read(|applied| {
            applied
                .ledger
                .keys
                .get(key.key_id())
                .is_none_or(|k| k.revoked.is_none())
        });
        usable.then_some(key)
    }

    fn activate(&self, key: Arc<SigningKeyPair>) -> Option<Arc<SigningKeyPair>> {
        self.active.write().expect("key lock").replace(key)
    }

    /// Generate a key, register it through the ledger, and start signing
    /// with it once the registration has committed. Returns the key that
    /// was replaced, if any.
    pub async fn rotate(
        &self,
        core: &SharedCore,
        lifetime: Duration,
    ) -> Result<Option<KeyId>, BrokerError> {
        let suffix: [u8; 6] = core.env().random_bytes();
        let key_id = KeyId::new(format!("n{}-{}", core.id(), hex::encode(suffix)))
            .map_err(|e| BrokerError::Broken(e.to_string()))?;
        let key = Arc::new(SigningKeyPair::from_seed(
            key_id.clone(),
            core.env().random_bytes(),
        ));
        let now_ms = core.confirmed_cluster_now().await?;
        let command = Command::RegisterKey {
            key_id: key_id.clone(),
            broker: core.id(),
            public_key: key.public_key().to_vec(),
            not_before_ms: now_ms,
            not_after_ms: now_ms + lifetime.as_millis() as u64,
        };
        let request_id = RequestId::new(format!("key-{key_id}"))
            .map_err(|e| BrokerError::Broken(e.to_string()))?;
        answer(
            core.propose(request_id, command).await?.outcome,
            |applied| match applied {
                Applied::KeyRegistered => Ok(()),
                other => Err(other),
            },
        )?;
        let previous = self.activate(key).map(|old| old.key_id().clone());
        tracing::info!(key_id = %key_id, "signing key registered and active");
        Ok(previous)
    }

    /// Tell the ledger a key signs no more; it stays published until the
    /// credentials it signed have expired. Fails only when the write could
    /// not be made; the ledger's own answer is not an error here.
    pub async fn retire(&self, core: &SharedCore, key_id: KeyId) -> Result<(), BrokerError> {
        let request_id = RequestId::new(format!("retire-{key_id}"))
            .map_err(|e| BrokerError::Broken(e.to_string()))?;
        core.propose(request_id, Command::RetireKey { key_id })
            .await
            .map(|_| ())
    }

    /// Keep a committed key: register one now (retrying until the cluster
    /// answers), then rotate every `interval`, retiring the key replaced.
    pub fn spawn_rotation(
        self: &Arc<Self>,
        core: SharedCore,
        interval: Duration,
        overlap: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let ring = self.clone();
        tokio::spawn(async move {
            let mut changes = core.view().changes();
            let mut next_rotation = tokio::time::Instant::now();
            loop {
                let held = ring.active.read().expect("key lock").is_some();
                let revoked = held && ring.signing_key(&core).is_none();
                if !held || revoked || tokio::time::Instant::now() >= next_rotation {
                    match ring.rotate(&core, interval + overlap).await {
                        Ok(previous) => {
                            next_rotation = tokio::time::Instant::now() + interval;
                            if let Some(previous) = previous
                                && let Err(error) = ring.retire(&core, previous.clone()).await
                            {
                                tracing::warn!(key_id = %previous, %error, "could not retire a signing key");
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "could not register a signing key; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    }
                }
                // Wake at the next rotation, or early when something is
                // applied (a revocation might have hit the active key).
                tokio::select! {
                    _ = tokio::time::sleep_until(next_rotation) => {}
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        })
    }
}
