//! Operator roles, the access policy and the control-plane audit:
//! `BindRole`, `UnbindRole`, `ListRoles`, `SetAccessPolicy`,
//! `GetAccessPolicy`, `ControlAudit`.

use lapse_credential::TenantId;
use lapse_ledger::{Applied, Command, ControlEvent, LedgerState, OperatorRole};
use lapse_wire::cluster as pb;
use tonic::{Request, Response, Status};

use super::{ClusterService, invalid, request_id};
use crate::access::{self, Action};
use crate::error::answer;

const DEFAULT_LIMIT: u32 = 1000;
const MAX_LIMIT: u32 = 10_000;

impl ClusterService {
    pub(super) async fn change_role(
        &self,
        request: Request<pb::RoleRequest>,
        bind: bool,
    ) -> Result<Response<pb::RolesResponse>, Status> {
        let authorization = self.permit(&request, Action::BindRole, None)?;
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        let role = role(&request.role, &request.tenant)?;
        let principal = request.principal;
        let command = if bind {
            Command::BindRole { principal, role }
        } else {
            Command::UnbindRole { principal, role }
        };
        let command = Command::Operate {
            authorization,
            command: Box::new(command),
        };
        let response = self.core.propose(id, command).await?;
        answer(response.outcome, |applied| match applied {
            Applied::RoleBound { .. } | Applied::RoleUnbound { .. } => Ok(()),
            other => Err(other),
        })?;
        Ok(Response::new(
            self.core.view().read(|a| bindings(&a.ledger)),
        ))
    }

    pub(super) async fn roles_list(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::RolesResponse>, Status> {
        self.permit(&request, Action::ReadStatus, None)?;
        Ok(Response::new(
            self.core.view().read(|a| bindings(&a.ledger)),
        ))
    }

    pub(super) async fn put_access_policy(
        &self,
        request: Request<pb::SetAccessPolicyRequest>,
    ) -> Result<Response<pb::AccessPolicyResponse>, Status> {
        let authorization = self.permit(&request, Action::SetAccessPolicy, None)?;
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        access::check(&request.text).map_err(|e| Status::invalid_argument(e.0))?;
        let command = Command::Operate {
            authorization,
            command: Box::new(Command::SetAccessPolicy {
                text: request.text.clone(),
                expected_version: request.expected_version,
            }),
        };
        let response = self.core.propose(id, command).await?;
        let version = answer(response.outcome, |applied| match applied {
            Applied::AccessPolicySet { version } => Ok(version),
            other => Err(other),
        })?;
        Ok(Response::new(pb::AccessPolicyResponse {
            version,
            text: request.text,
        }))
    }

    pub(super) async fn read_access_policy(
        &self,
        request: Request<pb::GetAccessPolicyRequest>,
    ) -> Result<Response<pb::AccessPolicyResponse>, Status> {
        self.permit(&request, Action::ReadStatus, None)?;
        let policy = self.core.view().read(|a| a.ledger.access_policy.clone());
        Ok(Response::new(match policy {
            Some(policy) => pb::AccessPolicyResponse {
                version: policy.version,
                text: policy.text,
            },
            None => pb::AccessPolicyResponse {
                version: 0,
                text: access::DEFAULT_POLICY.trim_start().to_owned(),
            },
        }))
    }

    /// The control-plane audit, filtered. A reader of one tenant's audit
    /// sees that tenant's events only; cluster-wide events need a
    /// cluster-wide reader.
    pub(super) async fn control_events(
        &self,
        request: Request<pb::ControlAuditRequest>,
    ) -> Result<Response<pb::ControlAuditResponse>, Status> {
        let scope = match request.get_ref().tenant.as_str() {
            "" => None,
            t => Some(TenantId::new(t).map_err(|e| invalid("tenant", e))?),
        };
        self.permit(&request, Action::ReadAudit, scope.as_ref())?;
        let request = request.into_inner();
        let limit = match request.limit {
            0 => DEFAULT_LIMIT,
            limit => limit.min(MAX_LIMIT),
        } as usize;
        let matches = |event: &ControlEvent| {
            let a = &event.authorization;
            scope.as_ref().is_none_or(|t| a.tenant.as_ref() == Some(t))
                && (request.principal.is_empty() || a.principal == request.principal)
                && (request.action.is_empty() || a.action == request.action)
                && event.at_ms >= request.since_ms
        };
        let mut events: Vec<pb::ControlEvent> = self.core.view().read(|a| {
            a.ledger
                .control_audit
                .iter()
                .rev()
                .filter(|(_, event)| matches(event))
                .take(limit)
                .map(|(epoch, event)| control_event(*epoch, event))
                .collect()
        });
        events.reverse();
        Ok(Response::new(pb::ControlAuditResponse { events }))
    }
}

/// A role named on the wire.
fn role(name: &str, tenant: &str) -> Result<OperatorRole, Status> {
    let tenant_of = || TenantId::new(tenant).map_err(|e| invalid("tenant", e));
    let none = |role: &str| {
        if tenant.is_empty() {
            Ok(())
        } else {
            Err(invalid(
                "tenant",
                format!("{role} is cluster-wide; give no tenant"),
            ))
        }
    };
    match name {
        "cluster-admin" => none(name).map(|()| OperatorRole::ClusterAdmin),
        "tenant-admin" => Ok(OperatorRole::TenantAdmin(tenant_of()?)),
        "revoker" => Ok(OperatorRole::Revoker(tenant_of()?)),
        "auditor" if tenant.is_empty() => Ok(OperatorRole::Auditor(None)),
        "auditor" => Ok(OperatorRole::Auditor(Some(tenant_of()?))),
        "verifier" => none(name).map(|()| OperatorRole::Verifier),
        other => Err(invalid(
            "role",
            format!(
                "{other:?} is not a role: cluster-admin, tenant-admin, revoker, auditor or verifier"
            ),
        )),
    }
}

fn bindings(state: &LedgerState) -> pb::RolesResponse {
    let bindings = state
        .roles
        .iter()
        .flat_map(|(principal, roles)| {
            roles.iter().map(move |role| {
                let (name, tenant) = role_name(role);
                pb::RoleBinding {
                    principal: principal.clone(),
                    role: name.into(),
                    tenant,
                }
            })
        })
        .collect();
    pb::RolesResponse {
        version: state.roles_version,
        bindings,
    }
}

fn control_event(epoch: u64, event: &ControlEvent) -> pb::ControlEvent {
    let a = &event.authorization;
    let (allowed, outcome) = match &event.outcome {
        Ok(text) => (true, text.clone()),
        Err(text) => (false, text.clone()),
    };
    pb::ControlEvent {
        epoch,
        at_ms: event.at_ms,
        request_id: event.request_id.to_string(),
        principal: a.principal.clone(),
        action: a.action.clone(),
        tenant: a.tenant.as_ref().map(|t| t.to_string()).unwrap_or_default(),
        justification: a.justification.clone().unwrap_or_default(),
        bindings_version: a.bindings_version,
        policy_version: a.policy_version,
        allowed,
        outcome,
        grant: a.grant.unwrap_or(0),
    }
}

impl ClusterService {
    /// `OpenGrant`: a break-glass grant for the operator who asks.
    pub(super) async fn grant_open(
        &self,
        request: Request<pb::OpenGrantRequest>,
    ) -> Result<Response<pb::GrantsResponse>, Status> {
        let wanted = role(&request.get_ref().role, &request.get_ref().tenant)?;
        let reason = request.get_ref().reason.trim().to_owned();
        if reason.is_empty() {
            return Err(invalid("reason", "a break-glass grant needs a reason"));
        }
        if reason.len() > lapse_ledger::MAX_JUSTIFICATION_BYTES {
            return Err(invalid(
                "reason",
                format!("at most {} bytes", lapse_ledger::MAX_JUSTIFICATION_BYTES),
            ));
        }
        let seconds = request.get_ref().for_seconds;
        if seconds == 0 || seconds * 1000 > lapse_ledger::MAX_GRANT_MS {
            return Err(invalid(
                "for_seconds",
                format!("{seconds}; give 1 to {}", lapse_ledger::MAX_GRANT_MS / 1000),
            ));
        }
        let mut authorization = self.permit(&request, Action::BreakGlassOpen, None)?;
        // Whether it counts at once is the access policy's to say.
        let needs_approval = self
            .permit_quietly(&request, Action::BreakGlassUnapproved)
            .is_err();
        authorization.justification = Some(reason.clone());
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        let expires_at_ms = self.core.confirmed_cluster_now().await? + seconds * 1000;
        let command = Command::Operate {
            authorization,
            command: Box::new(Command::OpenGrant {
                role: wanted,
                expires_at_ms,
                reason,
                needs_approval,
            }),
        };
        let response = self.core.propose(id, command).await?;
        let id = answer(response.outcome, |applied| match applied {
            Applied::GrantOpened { id } => Ok(id),
            other => Err(other),
        })?;
        Ok(Response::new(self.grants(id)))
    }

    /// `ApproveGrant` and `CloseGrant`. The operator a grant is for may
    /// close it; anyone else needs the access policy's leave.
    pub(super) async fn settle_grant(
        &self,
        request: Request<pb::GrantRequest>,
        approve: bool,
    ) -> Result<Response<pb::GrantsResponse>, Status> {
        let grant_id = request.get_ref().id;
        let owner = self
            .core
            .view()
            .read(|a| a.ledger.grants.get(&grant_id).map(|g| g.principal.clone()))
            .ok_or_else(|| Status::not_found(format!("no break-glass grant {grant_id}")))?;
        let caller = super::auth::authorize_admin(&self.core, &request)?;
        let mut authorization = if !approve && caller == owner {
            // Closing one's own grant needs no leave and no role (it only
            // gives up power); it is recorded all the same, tagged with the
            // grant.
            lapse_ledger::Authorization {
                principal: caller,
                action: String::new(),
                tenant: None,
                bindings_version: self.core.view().read(|a| a.ledger.roles_version),
                policy_version: 0,
                justification: super::cluster::justification(&request)?,
                grant: Some(grant_id),
            }
        } else {
            let action = if approve {
                Action::BreakGlassApprove
            } else {
                Action::BreakGlassClose
            };
            self.permit(&request, action, None)?
        };
        authorization.action = if approve {
            Action::BreakGlassApprove.name().into()
        } else {
            Action::BreakGlassClose.name().into()
        };
        let request = request.into_inner();
        let id = request_id(request.request_id)?;
        let command = if approve {
            Command::ApproveGrant { id: grant_id }
        } else {
            Command::CloseGrant { id: grant_id }
        };
        let command = Command::Operate {
            authorization,
            command: Box::new(command),
        };
        let response = self.core.propose(id, command).await?;
        answer(response.outcome, |applied| match applied {
            Applied::GrantApproved | Applied::GrantClosed => Ok(()),
            other => Err(other),
        })?;
        Ok(Response::new(self.grants(grant_id)))
    }

    pub(super) async fn grants_list(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::GrantsResponse>, Status> {
        self.permit(&request, Action::ReadStatus, None)?;
        Ok(Response::new(self.grants(0)))
    }

    fn grants(&self, id: u64) -> pb::GrantsResponse {
        let now = self.core.cluster_now();
        let grants = self.core.view().read(|a| {
            a.ledger
                .grants
                .iter()
                .map(|(id, grant)| grant_info(*id, grant, now))
                .collect()
        });
        pb::GrantsResponse { id, grants }
    }

    /// Whether the caller may do `action`, deciding without recording.
    fn permit_quietly<T>(
        &self,
        request: &Request<T>,
        action: Action,
    ) -> Result<(), access::Denied> {
        let principal = super::auth::authorize_admin(&self.core, request)
            .map_err(|s| access::Denied(s.message().to_owned()))?;
        let bootstrap = &self.core.config().auth.cluster_admins;
        let now = self.core.cluster_now();
        self.core
            .view()
            .read(|a| access::decide(&a.ledger, bootstrap, &principal, action, None, None, now))
            .map(|_| ())
    }
}

/// A grant as the API shows it.
pub(crate) fn grant_info(id: u64, grant: &lapse_ledger::Grant, now_ms: u64) -> pb::GrantInfo {
    let (name, tenant) = role_name(&grant.role);
    pb::GrantInfo {
        id,
        principal: grant.principal.clone(),
        role: name.into(),
        tenant,
        reason: grant.reason.clone(),
        opened_at_ms: grant.opened_at_ms,
        expires_at_ms: grant.expires_at_ms,
        needs_approval: grant.needs_approval,
        approved_by: grant.approved_by.clone().unwrap_or_default(),
        closed_at_ms: grant.closed_at_ms.unwrap_or(0),
        in_force: grant.in_force(now_ms),
    }
}

/// A role's wire name and tenant.
fn role_name(role: &OperatorRole) -> (&'static str, String) {
    let (name, tenant) = match role {
        OperatorRole::ClusterAdmin => ("cluster-admin", None),
        OperatorRole::TenantAdmin(t) => ("tenant-admin", Some(t)),
        OperatorRole::Revoker(t) => ("revoker", Some(t)),
        OperatorRole::Auditor(t) => ("auditor", t.as_ref()),
        OperatorRole::Verifier => ("verifier", None),
    };
    (name, tenant.map(|t| t.to_string()).unwrap_or_default())
}
