//! Break-glass grants: a time-bound role for one operator, opened,
//! approved and closed through `Operate` (see `access.rs`), in force from
//! approval until closed or expired by cluster time.

use crate::command::{
    Applied, Grant, MAX_GRANT_MS, MAX_GRANTS, MAX_JUSTIFICATION_BYTES, OperatorRole, Outcome,
    Refusal,
};
use crate::state::LedgerState;

impl LedgerState {
    /// `OpenGrant`, for the operator who asked.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_grant(
        &mut self,
        epoch: u64,
        now_ms: u64,
        principal: &str,
        role: &OperatorRole,
        expires_at_ms: u64,
        reason: &str,
        needs_approval: bool,
    ) -> Outcome {
        let bad = |why: &str| Refusal::BadGrant {
            id: epoch,
            why: why.to_owned(),
        };
        if expires_at_ms <= now_ms || expires_at_ms - now_ms > MAX_GRANT_MS {
            return Err(bad(&format!(
                "it must end after now and within {} minutes",
                MAX_GRANT_MS / 60_000
            )));
        }
        if reason.trim().is_empty() {
            return Err(bad("a break-glass grant needs a reason"));
        }
        if self.grants.len() >= MAX_GRANTS {
            // Make room from grants no longer in force, oldest first.
            let done = self
                .grants
                .iter()
                .find(|(_, g)| {
                    !g.in_force(now_ms) && (g.closed_at_ms.is_some() || g.expires_at_ms <= now_ms)
                })
                .map(|(id, _)| *id);
            match done {
                Some(id) => {
                    self.grants.remove(&id);
                }
                None => return Err(bad(&format!("{MAX_GRANTS} grants are open already"))),
            }
        }
        let mut reason = reason.to_owned();
        super::access::cap(&mut reason, MAX_JUSTIFICATION_BYTES);
        self.grants.insert(
            epoch,
            Grant {
                principal: principal.to_owned(),
                role: role.clone(),
                reason,
                opened_at_ms: now_ms,
                expires_at_ms,
                needs_approval,
                approved_by: None,
                closed_at_ms: None,
            },
        );
        Ok(Applied::GrantOpened { id: epoch })
    }

    /// `ApproveGrant`, by a second operator.
    pub(super) fn approve_grant(&mut self, now_ms: u64, approver: &str, id: u64) -> Outcome {
        let grant = self.grants.get_mut(&id).ok_or(Refusal::UnknownGrant(id))?;
        let bad = |why: &str| Refusal::BadGrant {
            id,
            why: why.to_owned(),
        };
        if grant.principal == approver {
            return Err(bad(
                "it must be approved by another operator than the one it is for",
            ));
        }
        if !grant.needs_approval || grant.approved_by.is_some() {
            return Err(bad("it needs no approval"));
        }
        if grant.closed_at_ms.is_some() || grant.expires_at_ms <= now_ms {
            return Err(bad("it is closed or expired"));
        }
        grant.approved_by = Some(approver.to_owned());
        Ok(Applied::GrantApproved)
    }

    /// `CloseGrant`.
    pub(super) fn close_grant(&mut self, now_ms: u64, id: u64) -> Outcome {
        let grant = self.grants.get_mut(&id).ok_or(Refusal::UnknownGrant(id))?;
        if grant.closed_at_ms.is_some() || grant.expires_at_ms <= now_ms {
            return Err(Refusal::BadGrant {
                id,
                why: "it is closed or expired already".into(),
            });
        }
        grant.closed_at_ms = Some(now_ms);
        Ok(Applied::GrantClosed)
    }

    /// The grants in force for `principal` at cluster time `now_ms`.
    pub fn grants_of(&self, principal: &str, now_ms: u64) -> Vec<(u64, OperatorRole)> {
        self.grants
            .iter()
            .filter(|(_, g)| g.principal == principal && g.in_force(now_ms))
            .map(|(id, g)| (*id, g.role.clone()))
            .collect()
    }
}
