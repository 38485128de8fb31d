//! Bringing a started broker into its cluster, and its background work:
//! the lowest-numbered configured member bootstraps a new cluster, a
//! broker with a join address and token joins a running one; then the feed,
//! key rotation, index leasing, audit shipping and the replica check run
//! until the broker stops.

use std::collections::BTreeMap;
use std::time::Duration;

use lapse_storage::Node;
use tokio::task::JoinHandle;

use super::open::{storage_error, write_secret};
use super::serve::Parts;
use super::{Broker, StartError};
use crate::core::SharedCore;

/// How long a new broker keeps trying to reach the cluster it joins.
const JOIN_PATIENCE: Duration = Duration::from_secs(60);

impl Broker {
    /// Start a new cluster if this broker is its configured bootstrapper,
    /// or join the running one it is configured to join. A broker whose
    /// Raft state is already initialised does neither.
    pub(super) async fn bootstrap_or_join(&self) -> Result<(), StartError> {
        let config = self.core.config();
        let raft = self.core.raft();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        let members = &config.cluster.members;
        if members.iter().map(|m| m.id).min() == Some(config.node_id) {
            let members: BTreeMap<u64, Node> = members
                .iter()
                .map(|m| {
                    let node = Node {
                        addr: m.address.clone(),
                    };
                    (m.id, node)
                })
                .collect();
            if let Err(error) = raft.initialize(members).await {
                tracing::info!(%error, "cluster already initialised");
            }
        }
        if let (Some(address), Some(token)) = (&config.cluster.join, &config.cluster.join_token) {
            self.join(address, token).await?;
        }
        Ok(())
    }

    /// Ask the broker at `address` to add this one as a learner, retrying
    /// while it cannot be reached, and keep the cluster secret it answers
    /// with.
    async fn join(&self, address: &str, token: &str) -> Result<(), StartError> {
        let config = self.core.config();
        let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
        loop {
            let joined = self
                .core
                .channels()
                .join(address, token, config.node_id, config.advertise_address())
                .await;
            match joined {
                Ok(secret) => {
                    write_secret(&config.data_dir, &secret)
                        .map_err(storage_error(&config.data_dir))?;
                    self.core.secret().set(secret);
                    tracing::info!(address, "joined the cluster as a learner");
                    return Ok(());
                }
                Err(error) if error.is_retriable() => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(StartError::JoinUnreachable {
                            address: address.to_owned(),
                            seconds: JOIN_PATIENCE.as_secs(),
                            message: error.to_string(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => {
                    return Err(StartError::JoinRefused {
                        address: address.to_owned(),
                        message: error.to_string(),
                    });
                }
            }
        }
    }
}

/// Start the broker's background tasks; they run until aborted.
pub(super) fn background(core: &SharedCore, parts: &Parts) -> Vec<JoinHandle<()>> {
    let issuance = &core.config().issuance;
    let mut tasks = parts.feed.spawn();
    tasks.extend([
        parts.keys.spawn_rotation(
            core.clone(),
            Duration::from_secs(issuance.key_rotation_seconds),
            Duration::from_secs(issuance.key_overlap_seconds),
        ),
        parts.leases.spawn_refill(core.clone()),
        parts
            .audit
            .spawn_shipping(core.clone(), Duration::from_millis(issuance.audit_ship_ms)),
        crate::ssf::push::spawn(core.clone(), parts.keys.clone()),
    ]);
    if core.config().raft.replica_check_ms > 0 {
        let every = Duration::from_millis(core.config().raft.replica_check_ms);
        tasks.push(tokio::spawn(crate::core::check_replicas(
            core.clone(),
            every,
        )));
    }
    if let Some(tls) = core.tls() {
        tasks.push(tls.spawn_reload(lapse_pki::transport::RELOAD_EVERY));
    }
    if let Some(faults) = core.env().faults.clone() {
        let core = core.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(crate::env::FAULT_POLL).await;
                if faults.force_snapshot()
                    && let Err(error) = core.raft().trigger().snapshot().await
                {
                    tracing::debug!(%error, "a forced snapshot did not start");
                }
            }
        }));
    }
    tasks
}
