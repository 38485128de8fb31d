//! The `Issuer` service: `Issue`, `Refresh` and `Exchange`, converted to and from
//! [`crate::issuance::issuer`], which does the work.

use std::sync::Arc;

use lapse_wire::issuer::issuer_server::Issuer as IssuerRpc;
use lapse_wire::issuer::{
    ExchangeRequest, IssueRequest, IssueResponse, RefreshRequest, issue_request,
};
use tonic::{Request, Response, Status};

use crate::issuance::exchange::ExchangeParams;
use crate::issuance::issuer::{Attestation, IssueParams, Issued, Issuer, RefreshParams};

pub struct IssuerService {
    pub issuer: Arc<Issuer>,
}

fn reply(issued: Issued) -> Response<IssueResponse> {
    Response::new(IssueResponse {
        credential: issued.credential,
        status_index: issued.status_index,
        key_id: issued.key_id,
        expires_at: issued.expires_at,
        tenant: issued.tenant,
        workload: issued.workload,
        policy_version: issued.policy_version,
    })
}

#[tonic::async_trait]
impl IssuerRpc for IssuerService {
    async fn issue(
        &self,
        request: Request<IssueRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let request = request.into_inner();
        let attestation = request.attestation.map(|a| match a {
            issue_request::Attestation::JoinToken(token) => Attestation::JoinToken(token),
            issue_request::Attestation::ExternalJwt(token) => Attestation::ExternalJwt(token),
        });
        let params = IssueParams {
            attestation,
            request_id: request.request_id,
            tenant: request.tenant,
            scopes: request.scopes,
            audiences: request.audiences,
            ttl_seconds: request.ttl_seconds,
            dpop_jkt: request.dpop_jkt,
            dpop_proof: request.dpop_proof,
            task: request.task,
            on_behalf_of: request.on_behalf_of,
            intent: request.intent,
        };
        Ok(reply(self.issuer.issue(params).await?))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let request = request.into_inner();
        let params = RefreshParams {
            credential: request.credential,
            dpop_proof: request.dpop_proof,
            scopes: request.scopes,
            audiences: request.audiences,
            ttl_seconds: request.ttl_seconds,
        };
        Ok(reply(self.issuer.refresh(params).await?))
    }

    async fn exchange(
        &self,
        request: Request<ExchangeRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let request = request.into_inner();
        let params = ExchangeParams {
            subject_token: request.subject_token,
            dpop_proof: request.dpop_proof,
            actor: request.actor,
            actor_jkt: request.actor_jkt,
            scopes: request.scopes,
            audiences: request.audiences,
            ttl_seconds: request.ttl_seconds,
            task: request.task,
            on_behalf_of: request.on_behalf_of,
            intent: request.intent,
        };
        Ok(reply(self.issuer.exchange(params).await?))
    }
}
