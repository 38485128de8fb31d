//! Issuance policy with Cedar. Each tenant's policy is Cedar text stored
//! (versioned) in the ledger; the default, with no policy, denies.
//!
//! A request is: principal `Workload::"<spiffe id>"`, action
//! `Action::"issue"`, resource `Tenant::"<tenant>"`, and a context with the
//! requested `scopes` and `audiences` (sets of strings) and `ttl_seconds`,
//! whether it is a `refresh` or an `exchange` (RFC 8693 delegation), the
//! `parent_scopes` of the credential presented, the delegation chain
//! (`actor`, `delegators`, `delegation_depth`) and the task context
//! (`task`, `on_behalf_of`, `intent`; empty strings when absent).
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
use lapse_credential::TenantId;
use lapse_ledger::{
    Decision, DecisionInputs, DecisionKind, MAX_POLICY_BYTES, MAX_POLICY_NESTING, policy_nesting,
};
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
    /// Refused before Cedar sees it: its parser recurses once per level.
    #[error(
        "policy nests brackets {depth} deep, more than the {max} allowed; write the condition with less nesting"
    )]
    TooDeep { depth: usize, max: usize },
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
pub(crate) fn problems(text: &str, details: impl Iterator<Item = DetailedError>) -> Problems {
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
/// A text too long or nested too deeply is refused before Cedar's parser,
/// which would overflow the stack on a few hundred nested brackets, sees it.
pub fn parse(text: &str) -> Result<PolicySet, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge {
            length: text.len(),
            max: MAX_POLICY_BYTES,
        });
    }
    let depth = policy_nesting(text);
    if depth > MAX_POLICY_NESTING {
        return Err(PolicyError::TooDeep {
            depth,
            max: MAX_POLICY_NESTING,
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
        ttl_seconds: Long,
        refresh: Bool,
        chain_age_seconds: Long,
        exchange: Bool,
        parent_scopes: Set<String>,
        actor: String,
        delegators: Set<String>,
        delegation_depth: Long,
        task: String,
        on_behalf_of: String,
        intent: String
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

/// The request context for `ask` as JSON (what [`context`] builds, for
/// the tests): one field per context attribute of
/// [`SCHEMA`]. An absent task, subject or intent is the empty string, the
/// current actor is the first of the `act` chain (empty when undelegated),
/// and `delegators` the rest of it.
#[cfg(test)]
fn context_json(ask: &DecisionInputs) -> serde_json::Value {
    let actor = ask.actors.first().map_or("", |a| a.as_str());
    let delegators: Vec<&str> = ask.actors.iter().skip(1).map(|a| a.as_str()).collect();
    serde_json::json!({
        "scopes": ask.scopes,
        "audiences": ask.audiences,
        "ttl_seconds": ask.ttl_seconds.min(i64::MAX as u64),
        "refresh": ask.kind == DecisionKind::Refresh,
        "chain_age_seconds": ask.chain_age_seconds.min(i64::MAX as u64),
        "exchange": ask.kind == DecisionKind::Exchange,
        "parent_scopes": ask.parent_scopes,
        "actor": actor,
        "delegators": delegators,
        "delegation_depth": ask.depth,
        "task": ask.task.as_deref().unwrap_or(""),
        "on_behalf_of": ask.on_behalf_of.as_deref().unwrap_or(""),
        "intent": ask.intent.as_deref().unwrap_or(""),
    })
}

/// The same context as [`context_json`], built as Cedar values directly:
/// no JSON written and parsed back on every decision.
fn context(ask: &DecisionInputs) -> Result<Context, RequestError> {
    use cedar_policy::RestrictedExpression as E;
    let strings = |items: &[String]| E::new_set(items.iter().map(|i| E::new_string(i.clone())));
    let long = |n: u64| E::new_long(n.min(i64::MAX as u64) as i64);
    let text = |t: &Option<String>| E::new_string(t.clone().unwrap_or_default());
    let actor = ask
        .actors
        .first()
        .map_or(String::new(), |a| a.as_str().to_owned());
    let delegators = E::new_set(
        ask.actors
            .iter()
            .skip(1)
            .map(|a| E::new_string(a.as_str().to_owned())),
    );
    Context::from_pairs([
        ("scopes".to_owned(), strings(&ask.scopes)),
        ("audiences".to_owned(), strings(&ask.audiences)),
        ("ttl_seconds".to_owned(), long(ask.ttl_seconds)),
        (
            "refresh".to_owned(),
            E::new_bool(ask.kind == DecisionKind::Refresh),
        ),
        ("chain_age_seconds".to_owned(), long(ask.chain_age_seconds)),
        (
            "exchange".to_owned(),
            E::new_bool(ask.kind == DecisionKind::Exchange),
        ),
        ("parent_scopes".to_owned(), strings(&ask.parent_scopes)),
        ("actor".to_owned(), E::new_string(actor)),
        ("delegators".to_owned(), delegators),
        ("delegation_depth".to_owned(), long(u64::from(ask.depth))),
        ("task".to_owned(), text(&ask.task)),
        ("on_behalf_of".to_owned(), text(&ask.on_behalf_of)),
        ("intent".to_owned(), text(&ask.intent)),
    ])
    .map_err(|e| RequestError::Context(e.to_string()))
}

/// The Cedar request for `ask`, with `context` as JSON, checked against
/// [`SCHEMA`] (see [`request_with`]).
#[cfg(test)]
fn request(ask: &DecisionInputs, context: serde_json::Value) -> Result<Request, RequestError> {
    let context = Context::from_json_value(context, None)
        .map_err(|e| RequestError::Context(e.to_string()))?;
    request_with(ask, context)
}

/// The Cedar request for `ask`, with `context`, checked against [`SCHEMA`]:
/// a request the schema does not describe is an error (and the issuance is
/// refused with it as the reason), never a decision.
fn request_with(ask: &DecisionInputs, context: Context) -> Result<Request, RequestError> {
    let (Some(principal), Some(action), Some(resource)) = (
        uid(Kind::Workload, ask.workload.as_str()),
        uid(Kind::Action, "issue"),
        uid(Kind::Tenant, ask.tenant.as_str()),
    ) else {
        return Err(RequestError::Ids);
    };
    Request::new(principal, action, resource, context, Some(schema()))
        .map_err(|e| RequestError::Schema(e.to_string()))
}

/// Why no Cedar request could be built for an issuance.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("request entities do not form Cedar ids")]
    Ids,
    #[error("request context: {0}")]
    Context(String),
    #[error("request: {0}")]
    Schema(String),
}

/// A policy set as parsed, or why it did not parse.
type Parsed = Result<PolicySet, PolicyError>;

/// A tenant's policy as cached: its version, the SHA-256 of its text (the
/// evidence names it), and the text parsed.
pub struct CachedPolicy {
    pub version: u64,
    pub sha256: [u8; 32],
    parsed: Parsed,
}

/// Parsed policy sets by tenant and version, so each version is parsed
/// (and hashed) once.
#[derive(Default)]
pub struct PolicyCache {
    parsed: std::sync::Mutex<std::collections::BTreeMap<TenantId, std::sync::Arc<CachedPolicy>>>,
}

impl PolicyCache {
    /// The tenant's policy at `version`, parsed and hashed from `text` the
    /// first time this version is asked for.
    pub fn current(
        &self,
        tenant: &TenantId,
        version: u64,
        text: &str,
    ) -> std::sync::Arc<CachedPolicy> {
        let mut cache = self.parsed.lock().expect("policy cache lock");
        match cache.get(tenant) {
            Some(cached) if cached.version == version => cached.clone(),
            _ => {
                let cached = std::sync::Arc::new(CachedPolicy {
                    version,
                    sha256: Sha256::digest(text.as_bytes()).into(),
                    parsed: parse(text),
                });
                cache.insert(tenant.clone(), cached.clone());
                cached
            }
        }
    }

    /// Decide `ask` against `policy`, the tenant's current (version, text).
    pub fn decide(&self, policy: Option<(u64, &str)>, ask: &DecisionInputs) -> Decision {
        let Some((version, text)) = policy else {
            return decide_parsed(None, ask);
        };
        let cached = self.current(&ask.tenant, version, text);
        decide_cached(Some(&cached), ask)
    }
}

/// Decide `ask` against a tenant's cached policy (`None`: no policy, so deny).
pub fn decide_cached(policy: Option<&CachedPolicy>, ask: &DecisionInputs) -> Decision {
    decide_parsed(policy.map(|p| (p.version, &p.parsed)), ask)
}

/// Decide `ask` against a tenant's policy (`None`: no policy, so deny).
pub fn decide(policy: Option<(u64, &str)>, ask: &DecisionInputs) -> Decision {
    match policy {
        None => decide_parsed(None, ask),
        Some((version, text)) => decide_parsed(Some((version, &parse(text))), ask),
    }
}

fn decide_parsed(
    policy: Option<(u64, &Result<PolicySet, PolicyError>)>,
    ask: &DecisionInputs,
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
    let request = match context(ask).and_then(|context| request_with(ask, context)) {
        Ok(request) => request,
        Err(reason) => return refuse(version, reason.to_string()),
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
                match ask.actors.first() {
                    None => format!(
                        "policy version {version} does not permit workload {} of tenant {} to get scopes {:?}, audiences {:?} for {} s",
                        ask.workload, ask.tenant, ask.scopes, ask.audiences, ask.ttl_seconds
                    ),
                    Some(actor) => format!(
                        "policy version {version} does not permit workload {} of tenant {} to delegate to {actor} at depth {}: scopes {:?}, audiences {:?} for {} s",
                        ask.workload,
                        ask.tenant,
                        ask.depth,
                        ask.scopes,
                        ask.audiences,
                        ask.ttl_seconds
                    ),
                }
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
mod tests;
