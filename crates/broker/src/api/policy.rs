//! `SetPolicy` and `GetPolicy`: a tenant's Cedar issuance policy, checked
//! before it is proposed.

use lapse_credential::TenantId;
use lapse_ledger::{Applied, Command, MAX_POLICY_HISTORY, Refusal};
use lapse_wire::cluster as pb;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{ClusterService, invalid, refusal_status, request_id};
use crate::access::Action;
use crate::error::answer;
use crate::issuance::policy::{PolicyError, check};

impl ClusterService {
    pub(super) async fn put_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        let tenant =
            TenantId::new(request.get_ref().tenant.clone()).map_err(|e| invalid("tenant", e))?;
        let authorization = self.permit(&request, Action::SetPolicy, Some(&tenant))?;
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        // Refuse here, before proposing, whatever would not do what its
        // author meant: nothing reaches the ledger unless it validates.
        check(&request.text).map_err(|e| match e {
            PolicyError::TooLarge { length, max } => {
                refusal_status(&Refusal::PolicyTooLarge { length, max })
            }
            PolicyError::TooDeep { depth, max } => {
                refusal_status(&Refusal::PolicyTooDeep { depth, max })
            }
            e => Status::invalid_argument(e.to_string()),
        })?;
        let command = Command::Operate {
            authorization,
            command: Box::new(Command::SetPolicy {
                tenant: tenant.clone(),
                text: request.text.clone(),
                expected_version: request.expected_version,
            }),
        };
        let response = self.core.propose(id, command).await?;
        let version = answer(response.outcome, |applied| match applied {
            Applied::PolicySet { version } => Ok(version),
            other => Err(other),
        })?;
        Ok(Response::new(pb::PolicyResponse {
            tenant: tenant.to_string(),
            version,
            sha256: hex::encode(Sha256::digest(request.text.as_bytes())),
            text: request.text,
            set_at_ms: response.applied_at_ms,
            current_version: version,
        }))
    }

    pub(super) async fn read_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        let tenant =
            TenantId::new(request.get_ref().tenant.clone()).map_err(|e| invalid("tenant", e))?;
        self.permit(&request, Action::ReadPolicy, Some(&tenant))?;
        let asked = request.get_ref().version;
        let (current, policy) = self.core.view().read(|a| {
            let current = a.ledger.policies.get(&tenant);
            let policy = match asked {
                None => current.cloned(),
                Some(version) => a
                    .ledger
                    .policy_history
                    .get(&(tenant.clone(), version))
                    .cloned(),
            };
            (current.map_or(0, |p| p.version), policy)
        });
        if let (Some(version), None) = (asked, &policy) {
            return Err(Status::not_found(if version == 0 || version > current {
                format!(
                    "tenant {tenant} has no policy version {version} (the current is {current})"
                )
            } else {
                format!(
                    "tenant {tenant}'s policy version {version} is no longer kept (the ledger keeps the last {MAX_POLICY_HISTORY}; the current is {current})"
                )
            }));
        }
        Ok(Response::new(match policy {
            Some(policy) => pb::PolicyResponse {
                tenant: tenant.to_string(),
                version: policy.version,
                sha256: hex::encode(Sha256::digest(policy.text.as_bytes())),
                text: policy.text,
                set_at_ms: policy.set_at_ms,
                current_version: current,
            },
            None => pb::PolicyResponse {
                tenant: tenant.to_string(),
                ..pb::PolicyResponse::default()
            },
        }))
    }
}
