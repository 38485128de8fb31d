//! `LeaseIndices`: an admin lease of a block of status indices (brokers
//! lease their own through [`crate::issuance::leases`]).

use lapse_ledger::{Applied, Command};
use lapse_wire::cluster as pb;
use tonic::{Request, Response, Status};

use super::{ClusterService, request_id};
use crate::error::answer;

impl ClusterService {
    pub(super) async fn lease(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let authorization = self.permit(&request, crate::access::Action::Lease, None)?;
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        // The ledger knows no membership: a lease to a broker that is not a
        // member would take indices nobody issues from.
        let membership = self.core.membership();
        if !membership.is_voter(request.broker_id) && !membership.is_learner(request.broker_id) {
            return Err(Status::failed_precondition(format!(
                "broker_id {} is not a member of this cluster; lease only to a voter or a learner",
                request.broker_id
            )));
        }
        let command = Command::Operate {
            authorization,
            command: Box::new(Command::LeaseIndices {
                broker: request.broker_id,
                count: request.count,
                lease_ms: request.lease_ms,
            }),
        };
        let response = self.core.propose(id, command).await?;
        let epoch = response.log_index;
        answer(response.outcome, |applied| match applied {
            Applied::Leased {
                start,
                end,
                lease_expires_at_ms,
                credentials_expire_by_ms,
            } => Ok(Response::new(pb::LeaseResponse {
                start,
                end,
                lease_expires_at_ms,
                credentials_expire_by_ms,
                epoch,
            })),
            other => Err(other),
        })
        .map_err(Status::from)
    }
}
