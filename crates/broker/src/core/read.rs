//! Reads: confirming that this broker's applied state is current (a read
//! index, from the leader when this broker is not it), and cluster time.

use std::time::Duration;

use lapse_ledger::{Command, Proposal, RequestId};

use super::Core;
use crate::error::BrokerError;
use crate::link::Peer;

impl Core {
    /// Confirm that this broker's applied state holds everything committed
    /// before now: on the leader a read index, elsewhere the leader's read
    /// index and then waiting to apply up to it. Keeps the leader's local
    /// time, estimated from the round trip, for cluster time.
    pub async fn confirm_current(&self, patience: Duration) -> Result<(), BrokerError> {
        let (leader, address) = self.leader();
        if leader == Some(self.id) {
            self.leader_read_index(patience).await?;
            self.clock.set_leader_offset(0);
            return Ok(());
        }
        let address = address.ok_or_else(|| BrokerError::Unavailable("no leader known".into()))?;
        let sent = tokio::time::Instant::now();
        let leader = leader.ok_or_else(|| BrokerError::Unavailable("no leader known".into()))?;
        let (read_index, leader_time_ms) = self
            .channels
            .read_index(Peer::member(leader, &address), patience)
            .await?;
        let rtt = sent.elapsed().as_millis() as i64;
        let local = self.env.now_ms() as i64;
        let offset = leader_time_ms as i64 + rtt / 2 - local;
        let mut applied = self.view.changes();
        tokio::time::timeout(
            patience.saturating_sub(sent.elapsed()),
            applied.wait_for(|index| *index >= read_index),
        )
        .await
        .map_err(|_| BrokerError::Unavailable(format!("did not apply up to {read_index} in time")))?
        .map_err(|_| BrokerError::Unavailable("state machine stopped".into()))?;
        self.clock.set_leader_offset(offset);
        Ok(())
    }

    /// Cluster time for what is stamped with it (credentials, keys, join
    /// tokens): a broker that has not yet measured the leader's clock
    /// confirms with the leader first, so a broker whose own clock is off
    /// never stamps its own time in the first moments after it starts.
    /// Like a write, this waits through elections up to the write timeout.
    pub async fn confirmed_cluster_now(&self) -> Result<u64, BrokerError> {
        let deadline = tokio::time::Instant::now() + self.config.write_timeout();
        let patience = Duration::from_millis(self.config.raft.rpc_timeout_ms);
        let mut pause = Duration::from_millis(20);
        while !self.clock.measured() {
            let Err(problem) = self.confirm_current(patience).await else {
                break;
            };
            if tokio::time::Instant::now() + pause > deadline {
                return Err(BrokerError::Unavailable(format!(
                    "cluster time is not known yet (cannot confirm with the leader: {problem}); retry shortly"
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
        Ok(self.cluster_now())
    }

    /// Cluster time now (see [`crate::time`]): the leader's local time as
    /// this broker last measured it, never behind the ledger's stamps.
    pub fn cluster_now(&self) -> u64 {
        let stamped = self.view.read(|a| a.ledger.cluster_time_ms);
        self.clock
            .now_ms(self.env.now_ms(), self.env.monotonic_ms(), stamped)
    }

    /// As the leader: a read index (a quorum acknowledged an RPC sent after
    /// now, and this broker applied up to what was committed then), the
    /// index returned.
    ///
    /// openraft cuts each Raft heartbeat off after one heartbeat interval,
    /// so where a round trip to a quorum is longer than that, heartbeats
    /// never bring the acknowledgement, and an idle cluster could never
    /// confirm a read. If none came within one heartbeat interval, this
    /// proposes a [`Command::ConfirmLeadership`], which changes nothing: its
    /// replication (whose deadline is `raft.rpc_timeout_ms`) brings it.
    pub async fn leader_read_index(&self, patience: Duration) -> Result<u64, BrokerError> {
        let read = self
            .raft
            .ensure_linearizable(openraft::ReadPolicy::ReadIndex);
        tokio::pin!(read);
        let nudge_after = Duration::from_millis(self.config.raft.heartbeat_ms).min(patience);
        let done = match tokio::time::timeout(nudge_after, &mut read).await {
            Ok(done) => done,
            Err(_) => {
                let skip = self
                    .env
                    .faults
                    .as_ref()
                    .is_some_and(|f| f.skip_leadership_confirmation());
                if !skip {
                    self.confirm_leadership_in_background();
                }
                tokio::time::timeout(patience.saturating_sub(nudge_after), read)
                    .await
                    .map_err(|_| BrokerError::Unavailable("read index timed out".into()))?
            }
        };
        done.map(|read| read.log_id().index())
            .map_err(|e| BrokerError::Unavailable(e.to_string()))
    }

    /// Propose a `ConfirmLeadership` entry unless one is already on its way.
    /// Its request id is fixed per broker, so the ledger remembers one.
    fn confirm_leadership_in_background(&self) {
        use std::sync::atomic::Ordering;
        if self.confirming.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(request_id) = RequestId::new(format!("confirm-leadership-{}", self.id)) else {
            self.confirming.store(false, Ordering::Release);
            return;
        };
        let proposal = Proposal {
            request_id,
            stamped_at_ms: self.cluster_now(),
            command: Command::ConfirmLeadership,
        };
        let raft = self.raft.clone();
        let confirming = self.confirming.clone();
        tokio::spawn(async move {
            if let Err(error) = raft.client_write(proposal).await {
                tracing::debug!(%error, "a leadership confirmation entry was not written");
            }
            confirming.store(false, Ordering::Release);
        });
    }
}
