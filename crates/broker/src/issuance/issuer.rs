//! Issuing a credential: attest, decide by policy, take a status index
//! from the local lease, sign with the committed key, record durably, answer.
//! Every attempt, granted or refused, lands in the audit log with its reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapse_credential::{
    AgentContext, Chain, Claims, Confirmation, ReplayCache, StatusClaim, StatusIndex,
    StatusListRef, TenantId, WorkloadId,
};
use lapse_ledger::{
    AttestationKind, Decision, DecisionInputs, DecisionKind, IssuanceRecord, RequestId,
};
use sha2::{Digest, Sha256};

use super::audit::AuditLog;
use super::external::ExternalKeys;
use super::keys::KeyRing;
use super::leases::IndexLeases;
use super::policy::PolicyCache;
use crate::config::IssuanceConfig;
use crate::core::SharedCore;
use crate::error::BrokerError;

/// How long an issuance waits for status indices when this broker holds
/// none: enough for the first lease after start-up; a broker cut off from
/// the leader refuses after it.
const LEASE_PATIENCE: Duration = Duration::from_secs(5);

/// Who the workload turned out to be.
pub(super) struct Attested {
    pub tenant: TenantId,
    pub workload: WorkloadId,
    pub kind: AttestationKind,
    /// The key the new credential must stay bound to (refresh).
    pub bound_jkt: Option<String>,
    /// The credential being refreshed.
    pub previous: Option<Claims>,
    /// The refresh chain the new credential continues (refresh), whose
    /// status index it keeps, and the most its expiry may be (seconds):
    /// the chain's maximum age, and the lease that keeps the index
    /// revocable.
    pub chain: Option<(Chain, u64)>,
    /// A join token to spend once the issuance is granted, with the request
    /// id of this attempt's consumption.
    pub join_token: Option<([u8; 32], RequestId)>,
    /// The latest `exp` (seconds) an exchanged credential may have: its
    /// parent's.
    pub until: Option<u64>,
    /// The delegation and task context the new credential carries.
    pub agent: AgentContext,
    /// SHA-256 of the attestation token or credential presented.
    pub presented_sha256: Option<[u8; 32]>,
}

impl Attested {
    /// Which kind of decision this attestation asks for.
    pub fn decision_kind(&self) -> DecisionKind {
        match self.kind {
            AttestationKind::Refresh { .. } => DecisionKind::Refresh,
            AttestationKind::Exchange { .. } => DecisionKind::Exchange,
            AttestationKind::JoinToken | AttestationKind::ExternalJwt { .. } => DecisionKind::Issue,
        }
    }

    /// The latest `exp` the new credential may have: a refresh's chain's
    /// end, an exchange's parent's `exp`.
    fn ceiling(&self) -> Option<u64> {
        self.chain.map(|(_, until)| until).or(self.until)
    }
}

/// The most scopes or audiences one credential may carry.
const MAX_LIST: usize = 32;
/// The longest scope or audience string.
const MAX_ITEM_BYTES: usize = 128;

/// How a workload proves who it is.
#[derive(Debug, Clone)]
pub enum Attestation {
    /// A one-time join token made for one workload.
    JoinToken(String),
    /// A JWT from a configured external issuer.
    ExternalJwt(String),
}

/// A request for a new credential.
#[derive(Debug, Clone, Default)]
pub struct IssueParams {
    pub attestation: Option<Attestation>,
    /// Chosen by the caller so a retried join-token issuance spends the
    /// token once; may be empty.
    pub request_id: String,
    /// The tenant the caller expects; empty for "whatever the attestation says".
    pub tenant: String,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    /// 0 for the default.
    pub ttl_seconds: u64,
    /// RFC 7638 thumbprint of the key to bind the credential to; may be empty.
    pub dpop_jkt: String,
    /// With `dpop_jkt`: a DPoP proof by that key for `POST <issuer>/issue`.
    pub dpop_proof: String,
    /// Task context; each may be empty.
    pub task: String,
    pub on_behalf_of: String,
    pub intent: String,
}

/// A request to refresh a credential.
#[derive(Debug, Clone, Default)]
pub struct RefreshParams {
    pub credential: String,
    /// Required when the credential is bound to a key.
    pub dpop_proof: String,
    /// Empty to keep the credential's own.
    pub scopes: Vec<String>,
    /// Empty to keep the credential's own.
    pub audiences: Vec<String>,
    pub ttl_seconds: u64,
}

/// A credential issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub credential: String,
    pub status_index: u64,
    pub key_id: String,
    /// `exp`, in seconds.
    pub expires_at: u64,
    pub tenant: String,
    pub workload: String,
    pub policy_version: u64,
    /// The credential's scopes.
    pub scopes: Vec<String>,
    /// Whether it is bound to a key (`cnf.jkt`).
    pub key_bound: bool,
}

pub struct Issuer {
    pub core: SharedCore,
    pub keys: Arc<KeyRing>,
    pub leases: Arc<IndexLeases>,
    pub audit: Arc<AuditLog>,
    pub settings: IssuanceConfig,
    pub external: Vec<ExternalKeys>,
    pub replay: Mutex<ReplayCache>,
    /// The DPoP nonces this broker hands out, under a key of this life.
    pub nonces: super::nonce::DpopNonces,
    pub policies: PolicyCache,
    /// Latency, grants, refusals and lifetimes, for `/metrics`.
    pub stats: super::stats::IssuanceStats,
}

/// Public keys of the ledger's registered, unrevoked signing keys.
pub fn ledger_keys(core: &SharedCore) -> BTreeMap<String, [u8; 32]> {
    core.view().read(|applied| {
        applied
            .ledger
            .keys
            .iter()
            .filter(|(_, key)| key.revoked.is_none())
            .filter_map(|(id, key)| {
                Some((id.to_string(), key.public_key.as_slice().try_into().ok()?))
            })
            .collect()
    })
}

pub(super) fn check_list(field: &str, items: &[String]) -> Result<(), BrokerError> {
    if items.len() > MAX_LIST {
        return Err(BrokerError::Invalid(format!("{field}: at most {MAX_LIST}")));
    }
    for item in items {
        if item.is_empty()
            || item.len() > MAX_ITEM_BYTES
            || item.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(BrokerError::Invalid(format!(
                "{field}: {item:?} must be 1 to {MAX_ITEM_BYTES} bytes with no spaces"
            )));
        }
    }
    Ok(())
}

/// The first of `asked` that `held` lacks: what would widen a renewed or
/// delegated credential beyond the one presented.
pub(super) fn widening<'a>(asked: &'a [String], held: &[String]) -> Option<&'a String> {
    asked.iter().find(|a| !held.contains(a))
}

/// `asked`, or all of `held` when nothing was asked.
pub(super) fn asked_or_held(asked: Vec<String>, held: &[String]) -> Vec<String> {
    if asked.is_empty() {
        held.to_vec()
    } else {
        asked
    }
}

impl Issuer {
    /// Cluster time, in seconds: what `iat` and `exp` are measured in.
    pub(super) fn now_seconds(&self) -> u64 {
        self.core.cluster_now() / 1000
    }

    /// Record an attempt durably; a failure to record fails the request.
    async fn record(&self, record: IssuanceRecord) -> Result<(), BrokerError> {
        self.audit
            .append(record, self.keys.signing_key(&self.core))
            .await
            .map(|_| ())
            .map_err(|e| BrokerError::Unavailable(format!("the audit log cannot be written: {e}")))
    }

    /// Record a refusal and return it.
    pub(super) async fn refuse(
        &self,
        attested: Option<&Attested>,
        ask: (&[String], &[String]),
        decision: Decision,
        inputs: Option<&DecisionInputs>,
        error: BrokerError,
    ) -> BrokerError {
        let record = IssuanceRecord {
            sequence: 0,
            at_ms: self.core.env().now_ms(),
            tenant: attested.map(|a| a.tenant.clone()),
            workload: attested.map(|a| a.workload.clone()),
            index: None,
            key_id: None,
            scopes: ask.0.to_vec(),
            audiences: ask.1.to_vec(),
            expires_at_ms: None,
            attestation: attested.map(|a| a.kind.clone()),
            decision,
            inputs: inputs.cloned().map(Box::new),
            seal: None,
        };
        match self.record(record).await {
            Ok(()) => error,
            Err(audit_failure) => audit_failure,
        }
    }

    /// Record and return a refusal that no policy decided (bad attestation,
    /// bad request): its reason is the error's message.
    pub(super) async fn refuse_plainly(
        &self,
        attested: Option<&Attested>,
        ask: (&[String], &[String]),
        error: BrokerError,
    ) -> BrokerError {
        let decision = Decision {
            policy_version: 0,
            input_sha256: [0; 32],
            allowed: false,
            reason: error.to_string(),
        };
        self.refuse(attested, ask, decision, None, error).await
    }

    /// Record and return a refusal made before the caller proved who it
    /// is: under the tenant the request named, if it named a valid one,
    /// so that the tenant's audit shows attempts against it.
    pub(super) async fn refuse_unattested(
        &self,
        named_tenant: &str,
        ask: (&[String], &[String]),
        error: BrokerError,
    ) -> BrokerError {
        let record = IssuanceRecord {
            sequence: 0,
            at_ms: self.core.env().now_ms(),
            tenant: TenantId::new(named_tenant).ok(),
            workload: None,
            index: None,
            key_id: None,
            scopes: ask.0.to_vec(),
            audiences: ask.1.to_vec(),
            expires_at_ms: None,
            attestation: None,
            decision: Decision {
                policy_version: 0,
                input_sha256: [0; 32],
                allowed: false,
                reason: error.to_string(),
            },
            inputs: None,
            seal: None,
        };
        match self.record(record).await {
            Ok(()) => error,
            Err(audit_failure) => audit_failure,
        }
    }

    /// The tenant's policy's decision on an issuance, with the complete
    /// inputs it was made on (kept in the audit record as evidence).
    fn decide(
        &self,
        attested: &Attested,
        scopes: &[String],
        audiences: &[String],
        ttl_seconds: u64,
    ) -> (Decision, DecisionInputs) {
        // Parsed and hashed once per version: no copy of the text per request.
        let policy = self.core.view().read(|applied| {
            applied
                .ledger
                .policies
                .get(&attested.tenant)
                .map(|p| self.policies.current(&attested.tenant, p.version, &p.text))
        });
        let inputs = DecisionInputs {
            kind: attested.decision_kind(),
            tenant: attested.tenant.clone(),
            workload: attested.workload.clone(),
            scopes: scopes.to_vec(),
            audiences: audiences.to_vec(),
            ttl_seconds,
            chain_age_seconds: attested
                .chain
                .map_or(0, |(chain, _)| self.now_seconds().saturating_sub(chain.iat)),
            parent_scopes: attested
                .previous
                .as_ref()
                .map(|c| c.scopes.clone())
                .unwrap_or_default(),
            actors: attested
                .agent
                .act
                .as_ref()
                .map(|a| a.chain().into_iter().cloned().collect())
                .unwrap_or_default(),
            depth: attested.agent.depth() as u32,
            task: attested.agent.task.clone(),
            on_behalf_of: attested.agent.on_behalf_of.clone(),
            intent: attested.agent.intent.clone(),
            presented_sha256: attested.presented_sha256,
            policy_sha256: policy.as_ref().map(|p| p.sha256),
        };
        let decision = super::policy::decide_cached(policy.as_deref(), &inputs);
        (decision, inputs)
    }

    /// The claims of a new credential issued at `now_ms` for `ttl_seconds`.
    fn claims(
        &self,
        attested: &Attested,
        scopes: &[String],
        audiences: &[String],
        (now_ms, ttl_seconds): (u64, u64),
        index: u64,
        jkt: Option<String>,
    ) -> Claims {
        let now = now_ms / 1000;
        let jti: [u8; 16] = self.core.env().random_bytes();
        Claims {
            iss: self.settings.issuer.clone(),
            sub: attested.workload.clone(),
            aud: audiences.to_vec(),
            iat: now,
            nbf: now,
            // A refresh never outlives its chain, nor a delegated
            // credential its parent, whatever second this is.
            exp: match attested.ceiling() {
                Some(until) => (now + ttl_seconds).min(until),
                None => now + ttl_seconds,
            },
            jti: hex::encode(jti),
            tenant: attested.tenant.clone(),
            scopes: scopes.to_vec(),
            status: {
                let (list, idx) = lapse_credential::status_list::locate(index);
                StatusClaim {
                    status_list: StatusListRef {
                        idx,
                        uri: lapse_credential::status_list::list_uri(&self.settings.issuer, list),
                    },
                }
            },
            cnf: jkt.map(|jkt| Confirmation { jkt }),
            chain: Some(match attested.chain {
                Some((chain, _)) => chain,
                None => Chain {
                    idx: index,
                    iat: now,
                },
            }),
            agent: attested.agent.clone(),
        }
    }

    /// Decide, take an index, sign, record: the part every attestation shares.
    pub(super) async fn grant(
        &self,
        attested: Attested,
        scopes: Vec<String>,
        audiences: Vec<String>,
        ttl_seconds: u64,
        jkt: Option<String>,
    ) -> Result<Issued, BrokerError> {
        // A revoked task gets no new credentials: its rule covers only
        // those issued before it, and it stays until they have expired.
        if let Some(task) = &attested.agent.task {
            let key = (attested.tenant.clone(), task.clone());
            let revoked = self
                .core
                .view()
                .read(|applied| applied.ledger.task_rules.contains_key(&key));
            if revoked {
                let error = BrokerError::Forbidden(format!(
                    "task {task} of tenant {} has been revoked: use a new task id",
                    attested.tenant
                ));
                return Err(self
                    .refuse_plainly(Some(&attested), (&scopes, &audiences), error)
                    .await);
            }
        }
        let max_ttl = self.core.config().ledger.max_credential_ttl_seconds;
        let ttl_seconds = if ttl_seconds == 0 {
            self.settings.default_ttl_seconds
        } else {
            ttl_seconds
        };
        if ttl_seconds > max_ttl {
            let status = BrokerError::Invalid(format!(
                "ttl_seconds {ttl_seconds} is beyond the cluster's maximum {max_ttl}"
            ));
            return Err(self
                .refuse_plainly(Some(&attested), (&scopes, &audiences), status)
                .await);
        }
        // A refresh lives no longer than its chain may, a delegated
        // credential no longer than its parent.
        let ttl_seconds = match attested.ceiling() {
            Some(until) => ttl_seconds.min(until.saturating_sub(self.now_seconds())),
            None => ttl_seconds,
        };
        let (decision, inputs) = self.decide(&attested, &scopes, &audiences, ttl_seconds);
        if !decision.allowed {
            self.stats.denied_by_policy();
            let status = BrokerError::Forbidden(decision.reason.clone());
            return Err(self
                .refuse(
                    Some(&attested),
                    (&scopes, &audiences),
                    decision,
                    Some(&inputs),
                    status,
                )
                .await);
        }
        let Some(key) = self.keys.signing_key(&self.core) else {
            let status = BrokerError::Unavailable(
                "this broker has no committed signing key yet; retry shortly".into(),
            );
            return Err(self
                .refuse(
                    Some(&attested),
                    (&scopes, &audiences),
                    decision,
                    Some(&inputs),
                    status,
                )
                .await);
        };
        let core = &self.core;
        let taken = match attested.chain {
            // A refresh keeps its chain's index: revoking any credential
            // of the chain revokes every one.
            Some((chain, _)) => Ok(chain.idx),
            None => {
                self.leases
                    .take_or_wait(|| core.cluster_now(), LEASE_PATIENCE)
                    .await
            }
        };
        let index = match taken {
            Ok(index) => index,
            Err(spent) => {
                let status = BrokerError::Exhausted(spent.to_string());
                return Err(self
                    .refuse(
                        Some(&attested),
                        (&scopes, &audiences),
                        decision,
                        Some(&inputs),
                        status,
                    )
                    .await);
            }
        };
        let now_ms = self.core.cluster_now();
        // Spent last, once nothing else can refuse: a refused or unavailable
        // issuance leaves the token usable. (An index taken for an attempt
        // that then fails is skipped, never reused.)
        if let Some((token_hash, spend_id)) = attested.join_token.clone()
            && let Err(status) = self.spend_join_token(token_hash, spend_id).await
        {
            return Err(self
                .refuse(
                    Some(&attested),
                    (&scopes, &audiences),
                    decision,
                    Some(&inputs),
                    status,
                )
                .await);
        }
        let claims = self.claims(
            &attested,
            &scopes,
            &audiences,
            (now_ms, ttl_seconds),
            index,
            jkt,
        );
        let credential = key
            .sign(&claims)
            .map_err(|e| BrokerError::Broken(format!("signing failed: {e}")))?;
        let policy_version = decision.policy_version;
        self.record(IssuanceRecord {
            sequence: 0,
            at_ms: now_ms,
            tenant: Some(attested.tenant.clone()),
            workload: Some(attested.workload.clone()),
            index: Some(StatusIndex(index)),
            key_id: Some(key.key_id().clone()),
            scopes,
            audiences,
            expires_at_ms: Some(claims.exp * 1000),
            attestation: Some(attested.kind),
            decision,
            inputs: Some(Box::new(inputs)),
            seal: None,
        })
        .await?;
        // Answered from now on: a refresh or exchange presenting it again
        // here skips its signature check (see `signed.rs`).
        self.keys.recently_signed().insert(
            Sha256::digest(credential.as_bytes()).into(),
            key.key_id().clone(),
            claims.clone(),
        );
        self.stats.granted_lifetime(
            attested.tenant.as_str(),
            claims.exp.saturating_sub(claims.iat),
        );
        Ok(Issued {
            credential,
            status_index: index,
            key_id: key.key_id().to_string(),
            expires_at: claims.exp,
            tenant: attested.tenant.to_string(),
            workload: attested.workload.to_string(),
            policy_version,
            scopes: claims.scopes.clone(),
            key_bound: claims.cnf.is_some(),
        })
    }
}

/// Validated task context for a new credential (each part may be empty).
pub(super) fn task_context(
    task: &str,
    on_behalf_of: &str,
    intent: &str,
) -> Result<AgentContext, BrokerError> {
    use lapse_credential::{intent_problem, on_behalf_of_problem, task_problem};
    let part = |value: &str, problem: fn(&str) -> Option<String>| {
        if value.is_empty() {
            return Ok(None);
        }
        match problem(value) {
            Some(problem) => Err(BrokerError::Invalid(problem)),
            None => Ok(Some(value.to_owned())),
        }
    };
    Ok(AgentContext {
        task: part(task, task_problem)?,
        on_behalf_of: part(on_behalf_of, on_behalf_of_problem)?,
        intent: part(intent, intent_problem)?,
        ..AgentContext::default()
    })
}

/// The tenant a credential claims, read without checking it, if it parses.
pub fn claimed_tenant_of(token: &str) -> Option<TenantId> {
    TenantId::new(claimed_tenant(token)).ok()
}

/// The tenant a credential claims, read without checking it (for the audit
/// of a refused refresh); empty when it names none that parses. The claims
/// are bounded by the request size limit.
pub(super) fn claimed_tenant(token: &str) -> String {
    use base64::Engine as _;
    token
        .split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|claims| claims.get("tenant")?.as_str().map(str::to_owned))
        .unwrap_or_default()
}
