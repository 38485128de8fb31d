//! `Revoke` and `RevokeMany`: validate, propose through the ledger, answer
//! with the epoch the revocation committed at.

use super::convert;
use lapse_ledger::{Applied, Command, MAX_BATCH, Revocation};
use lapse_wire::cluster as pb;
use tonic::{Request, Response, Status};

use super::{ClusterService, invalid, request_id};
use crate::access::Action;
use crate::error::{BrokerError, answer};

impl ClusterService {
    pub(super) async fn revoke_one(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let named = Self::named_tenant(&request)?;
        let revocation = convert::revocation(request.get_ref().revocation.clone())
            .map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let tenant = rule_tenant(&revocation).or(named);
        let authorization = self.permit(&request, Action::Revoke, tenant.as_ref())?;
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        let command = Command::Operate {
            authorization,
            command: Box::new(Command::Revoke(revocation)),
        };
        let response = self.core.propose(id, command).await?;
        let (epoch, committed_at_ms) = answer(response.outcome, |applied| match applied {
            Applied::Revoked {
                epoch,
                committed_at_ms,
            } => Ok((epoch, committed_at_ms)),
            other => Err(other),
        })?;
        Ok(Response::new(pb::RevokeResponse {
            epoch,
            committed_at_ms,
            duplicate: response.duplicate,
        }))
    }

    pub(super) async fn revoke_batch(
        &self,
        request: Request<pb::RevokeManyRequest>,
    ) -> Result<Response<pb::RevokeManyResponse>, Status> {
        let named = Self::named_tenant(&request)?;
        let revocations: Vec<_> = request
            .get_ref()
            .revocations
            .iter()
            .filter_map(|r| convert::revocation(Some(r.clone())).ok())
            .collect();
        // A batch of rules for one tenant is that tenant's; anything else
        // is for the tenant the call names, or cluster-wide.
        let tenants: std::collections::BTreeSet<_> = revocations.iter().map(rule_tenant).collect();
        let tenant = match tenants.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(t)] => Some(t.clone()),
            _ => named,
        };
        let authorization = self.permit(&request, Action::Revoke, tenant.as_ref())?;
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
                convert::revocation(Some(r)).map_err(|e| invalid(&format!("revocations[{n}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let command = Command::Operate {
            authorization,
            command: Box::new(Command::RevokeMany(revocations)),
        };
        let response = self.core.propose(id, command).await?;
        let (epoch, committed_at_ms, items) = answer(response.outcome, |applied| match applied {
            Applied::RevokedMany {
                epoch,
                committed_at_ms,
                items,
            } => Ok((epoch, committed_at_ms, items)),
            other => Err(other),
        })?;
        Ok(Response::new(pb::RevokeManyResponse {
            epoch,
            committed_at_ms,
            duplicate: response.duplicate,
            items: items
                .into_iter()
                .map(|item| pb::ItemResult {
                    refusal: item.err().map(|r| r.to_string()).unwrap_or_default(),
                })
                .collect(),
        }))
    }
}

/// The tenant a rule revocation is for; `None` for the other kinds.
fn rule_tenant(revocation: &Revocation) -> Option<lapse_credential::TenantId> {
    match revocation {
        Revocation::Subject { tenant, .. }
        | Revocation::Tenant { tenant, .. }
        | Revocation::Task { tenant, .. } => Some(tenant.clone()),
        _ => None,
    }
}
