//! Issuance audit records to the wire.

use lapse_ledger::{AttestationKind, IssuanceRecord};

use lapse_wire::cluster as pb;

/// One issuance attempt as `QueryAudit` reports it. `shipped` says whether
/// the record has reached the ledger or is still only in the issuing
/// broker's local log.
pub fn audit_record(broker: u64, record: &IssuanceRecord, shipped: bool) -> pb::AuditRecord {
    let text = |value: Option<String>| value.unwrap_or_default();
    let inputs = record.inputs.as_deref();
    pb::AuditRecord {
        broker_id: broker,
        sequence: record.sequence,
        at_ms: record.at_ms,
        tenant: text(record.tenant.as_ref().map(|t| t.to_string())),
        workload: text(record.workload.as_ref().map(|w| w.to_string())),
        index: record.index.map(|i| i.0),
        key_id: text(record.key_id.as_ref().map(|k| k.to_string())),
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
            Some(AttestationKind::Exchange { parent_index }) => {
                format!("exchange:{parent_index}")
            }
        },
        allowed: record.decision.allowed,
        policy_version: record.decision.policy_version,
        input_sha256: hex::encode(record.decision.input_sha256),
        reason: record.decision.reason.clone(),
        shipped,
        evidence: lapse_ledger::evidence_bytes(record),
        actors: inputs
            .map(|i| i.actors.iter().map(|a| a.to_string()).collect())
            .unwrap_or_default(),
        delegation_depth: inputs.map_or(0, |i| i.depth),
        task: text(inputs.and_then(|i| i.task.clone())),
        on_behalf_of: text(inputs.and_then(|i| i.on_behalf_of.clone())),
        intent: text(inputs.and_then(|i| i.intent.clone())),
    }
}
