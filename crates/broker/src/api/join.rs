//! Joining: `CreateJoinToken` (admin) and `Join`, where a new broker
//! presents a token and becomes a learner. Any broker takes a join; the
//! token is spent and the learner added through the leader, over the peer
//! link, like any other write.

use std::time::Duration;

use lapse_credential::{TenantId, WorkloadId};
use lapse_ledger::{Applied, Command, JoinGrant, JoinToken, JoinUse, Refusal};
use lapse_wire::cluster as pb;
use lapse_wire::cluster::cluster_client::ClusterClient;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{ClusterService, invalid, request_id};
use crate::core::SharedCore;
use crate::error::{BrokerError, answer};
use crate::membership::MembershipChange;

/// Longest lifetime of a join token.
pub const MAX_JOIN_TOKEN_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// Lifetime of a join token when none is asked for.
pub const DEFAULT_JOIN_TOKEN_TTL_SECONDS: u64 = 3600;

impl ClusterService {
    pub(super) async fn new_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        let grant = join_grant(request.get_ref().grant.clone())?;
        let tenant = match &grant {
            JoinGrant::Workload { tenant, .. } => Some(tenant.clone()),
            JoinGrant::Broker { .. } => None,
        };
        let authorization = self.permit(
            &request,
            crate::access::Action::CreateJoinToken,
            tenant.as_ref(),
        )?;
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
        let secret: [u8; 32] = self.core.env().random_bytes();
        let token = format!("lapse-join-{}", hex::encode(secret));
        let expires_at_ms = self.core.confirmed_cluster_now().await? + ttl_seconds * 1000;
        let command = Command::Operate {
            authorization,
            command: Box::new(Command::CreateJoinToken {
                token_hash: Sha256::digest(token.as_bytes()).into(),
                grant,
                expires_at_ms,
            }),
        };
        let response = self.core.propose(id, command).await?;
        if response.duplicate {
            // The token itself is never stored, so a retried creation cannot
            // hand the same token back: say so rather than return a dud.
            return Err(Status::already_exists(
                "this request id already created a join token; use a new request id for a new token",
            ));
        }
        answer(response.outcome, |applied| match applied {
            Applied::JoinTokenCreated => Ok(()),
            other => Err(other),
        })?;
        Ok(Response::new(pb::CreateJoinTokenResponse {
            token,
            expires_at_ms,
        }))
    }

    pub(super) async fn join_broker(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        // With TLS the joining broker must hold a certificate of this
        // cluster naming the node id it asks for.
        if self.core.tls().is_some() {
            match super::auth::principal(&request).map(|p| &p.role) {
                Some(lapse_pki::Role::Broker(id)) if *id == request.get_ref().node_id => {}
                Some(other) => {
                    return Err(Status::permission_denied(format!(
                        "a join as node {} needs that broker's certificate; the client certificate names {other}",
                        request.get_ref().node_id
                    )));
                }
                None => {
                    return Err(Status::unauthenticated(
                        "a join needs a broker certificate of this cluster (lapse certs broker)",
                    ));
                }
            }
        }
        let request = request.into_inner();
        if request.node_id == 0 {
            return Err(invalid("node_id", "must be at least 1"));
        }
        if let Err(e) = crate::membership::check_address(&request.address) {
            return Err(invalid("address", e));
        }
        if !request.token.starts_with("lapse-join-") {
            return Err(invalid("token", "is not a Lapse join token"));
        }
        if let Some(existing) = self.core.membership().address_of(request.node_id)
            && existing != request.address
        {
            return Err(Status::already_exists(format!(
                "node id {} already belongs to the broker at {existing}",
                request.node_id
            )));
        }
        let token_hash: [u8; 32] = Sha256::digest(request.token.as_bytes()).into();
        // The token first: nobody without one makes this broker contact an
        // address of their choosing.
        self.check_token(&token_hash, &request.address).await?;
        probe(&self.core, request.node_id, &request.address).await?;

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
        answer(
            self.core.propose(id, command).await?.outcome,
            |applied| match applied {
                Applied::JoinTokenConsumed(JoinGrant::Broker { .. }) => Ok(()),
                other => Err(other),
            },
        )?;
        let change = MembershipChange::AddLearner {
            node_id: request.node_id,
            address: request.address.clone(),
        };
        let membership = self
            .core
            .change_membership(change)
            .await
            .map_err(|e| match e {
                BrokerError::Precondition(message) => BrokerError::Unavailable(format!(
                    "could not add the learner: {message}; retry the join"
                )),
                other => other,
            })?;
        let (voters, learners) = super::membership::members(&membership);
        Ok(Response::new(pb::JoinResponse {
            leader_id: Some(membership.leader_id),
            voters,
            learners,
            // Plaintext clusters only; with TLS there is no secret to hand out.
            cluster_secret: self.core.secret().get().unwrap_or_default(),
        }))
    }

    /// Whether the token could pay for this join, on state at least as new
    /// as the call: an unspent, unexpired broker token, for this address if
    /// it names one. The ledger checks again when it is spent.
    async fn check_token(&self, token_hash: &[u8; 32], address: &str) -> Result<(), Status> {
        self.core
            .confirm_current(Duration::from_secs(5))
            .await
            .map_err(Status::from)?;
        let now = self.core.cluster_now();
        let token = self
            .core
            .view()
            .read(|a| a.ledger.join_tokens.get(token_hash).cloned());
        let refused = |refusal: Refusal| Err(super::refusal_status(&refusal));
        match token {
            None => refused(Refusal::JoinTokenUnknown),
            Some(JoinToken {
                consumed_epoch: Some(epoch),
                ..
            }) => refused(Refusal::JoinTokenSpent { epoch }),
            Some(token) if token.expires_at_ms <= now => refused(Refusal::JoinTokenExpired {
                expires_at_ms: token.expires_at_ms,
            }),
            Some(token) => match token.grant {
                JoinGrant::Broker {
                    address: Some(expected),
                } if expected != address => refused(Refusal::JoinTokenWrongAddress {
                    expected,
                    presented: address.to_owned(),
                }),
                JoinGrant::Broker { .. } => Ok(()),
                JoinGrant::Workload { .. } => refused(Refusal::JoinTokenWrongUse),
            },
        }
    }
}

/// The broker at `address` must answer as `node_id` (with TLS, its
/// certificate must name that node id).
pub(super) async fn probe(core: &SharedCore, node_id: u64, address: &str) -> Result<(), Status> {
    let channel = core
        .channels()
        .channel(crate::link::Peer::member(node_id, address))
        .map_err(|e| invalid("address", e))?;
    let mut probe = ClusterClient::new(channel);
    let status_request = core
        .channels()
        .request(pb::StatusRequest {}, Duration::from_secs(3));
    match probe.status(status_request).await {
        Ok(status) if status.get_ref().node_id == node_id => Ok(()),
        Ok(status) => Err(Status::failed_precondition(format!(
            "the broker at {} is node {}, not node {}",
            address,
            status.get_ref().node_id,
            node_id
        ))),
        Err(error) => {
            // A refused TLS handshake is in the error's sources.
            let mut reason = error.message().to_owned();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !reason.contains(&text) {
                    reason.push_str(": ");
                    reason.push_str(&text);
                }
                source = cause.source();
            }
            Err(Status::failed_precondition(format!(
                "no broker {node_id} answers at {address}: {reason}"
            )))
        }
    }
}

/// What a join token will be good for.
fn join_grant(grant: Option<pb::create_join_token_request::Grant>) -> Result<JoinGrant, Status> {
    use pb::create_join_token_request::Grant;
    match grant {
        Some(Grant::Broker(broker)) => Ok(JoinGrant::Broker {
            address: Some(broker.address).filter(|a| !a.is_empty()),
        }),
        Some(Grant::Workload(workload)) => Ok(JoinGrant::Workload {
            tenant: TenantId::new(workload.tenant).map_err(|e| invalid("workload.tenant", e))?,
            workload: WorkloadId::new(workload.workload)
                .map_err(|e| invalid("workload.workload", e))?,
        }),
        None => Err(Status::invalid_argument(
            "grant: say whether the token is for a broker or a workload",
        )),
    }
}
