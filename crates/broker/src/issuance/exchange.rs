//! RFC 8693 token exchange for delegation: the holder of a credential
//! gets a narrower, shorter one for a named delegate. Broker-local like a
//! refresh (an index from this broker's lease, no Raft round trip), decided
//! by the tenant's policy and audited like an issuance.
//!
//! The new credential keeps the parent's `sub`, tenant and task context,
//! names the delegate as its outermost `act` (the parent's actors nested
//! inside), and carries the status indices of the parent and of every
//! credential the parent descends from: a verifier refuses it when any of
//! them is revoked, so revoking one credential revokes everything
//! delegated from it without a round trip.

use lapse_credential::{Actor, AgentContext, MAX_DELEGATION_DEPTH, WorkloadId};
use lapse_ledger::AttestationKind;

use super::issuer::{
    Attested, Issued, Issuer, asked_or_held, check_list, claimed_tenant, task_context, widening,
};
use super::stats::RequestKind;
use crate::error::BrokerError;

/// A request to delegate a credential.
#[derive(Debug, Clone, Default)]
pub struct ExchangeParams {
    /// The delegating credential (RFC 8693 `subject_token`).
    pub subject_token: String,
    /// Required when the subject token is key-bound: a DPoP proof for
    /// `POST <issuer>/exchange` by its key.
    pub dpop_proof: String,
    /// The delegate's SPIFFE id.
    pub actor: String,
    /// RFC 7638 thumbprint of the delegate's key; may be empty.
    pub actor_jkt: String,
    /// Empty to keep the parent's; otherwise a subset of them.
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    /// 0 for the default, cut to the parent's remaining life.
    pub ttl_seconds: u64,
    /// Empty to inherit the parent's.
    pub task: String,
    pub on_behalf_of: String,
    /// The delegate's own intent digest; may be empty.
    pub intent: String,
}

impl Issuer {
    /// Delegate the subject token's authority, narrowed, to `actor`.
    /// Every attempt is audited.
    pub async fn exchange(&self, request: ExchangeParams) -> Result<Issued, BrokerError> {
        let answer = self.exchange_unmeasured(request);
        self.stats.measure(RequestKind::Exchange, answer).await
    }

    async fn exchange_unmeasured(&self, request: ExchangeParams) -> Result<Issued, BrokerError> {
        check_list("scopes", &request.scopes)?;
        check_list("audiences", &request.audiences)?;
        let asked = task_context(&request.task, &request.on_behalf_of, &request.intent)?;
        let actor = WorkloadId::new(&request.actor)
            .map_err(|e| BrokerError::Invalid(format!("actor: {e}")))?;
        let jkt = Some(request.actor_jkt.clone()).filter(|j| !j.is_empty());
        if let Some(jkt) = &jkt
            && !is_thumbprint(jkt)
        {
            return Err(BrokerError::Invalid(
                "actor_jkt: expected an RFC 7638 SHA-256 thumbprint, base64url".into(),
            ));
        }
        self.core.confirmed_cluster_now().await?;
        let ask = (request.scopes.as_slice(), request.audiences.as_slice());
        let presented = match self.check_presented(
            &request.subject_token,
            &request.dpop_proof,
            &self.settings.exchange_uri(),
        ) {
            Ok(presented) => presented,
            Err(error) => {
                let tenant = claimed_tenant(&request.subject_token);
                return Err(self.refuse_unattested(&tenant, ask, error).await);
            }
        };
        let parent = presented.claims;
        let depth = parent.agent.depth() + 1;
        let mut actors: Vec<WorkloadId> = vec![actor];
        if let Some(act) = &parent.agent.act {
            actors.extend(act.chain().into_iter().cloned());
        }
        let mut ancestors = parent.agent.ancestors.clone();
        ancestors.push(parent.status_index().0);
        if let Some(faults) = &self.core.env().faults
            && faults.forget_ancestors()
        {
            ancestors.clear();
            actors.clear();
        }
        // Inherited: the task and the subject acted for stay those of the
        // chain; only the intent is the delegate's own.
        let inherit = |asked: Option<String>, held: &Option<String>, what: &str| match (asked, held)
        {
            (None, held) => Ok(held.clone()),
            (Some(asked), None) => Ok(Some(asked)),
            (Some(asked), Some(held)) if asked == *held => Ok(Some(asked)),
            (Some(asked), Some(held)) => Err(BrokerError::Forbidden(format!(
                "a delegated credential keeps its parent's {what}: {held:?}, not {asked:?}"
            ))),
        };
        let task = inherit(asked.task, &parent.agent.task, "task");
        let on_behalf_of = inherit(
            asked.on_behalf_of,
            &parent.agent.on_behalf_of,
            "on_behalf_of",
        );
        let attested = Attested {
            tenant: parent.tenant.clone(),
            workload: parent.sub.clone(),
            kind: AttestationKind::Exchange {
                parent_index: parent.status_index().0,
            },
            bound_jkt: None,
            previous: Some(parent.clone()),
            chain: None,
            join_token: None,
            until: Some(parent.exp),
            agent: AgentContext {
                act: Actor::from_chain(&actors),
                ancestors,
                task: task.as_ref().ok().cloned().flatten(),
                on_behalf_of: on_behalf_of.as_ref().ok().cloned().flatten(),
                intent: asked.intent,
            },
            presented_sha256: Some(presented.token_sha256),
        };
        let refused = if depth > MAX_DELEGATION_DEPTH {
            Some(BrokerError::Forbidden(format!(
                "delegation depth {depth} is beyond the most Lapse allows, {MAX_DELEGATION_DEPTH}"
            )))
        } else {
            let widened = |asked: &[String], held: &[String], what: &str| {
                widening(asked, held).map(|a| {
                    BrokerError::Forbidden(format!(
                        "a delegated credential may only narrow: {what} {a:?} is not in the credential exchanged"
                    ))
                })
            };
            let remaining = parent.exp.saturating_sub(self.now_seconds());
            widened(&request.scopes, &parent.scopes, "scope")
                .or_else(|| widened(&request.audiences, &parent.aud, "audience"))
                .or(task.err())
                .or(on_behalf_of.err())
                .or_else(|| {
                    (request.ttl_seconds > remaining).then(|| {
                        BrokerError::Forbidden(format!(
                            "a delegated credential may not outlive its parent: ttl_seconds {} is beyond the parent's remaining {remaining} s",
                            request.ttl_seconds
                        ))
                    })
                })
        };
        if let Some(error) = refused {
            return Err(self.refuse_plainly(Some(&attested), ask, error).await);
        }
        let scopes = asked_or_held(request.scopes, &parent.scopes);
        let audiences = asked_or_held(request.audiences, &parent.aud);
        self.grant(attested, scopes, audiences, request.ttl_seconds, jkt)
            .await
    }
}

/// Whether `jkt` has the shape of an RFC 7638 SHA-256 thumbprint.
pub(super) fn is_thumbprint(jkt: &str) -> bool {
    jkt.len() == 43
        && jkt
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
