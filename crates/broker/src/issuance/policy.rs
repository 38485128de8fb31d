//! Issuance policy with Cedar. Each tenant's policy is Cedar text stored
//! (versioned) in the ledger; the default, with no policy, denies.
//!
//! A request is: principal `Workload::"<spiffe id>"`, action
//! `Action::"issue"`, resource `Tenant::"<tenant>"`, and a context with the
//! requested `scopes` and `audiences` (sets of strings) and `ttl_seconds`.
//! For example:
//!
//! ```text
//! permit(principal == Workload::"spiffe://example.org/payments",
//!        action == Action::"issue", resource == Tenant::"acme")
//! when { ["payments:read"].containsAll(context.scopes)
//!        && ["billing"].containsAll(context.audiences)
//!        && context.ttl_seconds <= 900 };
//! ```

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicySet, Request,
};
use lapse_credential::{TenantId, WorkloadId};
use lapse_ledger::Decision;
use sha2::{Digest, Sha256};

#[derive(Clone, Copy)]
enum Kind {
    Workload,
    Action,
    Tenant,
}

/// An entity uid of `kind` with `id`. Type names are parsed once: running
/// Cedar's parser on every request costs more than the decision itself.
fn uid(kind: Kind, id: &str) -> Option<EntityUid> {
    use cedar_policy::{EntityId, EntityTypeName};
    static NAMES: std::sync::OnceLock<Option<[EntityTypeName; 3]>> = std::sync::OnceLock::new();
    let names = NAMES
        .get_or_init(|| {
            Some([
                EntityTypeName::from_str("Workload").ok()?,
                EntityTypeName::from_str("Action").ok()?,
                EntityTypeName::from_str("Tenant").ok()?,
            ])
        })
        .as_ref()?;
    Some(EntityUid::from_type_name_and_id(
        names[kind as usize].clone(),
        EntityId::new(id),
    ))
}

/// Check that `text` is a Cedar policy set; the error says where it is wrong.
pub fn parse(text: &str) -> Result<PolicySet, String> {
    PolicySet::from_str(text).map_err(|e| format!("{e:?}").replace('\n', " "))
}

/// What a workload asks for.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssueAsk<'a> {
    pub tenant: &'a TenantId,
    pub workload: &'a WorkloadId,
    pub scopes: &'a [String],
    pub audiences: &'a [String],
    pub ttl_seconds: u64,
}

/// A policy set as parsed, or why it did not parse.
type Parsed = std::sync::Arc<Result<PolicySet, String>>;

/// Parsed policy sets by tenant and version, so each version is parsed once.
#[derive(Default)]
pub struct PolicyCache {
    parsed: std::sync::Mutex<std::collections::BTreeMap<TenantId, (u64, Parsed)>>,
}

impl PolicyCache {
    /// Decide `ask` against `policy`, the tenant's current (version, text).
    pub fn decide(&self, policy: Option<(u64, &str)>, ask: &IssueAsk<'_>) -> Decision {
        let Some((version, text)) = policy else {
            return decide_parsed(None, ask);
        };
        let parsed = {
            let mut cache = self.parsed.lock().expect("policy cache lock");
            match cache.get(ask.tenant) {
                Some((cached, parsed)) if *cached == version => parsed.clone(),
                _ => {
                    let parsed = std::sync::Arc::new(parse(text));
                    cache.insert(ask.tenant.clone(), (version, parsed.clone()));
                    parsed
                }
            }
        };
        decide_parsed(Some((version, &parsed)), ask)
    }
}

/// Decide `ask` against a tenant's policy (`None`: no policy, so deny).
pub fn decide(policy: Option<(u64, &str)>, ask: &IssueAsk<'_>) -> Decision {
    match policy {
        None => decide_parsed(None, ask),
        Some((version, text)) => decide_parsed(Some((version, &parse(text))), ask),
    }
}

fn decide_parsed(
    policy: Option<(u64, &Result<PolicySet, String>)>,
    ask: &IssueAsk<'_>,
) -> Decision {
    let input_sha256: [u8; 32] = Sha256::digest(serde_json::to_vec(ask).unwrap_or_default()).into();
    let refuse = |version, reason: String| Decision {
        policy_version: version,
        input_sha256,
        allowed: false,
        reason,
    };
    let Some((version, parsed)) = policy else {
        return refuse(
            0,
            format!(
                "tenant {} has no issuance policy, and the default denies",
                ask.tenant
            ),
        );
    };
    let policies = match parsed {
        Ok(policies) => policies,
        Err(e) => {
            return refuse(
                version,
                format!("policy version {version} does not parse: {e}"),
            );
        }
    };
    let (Some(principal), Some(action), Some(resource)) = (
        uid(Kind::Workload, ask.workload.as_str()),
        uid(Kind::Action, "issue"),
        uid(Kind::Tenant, ask.tenant.as_str()),
    ) else {
        return refuse(version, "request entities do not form Cedar ids".into());
    };
    let context = match Context::from_json_value(
        serde_json::json!({
            "scopes": ask.scopes,
            "audiences": ask.audiences,
            "ttl_seconds": ask.ttl_seconds.min(i64::MAX as u64),
        }),
        None,
    ) {
        Ok(context) => context,
        Err(e) => return refuse(version, format!("request context: {e}")),
    };
    let request = match Request::new(principal, action, resource, context, None) {
        Ok(request) => request,
        Err(e) => return refuse(version, format!("request: {e}")),
    };
    let response = Authorizer::new().is_authorized(&request, policies, &Entities::empty());
    match response.decision() {
        CedarDecision::Allow => Decision {
            policy_version: version,
            input_sha256,
            allowed: true,
            reason: String::new(),
        },
        CedarDecision::Deny => {
            let errors: Vec<String> = response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect();
            let reason = if errors.is_empty() {
                format!(
                    "policy version {version} does not permit workload {} of tenant {} to get scopes {:?}, audiences {:?} for {} s",
                    ask.workload, ask.tenant, ask.scopes, ask.audiences, ask.ttl_seconds
                )
            } else {
                format!(
                    "policy version {version} failed to evaluate: {}",
                    errors.join("; ")
                )
            };
            refuse(version, reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
        permit(principal == Workload::"spiffe://example.org/payments",
               action == Action::"issue", resource == Tenant::"acme")
        when { ["payments:read", "payments:write"].containsAll(context.scopes)
               && ["billing"].containsAll(context.audiences)
               && context.ttl_seconds <= 900 };
    "#;

    fn ask<'a>(t: &'a TenantId, w: &'a WorkloadId, scopes: &'a [String], ttl: u64) -> IssueAsk<'a> {
        IssueAsk {
            tenant: t,
            workload: w,
            scopes,
            audiences: &[],
            ttl_seconds: ttl,
        }
    }

    #[test]
    fn permits_within_policy_and_denies_beyond_it() {
        let tenant = TenantId::new("acme").unwrap();
        let workload = WorkloadId::new("spiffe://example.org/payments").unwrap();
        let read = vec!["payments:read".to_string()];
        let admin = vec!["payments:admin".to_string()];
        let allowed = decide(Some((3, POLICY)), &ask(&tenant, &workload, &read, 600));
        assert!(allowed.allowed, "{}", allowed.reason);
        assert_eq!(allowed.policy_version, 3);
        assert!(!decide(Some((3, POLICY)), &ask(&tenant, &workload, &admin, 600)).allowed);
        assert!(!decide(Some((3, POLICY)), &ask(&tenant, &workload, &read, 901)).allowed);
        let other = WorkloadId::new("spiffe://example.org/other").unwrap();
        assert!(!decide(Some((3, POLICY)), &ask(&tenant, &other, &read, 60)).allowed);
        let denied = decide(None, &ask(&tenant, &workload, &read, 60));
        assert!(!denied.allowed && denied.reason.contains("default denies"));
        // Different inputs hash differently; the same inputs the same.
        let again = decide(Some((3, POLICY)), &ask(&tenant, &workload, &read, 600));
        assert_eq!(again.input_sha256, allowed.input_sha256);
        assert_ne!(
            decide(Some((3, POLICY)), &ask(&tenant, &workload, &read, 601)).input_sha256,
            allowed.input_sha256
        );
    }

    #[test]
    fn malformed_policies_are_reported() {
        assert!(parse("permit(principal, action, resource) when {").is_err());
        assert!(parse(POLICY).is_ok());
    }
}
