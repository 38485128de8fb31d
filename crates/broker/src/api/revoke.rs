//! `Revoke` and `RevokeMany`: validate, propose through the ledger, answer
//! with the epoch the revocation committed at.

use super::convert;
use lapse_ledger::{Applied, Command, MAX_BATCH};
use lapse_wire::cluster as pb;
use tonic::{Request, Response, Status};

use super::{ClusterService, invalid, request_id};
use crate::error::{BrokerError, answer};

impl ClusterService {
    pub(super) async fn revoke_one(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        let revocation = convert::revocation(request.revocation)
            .map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let response = self.core.propose(id, Command::Revoke(revocation)).await?;
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
        self.authorize(&request)?;
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
        let response = self
            .core
            .propose(id, Command::RevokeMany(revocations))
            .await?;
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
