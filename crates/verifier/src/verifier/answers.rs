//! What a verification answers: the credential accepted with its facts
//! (and its agent context), or why it was rejected; and the verifier's
//! status as `/v1/status` shows it.

use lapse_credential::AgentContext;
use serde::Serialize;

/// Why a credential was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    #[error("the verifier has no revocation state yet")]
    NoState,
    /// `stale_ms` is `u64::MAX` when no confirmed heartbeat arrived yet.
    #[error("the verifier is stale: {}", stale_words(.stale_ms, .bound_ms))]
    Stale { stale_ms: u64, bound_ms: u64 },
    #[error("invalid credential: {detail}")]
    Invalid { detail: String },
    #[error("key {key_id} did not sign credentials issued at {issued_at_ms} ms")]
    KeyOutsideWindow { key_id: String, issued_at_ms: u64 },
    #[error("wrong tenant: expected {expected}, credential is for {found}")]
    WrongTenant { expected: String, found: String },
    #[error("revoked: {by}")]
    Revoked { by: String },
    /// Neither the verifier's configuration nor the call named an
    /// audience, and the verifier was not told to accept any.
    #[error(
        "no audience to check: configure one, name one in the request, or accept any audience explicitly"
    )]
    NoAudience,
    /// A key-bound credential without a valid DPoP proof by its key.
    #[error("proof of possession: {detail}")]
    ProofOfPossession { detail: String },
}

fn stale_words(stale_ms: &u64, bound_ms: &u64) -> String {
    if *stale_ms == u64::MAX {
        format!("no confirmed heartbeat yet (bound {bound_ms} ms)")
    } else {
        format!("no confirmed heartbeat for {stale_ms} ms (bound {bound_ms} ms)")
    }
}

impl Rejection {
    /// A short machine-readable name.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::NoState => "no_state",
            Rejection::Stale { .. } => "stale",
            Rejection::Invalid { .. } => "invalid",
            Rejection::KeyOutsideWindow { .. } => "key_outside_window",
            Rejection::WrongTenant { .. } => "wrong_tenant",
            Rejection::Revoked { .. } => "revoked",
            Rejection::NoAudience => "no_audience",
            Rejection::ProofOfPossession { .. } => "proof_of_possession",
        }
    }
}

/// An accepted credential.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accepted {
    pub subject: String,
    pub tenant: String,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub key_id: String,
    /// The credential's status index; 0 for a break-glass credential,
    /// which has none.
    pub status_index: u64,
    pub expires_at: u64,
    pub jti: String,
    /// The epoch of the revocation state it was checked against.
    pub epoch: u64,
    /// Accepted while stale: because the verifier fails open, or because
    /// it is a break-glass credential.
    pub stale: bool,
    /// Set for a break-glass credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlassAccepted>,
    /// Who acts, for whom, under which task, delegated from what: the
    /// credential's agent context (empty for an undelegated credential
    /// with no task). In JSON its fields sit beside the others.
    #[serde(flatten)]
    pub agent: AcceptedAgent,
}

/// The delegation and task context of an accepted credential, so a service
/// can log "agent X acting for user U under task T, delegated from Y".
/// `subject` stays the attested workload at the root of the chain.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AcceptedAgent {
    /// The party acting now: the outermost `act.sub` (RFC 8693); `None`
    /// when the credential is not delegated and its subject acts itself.
    pub actor: Option<String>,
    /// Every actor, the current one first; the last is the one the
    /// subject delegated to.
    pub actors: Vec<String>,
    /// The status indices of the credentials it was exchanged from, the
    /// root's first; revoking any of them revokes this one.
    pub ancestors: Vec<u64>,
    /// How many exchanges lie between it and its root (0: not delegated).
    pub delegation_depth: usize,
    pub task: Option<String>,
    /// The user (or other principal) the agent acts for.
    pub on_behalf_of: Option<String>,
    /// The SHA-256 (hex) the caller gave of what it is about to do.
    pub intent: Option<String>,
}

impl AcceptedAgent {
    pub(super) fn of(agent: &AgentContext) -> Self {
        let actors: Vec<String> = agent
            .act
            .as_ref()
            .map(|act| act.chain().into_iter().map(|a| a.to_string()).collect())
            .unwrap_or_default();
        Self {
            actor: actors.first().cloned(),
            actors,
            ancestors: agent.ancestors.clone(),
            delegation_depth: agent.depth(),
            task: agent.task.clone(),
            on_behalf_of: agent.on_behalf_of.clone(),
            intent: agent.intent.clone(),
        }
    }
}

/// What an accepted break-glass credential says about itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakGlassAccepted {
    pub reason: String,
}

/// The verifier's health, for status and metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifierStatus {
    pub epoch: Option<u64>,
    /// The epoch of the last state a heartbeat vouched for (signed, when
    /// the verifier checks signatures).
    pub vouched_epoch: Option<u64>,
    /// Whether heartbeats must carry a broker's signature.
    pub signed_heartbeats: bool,
    pub fresh: bool,
    /// Why the verifier is not fresh, in words: since when no heartbeat
    /// came, from which broker, and what the broker said; `None` when
    /// fresh.
    pub stale_reason: Option<String>,
    /// The last heartbeat came from this broker.
    pub heartbeat_broker_id: Option<u64>,
    /// A broker said, since the last heartbeat, that it withholds them.
    pub withheld: Option<WithheldNotice>,
    pub fail_open: bool,
    /// Since the last confirmed heartbeat, ms.
    pub since_heartbeat_ms: Option<u64>,
    pub staleness_bound_ms: u64,
    pub broker_id: Option<u64>,
    pub clock_offset_ms: Option<i64>,
    pub clock_drift_ppm: Option<f64>,
    pub revoked_indices: usize,
    pub rules: usize,
    pub secrets: usize,
    pub keys: usize,
    pub applied_events: u64,
    pub rejected_events: u64,
    /// Times the state received was dropped back to the vouched one,
    /// because a signed heartbeat vouched for another state.
    pub unvouched_drops: u64,
    /// Times expired state was aged out.
    pub age_outs: u64,
    pub snapshots: u64,
    pub deltas: u64,
    pub heartbeats: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub stale_rejections: u64,
    /// Credentials accepted while stale: fail-open acceptances and
    /// break-glass ones.
    pub accepted_while_stale: u64,
    /// The break-glass keys this verifier accepts credentials of.
    pub break_glass_keys: Vec<String>,
    pub break_glass_accepted: u64,
    pub break_glass_rejected: u64,
    /// Emergency uses (break-glass and fail-open acceptances) waiting to
    /// be reported to a broker, as credentials.
    pub emergency_uses_pending: usize,
    /// Emergency uses handed to a broker whose recording it has not yet
    /// confirmed, as credentials: they are queued again if the
    /// subscription ends first.
    pub emergency_uses_unconfirmed: usize,
    /// Emergency uses handed to a broker subscription for reporting.
    pub emergency_uses_reported: u64,
    /// Emergency uses lost because the queue was full.
    pub emergency_uses_dropped: u64,
    /// Verified signatures remembered now, and the most that may be.
    pub signatures_remembered: usize,
    pub signature_memory_capacity: usize,
    /// Verifications whose signature was taken from memory (or from
    /// another verifier of the process that checked it).
    pub signatures_recalled: u64,
}

/// A broker's word that it withholds heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WithheldNotice {
    pub broker_id: u64,
    pub reason: String,
    /// How long ago it said so, ms.
    pub age_ms: u64,
}
