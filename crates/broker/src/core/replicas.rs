//! Comparing this broker's applied state with every peer's, in the
//! background; what a comparison finds is kept in
//! [`crate::replica_check::ReplicaCheck`].

use std::time::Duration;

use super::{Core, SharedCore};

impl Core {
    /// Ask every other member for its checkpoints and compare, once.
    pub async fn check_replicas_once(&self) {
        let timeout = Duration::from_millis(self.config().raft.rpc_timeout_ms);
        for (peer, address) in self.peers() {
            let Ok(theirs) = self
                .channels()
                .checkpoints(crate::link::Peer::member(peer, &address), timeout)
                .await
            else {
                continue;
            };
            let own = self.view().read(|a| a.checkpoints.list());
            self.replicas()
                .observe(self.id(), peer, &own, &theirs, self.env().now_ms());
        }
    }
}

/// Compare with every peer every `every`, until the task is stopped.
pub async fn check_replicas(core: SharedCore, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        core.check_replicas_once().await;
    }
}
