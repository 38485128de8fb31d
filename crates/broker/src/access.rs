//! Who may do what on the control plane: operator roles (bound in the
//! ledger, versioned) decided by a Cedar access policy (the default below,
//! or one a cluster admin sets, also versioned in the ledger).
//!
//! A request is: principal `Operator::"operator:alice"` (or
//! `"token:ci"`), an action from [`Action`], resource `Tenant::"acme"` for
//! a tenant-scoped call or `Cluster::"cluster"`, and a context saying which
//! roles the principal holds ([`SCHEMA`]). The broker that takes a call
//! decides first (for a precise refusal); the leader decides again before
//! it proposes, so a broker cannot pass on what the leader would refuse;
//! and applying the command checks that it stays within the tenant it was
//! authorised for.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicySet, Request,
    Schema, ValidationMode, Validator,
};
use lapse_credential::TenantId;
use lapse_ledger::{Authorization, LedgerState, OperatorRole};

/// A control-plane action, as the access policy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Revoke,
    SetPolicy,
    ReadPolicy,
    CreateJoinToken,
    ReadAudit,
    Lease,
    Membership,
    RotateKey,
    BindRole,
    SetAccessPolicy,
    ReadStatus,
    ReadPropagation,
    BreakGlassOpen,
    /// Open a grant that needs no second operator's approval.
    BreakGlassUnapproved,
    BreakGlassApprove,
    BreakGlassClose,
    /// Create, list and remove Shared Signals receivers (which read a
    /// tenant's revocations as events).
    ManageSsf,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Revoke => "revoke",
            Action::SetPolicy => "set_policy",
            Action::ReadPolicy => "read_policy",
            Action::CreateJoinToken => "create_join_token",
            Action::ReadAudit => "read_audit",
            Action::Lease => "lease",
            Action::Membership => "membership",
            Action::RotateKey => "rotate_key",
            Action::BindRole => "bind_role",
            Action::SetAccessPolicy => "set_access_policy",
            Action::ReadStatus => "read_status",
            Action::ReadPropagation => "read_propagation",
            Action::BreakGlassOpen => "break_glass_open",
            Action::BreakGlassUnapproved => "break_glass_unapproved",
            Action::BreakGlassApprove => "break_glass_approve",
            Action::BreakGlassClose => "break_glass_close",
            Action::ManageSsf => "manage_ssf",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        ALL.iter().copied().find(|a| a.name() == name)
    }

    /// Whether the action changes something (and so is recorded in the
    /// control-plane audit whatever the outcome).
    pub fn writes(self) -> bool {
        !matches!(
            self,
            Action::ReadPolicy
                | Action::ReadAudit
                | Action::ReadStatus
                | Action::ReadPropagation
                | Action::BreakGlassUnapproved
        )
    }
}

const ALL: [Action; 17] = [
    Action::Revoke,
    Action::SetPolicy,
    Action::ReadPolicy,
    Action::CreateJoinToken,
    Action::ReadAudit,
    Action::Lease,
    Action::Membership,
    Action::RotateKey,
    Action::BindRole,
    Action::SetAccessPolicy,
    Action::ReadStatus,
    Action::ReadPropagation,
    Action::BreakGlassOpen,
    Action::BreakGlassUnapproved,
    Action::BreakGlassApprove,
    Action::BreakGlassClose,
    Action::ManageSsf,
];

/// What Cedar may know of an access request.
pub const SCHEMA: &str = r#"
entity Operator;
entity Tenant;
entity Cluster;
type Roles = {
  cluster_admin: Bool,
  tenant_admin: Set<String>,
  revoker: Set<String>,
  auditor: Set<String>,
  all_tenants_auditor: Bool,
  verifier: Bool,
  any_role: Bool,
  tenant: String,
};
action revoke, set_policy, read_policy, create_join_token, read_audit, lease, membership,
  rotate_key, bind_role, set_access_policy, read_status, read_propagation,
  break_glass_open, break_glass_unapproved, break_glass_approve, break_glass_close,
  manage_ssf
  appliesTo { principal: Operator, resource: [Tenant, Cluster], context: Roles };
"#;

/// Why a call or a policy is refused, in words for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl From<String> for Denied {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The access policy a cluster starts with.
pub const DEFAULT_POLICY: &str = r#"
// A cluster admin may do anything.
permit(principal, action, resource) when { context.cluster_admin };

// A tenant admin manages its tenant: revocations, issuance policy, join
// tokens for its workloads, and its audit.
permit(principal,
       action in [Action::"revoke", Action::"set_policy", Action::"read_policy",
                  Action::"create_join_token", Action::"read_audit"],
       resource is Tenant)
when { context.tenant_admin.contains(context.tenant) };

// A revoker revokes its tenant's credentials.
permit(principal, action == Action::"revoke", resource is Tenant)
when { context.revoker.contains(context.tenant) };

// An auditor reads the audit of its tenant, or of every tenant.
permit(principal, action == Action::"read_audit", resource is Tenant)
when { context.auditor.contains(context.tenant) };
permit(principal, action == Action::"read_audit", resource)
when { context.all_tenants_auditor };

// Shared Signals receivers read revocations as events: a tenant admin or
// a tenant's auditor manages its tenant's, an auditor of every tenant any.
permit(principal, action == Action::"manage_ssf", resource is Tenant)
when { context.tenant_admin.contains(context.tenant) || context.auditor.contains(context.tenant) };
permit(principal, action == Action::"manage_ssf", resource)
when { context.all_tenants_auditor };

// Anyone with a role reads the cluster's status; verifiers and anyone with
// a role read propagation.
permit(principal, action in [Action::"read_status", Action::"read_propagation"], resource)
when { context.any_role };
permit(principal, action == Action::"read_propagation", resource)
when { context.verifier };

// Break-glass: any operator with a role may ask for a time-bound grant,
// which counts once another operator with a role approves it (a cluster
// admin's needs no approval: see the first statement).
permit(principal, action in [Action::"break_glass_open", Action::"break_glass_approve"], resource)
when { context.any_role };
"#;

fn schema() -> &'static Schema {
    static PARSED: OnceLock<Schema> = OnceLock::new();
    PARSED.get_or_init(|| {
        Schema::from_cedarschema_str(SCHEMA)
            .map(|(schema, _)| schema)
            .expect("SCHEMA is a constant that parses")
    })
}

/// Parse and validate an access policy against [`SCHEMA`]; the problems,
/// in words, when it does not hold.
pub fn check(text: &str) -> Result<PolicySet, Denied> {
    if text.len() > lapse_ledger::MAX_POLICY_BYTES {
        return Err(Denied(format!(
            "access policy is {} bytes; at most {}",
            text.len(),
            lapse_ledger::MAX_POLICY_BYTES
        )));
    }
    // Before Cedar's parser, which recurses once per level unchecked.
    let depth = lapse_ledger::policy_nesting(text);
    if depth > lapse_ledger::MAX_POLICY_NESTING {
        return Err(Denied(format!(
            "access policy nests brackets {depth} deep, more than the {} allowed; write it with less nesting",
            lapse_ledger::MAX_POLICY_NESTING
        )));
    }
    let policies = PolicySet::from_str(text).map_err(|errors| {
        let problems = crate::issuance::policy::problems(
            text,
            errors.iter().map(cedar_policy::ffi::DetailedError::from),
        );
        format!("access {problems}")
    })?;
    if policies.policies().next().is_none() {
        return Err(Denied("access policy is empty and would refuse everything, cluster admins included; to lock the control plane, say so: `forbid(principal, action, resource);`".into()));
    }
    let validator = Validator::new(schema().clone());
    let result = validator.validate(&policies, ValidationMode::Strict);
    if !result.validation_passed() {
        let problems: Vec<String> = result
            .validation_errors()
            .take(5)
            .map(|e| e.to_string())
            .collect();
        return Err(Denied(format!(
            "access policy: {}; it may use only: {}",
            problems.join("; "),
            SCHEMA.split_whitespace().collect::<Vec<_>>().join(" ")
        )));
    }
    Ok(policies)
}

/// The policy in force: parsed once per version.
fn policy_in_force(state: &LedgerState) -> (u64, Arc<PolicySet>) {
    type Cached = Option<(u64, u64, Arc<PolicySet>)>;
    static CACHE: Mutex<Cached> = Mutex::new(None);
    let (version, text, epoch) = match &state.access_policy {
        Some(policy) => (policy.version, policy.text.as_str(), policy.epoch),
        None => (0, DEFAULT_POLICY, 0),
    };
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((v, e, parsed)) = cache.as_ref()
        && (*v, *e) == (version, epoch)
    {
        return (version, parsed.clone());
    }
    // A stored policy was checked before it was proposed; one that no
    // longer parses refuses everything rather than allowing anything. The
    // ledger refuses texts nested too deeply for Cedar's parser, and so
    // does this, whatever a replica holds.
    let parseable = lapse_ledger::policy_nesting(text) <= lapse_ledger::MAX_POLICY_NESTING;
    let parsed = Arc::new(
        parseable
            .then(|| PolicySet::from_str(text).ok())
            .flatten()
            .unwrap_or_else(PolicySet::new),
    );
    *cache = Some((version, epoch, parsed.clone()));
    (version, parsed)
}

/// The roles `principal` holds: its bindings in the ledger, and
/// cluster-admin when this broker's configuration names it
/// (`auth.cluster_admins`, how a new cluster gets its first admin).
pub fn roles_of(state: &LedgerState, bootstrap: &[String], principal: &str) -> Vec<OperatorRole> {
    let mut roles: BTreeSet<OperatorRole> = state.roles_of(principal).into_iter().collect();
    if bootstrap.iter().any(|p| p == principal) {
        roles.insert(OperatorRole::ClusterAdmin);
    }
    roles.into_iter().collect()
}

/// Decide whether `principal` may do `action` for `tenant` (`None`:
/// cluster-wide): the authorization to carry into the ledger, or why not.
pub fn decide(
    state: &LedgerState,
    bootstrap: &[String],
    principal: &str,
    action: Action,
    tenant: Option<&TenantId>,
    justification: Option<String>,
    now_ms: u64,
) -> Result<Authorization, Denied> {
    let roles = roles_of(state, bootstrap, principal);
    let refused = match decide_with(state, principal, action, tenant, &justification, &roles) {
        Ok(authorization) => return Ok(authorization),
        Err(refused) => refused,
    };
    // Not with the roles bound: with a break-glass grant in force, tagged
    // with it.
    let granted = state.grants_of(principal, now_ms);
    if let Some((id, _)) = granted.first() {
        let mut elevated = roles.clone();
        elevated.extend(granted.iter().map(|(_, role)| role.clone()));
        if let Ok(mut authorization) =
            decide_with(state, principal, action, tenant, &justification, &elevated)
        {
            authorization.grant = Some(*id);
            return Ok(authorization);
        }
    }
    Err(refused)
}

fn decide_with(
    state: &LedgerState,
    principal: &str,
    action: Action,
    tenant: Option<&TenantId>,
    justification: &Option<String>,
    roles: &[OperatorRole],
) -> Result<Authorization, Denied> {
    let (policy_version, policies) = policy_in_force(state);
    let mut context = serde_json::json!({
        "cluster_admin": false,
        "tenant_admin": [],
        "revoker": [],
        "auditor": [],
        "all_tenants_auditor": false,
        "verifier": false,
        "any_role": !roles.is_empty(),
        "tenant": tenant.map(|t| t.to_string()).unwrap_or_default(),
    });
    for role in roles {
        match role {
            OperatorRole::ClusterAdmin => context["cluster_admin"] = true.into(),
            OperatorRole::TenantAdmin(t) => push(&mut context["tenant_admin"], t),
            OperatorRole::Revoker(t) => push(&mut context["revoker"], t),
            OperatorRole::Auditor(Some(t)) => push(&mut context["auditor"], t),
            OperatorRole::Auditor(None) => context["all_tenants_auditor"] = true.into(),
            OperatorRole::Verifier => context["verifier"] = true.into(),
        }
    }
    let uid = |kind: &str, id: &str| {
        EntityUid::from_str(&format!("{kind}::{}", serde_json::Value::from(id)))
            .map_err(|e| format!("cannot name {kind} {id:?}: {e}"))
    };
    let resource = match tenant {
        Some(t) => uid("Tenant", &t.to_string())?,
        None => uid("Cluster", "cluster")?,
    };
    let request = Request::new(
        uid("Operator", principal)?,
        uid("Action", action.name())?,
        resource,
        Context::from_json_value(context, None).map_err(|e| e.to_string())?,
        Some(schema()),
    )
    .map_err(|e| e.to_string())?;
    let answer = Authorizer::new().is_authorized(&request, &policies, &Entities::empty());
    let authorization = Authorization {
        principal: principal.to_owned(),
        action: action.name().to_owned(),
        tenant: tenant.cloned(),
        bindings_version: state.roles_version,
        policy_version,
        justification: justification.clone(),
        grant: None,
    };
    if answer.decision() == CedarDecision::Allow {
        return Ok(authorization);
    }
    let held = if roles.is_empty() {
        "no role".to_owned()
    } else {
        roles
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let scope = match tenant {
        Some(t) => format!("for tenant {t}"),
        None => "cluster-wide (name a tenant if the call is for one)".to_owned(),
    };
    let policy = match policy_version {
        0 => "the default access policy".to_owned(),
        v => format!("access policy version {v}"),
    };
    Err(Denied(format!(
        "{principal} may not {} {scope}: it holds {held} (role bindings version {}, {policy}; `lapse role list` shows the bindings)",
        action.name().replace('_', " "),
        state.roles_version
    )))
}

fn push(set: &mut serde_json::Value, tenant: &TenantId) {
    if let Some(items) = set.as_array_mut() {
        items.push(tenant.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deeply nested parentheses, which Cedar's parser cannot survive.
    fn nested(depth: usize) -> String {
        format!(
            "permit(principal, action, resource) when {{ {}true{} }};",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    }

    #[test]
    fn a_deeply_nested_access_policy_is_refused_before_parsing() {
        // On a small stack: the refusal must not depend on the stack's size.
        let refusal = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| check(&nested(2_000)).map(|_| ()).unwrap_err().0)
            .unwrap()
            .join()
            .unwrap();
        assert!(refusal.contains("nests brackets 2001 deep"), "{refusal}");
        // A stored one (which the ledger refuses too) refuses everything.
        let mut state = LedgerState::default();
        state.access_policy = Some(lapse_ledger::Policy {
            version: 1,
            text: nested(2_000),
            set_at_ms: 0,
            epoch: 99,
        });
        let (version, policies) = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || policy_in_force(&state))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(version, 1);
        assert_eq!(policies.policies().count(), 0);
    }

    #[test]
    fn an_access_policy_that_does_not_parse_is_refused_in_words() {
        let refusal = check("permit(principal, action, resource) when { context. };")
            .map(|_| ())
            .unwrap_err()
            .0;
        assert!(
            refusal.starts_with("access policy line 1, column "),
            "{refusal}"
        );
        assert!(!refusal.contains('\n'), "{refusal}");
        assert!(!refusal.contains("ParseError"), "{refusal}");
        assert!(check(&nested(30)).is_ok());
    }

    fn tenant(name: &str) -> TenantId {
        TenantId::new(name).unwrap()
    }

    fn state_with(bindings: &[(&str, OperatorRole)]) -> LedgerState {
        let mut state = LedgerState::default();
        for (principal, role) in bindings {
            state
                .roles
                .entry((*principal).to_owned())
                .or_default()
                .insert(role.clone());
            state.roles_version += 1;
        }
        state
    }

    #[test]
    fn the_default_policy_and_schema_parse_and_validate() {
        check(DEFAULT_POLICY).unwrap();
        assert!(check("").unwrap_err().0.contains("empty"));
        assert!(check("permit(principal, action, resource) when { context.nope };").is_err());
    }

    #[test]
    fn each_role_may_do_what_it_names_and_nothing_else() {
        let state = state_with(&[
            ("operator:ta", OperatorRole::TenantAdmin(tenant("acme"))),
            ("operator:rv", OperatorRole::Revoker(tenant("acme"))),
            ("operator:au", OperatorRole::Auditor(Some(tenant("acme")))),
            ("operator:all", OperatorRole::Auditor(None)),
            ("operator:vf", OperatorRole::Verifier),
        ]);
        let boot = vec!["operator:root".to_owned()];
        let acme = tenant("acme");
        let beta = tenant("beta");
        let may = |who: &str, action, t: Option<&TenantId>| {
            decide(&state, &boot, who, action, t, None, 0).is_ok()
        };
        // The bootstrap admin may do anything.
        for action in ALL {
            assert!(may("operator:root", action, None), "{action:?}");
            assert!(may("operator:root", action, Some(&beta)), "{action:?}");
        }
        // Tenant admin of acme: acme's tenant calls, not beta's, nothing cluster-wide.
        for action in [
            Action::Revoke,
            Action::SetPolicy,
            Action::ReadPolicy,
            Action::CreateJoinToken,
            Action::ReadAudit,
        ] {
            assert!(may("operator:ta", action, Some(&acme)), "{action:?}");
            assert!(!may("operator:ta", action, Some(&beta)), "{action:?}");
            assert!(!may("operator:ta", action, None), "{action:?}");
        }
        for action in [
            Action::Membership,
            Action::BindRole,
            Action::SetAccessPolicy,
            Action::Lease,
            Action::RotateKey,
        ] {
            assert!(!may("operator:ta", action, None), "{action:?}");
            assert!(!may("operator:ta", action, Some(&acme)), "{action:?}");
        }
        assert!(may("operator:rv", Action::Revoke, Some(&acme)));
        assert!(!may("operator:rv", Action::Revoke, Some(&beta)));
        assert!(!may("operator:rv", Action::SetPolicy, Some(&acme)));
        assert!(may("operator:au", Action::ReadAudit, Some(&acme)));
        assert!(!may("operator:au", Action::ReadAudit, Some(&beta)));
        assert!(!may("operator:au", Action::ReadAudit, None));
        assert!(!may("operator:au", Action::Revoke, Some(&acme)));
        assert!(may("operator:all", Action::ReadAudit, None));
        assert!(may("operator:all", Action::ReadAudit, Some(&beta)));
        assert!(may("operator:vf", Action::ReadPropagation, None));
        assert!(!may("operator:vf", Action::Revoke, Some(&acme)));
        // No role: nothing, and the refusal says why.
        let refused = decide(
            &state,
            &boot,
            "operator:eve",
            Action::ReadStatus,
            None,
            None,
            0,
        )
        .unwrap_err();
        assert!(
            refused.0.contains("operator:eve may not read status"),
            "{refused}"
        );
        assert!(refused.0.contains("no role"), "{refused}");
    }

    #[test]
    fn a_replaced_policy_decides_and_its_version_is_recorded() {
        let mut state = state_with(&[("operator:ta", OperatorRole::TenantAdmin(tenant("acme")))]);
        let text = "permit(principal, action == Action::\"read_status\", resource);";
        check(text).unwrap();
        state.access_policy = Some(lapse_ledger::Policy {
            version: 3,
            text: text.into(),
            set_at_ms: 0,
            epoch: 9,
        });
        let allowed = decide(
            &state,
            &[],
            "operator:x",
            Action::ReadStatus,
            None,
            Some("why".into()),
            0,
        )
        .unwrap();
        assert_eq!(allowed.policy_version, 3);
        assert_eq!(allowed.justification.as_deref(), Some("why"));
        // The default's tenant-admin grant is gone with it.
        assert!(
            decide(
                &state,
                &[],
                "operator:ta",
                Action::Revoke,
                Some(&tenant("acme")),
                None,
                0
            )
            .is_err()
        );
    }
}
