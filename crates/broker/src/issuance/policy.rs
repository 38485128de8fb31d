//! Issuance policy with Cedar. Each tenant's policy is Cedar text stored
//! (versioned) in the ledger; the default, with no policy, denies.
//!
//! A request is: principal `Workload::"<spiffe id>"`, action
//! `Action::"issue"`, resource `Tenant::"<tenant>"`, and a context with the
//! requested `scopes` and `audiences` (sets of strings) and `ttl_seconds`.
//! [`SCHEMA`] says exactly that to Cedar: [`check`] refuses, before anything
//! is proposed, a policy that does not parse, that says nothing, or that
//! names anything the schema does not have. For example:
//!
//! ```text
//! permit(principal == Workload::"spiffe://example.org/payments",
//!        action == Action::"issue", resource == Tenant::"acme")
//! when { ["payments:read"].containsAll(context.scopes)
//!        && ["billing"].containsAll(context.audiences)
//!        && context.ttl_seconds <= 900 };
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::ffi::DetailedError;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicySet, Request,
    Schema, ValidationMode, Validator,
};
use lapse_credential::{TenantId, WorkloadId};
use lapse_ledger::{Decision, MAX_POLICY_BYTES};
use sha2::{Digest, Sha256};

/// Most problems one refusal lists; the rest are counted.
const MAX_PROBLEMS: usize = 5;
/// Longest message of one problem, in characters (it may quote the caller's text).
const MAX_PROBLEM_CHARS: usize = 200;
/// Longest list of problems, in characters: with what a refusal adds around
/// it, a refusal stays within 1,000 characters.
const MAX_PROBLEMS_CHARS: usize = 750;

/// One thing wrong with a policy text, and where when Cedar says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column (in characters) of the first character at fault.
    pub at: Option<(usize, usize)>,
    /// Cedar's words (and its help, when it has some), on one bounded line.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, column)) => write!(f, "policy line {line}, column {column}: "),
            None => write!(f, "policy: "),
        }?;
        f.write_str(&self.message)
    }
}

/// Problems as one bounded line: the first few, then how many more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self
            .0
            .iter()
            .take(MAX_PROBLEMS)
            .map(Problem::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        if self.0.len() > MAX_PROBLEMS {
            line.push_str(&format!("; and {} more", self.0.len() - MAX_PROBLEMS));
        }
        f.write_str(&bounded(&line, MAX_PROBLEMS_CHARS))
    }
}

/// [`SCHEMA`] on one line, for refusals.
struct SchemaLine;

impl fmt::Display for SchemaLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&SCHEMA.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// Why a policy text is refused. Every variant is the caller's to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is {length} bytes, more than the {max} allowed")]
    TooLarge { length: usize, max: usize },
    /// Not Cedar.
    #[error("{0}")]
    Syntax(Problems),
    /// Cedar, but not about what Lapse asks: an unknown entity type, action
    /// or context field, or a wrong type (see [`SCHEMA`]).
    #[error("{0}; a policy may use only what this schema declares: {SchemaLine}")]
    Schema(Problems),
    /// Templates are never linked, so they would never apply.
    #[error(
        "policy has {count} template(s) (`?principal` or `?resource` in the scope); Lapse never links templates, so name the principal or resource instead"
    )]
    Template { count: usize },
    /// No policy: it would deny everything, which must be said, not implied.
    #[error(
        "policy is empty (no statements, only whitespace or comments), and would deny every request; to deny everything, say so explicitly: `forbid(principal, action, resource);`"
    )]
    Empty,
}

/// At most `max` characters of `text`, control characters made spaces,
/// with `…` when cut.
fn bounded(text: &str, max: usize) -> String {
    let mut chars = text.chars().map(|c| if c.is_control() { ' ' } else { c });
    let mut out: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// The 1-based line and column (counted in characters) of byte `offset` of
/// `text`; an offset inside a character is that character's, and one past
/// the end is the position after the last character.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for (at, c) in text.char_indices() {
        if at + c.len_utf8() > offset {
            break;
        }
        if c == '\n' {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// Cedar diagnostics about `text` as [`Problem`]s, in the order of the text.
fn problems(text: &str, details: impl Iterator<Item = DetailedError>) -> Problems {
    let mut problems: Vec<Problem> = details.map(|detail| problem(text, detail)).collect();
    problems.sort_by_key(|p| p.at);
    Problems(problems)
}

/// A Cedar diagnostic about `text` as a [`Problem`]: its message and help,
/// placed at the start of its first labelled span.
fn problem(text: &str, detail: DetailedError) -> Problem {
    let at = detail
        .source_locations
        .iter()
        .map(|label| label.loc.start)
        .min()
        .map(|offset| line_column(text, offset));
    // Cedar names policies by ids it made up (`policy0`); the line says more.
    let message = detail
        .message
        .strip_prefix("for policy `")
        .and_then(|rest| rest.split_once("`, "))
        .map_or(detail.message.as_str(), |(_, rest)| rest);
    let message = match detail.help {
        Some(help) => format!("{message}; {help}"),
        None => message.to_owned(),
    };
    Problem {
        at,
        message: bounded(&message, MAX_PROBLEM_CHARS),
    }
}

/// Parse `text` as a Cedar policy set; the error says where it is wrong.
/// This is what deciding needs: [`check`] is what setting a policy needs.
pub fn parse(text: &str) -> Result<PolicySet, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge {
            length: text.len(),
            max: MAX_POLICY_BYTES,
        });
    }
    PolicySet::from_str(text).map_err(|errors| {
        PolicyError::Syntax(problems(text, errors.iter().map(DetailedError::from)))
    })
}

/// Check that `text` is a policy set worth storing: bounded, Cedar, with at
/// least one policy and no template, and valid (strictly) against
/// [`SCHEMA`], so it can only speak of what Lapse gives Cedar.
pub fn check(text: &str) -> Result<PolicySet, PolicyError> {
    let policies = parse(text)?;
    let templates = policies.templates().count();
    if templates > 0 {
        return Err(PolicyError::Template { count: templates });
    }
    if policies.policies().next().is_none() {
        return Err(PolicyError::Empty);
    }
    let result = validator().validate(&policies, ValidationMode::Strict);
    if !result.validation_passed() {
        return Err(PolicyError::Schema(problems(
            text,
            result.validation_errors().map(DetailedError::from),
        )));
    }
    Ok(policies)
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

/// Every request Lapse asks Cedar about, in Cedar's schema syntax: what
/// [`request`] builds, and all a policy may name. Change both together:
/// [`request`] checks each request against it, and the tests decide with a
/// policy that uses every context field.
pub const SCHEMA: &str = r#"
entity Workload;
entity Tenant;
action issue appliesTo {
    principal: Workload,
    resource: Tenant,
    context: {
        scopes: Set<String>,
        audiences: Set<String>,
        ttl_seconds: Long
    }
};
"#;

/// [`SCHEMA`], parsed once.
fn schema() -> &'static Schema {
    static SCHEMA_PARSED: OnceLock<Schema> = OnceLock::new();
    SCHEMA_PARSED.get_or_init(|| {
        Schema::from_cedarschema_str(SCHEMA)
            .map(|(schema, _warnings)| schema)
            .expect("SCHEMA is a constant that parses (see the schema_parses test)")
    })
}

/// A validator for [`SCHEMA`], built once.
fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| Validator::new(schema().clone()))
}

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
    static NAMES: OnceLock<Option<[EntityTypeName; 3]>> = OnceLock::new();
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

/// The request context for `ask`: one field per context attribute of [`SCHEMA`].
fn context_json(ask: &IssueAsk<'_>) -> serde_json::Value {
    serde_json::json!({
        "scopes": ask.scopes,
        "audiences": ask.audiences,
        "ttl_seconds": ask.ttl_seconds.min(i64::MAX as u64),
    })
}

/// The Cedar request for `ask`, with `context`, checked against [`SCHEMA`]:
/// a request the schema does not describe is an error (and the issuance is
/// refused with it as the reason), never a decision.
fn request(ask: &IssueAsk<'_>, context: serde_json::Value) -> Result<Request, String> {
    let (Some(principal), Some(action), Some(resource)) = (
        uid(Kind::Workload, ask.workload.as_str()),
        uid(Kind::Action, "issue"),
        uid(Kind::Tenant, ask.tenant.as_str()),
    ) else {
        return Err("request entities do not form Cedar ids".into());
    };
    let context =
        Context::from_json_value(context, None).map_err(|e| format!("request context: {e}"))?;
    Request::new(principal, action, resource, context, Some(schema()))
        .map_err(|e| format!("request: {e}"))
}

/// A policy set as parsed, or why it did not parse.
type Parsed = std::sync::Arc<Result<PolicySet, PolicyError>>;

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
    policy: Option<(u64, &Result<PolicySet, PolicyError>)>,
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
    let request = match request(ask, context_json(ask)) {
        Ok(request) => request,
        Err(reason) => return refuse(version, reason),
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

    /// The example in the README, which the CLI documentation sets.
    const README_POLICY: &str = r#"permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900 };"#;

    const DENY_ALL: &str = "forbid(principal, action, resource);";

    fn ask<'a>(t: &'a TenantId, w: &'a WorkloadId, scopes: &'a [String], ttl: u64) -> IssueAsk<'a> {
        IssueAsk {
            tenant: t,
            workload: w,
            scopes,
            audiences: &[],
            ttl_seconds: ttl,
        }
    }

    /// The message `check` refuses `text` with.
    fn refusal(text: &str) -> String {
        match check(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    /// The schema as a refusal quotes it.
    fn schema_line() -> String {
        SchemaLine.to_string()
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
    fn schema_parses() {
        let (_, warnings) = Schema::from_cedarschema_str(SCHEMA).unwrap();
        assert_eq!(warnings.count(), 0);
        assert!(check(POLICY).is_ok());
    }

    /// The schema and the request are one contract: a policy that uses
    /// every entity and context field validates, and deciding with it
    /// through the broker's code path turns on each of them. A context
    /// field added to the request but not to the schema (or the reverse)
    /// makes `request` fail, and this test with it.
    #[test]
    fn every_field_of_the_schema_reaches_the_decision() {
        const EVERY_FIELD: &str = r#"
            permit(principal == Workload::"spiffe://example.org/payments",
                   action == Action::"issue", resource == Tenant::"acme")
            when { context.scopes.contains("payments:read")
                   && context.audiences.contains("billing")
                   && context.ttl_seconds <= 900 };
        "#;
        check(EVERY_FIELD).unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let workload = WorkloadId::new("spiffe://example.org/payments").unwrap();
        let scopes = vec!["payments:read".to_string()];
        let audiences = vec!["billing".to_string()];
        let full = IssueAsk {
            tenant: &tenant,
            workload: &workload,
            scopes: &scopes,
            audiences: &audiences,
            ttl_seconds: 900,
        };
        let cache = PolicyCache::default();
        let allowed = cache.decide(Some((1, EVERY_FIELD)), &full);
        assert!(allowed.allowed, "{}", allowed.reason);
        let other_tenant = TenantId::new("other").unwrap();
        let other_workload = WorkloadId::new("spiffe://example.org/other").unwrap();
        let none: Vec<String> = Vec::new();
        for (what, changed) in [
            (
                "tenant",
                IssueAsk {
                    tenant: &other_tenant,
                    ..full.clone()
                },
            ),
            (
                "workload",
                IssueAsk {
                    workload: &other_workload,
                    ..full.clone()
                },
            ),
            (
                "scopes",
                IssueAsk {
                    scopes: &none,
                    ..full.clone()
                },
            ),
            (
                "audiences",
                IssueAsk {
                    audiences: &none,
                    ..full.clone()
                },
            ),
            (
                "ttl_seconds",
                IssueAsk {
                    ttl_seconds: 901,
                    ..full.clone()
                },
            ),
        ] {
            let denied = cache.decide(Some((1, EVERY_FIELD)), &changed);
            assert!(!denied.allowed, "{what}");
            // Denied by the policy, not by an error.
            assert!(
                denied.reason.contains("does not permit"),
                "{what}: {}",
                denied.reason
            );
        }
        // A ttl beyond what Cedar's Long holds is clamped, not an error.
        let huge = cache.decide(
            Some((1, EVERY_FIELD)),
            &IssueAsk {
                ttl_seconds: u64::MAX,
                ..full.clone()
            },
        );
        assert!(huge.reason.contains("does not permit"), "{}", huge.reason);

        // The check can fail: a context the schema does not describe is refused.
        let mut extra = context_json(&full);
        extra["attestation"] = serde_json::json!("join-token");
        let error = request(&full, extra).unwrap_err();
        assert!(error.contains("attestation"), "{error}");
        let mut missing = context_json(&full);
        missing.as_object_mut().unwrap().remove("ttl_seconds");
        let error = request(&full, missing).unwrap_err();
        assert!(error.contains("is not valid for"), "{error}");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let text = "permit(principal, action, resource)\nwhen { context.ttl_seconds <= 900\n       && context.scopes.contains(\"a\") ;";
        assert_eq!(
            refusal(text),
            "policy line 3, column 40: unexpected token `;`"
        );
        assert_eq!(
            refusal("permit(principal, action, resource) when {"),
            "policy line 1, column 43: unexpected end of input"
        );
        // Columns count characters, not bytes (in bytes this is column 61).
        assert_eq!(
            refusal("// é\npermit(principal, action, resource) when { \"ééé\" == 1 } x;"),
            "policy line 2, column 58: unexpected token `;`"
        );
    }

    #[test]
    fn unknown_context_fields_are_refused() {
        let text = r#"permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { context.ttl <= 900 };"#;
        assert_eq!(
            refusal(text),
            format!(
                "policy line 3, column 8: attribute `ttl` in context for Action::\"issue\" not found; did you mean `scopes`?; a policy may use only what this schema declares: {}",
                schema_line()
            )
        );
    }

    #[test]
    fn wrong_types_are_refused() {
        let text = "permit(principal, action, resource)\nwhen { context.ttl_seconds <= \"900\" };";
        assert_eq!(
            refusal(text),
            format!(
                "policy line 2, column 31: unexpected type: expected Long but saw String; a policy may use only what this schema declares: {}",
                schema_line()
            )
        );
        let text = "permit(principal, action, resource)\nwhen { context.scopes <= 900 };";
        assert!(
            refusal(text).starts_with(
                "policy line 2, column 8: unexpected type: expected Long but saw Set<String>;"
            ),
            "{}",
            refusal(text)
        );
    }

    #[test]
    fn unknown_actions_and_entity_types_are_refused() {
        assert_eq!(
            refusal(r#"permit(principal, action == Action::"revoke", resource);"#),
            format!(
                "policy line 1, column 1: unable to find an applicable action given the policy scope constraints; policy line 1, column 29: unrecognized action `Action::\"revoke\"`; did you mean `Action::\"issue\"`?; a policy may use only what this schema declares: {}",
                schema_line()
            )
        );
        assert!(
            refusal("permit(principal is Admin, action, resource);")
                .contains("policy line 1, column 21: unrecognized entity type `Admin`"),
            "{}",
            refusal("permit(principal is Admin, action, resource);")
        );
    }

    #[test]
    fn empty_policies_are_refused() {
        let empty = "policy is empty (no statements, only whitespace or comments), and would deny every request; to deny everything, say so explicitly: `forbid(principal, action, resource);`";
        assert_eq!(refusal(""), empty);
        assert_eq!(refusal(" \n\t\n"), empty);
        assert_eq!(refusal("// nothing yet\n  // still nothing\n"), empty);
    }

    #[test]
    fn explicit_deny_all_is_accepted_and_denies() {
        check(DENY_ALL).unwrap();
        check("// no issuance for this tenant\nforbid(principal, action, resource);\n").unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let workload = WorkloadId::new("spiffe://example.org/payments").unwrap();
        let denied = decide(Some((1, DENY_ALL)), &ask(&tenant, &workload, &[], 60));
        assert!(
            !denied.allowed && denied.reason.contains("does not permit"),
            "{}",
            denied.reason
        );
    }

    #[test]
    fn templates_are_refused() {
        assert_eq!(
            refusal("permit(principal == ?principal, action, resource);"),
            "policy has 1 template(s) (`?principal` or `?resource` in the scope); Lapse never links templates, so name the principal or resource instead"
        );
    }

    /// Every policy the project documents or sets in tests, benchmarks and
    /// the simulation validates.
    #[test]
    fn documented_and_used_policies_are_accepted() {
        let readme = include_str!("../../../../README.md");
        let example = readme
            .split_once("cat > acme.cedar <<'POLICY'\n")
            .and_then(|(_, rest)| rest.split_once("\nPOLICY\n"))
            .map(|(example, _)| example)
            .expect("the README shows the acme.cedar example");
        assert_eq!(example, README_POLICY);
        for text in [
            README_POLICY, // also tests/feed.rs
            POLICY,        // also tests/issuance.rs
            DENY_ALL,
            "permit(principal, action, resource);", // crates/ledger/tests
            // benches/benches/issue.rs and simulation/src/harness.rs
            r#"permit(principal, action == Action::"issue", resource == Tenant::"bench");"#,
            r#"permit(principal, action == Action::"issue", resource == Tenant::"sim");"#,
        ] {
            if let Err(e) = check(text) {
                panic!("{text}\n{e}");
            }
        }
    }

    #[test]
    fn refusals_are_bounded_and_quote_little() {
        let long_name = "x".repeat(10_000);
        let text =
            format!("permit(principal, action, resource) when {{ {long_name} }};\n").repeat(5);
        let message = refusal(&text);
        assert!(message.chars().count() <= 1000, "{}", message.len());
        assert!(
            !message.contains(&"x".repeat(MAX_PROBLEM_CHARS)),
            "{message}"
        );
        let many = "permit(principal, action, resource) when { context.nope };\n".repeat(100);
        let message = refusal(&many);
        assert!(message.chars().count() <= 1000, "{}", message.len());
        assert!(message.contains("and 95 more"), "{message}");
        let huge = "/".repeat(MAX_POLICY_BYTES + 1);
        assert_eq!(
            check(&huge).unwrap_err(),
            PolicyError::TooLarge {
                length: MAX_POLICY_BYTES + 1,
                max: MAX_POLICY_BYTES
            }
        );
    }

    #[test]
    fn line_column_counts_characters_from_one() {
        let text = "ab\né\n\nxyz";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 2), (1, 3));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 5), (2, 2));
        assert_eq!(line_column(text, 6), (3, 1));
        assert_eq!(line_column(text, 9), (4, 3));
        assert_eq!(line_column(text, 1_000), (4, 4));
        // Inside a character: the position of that character.
        assert_eq!(line_column(text, 4), (2, 1));
    }

    #[test]
    fn malformed_stored_policies_deny_with_the_reason() {
        let tenant = TenantId::new("acme").unwrap();
        let workload = WorkloadId::new("spiffe://example.org/payments").unwrap();
        let denied = decide(
            Some((2, "permit(principal, action, resource) when {")),
            &ask(&tenant, &workload, &[], 60),
        );
        assert_eq!(
            denied.reason,
            "policy version 2 does not parse: policy line 1, column 43: unexpected end of input"
        );
    }
}
