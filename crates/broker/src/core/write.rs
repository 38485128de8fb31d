//! The write path: stamp a command with cluster time, propose it, and
//! forward it to the leader over the peer link when this broker is not it.

use std::time::Duration;

use lapse_ledger::{Command, Proposal, RequestId, Response};
use lapse_storage::NodeId;
use openraft::errors::{ClientWriteError, ForwardToLeader, RaftError};

use super::Core;
use crate::error::BrokerError;

/// How a local proposal ended when it did not produce a ledger response.
enum LocalWrite {
    /// Not the leader; here is who is, if known.
    Forward {
        leader_id: Option<NodeId>,
        address: Option<String>,
    },
    /// The entry may or may not have been committed: retry with the same
    /// request id, which deduplicates.
    Unknown(String),
    /// This node cannot take writes at all (shutting down, storage failed).
    Broken(String),
}

impl Core {
    /// Propose `command` and wait for the ledger's answer, forwarding to the
    /// leader when this broker is not it. Retries through elections and
    /// forwarding failures until the write timeout; retries are safe because
    /// the request id deduplicates.
    pub async fn propose(
        &self,
        request_id: RequestId,
        command: Command,
    ) -> Result<Response, BrokerError> {
        let deadline = tokio::time::Instant::now() + self.config.write_timeout();
        let mut last_problem = String::from("no leader is known yet");
        let mut pause = Duration::from_millis(20);
        loop {
            match self
                .propose_local(request_id.clone(), command.clone())
                .await
            {
                Ok(response) => return Ok(response),
                Err(LocalWrite::Broken(message)) => return Err(BrokerError::Unavailable(message)),
                Err(LocalWrite::Unknown(message)) => last_problem = message,
                Err(LocalWrite::Forward {
                    leader_id: Some(leader),
                    address: Some(address),
                }) if leader != self.id => {
                    match self.forward(leader, &address, &request_id, &command).await {
                        Ok(response) => return Ok(response),
                        Err(error) if error.is_retriable() => {
                            last_problem = format!("leader {leader} at {address}: {error}");
                        }
                        Err(error) => return Err(error),
                    }
                }
                Err(LocalWrite::Forward { .. }) => {}
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(BrokerError::Unavailable(format!(
                    "the write did not complete within {} ms ({last_problem}); \
                     it may or may not have been applied: retry with the same request id",
                    self.config.limits.write_timeout_ms
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Propose on this node only. Used for writes forwarded from peers, so
    /// a forwarded write is never forwarded again.
    pub async fn propose_here(
        &self,
        request_id: RequestId,
        command: Command,
    ) -> Result<Response, BrokerError> {
        match self.propose_local(request_id, command).await {
            Ok(response) => Ok(response),
            Err(LocalWrite::Forward { leader_id, .. }) => Err(BrokerError::Unavailable(format!(
                "node {} is not the leader (leader: {leader_id:?})",
                self.id
            ))),
            Err(LocalWrite::Unknown(message)) | Err(LocalWrite::Broken(message)) => {
                Err(BrokerError::Unavailable(message))
            }
        }
    }

    async fn propose_local(
        &self,
        request_id: RequestId,
        command: Command,
    ) -> Result<Response, LocalWrite> {
        let proposal = Proposal {
            request_id,
            stamped_at_ms: self.cluster_now(),
            command,
        };
        // The write runs in its own task: a client that disconnects cannot
        // abandon it halfway.
        let raft = self.raft.clone();
        let outcome = tokio::spawn(async move { raft.client_write(proposal).await })
            .await
            .map_err(|e| LocalWrite::Broken(format!("write task failed: {e}")))?;
        match outcome {
            Ok(written) => written.data.ok_or_else(|| {
                LocalWrite::Broken("the ledger gave no answer for a proposal".into())
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader {
                leader_id,
                leader_node,
                ..
            }))) => Err(LocalWrite::Forward {
                leader_id,
                address: leader_node.map(|node| node.addr),
            }),
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => Err(
                LocalWrite::Unknown("leadership changed before the write committed".into()),
            ),
            Err(RaftError::APIError(other)) => Err(LocalWrite::Broken(other.to_string())),
            Err(RaftError::Fatal(fatal)) => {
                Err(LocalWrite::Broken(format!("broker is stopping: {fatal}")))
            }
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        address: &str,
        request_id: &RequestId,
        command: &Command,
    ) -> Result<Response, BrokerError> {
        self.channels
            .propose(
                crate::link::Peer::member(leader, address),
                request_id,
                command,
                self.config.write_timeout(),
            )
            .await
    }
}
