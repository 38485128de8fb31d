//! The broker-to-broker gRPC service: Raft messages, streamed snapshots,
//! forwarded writes and membership changes, read indices, checkpoints and
//! propagation reports. Every call must come from a broker of the cluster
//! ([`super::auth::check_peer`]); Raft messages must come from the broker
//! they name. The calling side is [`crate::link`].

use lapse_ledger::{Command, RequestId};
use lapse_storage::{SnapshotMeta, TypeConfig, Vote};
use lapse_wire::peer::raft_peer_server::RaftPeer;
use lapse_wire::peer::{
    Checkpoint, CheckpointsRequest, CheckpointsResponse, LocalPropagationRequest,
    LocalPropagationResponse, RaftMessage, ReadIndexRequest, ReadIndexResponse, SnapshotChunk,
};
use std::time::Duration;

use tonic::{Request, Response, Status, Streaming};

use super::auth::check_sender;
use crate::core::SharedCore;
use crate::link::{decode, encode};
use crate::membership::MembershipChange;

pub struct PeerService {
    pub core: SharedCore,
    pub feed: std::sync::Arc<crate::feed::FeedHub>,
}

/// The broker a vote names as its sender: the candidate of a vote
/// request, the leader of an append or a snapshot.
fn sender(vote: &Vote) -> u64 {
    use openraft::vote::RaftLeaderId;
    *vote.leader_id().node_id()
}

fn malformed(what: &str, error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("malformed {what}: {error}"))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    Ok(Response::new(RaftMessage {
        payload: encode(value),
    }))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let patience = Duration::from_millis(self.core.config().raft.rpc_timeout_ms);
        let read_index = self
            .core
            .leader_read_index(patience)
            .await
            .map_err(|e| Status::unavailable(format!("cannot confirm leadership: {e}")))?;
        Ok(Response::new(ReadIndexResponse {
            read_index,
            leader_time_ms: self.core.cluster_now(),
        }))
    }

    async fn local_propagation(
        &self,
        _request: Request<LocalPropagationRequest>,
    ) -> Result<Response<LocalPropagationResponse>, Status> {
        Ok(Response::new(LocalPropagationResponse {
            report: self.feed.local_report().encode(),
        }))
    }

    async fn checkpoints(
        &self,
        _request: Request<CheckpointsRequest>,
    ) -> Result<Response<CheckpointsResponse>, Status> {
        let checkpoints = self
            .core
            .view()
            .read(|a| a.checkpoints.list())
            .into_iter()
            .map(|(index, digest)| Checkpoint {
                index,
                digest: digest.to_vec(),
            })
            .collect();
        Ok(Response::new(CheckpointsResponse { checkpoints }))
    }

    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> =
            decode(&request.get_ref().payload).map_err(|e| malformed("append-entries", e))?;
        check_sender(&request, sender(&rpc.vote))?;
        let answer = self
            .core
            .raft()
            .append_entries(rpc)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        reply(&answer)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: openraft::raft::VoteRequest<TypeConfig> =
            decode(&request.get_ref().payload).map_err(|e| malformed("vote", e))?;
        check_sender(&request, sender(&rpc.vote))?;
        let answer = self
            .core
            .raft()
            .vote(rpc)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        reply(&answer)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: openraft::raft::VoteRequest<TypeConfig> =
            decode(&request.get_ref().payload).map_err(|e| malformed("pre-vote", e))?;
        check_sender(&request, sender(&rpc.vote))?;
        let answer = self
            .core
            .raft()
            .pre_vote(rpc)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        reply(&answer)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let limit = self.core.config().limits.max_snapshot_bytes;
        let calling = request
            .extensions()
            .get::<super::auth::CallingBroker>()
            .copied();
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("snapshot stream ended before its header"))?;
        let (vote, meta): (Vote, SnapshotMeta) =
            decode(&first.header).map_err(|e| malformed("snapshot header", e))?;
        if let Some(super::auth::CallingBroker(id)) = calling
            && id != sender(&vote)
        {
            return Err(Status::permission_denied(format!(
                "the snapshot claims to come from broker {}, but the certificate names broker {id}",
                sender(&vote)
            )));
        }
        let mut data = first.data;
        while let Some(chunk) = chunks.message().await? {
            if data.len() + chunk.data.len() > limit {
                return Err(Status::resource_exhausted(format!(
                    "snapshot is larger than the {limit}-byte limit"
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        // Check the bytes before handing them to Raft: a corrupt snapshot
        // is refused here rather than failing the state machine.
        lapse_ledger::LedgerState::from_snapshot(&data).map_err(|e| malformed("snapshot", e))?;
        let snapshot = openraft::alias::SnapshotOf::<TypeConfig, Vec<u8>> {
            meta,
            snapshot: data,
        };
        let answer = self
            .core
            .raft()
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        reply(&answer)
    }

    async fn propose(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (request_id, command): (RequestId, Command) = decode(&request.into_inner().payload)
            .map_err(|e| malformed("forwarded proposal", e))?;
        let command = decide_again(&self.core, command)?;
        let response = self.core.propose_here(request_id, command).await?;
        reply(&response)
    }

    async fn change_membership(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let change: MembershipChange = decode(&request.into_inner().payload)
            .map_err(|e| malformed("forwarded membership change", e))?;
        let membership = self.core.change_membership_here(change).await?;
        reply(&membership)
    }
}

/// The leader decides an operator's forwarded command again, with its own
/// role bindings, access policy and bootstrap admins: a broker cannot pass
/// on what the leader would refuse (an admin token only that broker knows
/// counts for nothing here unless the ledger binds it a role). Operator
/// commands that arrive without their authorization are refused.
fn decide_again(core: &crate::core::SharedCore, command: Command) -> Result<Command, Status> {
    match command {
        Command::Operate {
            authorization,
            command,
        } => {
            let Some(action) = crate::access::Action::from_name(&authorization.action) else {
                return Err(Status::invalid_argument(format!(
                    "unknown control-plane action {:?}",
                    authorization.action
                )));
            };
            let bootstrap = &core.config().auth.cluster_admins;
            // Outside the view's read: `cluster_now` reads it too.
            let now = core.cluster_now();
            let decided = core.view().read(|a| {
                crate::access::decide(
                    &a.ledger,
                    bootstrap,
                    &authorization.principal,
                    action,
                    authorization.tenant.as_ref(),
                    authorization.justification.clone(),
                    now,
                )
            });
            match decided {
                Ok(authorization) => Ok(Command::Operate {
                    authorization,
                    command,
                }),
                Err(crate::access::Denied(reason)) => {
                    let reason = format!("refused by the leader, broker {}: {reason}", core.id());
                    super::cluster::record_refusal(core, authorization, reason.clone());
                    Err(Status::permission_denied(reason))
                }
            }
        }
        Command::Revoke(_)
        | Command::RevokeMany(_)
        | Command::SetPolicy { .. }
        | Command::CreateJoinToken { .. }
        | Command::BindRole { .. }
        | Command::UnbindRole { .. }
        | Command::SetAccessPolicy { .. }
        | Command::OpenGrant { .. }
        | Command::ApproveGrant { .. }
        | Command::CloseGrant { .. }
        | Command::CreateSsfReceiver { .. }
        | Command::RemoveSsfReceiver { .. } => Err(Status::permission_denied(
            "an operator's command must carry the authorization it was decided with",
        )),
        other => Ok(other),
    }
}
