//! The client and admin gRPC API. Validates every input before anything is
//! proposed, maps each ledger refusal to a precise gRPC status, and sends
//! writes through [`Core::propose`](crate::core::Core::propose).

use std::collections::BTreeSet;
use std::time::Duration;

use lapse_credential::{KeyId, StatusIndex, TenantId, WorkloadId};
use lapse_ledger::{
    Applied, Command, JoinGrant, JoinUse, MAX_BATCH, Refusal, RequestId, Response, Revocation,
};
use lapse_storage::{Membership, Node};
use lapse_wire::cluster::cluster_client::ClusterClient;
use lapse_wire::cluster::cluster_server::Cluster;
use lapse_wire::cluster::{self as pb, revocation::Target};
use openraft::ChangeMembers;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response as GrpcResponse, Status};

use crate::core::SharedCore;
use crate::feed::propagation::Histogram;
use crate::peers::constant_time_eq;

/// The metadata key a refused request carries its refusal code under.
pub const REFUSAL_HEADER: &str = "x-lapse-refusal";
/// Longest lifetime of a join token.
pub const MAX_JOIN_TOKEN_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// Lifetime of a join token when none is asked for.
pub const DEFAULT_JOIN_TOKEN_TTL_SECONDS: u64 = 3600;

pub struct ClusterService {
    pub core: SharedCore,
    pub keys: std::sync::Arc<crate::issuance::keys::KeyRing>,
    pub audit: std::sync::Arc<crate::issuance::audit::AuditLog>,
    pub feed: std::sync::Arc<crate::feed::FeedHub>,
}

fn delay_summary(region: &str, histogram: &Histogram, verifiers: u32) -> pb::DelaySummary {
    let ms = |us: u64| us as f64 / 1000.0;
    pb::DelaySummary {
        region: region.to_owned(),
        samples: histogram.count(),
        p50_ms: ms(histogram.quantile_us(0.5)),
        p99_ms: ms(histogram.quantile_us(0.99)),
        max_ms: ms(histogram.max_us()),
        verifiers,
    }
}

fn audit_to_wire(
    broker: u64,
    record: &lapse_ledger::IssuanceRecord,
    shipped: bool,
) -> pb::AuditRecord {
    use lapse_ledger::AttestationKind;
    pb::AuditRecord {
        broker_id: broker,
        sequence: record.sequence,
        at_ms: record.at_ms,
        tenant: record
            .tenant
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default(),
        workload: record
            .workload
            .as_ref()
            .map(|w| w.to_string())
            .unwrap_or_default(),
        index: record.index.map(|i| i.0),
        key_id: record
            .key_id
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_default(),
        scopes: record.scopes.clone(),
        audiences: record.audiences.clone(),
        expires_at_ms: record.expires_at_ms.unwrap_or(0),
        attestation: match &record.attestation {
            None => String::new(),
            Some(AttestationKind::JoinToken) => "join-token".into(),
            Some(AttestationKind::ExternalJwt { issuer }) => format!("external-jwt:{issuer}"),
            Some(AttestationKind::Refresh { previous_index }) => {
                format!("refresh:{previous_index}")
            }
        },
        allowed: record.decision.allowed,
        policy_version: record.decision.policy_version,
        input_sha256: hex::encode(record.decision.input_sha256),
        reason: record.decision.reason.clone(),
        shipped,
    }
}

/// The status for a ledger answer that does not fit the command: a bug,
/// never a client's fault.
pub fn unexpected(answer: &Applied) -> Status {
    Status::internal(format!("unexpected ledger answer {answer:?}"))
}

/// The gRPC status for a ledger refusal, tagged with its code.
pub fn refusal_status(refusal: &Refusal) -> Status {
    let code = match refusal {
        Refusal::IndexNotIssued { .. } | Refusal::UnknownKey { .. } | Refusal::JoinTokenUnknown => {
            Code::NotFound
        }
        Refusal::AlreadyRevoked { .. } | Refusal::KeyExists { .. } | Refusal::JoinTokenExists => {
            Code::AlreadyExists
        }
        Refusal::IndexExpired { .. }
        | Refusal::JoinTokenSpent { .. }
        | Refusal::JoinTokenExpired { .. }
        | Refusal::RequestIdReused
        | Refusal::PolicyVersionMismatch { .. }
        | Refusal::IndicesExhausted => Code::FailedPrecondition,
        Refusal::JoinTokenWrongUse | Refusal::JoinTokenWrongAddress { .. } => {
            Code::PermissionDenied
        }
        Refusal::IssuedBeforeInFuture { .. }
        | Refusal::BadPublicKey { .. }
        | Refusal::BadValidity
        | Refusal::BadLeaseCount { .. }
        | Refusal::BadLeaseDuration { .. }
        | Refusal::BadBatch { .. }
        | Refusal::PolicyTooLarge { .. }
        | Refusal::BadAuditBatch { .. } => Code::InvalidArgument,
    };
    let mut status = Status::new(code, refusal.to_string());
    if let Ok(value) = refusal.code().parse() {
        status.metadata_mut().insert(REFUSAL_HEADER, value);
    }
    status
}

fn invalid(field: &str, error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {error}"))
}

fn request_id(value: String) -> Result<RequestId, Status> {
    RequestId::new(value).map_err(|e| invalid("request_id", e))
}

/// Convert a wire revocation, validating every identifier in it.
pub fn revocation_from_wire(revocation: Option<pb::Revocation>) -> Result<Revocation, Status> {
    let target = revocation.and_then(|r| r.target).ok_or_else(|| {
        Status::invalid_argument(
            "revocation: no target given (index, subject, tenant, key_id or secret_sha256)",
        )
    })?;
    Ok(match target {
        Target::Index(index) => Revocation::Index(StatusIndex(index)),
        Target::Subject(subject) => Revocation::Subject {
            tenant: TenantId::new(subject.tenant).map_err(|e| invalid("subject.tenant", e))?,
            subject: WorkloadId::new(subject.subject).map_err(|e| invalid("subject.subject", e))?,
            issued_before_ms: subject.issued_before_ms,
        },
        Target::Tenant(tenant) => Revocation::Tenant {
            tenant: TenantId::new(tenant.tenant).map_err(|e| invalid("tenant.tenant", e))?,
            issued_before_ms: tenant.issued_before_ms,
        },
        Target::KeyId(key_id) => {
            Revocation::Key(KeyId::new(key_id).map_err(|e| invalid("key_id", e))?)
        }
        Target::SecretSha256(bytes) => {
            let hash: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                invalid(
                    "secret_sha256",
                    format!("must be 32 bytes, got {}", bytes.len()),
                )
            })?;
            Revocation::SecretHash(hash)
        }
    })
}

fn members(membership: &Membership) -> (Vec<pb::Member>, Vec<pb::Member>) {
    let member = |id: u64| pb::Member {
        node_id: id,
        address: membership
            .get_node(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default(),
    };
    (
        membership.voter_ids().map(member).collect(),
        membership.learner_ids().map(member).collect(),
    )
}

impl ClusterService {
    /// Require one of the configured admin bearer tokens.
    fn authorize(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let header = metadata.get("authorization").ok_or_else(|| {
            Status::unauthenticated(
                "this call needs an admin token: send 'authorization: Bearer <token>'",
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("authorization header is not 'Bearer <token>'")
            })?;
        let known = self
            .core
            .config
            .auth
            .admin_tokens
            .iter()
            .any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if known {
            Ok(())
        } else {
            Err(Status::unauthenticated("admin token not recognised"))
        }
    }

    async fn propose(&self, request_id: RequestId, command: Command) -> Result<Response, Status> {
        self.core.propose(request_id, command).await
    }

    fn membership(&self) -> Membership {
        self.core
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .clone()
    }

    /// A client for the leader's cluster API when this broker is not the
    /// leader, or `None` when it is.
    fn leader_client(&self) -> Result<Option<ClusterClient<tonic::transport::Channel>>, Status> {
        match self.core.leader() {
            (Some(id), _) if id == self.core.id => Ok(None),
            (Some(_), Some(address)) => Ok(Some(ClusterClient::new(
                self.core
                    .channels
                    .channel(&address)
                    .map_err(Status::internal)?,
            ))),
            _ => Err(Status::unavailable("no leader is known; retry shortly")),
        }
    }

    /// Pass an admin request on to the leader with the caller's credentials.
    fn forwarded<T>(metadata: &MetadataMap, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(auth) = metadata.get("authorization") {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request.set_timeout(Duration::from_secs(30));
        request
    }

    fn membership_reply(
        log_index: u64,
        membership: &Membership,
    ) -> GrpcResponse<pb::MembershipResponse> {
        let (voters, learners) = members(membership);
        GrpcResponse::new(pb::MembershipResponse {
            log_index,
            voters,
            learners,
        })
    }

    async fn change(
        &self,
        change: ChangeMembers<u64, Node>,
    ) -> Result<GrpcResponse<pb::MembershipResponse>, Status> {
        let written = self
            .core
            .raft
            .change_membership(change, false)
            .await
            .map_err(|e| match e.forward_to_leader() {
                Some(_) => Status::unavailable("leadership moved during the change; retry"),
                None => Status::failed_precondition(e.to_string()),
            })?;
        let membership = written.membership.unwrap_or_else(|| self.membership());
        Ok(Self::membership_reply(written.log_id.index(), &membership))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<GrpcResponse<pb::RevokeResponse>, Status> {
        self.authorize(request.metadata())?;
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        let revocation = revocation_from_wire(request.revocation)?;
        let response = self.propose(id, Command::Revoke(revocation)).await?;
        match response.outcome {
            Ok(Applied::Revoked {
                epoch,
                committed_at_ms,
            }) => Ok(GrpcResponse::new(pb::RevokeResponse {
                epoch,
                committed_at_ms,
                duplicate: response.duplicate,
            })),
            Ok(other) => Err(unexpected(&other)),
            Err(refusal) => Err(refusal_status(&refusal)),
        }
    }

    async fn revoke_many(
        &self,
        request: Request<pb::RevokeManyRequest>,
    ) -> Result<GrpcResponse<pb::RevokeManyResponse>, Status> {
        self.authorize(request.metadata())?;
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        if request.revocations.is_empty() || request.revocations.len() > MAX_BATCH {
            return Err(invalid(
                "revocations",
                format!("{} given; send 1 to {MAX_BATCH}", request.revocations.len()),
            ));
        }
        let revocations = request
            .revocations
            .into_iter()
            .enumerate()
            .map(|(n, r)| {
                revocation_from_wire(Some(r))
                    .map_err(|s| invalid(&format!("revocations[{n}]"), s.message()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let response = self.propose(id, Command::RevokeMany(revocations)).await?;
        match response.outcome {
            Ok(Applied::RevokedMany {
                epoch,
                committed_at_ms,
                items,
            }) => Ok(GrpcResponse::new(pb::RevokeManyResponse {
                epoch,
                committed_at_ms,
                duplicate: response.duplicate,
                items: items
                    .into_iter()
                    .map(|item| pb::ItemResult {
                        refusal: item.err().map(|r| r.to_string()).unwrap_or_default(),
                    })
                    .collect(),
            })),
            Ok(other) => Err(unexpected(&other)),
            Err(refusal) => Err(refusal_status(&refusal)),
        }
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<GrpcResponse<pb::StatusResponse>, Status> {
        let metrics = self.core.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let (voters, learners) = members(membership);
        let (applied_index, digest) = self.core.digest();
        let (cluster_time_ms, revocation_epoch) = self
            .core
            .view
            .read(|a| (a.ledger.cluster_time_ms, a.ledger.revocation_epoch));
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let replication = metrics
            .replication
            .as_ref()
            .map(|map| {
                map.iter()
                    .map(|(id, matched)| pb::Replication {
                        node_id: *id,
                        matched_index: matched.as_ref().map(|l| l.index()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(GrpcResponse::new(pb::StatusResponse {
            node_id: self.core.id,
            address: self.core.address.clone(),
            role: role.into(),
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            leader_address: metrics
                .current_leader
                .and_then(|id| membership.get_node(&id).map(|n| n.addr.clone()))
                .unwrap_or_default(),
            voters,
            learners,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            committed_index: metrics.local_committed.map(|l| l.index()).unwrap_or(0),
            applied_index: applied_index.unwrap_or(0),
            state_digest: hex::encode(digest),
            cluster_time_ms,
            revocation_epoch,
            replication,
            snapshot_index: metrics.snapshot.map(|l| l.index()).unwrap_or(0),
            divergences: self
                .core
                .replicas
                .divergences()
                .into_iter()
                .map(|d| pb::Divergence {
                    peer_id: d.peer,
                    index: d.index,
                    own_digest: hex::encode(d.own_digest),
                    peer_digest: hex::encode(d.peer_digest),
                    detected_at_ms: d.detected_at_ms,
                })
                .collect(),
            freshness: Some(freshness_message(self.feed.freshness_report())),
        }))
    }

    async fn lease_indices(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<GrpcResponse<pb::LeaseResponse>, Status> {
        self.authorize(request.metadata())?;
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        let command = Command::LeaseIndices {
            broker: request.broker_id,
            count: request.count,
            lease_ms: request.lease_ms,
        };
        let response = self.propose(id, command).await?;
        match response.outcome {
            Ok(Applied::Leased {
                start,
                end,
                lease_expires_at_ms,
                credentials_expire_by_ms,
            }) => Ok(GrpcResponse::new(pb::LeaseResponse {
                start,
                end,
                lease_expires_at_ms,
                credentials_expire_by_ms,
                epoch: response.log_index,
            })),
            Ok(other) => Err(unexpected(&other)),
            Err(refusal) => Err(refusal_status(&refusal)),
        }
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<GrpcResponse<pb::CreateJoinTokenResponse>, Status> {
        self.authorize(request.metadata())?;
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        let ttl_seconds = match request.ttl_seconds {
            0 => DEFAULT_JOIN_TOKEN_TTL_SECONDS,
            t if t > MAX_JOIN_TOKEN_TTL_SECONDS => {
                return Err(invalid(
                    "ttl_seconds",
                    format!("at most {MAX_JOIN_TOKEN_TTL_SECONDS}"),
                ));
            }
            t => t,
        };
        let grant = match request.grant {
            Some(pb::create_join_token_request::Grant::Broker(broker)) => JoinGrant::Broker {
                address: Some(broker.address).filter(|a| !a.is_empty()),
            },
            Some(pb::create_join_token_request::Grant::Workload(workload)) => JoinGrant::Workload {
                tenant: TenantId::new(workload.tenant)
                    .map_err(|e| invalid("workload.tenant", e))?,
                workload: WorkloadId::new(workload.workload)
                    .map_err(|e| invalid("workload.workload", e))?,
            },
            None => {
                return Err(Status::invalid_argument(
                    "grant: say whether the token is for a broker or a workload",
                ));
            }
        };
        let secret: [u8; 32] = self.core.env.random_bytes();
        let token = format!("lapse-join-{}", hex::encode(secret));
        let expires_at_ms = self.core.confirmed_cluster_now().await? + ttl_seconds * 1000;
        let command = Command::CreateJoinToken {
            token_hash: Sha256::digest(token.as_bytes()).into(),
            grant,
            expires_at_ms,
        };
        let response = self.propose(id, command).await?;
        if response.duplicate {
            // The token itself is never stored, so a retried creation cannot
            // hand the same token back: say so rather than return a dud.
            return Err(Status::already_exists(
                "this request id already created a join token; use a new request id for a new token",
            ));
        }
        match response.outcome {
            Ok(Applied::JoinTokenCreated) => Ok(GrpcResponse::new(pb::CreateJoinTokenResponse {
                token,
                expires_at_ms,
            })),
            Ok(other) => Err(unexpected(&other)),
            Err(refusal) => Err(refusal_status(&refusal)),
        }
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<GrpcResponse<pb::JoinResponse>, Status> {
        let metadata = request.metadata().clone();
        let request = request.into_inner();
        if let Some(mut leader) = self.leader_client()? {
            return leader.join(Self::forwarded(&metadata, request)).await;
        }
        if request.node_id == 0 {
            return Err(invalid("node_id", "must be at least 1"));
        }
        if request.address.is_empty() {
            return Err(invalid("address", "is empty"));
        }
        if !request.token.starts_with("lapse-join-") {
            return Err(invalid("token", "is not a Lapse join token"));
        }
        let membership = self.membership();
        if let Some(existing) = membership.get_node(&request.node_id)
            && existing.addr != request.address
        {
            return Err(Status::already_exists(format!(
                "node id {} already belongs to the broker at {}",
                request.node_id, existing.addr
            )));
        }

        // The new broker must answer at the address it claims, as itself.
        let mut probe = ClusterClient::new(
            self.core
                .channels
                .channel(&request.address)
                .map_err(|e| invalid("address", e))?,
        );
        let mut status_request = Request::new(pb::StatusRequest {});
        status_request.set_timeout(Duration::from_secs(3));
        match probe.status(status_request).await {
            Ok(status) if status.get_ref().node_id == request.node_id => {}
            Ok(status) => {
                return Err(Status::failed_precondition(format!(
                    "the broker at {} is node {}, not node {}",
                    request.address,
                    status.get_ref().node_id,
                    request.node_id
                )));
            }
            Err(error) => {
                return Err(Status::failed_precondition(format!(
                    "no broker answers at {}: {}",
                    request.address,
                    error.message()
                )));
            }
        }

        let token_hash: [u8; 32] = Sha256::digest(request.token.as_bytes()).into();
        let id = request_id(format!(
            "join-{}-{}",
            request.node_id,
            &hex::encode(token_hash)[..16]
        ))?;
        let command = Command::ConsumeJoinToken {
            token_hash,
            presented: JoinUse::Broker {
                node_id: request.node_id,
                address: request.address.clone(),
            },
        };
        match self.propose(id, command).await?.outcome {
            Ok(Applied::JoinTokenConsumed(JoinGrant::Broker { .. })) => {}
            Ok(other) => {
                return Err(unexpected(&other));
            }
            Err(refusal) => return Err(refusal_status(&refusal)),
        }
        let node = Node {
            addr: request.address.clone(),
        };
        let written = self
            .core
            .raft
            .add_learner(request.node_id, node, false)
            .await
            .map_err(|e| {
                Status::unavailable(format!("could not add the learner: {e}; retry the join"))
            })?;
        let membership = written.membership.unwrap_or_else(|| self.membership());
        let (voters, learners) = members(&membership);
        Ok(GrpcResponse::new(pb::JoinResponse {
            leader_id: Some(self.core.id),
            voters,
            learners,
            cluster_secret: self.core.secret.get().unwrap_or_default(),
        }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<GrpcResponse<pb::MembershipResponse>, Status> {
        self.authorize(request.metadata())?;
        let metadata = request.metadata().clone();
        let request = request.into_inner();
        if let Some(mut leader) = self.leader_client()? {
            return leader
                .add_learner(Self::forwarded(&metadata, request))
                .await;
        }
        if request.node_id == 0 || request.address.is_empty() {
            return Err(Status::invalid_argument(
                "node_id (at least 1) and address are required",
            ));
        }
        let node = Node {
            addr: request.address,
        };
        let written = self
            .core
            .raft
            .add_learner(request.node_id, node, false)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let membership = written.membership.unwrap_or_else(|| self.membership());
        Ok(Self::membership_reply(written.log_id.index(), &membership))
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<GrpcResponse<pb::MembershipResponse>, Status> {
        self.authorize(request.metadata())?;
        let metadata = request.metadata().clone();
        let request = request.into_inner();
        if let Some(mut leader) = self.leader_client()? {
            return leader.promote(Self::forwarded(&metadata, request)).await;
        }
        let membership = self.membership();
        if membership.voter_ids().any(|id| id == request.node_id) {
            return Err(Status::already_exists(format!(
                "node {} is already a voter",
                request.node_id
            )));
        }
        if !membership.learner_ids().any(|id| id == request.node_id) {
            return Err(Status::not_found(format!(
                "node {} is not a learner of this cluster; add or join it first",
                request.node_id
            )));
        }
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from(
            [request.node_id],
        )))
        .await
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<GrpcResponse<pb::MembershipResponse>, Status> {
        self.authorize(request.metadata())?;
        let metadata = request.metadata().clone();
        let request = request.into_inner();
        if let Some(mut leader) = self.leader_client()? {
            return leader
                .remove_node(Self::forwarded(&metadata, request))
                .await;
        }
        let membership = self.membership();
        let ids = BTreeSet::from([request.node_id]);
        if membership.voter_ids().any(|id| id == request.node_id) {
            if membership.voter_ids().count() == 1 {
                return Err(Status::failed_precondition("cannot remove the last voter"));
            }
            self.change(ChangeMembers::RemoveVoters(ids)).await
        } else if membership.learner_ids().any(|id| id == request.node_id) {
            self.change(ChangeMembers::RemoveNodes(ids)).await
        } else {
            Err(Status::not_found(format!(
                "node {} is not a member",
                request.node_id
            )))
        }
    }

    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<GrpcResponse<pb::PolicyResponse>, Status> {
        use crate::issuance::policy::{PolicyError, check};
        self.authorize(request.metadata())?;
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        let tenant = TenantId::new(request.tenant).map_err(|e| invalid("tenant", e))?;
        // Refuse here, before proposing, whatever would not do what its
        // author meant: nothing reaches the ledger unless it validates.
        check(&request.text).map_err(|e| match e {
            PolicyError::TooLarge { length, max } => {
                refusal_status(&Refusal::PolicyTooLarge { length, max })
            }
            e => Status::invalid_argument(e.to_string()),
        })?;
        let command = Command::SetPolicy {
            tenant: tenant.clone(),
            text: request.text.clone(),
            expected_version: request.expected_version,
        };
        let response = self.propose(id, command).await?;
        match response.outcome {
            Ok(Applied::PolicySet { version }) => Ok(GrpcResponse::new(pb::PolicyResponse {
                tenant: tenant.to_string(),
                version,
                text: request.text,
                set_at_ms: response.applied_at_ms,
            })),
            Ok(other) => Err(unexpected(&other)),
            Err(refusal) => Err(refusal_status(&refusal)),
        }
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<GrpcResponse<pb::PolicyResponse>, Status> {
        self.authorize(request.metadata())?;
        let tenant =
            TenantId::new(request.into_inner().tenant).map_err(|e| invalid("tenant", e))?;
        let policy = self
            .core
            .view
            .read(|a| a.ledger.policies.get(&tenant).cloned());
        Ok(GrpcResponse::new(match policy {
            Some(policy) => pb::PolicyResponse {
                tenant: tenant.to_string(),
                version: policy.version,
                text: policy.text,
                set_at_ms: policy.set_at_ms,
            },
            None => pb::PolicyResponse {
                tenant: tenant.to_string(),
                ..pb::PolicyResponse::default()
            },
        }))
    }

    async fn list_keys(
        &self,
        _request: Request<pb::ListKeysRequest>,
    ) -> Result<GrpcResponse<pb::ListKeysResponse>, Status> {
        let keys = self.core.view.read(|a| a.ledger.keys.clone());
        let keys = keys
            .into_iter()
            .map(|(id, key)| {
                let jwk = key
                    .public_key
                    .as_slice()
                    .try_into()
                    .map(|public: [u8; 32]| {
                        lapse_credential::Jwk::from_public_key(Some(&id), &public)
                    })
                    .ok()
                    .and_then(|jwk| serde_json::to_string(&jwk).ok())
                    .unwrap_or_default();
                pb::SigningKeyInfo {
                    key_id: id.to_string(),
                    broker_id: key.broker,
                    not_before_ms: key.not_before_ms,
                    not_after_ms: key.not_after_ms,
                    retired_at_ms: key.retired_at_ms,
                    revoked: key.revoked.is_some(),
                    jwk,
                }
            })
            .collect();
        Ok(GrpcResponse::new(pb::ListKeysResponse { keys }))
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<GrpcResponse<pb::RotateKeyResponse>, Status> {
        self.authorize(request.metadata())?;
        let lifetime = Duration::from_secs(
            self.core.config.issuance.key_rotation_seconds
                + self.core.config.issuance.key_overlap_seconds,
        );
        let previous = self.keys.rotate(&self.core, lifetime).await?;
        if let Some(previous) = &previous {
            let retire_id = request_id(format!("retire-{previous}"))?;
            self.propose(
                retire_id,
                Command::RetireKey {
                    key_id: previous.clone(),
                },
            )
            .await?;
        }
        let current = self
            .keys
            .signing_key(&self.core)
            .map(|k| k.key_id().to_string())
            .unwrap_or_default();
        Ok(GrpcResponse::new(pb::RotateKeyResponse {
            key_id: current,
            retired_key_id: previous.map(|k| k.to_string()).unwrap_or_default(),
        }))
    }

    async fn query_audit(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Result<GrpcResponse<pb::QueryAuditResponse>, Status> {
        self.authorize(request.metadata())?;
        let request = request.into_inner();
        let tenant = Some(request.tenant).filter(|t| !t.is_empty());
        let workload = Some(request.workload).filter(|w| !w.is_empty());
        let limit = if request.limit == 0 {
            1000
        } else {
            request.limit.min(10_000)
        } as usize;
        let matches = |record: &lapse_ledger::IssuanceRecord| {
            tenant
                .as_deref()
                .is_none_or(|t| record.tenant.as_ref().is_some_and(|r| r.as_str() == t))
                && workload
                    .as_deref()
                    .is_none_or(|w| record.workload.as_ref().is_some_and(|r| r.as_str() == w))
                && request
                    .index
                    .is_none_or(|i| record.index.is_some_and(|r| r.0 == i))
        };
        let mut records: Vec<pb::AuditRecord> = self.core.view.read(|a| {
            a.ledger
                .audit
                .iter()
                .filter(|(_, record)| matches(record))
                .map(|((broker, _), record)| audit_to_wire(*broker, record, true))
                .collect()
        });
        let shipped: std::collections::BTreeSet<(u64, u64)> =
            records.iter().map(|r| (r.broker_id, r.sequence)).collect();
        let local = self
            .audit
            .read_all()
            .map_err(|e| Status::internal(format!("reading the audit log: {e}")))?;
        records.extend(
            local
                .iter()
                .filter(|record| {
                    matches(record) && !shipped.contains(&(self.core.id, record.sequence))
                })
                .map(|record| audit_to_wire(self.core.id, record, false)),
        );
        records.sort_by_key(|r| (r.at_ms, r.broker_id, r.sequence));
        let skip = records.len().saturating_sub(limit);
        Ok(GrpcResponse::new(pb::QueryAuditResponse {
            records: records.split_off(skip),
        }))
    }

    async fn propagation(
        &self,
        request: Request<pb::PropagationRequest>,
    ) -> Result<GrpcResponse<pb::PropagationResponse>, Status> {
        self.authorize(request.metadata())?;
        let asked = request.into_inner().epoch;
        let epoch = if asked == 0 {
            self.feed.current_epoch()
        } else {
            asked
        };
        let (report, unreachable_brokers) = self.feed.cluster_report().await;
        let mut per_region: std::collections::BTreeMap<&str, u32> = Default::default();
        for record in report.verifiers.values() {
            *per_region.entry(record.region.as_str()).or_default() += 1;
        }
        let mut overall = Histogram::default();
        let regions = report
            .regions
            .iter()
            .map(|(region, histogram)| {
                overall.merge(histogram);
                delay_summary(
                    region,
                    histogram,
                    per_region.get(region.as_str()).copied().unwrap_or(0),
                )
            })
            .collect();
        let verifiers = report
            .verifiers
            .iter()
            .map(|(id, record)| pb::VerifierProgress {
                verifier_id: id.clone(),
                region: record.region.clone(),
                broker_id: record.broker_id,
                acked_epoch: record.acked_epoch,
                connected: record.connections > 0,
                since_ack_ms: report.now_ms.saturating_sub(record.last_seen_ms),
                delay: Some(delay_summary(&record.region, &record.delays, 1)),
                last_ms: record.last_us as f64 / 1000.0,
            })
            .collect();
        Ok(GrpcResponse::new(pb::PropagationResponse {
            epoch,
            current_epoch: self.feed.current_epoch(),
            verifiers,
            overall: Some(delay_summary("", &overall, report.verifiers.len() as u32)),
            regions,
            unreachable_brokers,
        }))
    }
}

fn freshness_message(report: crate::feed::freshness::FreshnessReport) -> pb::Freshness {
    pb::Freshness {
        problem: report.problem.unwrap_or_default(),
        withheld_reason: report.withheld_reason.unwrap_or_default(),
        withheld_for_ms: report.withheld_for_ms,
        withheld_total: report.withheld_total,
        slowest_confirmation_ms: report.slowest_confirmation_ms,
        heartbeat_ms: report.heartbeat_ms,
        verifier_staleness_ms: report.verifier_staleness_ms,
    }
}
