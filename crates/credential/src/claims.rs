//! The claims of a Lapse credential: standard JWT claims, the tenant and
//! scopes, the status index in the IETF Token Status List shape
//! (`status.status_list.idx`), `cnf.jkt` for key-bound credentials, and
//! the delegation and task context of credentials minted for agents.

use serde::{Deserialize, Serialize};

use crate::ids::{StatusIndex, TenantId, WorkloadId};

/// Where a credential's revocation status lives (Token Status List draft).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListRef {
    pub idx: u64,
    pub uri: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusClaim {
    pub status_list: StatusListRef,
}

/// The refresh chain a credential belongs to: every credential refreshed
/// from one attestation shares its status index `idx`, so revoking any of
/// them revokes them all (verifiers check the index, offline), and `iat`
/// is when that attestation was, so a chain can be held to a maximum age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub idx: u64,
    /// Seconds since the Unix epoch.
    pub iat: u64,
}

/// RFC 9449 confirmation: the thumbprint of the key the credential is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: WorkloadId,
    pub aud: Vec<String>,
    /// Seconds since the Unix epoch.
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
    pub tenant: TenantId,
    pub scopes: Vec<String>,
    pub status: StatusClaim,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cnf: Option<Confirmation>,
    /// The refresh chain; absent on credentials issued before chains.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub chain: Option<Chain>,
    /// Delegation (RFC 8693 `act`, the ancestors' status indices) and task
    /// context; all absent on a credential issued on an attestation with
    /// no task.
    #[serde(flatten)]
    pub agent: AgentContext,
}

/// The most delegation steps between a credential issued on an
/// attestation and one exchanged from it: the `act` chain's length and the
/// number of ancestors. A tenant's policy may allow fewer, never more.
pub const MAX_DELEGATION_DEPTH: usize = 8;
/// The longest task id, in bytes.
pub const MAX_TASK_BYTES: usize = 128;
/// The longest `on_behalf_of`, in bytes.
pub const MAX_ON_BEHALF_OF_BYTES: usize = 256;

/// RFC 8693 §4.1 actor claim: `sub` is the party acting now; a nested
/// `act` is the party that delegated to it, and so on. The outermost actor
/// is the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: WorkloadId,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// A chain of actors from a list, current actor first.
    pub fn from_chain(actors: &[WorkloadId]) -> Option<Actor> {
        actors.iter().rev().fold(None, |inner, sub| {
            Some(Actor {
                sub: sub.clone(),
                act: inner.map(Box::new),
            })
        })
    }

    /// Every actor, the current one first.
    pub fn chain(&self) -> Vec<&WorkloadId> {
        let mut out = vec![&self.sub];
        let mut at = self.act.as_deref();
        while let Some(actor) = at {
            out.push(&actor.sub);
            at = actor.act.as_deref();
        }
        out
    }
}

/// What a credential says about delegation and the task it serves.
///
/// `sub` of a delegated credential stays the attested workload at the
/// root of the chain (so subject and tenant revocations and SPIFFE-id
/// rules cover everything delegated from it); the party holding it is the
/// outermost `act`. The user an agent acts for is `on_behalf_of`, a value
/// the root's holder asserted at issuance and every exchange inherits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentContext {
    /// RFC 8693 actor chain; absent on an undelegated credential.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub act: Option<Actor>,
    /// The status indices of every credential this one was exchanged from,
    /// the root first: a verifier refuses it when any is revoked, so
    /// revoking a credential revokes everything delegated from it, offline.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ancestors: Vec<u64>,
    /// The task the credential was minted for; `lapse revoke task` revokes
    /// every credential of a task.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub task: Option<String>,
    /// The user (or other principal) the agent acts for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub on_behalf_of: Option<String>,
    /// Hex SHA-256 the caller computed over what it is about to do (its
    /// prompt or plan).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub intent: Option<String>,
}

impl AgentContext {
    /// How many exchanges lie between this credential and its root.
    pub fn depth(&self) -> usize {
        self.ancestors.len()
    }

    /// Why the context is malformed, if it is: too deep, an `act` chain
    /// whose length is not the number of ancestors, or a task, subject or
    /// intent out of shape. A verifier refuses such a credential.
    pub fn problem(&self) -> Option<String> {
        let actors = self.act.as_ref().map_or(0, |a| a.chain().len());
        if self.ancestors.len() > MAX_DELEGATION_DEPTH {
            return Some(format!(
                "delegated {} times, more than {MAX_DELEGATION_DEPTH}",
                self.ancestors.len()
            ));
        }
        if actors != self.ancestors.len() {
            return Some(format!(
                "{actors} actors for {} ancestors",
                self.ancestors.len()
            ));
        }
        if let Some(task) = &self.task
            && let Some(problem) = task_problem(task)
        {
            return Some(problem);
        }
        if let Some(obo) = &self.on_behalf_of
            && let Some(problem) = on_behalf_of_problem(obo)
        {
            return Some(problem);
        }
        if let Some(intent) = &self.intent
            && let Some(problem) = intent_problem(intent)
        {
            return Some(problem);
        }
        None
    }
}

/// Why `task` is not a task id: 1 to [`MAX_TASK_BYTES`] bytes of ASCII
/// letters, digits and `-_.:/`.
pub fn task_problem(task: &str) -> Option<String> {
    let ok = !task.is_empty()
        && task.len() <= MAX_TASK_BYTES
        && task
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    (!ok).then(|| {
        format!("task id must be 1 to {MAX_TASK_BYTES} bytes of letters, digits and -_.:/")
    })
}

/// Why `subject` is not an `on_behalf_of`: 1 to [`MAX_ON_BEHALF_OF_BYTES`]
/// bytes with no spaces or control characters.
pub fn on_behalf_of_problem(subject: &str) -> Option<String> {
    let ok = !subject.is_empty()
        && subject.len() <= MAX_ON_BEHALF_OF_BYTES
        && !subject.chars().any(|c| c.is_whitespace() || c.is_control());
    (!ok).then(|| {
        format!(
            "on_behalf_of must be 1 to {MAX_ON_BEHALF_OF_BYTES} bytes with no spaces or control characters"
        )
    })
}

/// Why `intent` is not an intent digest: 64 lowercase hex digits (SHA-256).
pub fn intent_problem(intent: &str) -> Option<String> {
    let ok = intent.len() == 64
        && intent
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (!ok).then(|| "intent must be a SHA-256 digest: 64 lowercase hex digits".to_owned())
}

impl Claims {
    /// The cluster-wide status index: the position `idx` in the list its
    /// `uri` names (see [`crate::status_list`]). A URI that names no list
    /// (`…/statuslists/<k>`) leaves `idx` as the index itself.
    pub fn status_index(&self) -> StatusIndex {
        let StatusListRef { idx, uri } = &self.status.status_list;
        StatusIndex(crate::status_list::index_of(uri, *idx).unwrap_or(*idx))
    }
}
