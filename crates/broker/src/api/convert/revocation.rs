//! `Revocation` from the wire.

use lapse_credential::{KeyId, StatusIndex, TenantId, WorkloadId};
use lapse_ledger::Revocation;

use lapse_wire::cluster::{self as pb, revocation::Target};

use crate::error::BrokerError;

/// A wire revocation as the ledger's, every identifier in it validated.
pub fn revocation(revocation: Option<pb::Revocation>) -> Result<Revocation, BrokerError> {
    let target = revocation.and_then(|r| r.target).ok_or_else(|| {
        BrokerError::invalid(
            "revocation",
            "no target given (index, subject, tenant, key_id, secret_sha256, credential or task)",
        )
    })?;
    Ok(match target {
        Target::Index(index) => Revocation::Index(StatusIndex(index)),
        Target::Subject(subject) => Revocation::Subject {
            tenant: TenantId::new(subject.tenant)
                .map_err(|e| BrokerError::invalid("subject.tenant", e))?,
            subject: WorkloadId::new(subject.subject)
                .map_err(|e| BrokerError::invalid("subject.subject", e))?,
            issued_before_ms: subject.issued_before_ms,
        },
        Target::Tenant(tenant) => Revocation::Tenant {
            tenant: TenantId::new(tenant.tenant)
                .map_err(|e| BrokerError::invalid("tenant.tenant", e))?,
            issued_before_ms: tenant.issued_before_ms,
        },
        Target::KeyId(key_id) => {
            Revocation::Key(KeyId::new(key_id).map_err(|e| BrokerError::invalid("key_id", e))?)
        }
        Target::SecretSha256(bytes) => {
            let hash: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                BrokerError::invalid(
                    "secret_sha256",
                    format!("must be 32 bytes, got {}", bytes.len()),
                )
            })?;
            if hash == lapse_ledger::EMPTY_SECRET_SHA256 {
                return Err(BrokerError::invalid(
                    "secret_sha256",
                    "is the SHA-256 of the empty string, which is no secret",
                ));
            }
            Revocation::SecretHash(hash)
        }
        Target::Task(target) => {
            let tenant =
                TenantId::new(target.tenant).map_err(|e| BrokerError::invalid("task.tenant", e))?;
            if let Some(problem) = lapse_credential::task_problem(&target.task) {
                return Err(BrokerError::invalid("task.task", problem));
            }
            Revocation::Task {
                tenant,
                task: target.task,
            }
        }
        Target::Credential(token) => {
            let max = lapse_credential::presented::MAX_PRESENTED_BYTES;
            if token.len() > max {
                return Err(BrokerError::invalid(
                    "credential",
                    format!("{} bytes; at most {max}", token.len()),
                ));
            }
            if token.trim().is_empty() {
                return Err(BrokerError::invalid("credential", "empty"));
            }
            Revocation::Credential(lapse_ledger::PresentedToken(token.trim().to_owned()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(target: Target) -> Option<pb::Revocation> {
        Some(pb::Revocation {
            target: Some(target),
        })
    }

    #[test]
    fn each_target_converts_and_bad_fields_are_named() {
        assert_eq!(
            revocation(target(Target::Index(7))),
            Ok(Revocation::Index(StatusIndex(7)))
        );
        assert_eq!(
            revocation(None).unwrap_err().to_string(),
            "revocation: no target given (index, subject, tenant, key_id, secret_sha256, credential or task)"
        );
        let too_long = "x".repeat(lapse_credential::presented::MAX_PRESENTED_BYTES + 1);
        let refused = revocation(target(Target::Credential(too_long))).unwrap_err();
        assert!(refused.to_string().starts_with("credential: "), "{refused}");
        assert!(revocation(target(Target::Credential(" \n".into()))).is_err());
        assert_eq!(
            revocation(target(Target::Credential("a.b.c\n".into()))),
            Ok(Revocation::Credential(lapse_ledger::PresentedToken(
                "a.b.c".into()
            )))
        );
        let bad_hash = revocation(target(Target::SecretSha256(vec![0; 31]))).unwrap_err();
        assert_eq!(
            bad_hash.to_string(),
            "secret_sha256: must be 32 bytes, got 31"
        );
        let bad_tenant = revocation(target(Target::Tenant(pb::TenantTarget {
            tenant: "has space".into(),
            issued_before_ms: None,
        })))
        .unwrap_err();
        assert!(bad_tenant.to_string().starts_with("tenant.tenant: "));
    }

    #[test]
    fn a_task_target_needs_a_tenant_and_a_task_id() {
        let task = |tenant: &str, task: &str| {
            revocation(target(Target::Task(pb::TaskTarget {
                tenant: tenant.into(),
                task: task.into(),
            })))
        };
        assert_eq!(
            task("acme", "run:42/step-1"),
            Ok(Revocation::Task {
                tenant: TenantId::new("acme").unwrap(),
                task: "run:42/step-1".into()
            })
        );
        for bad in ["", "run 42", "run;rm", "tâche", &"t".repeat(129)] {
            let refused = task("acme", bad).unwrap_err();
            assert!(
                refused
                    .to_string()
                    .starts_with("task.task: task id must be 1 to 128 bytes"),
                "{bad:?}: {refused}"
            );
        }
        assert!(task("acme", &"t".repeat(128)).is_ok());
        let refused = task("has space", "run-1").unwrap_err();
        assert!(
            refused.to_string().starts_with("task.tenant: "),
            "{refused}"
        );
    }
}
