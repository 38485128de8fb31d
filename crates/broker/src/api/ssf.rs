//! Shared Signals receivers over gRPC: `CreateSsfReceiver` (the token made
//! here, shown once, kept in the ledger only as its SHA-256),
//! `ListSsfReceivers` and `RemoveSsfReceiver`, each decided by the access
//! policy's `manage_ssf` for the receiver's tenant (every tenant: a
//! cluster-wide decision).

use lapse_credential::TenantId;
use lapse_ledger::ssf::{SsfDelivery, name_problem};
use lapse_ledger::{Applied, Command};
use lapse_wire::cluster as pb;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{ClusterService, invalid, request_id};
use crate::access::Action;
use crate::error::answer;

/// The prefix of every receiver token.
pub const TOKEN_PREFIX: &str = "lapse-ssf-";

fn tenant_of(text: &str) -> Result<Option<TenantId>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    TenantId::new(text)
        .map(Some)
        .map_err(|e| invalid("tenant", e))
}

impl ClusterService {
    pub(super) async fn new_ssf_receiver(
        &self,
        request: Request<pb::CreateSsfReceiverRequest>,
    ) -> Result<Response<pb::CreateSsfReceiverResponse>, Status> {
        let tenant = tenant_of(&request.get_ref().tenant)?;
        if let Some(problem) = name_problem(&request.get_ref().name) {
            return Err(invalid("name", problem));
        }
        let authorization = self.permit(&request, Action::ManageSsf, tenant.as_ref())?;
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        let secret: [u8; 32] = self.core.env().random_bytes();
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
        let command = Command::Operate {
            authorization,
            command: Box::new(Command::CreateSsfReceiver {
                name: request.name,
                token_hash: Sha256::digest(token.as_bytes()).into(),
                tenant,
            }),
        };
        let response = self.core.propose(id, command).await?;
        if response.duplicate {
            return Err(Status::already_exists(
                "this request id already created an SSF receiver; its token was shown then and is not kept",
            ));
        }
        answer(response.outcome, |applied| match applied {
            Applied::SsfReceiverCreated => Ok(()),
            other => Err(other),
        })?;
        Ok(Response::new(pb::CreateSsfReceiverResponse { token }))
    }

    pub(super) async fn ssf_receivers(
        &self,
        request: Request<pb::ListSsfReceiversRequest>,
    ) -> Result<Response<pb::SsfReceiversResponse>, Status> {
        let tenant = tenant_of(&request.get_ref().tenant)?;
        self.permit(&request, Action::ManageSsf, tenant.as_ref())?;
        Ok(Response::new(self.receivers_of(tenant.as_ref())))
    }

    pub(super) async fn drop_ssf_receiver(
        &self,
        request: Request<pb::RemoveSsfReceiverRequest>,
    ) -> Result<Response<pb::SsfReceiversResponse>, Status> {
        let name = request.get_ref().name.clone();
        if let Some(problem) = name_problem(&name) {
            return Err(invalid("name", problem));
        }
        let known = self
            .core
            .view()
            .read(|a| a.ledger.ssf_receivers.get(&name).map(|r| r.tenant.clone()));
        let Some(tenant) = known else {
            return Err(Status::not_found(format!("no SSF receiver named {name}")));
        };
        let authorization = self.permit(&request, Action::ManageSsf, tenant.as_ref())?;
        let id = request_id(request.into_inner().request_id)?;
        let command = Command::Operate {
            authorization,
            command: Box::new(Command::RemoveSsfReceiver { name }),
        };
        let response = self.core.propose(id, command).await?;
        answer(response.outcome, |applied| match applied {
            Applied::SsfReceiverRemoved { .. } => Ok(()),
            other => Err(other),
        })?;
        Ok(Response::new(self.receivers_of(tenant.as_ref())))
    }

    fn receivers_of(&self, tenant: Option<&TenantId>) -> pb::SsfReceiversResponse {
        self.core.view().read(|a| {
            let ledger = &a.ledger;
            let receivers = ledger
                .ssf_receivers
                .iter()
                .filter(|(_, r)| tenant.is_none() || r.tenant.as_ref() == tenant)
                .map(|(name, r)| pb::SsfReceiverInfo {
                    name: name.clone(),
                    tenant: r
                        .tenant
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    created_at_ms: r.created_at_ms,
                    streams: ledger
                        .ssf_streams
                        .iter()
                        .filter(|(_, s)| s.receiver == *name)
                        .map(|(id, s)| pb::SsfStreamInfo {
                            stream_id: id.clone(),
                            delivery: match s.config.delivery {
                                SsfDelivery::Push { .. } => "push".into(),
                                SsfDelivery::Poll => "poll".into(),
                            },
                            status: s.status.as_str().into(),
                            reason: s.reason.clone().unwrap_or_default(),
                            acked: s.acked,
                        })
                        .collect(),
                })
                .collect();
            pb::SsfReceiversResponse {
                receivers,
                last_event: ledger.ssf_last_seq(),
            }
        })
    }
}
