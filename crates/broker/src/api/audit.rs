//! `QueryAudit`: issuance records from the ledger (shipped) and from this
//! broker's own log (not yet shipped), merged: the newest, or (in chain
//! order) each broker's records by sequence, a page at a time, with their
//! evidence bytes.

use std::collections::BTreeSet;

use super::convert;
use lapse_ledger::IssuanceRecord;
use lapse_wire::cluster as pb;
use tonic::{Request, Response, Status};

use super::ClusterService;

/// Records returned when the caller names no limit, and the most it may.
const DEFAULT_LIMIT: u32 = 1000;
const MAX_LIMIT: u32 = 10_000;

impl ClusterService {
    pub(super) async fn audit_records(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        let scope = match request.get_ref().tenant.as_str() {
            "" => None,
            t => Some(lapse_credential::TenantId::new(t).map_err(|e| super::invalid("tenant", e))?),
        };
        self.permit(&request, crate::access::Action::ReadAudit, scope.as_ref())?;
        let request = request.into_inner();
        let tenant = Some(request.tenant).filter(|t| !t.is_empty());
        let workload = Some(request.workload).filter(|w| !w.is_empty());
        let limit = match request.limit {
            0 => DEFAULT_LIMIT,
            limit => limit.min(MAX_LIMIT),
        } as usize;
        let after = request.after.map(|c| (c.broker_id, c.sequence));
        let in_range = |broker: u64, record: &IssuanceRecord| {
            request.broker_id.is_none_or(|b| b == broker)
                && request.from_sequence.is_none_or(|s| record.sequence >= s)
                && request.to_sequence.is_none_or(|s| record.sequence <= s)
                && after.is_none_or(|a| (broker, record.sequence) > a)
        };
        let matches = |broker: u64, record: &IssuanceRecord| {
            in_range(broker, record)
                && tenant
                    .as_deref()
                    .is_none_or(|t| record.tenant.as_ref().is_some_and(|r| r.as_str() == t))
                && workload
                    .as_deref()
                    .is_none_or(|w| record.workload.as_ref().is_some_and(|r| r.as_str() == w))
                && request
                    .index
                    .is_none_or(|i| record.index.is_some_and(|r| r.0 == i))
        };
        let mut records: Vec<pb::AuditRecord> = self.core.view().read(|a| {
            a.ledger
                .audit
                .iter()
                .filter(|((broker, _), record)| matches(*broker, record))
                // The ledger's map is in chain order already.
                .take(if request.chain_order {
                    limit
                } else {
                    usize::MAX
                })
                .map(|((broker, _), record)| convert::audit_record(*broker, record, true))
                .collect()
        });
        let shipped: BTreeSet<(u64, u64)> =
            records.iter().map(|r| (r.broker_id, r.sequence)).collect();
        let local = self
            .audit
            .read_all()
            .map_err(|e| Status::internal(format!("reading the audit log: {e}")))?;
        let own = self.core.id();
        records.extend(
            local
                .iter()
                .filter(|record| matches(own, record) && !shipped.contains(&(own, record.sequence)))
                .map(|record| convert::audit_record(own, record, false)),
        );
        if request.chain_order {
            records.sort_by_key(|r| (r.broker_id, r.sequence));
            records.truncate(limit);
            return Ok(Response::new(pb::QueryAuditResponse { records }));
        }
        records.sort_by_key(|r| (r.at_ms, r.broker_id, r.sequence));
        let skip = records.len().saturating_sub(limit);
        Ok(Response::new(pb::QueryAuditResponse {
            records: records.split_off(skip),
        }))
    }
}
