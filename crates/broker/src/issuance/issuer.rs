//! Issuing a credential: attest, decide by policy, take a status index
//! from the local lease, sign with the committed key, record durably, answer.
//! Every attempt, granted or refused, lands in the audit log with its reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapse_credential::{
    Claims, Confirmation, DpopExpectation, ExternalIssuer, ReplayCache, StatusClaim, StatusIndex,
    StatusListRef, TenantId, VerifyOptions, WorkloadId, verify, verify_proof,
};
use lapse_ledger::{
    Applied, AttestationKind, Command, Decision, IssuanceRecord, JoinGrant, JoinUse, Refusal,
    RequestId,
};
use sha2::{Digest, Sha256};

use super::audit::AuditLog;
use super::keys::KeyRing;
use super::leases::IndexLeases;
use super::policy::{IssueAsk, PolicyCache};
use crate::config::{ExternalIssuerConfig, IssuanceConfig};
use crate::core::SharedCore;
use crate::error::BrokerError;

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
}

pub struct Issuer {
    pub core: SharedCore,
    pub keys: Arc<KeyRing>,
    pub leases: Arc<IndexLeases>,
    pub audit: Arc<AuditLog>,
    pub settings: IssuanceConfig,
    pub external: Vec<(ExternalIssuerConfig, ExternalIssuer)>,
    pub replay: Mutex<ReplayCache>,
    pub policies: PolicyCache,
}

/// Who the workload turned out to be.
struct Attested {
    tenant: TenantId,
    workload: WorkloadId,
    kind: AttestationKind,
    /// The key the new credential must stay bound to (refresh).
    bound_jkt: Option<String>,
    /// The credential being refreshed.
    previous: Option<Claims>,
    /// A join token to spend once the issuance is granted, with the request
    /// id of this attempt's consumption.
    join_token: Option<([u8; 32], RequestId)>,
}

/// The `iss` claim of a JWT, read without verifying it, to pick the issuer
/// whose keys will verify it.
fn unverified_issuer(token: &str) -> Result<String, BrokerError> {
    use base64::Engine;
    let bad = |why: String| BrokerError::Unauthenticated(format!("external_jwt: {why}"));
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| bad("not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| bad(format!("payload is not base64url: {e}")))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("payload is not JSON: {e}")))?;
    Ok(claims
        .get("iss")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned())
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

fn check_list(field: &str, items: &[String]) -> Result<(), BrokerError> {
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

impl Issuer {
    /// Cluster time, in seconds: what `iat` and `exp` are measured in.
    fn now_seconds(&self) -> u64 {
        self.core.cluster_now() / 1000
    }

    /// Record an attempt durably; a failure to record fails the request.
    async fn record(&self, record: IssuanceRecord) -> Result<(), BrokerError> {
        self.audit
            .append(record)
            .await
            .map(|_| ())
            .map_err(|e| BrokerError::Unavailable(format!("the audit log cannot be written: {e}")))
    }

    /// Record a refusal and return it.
    async fn refuse(
        &self,
        attested: Option<&Attested>,
        ask: (&[String], &[String]),
        decision: Decision,
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
        };
        match self.record(record).await {
            Ok(()) => error,
            Err(audit_failure) => audit_failure,
        }
    }

    /// Record and return a refusal that no policy decided (bad attestation,
    /// bad request): its reason is the error's message.
    async fn refuse_plainly(
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
        self.refuse(attested, ask, decision, error).await
    }

    /// Check a join token against this broker's applied state, without
    /// spending it: the token is consumed through the ledger only once the
    /// issuance it pays for has been granted (see [`Self::spend_join_token`]).
    /// A token this broker has not applied yet is looked up again after
    /// confirming its state is current, so a token just created elsewhere
    /// works, and a guessed one costs no Raft commit.
    async fn attest_join_token(
        &self,
        token: &str,
        request_id: &str,
    ) -> Result<Attested, BrokerError> {
        if !token.starts_with("lapse-join-") {
            return Err(BrokerError::Invalid(
                "join_token: not a Lapse join token".into(),
            ));
        }
        let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let attempt = if request_id.is_empty() {
            hex::encode(self.core.env().random_bytes::<12>())
        } else {
            RequestId::new(request_id)
                .map_err(|e| BrokerError::Invalid(format!("request_id: {e}")))?;
            request_id.to_owned()
        };
        let spend_id = RequestId::new(format!(
            "consume-{}-{attempt}",
            &hex::encode(token_hash)[..16]
        ))
        .map_err(|e| BrokerError::Invalid(format!("request_id: {e}")))?;
        let mut grant = self.join_grant(&token_hash, &spend_id);
        if let Err(Refusal::JoinTokenUnknown) = grant {
            let patience = Duration::from_millis(self.core.config().raft.rpc_timeout_ms);
            if self.core.confirm_current(patience).await.is_ok() {
                grant = self.join_grant(&token_hash, &spend_id);
            }
        }
        let (tenant, workload) = grant.map_err(BrokerError::Refused)?;
        Ok(Attested {
            tenant,
            workload,
            kind: AttestationKind::JoinToken,
            bound_jkt: None,
            previous: None,
            join_token: Some((token_hash, spend_id)),
        })
    }

    /// What the applied ledger says of a join token: the workload it is for,
    /// or why it cannot be used. A token spent by this same attempt (a
    /// retry whose first try committed) is still good for it.
    fn join_grant(
        &self,
        token_hash: &[u8; 32],
        spend_id: &RequestId,
    ) -> Result<(TenantId, WorkloadId), Refusal> {
        let now_ms = self.core.cluster_now();
        self.core.view().read(|applied| {
            let token = applied
                .ledger
                .join_tokens
                .get(token_hash)
                .ok_or(Refusal::JoinTokenUnknown)?;
            let JoinGrant::Workload { tenant, workload } = &token.grant else {
                return Err(Refusal::JoinTokenWrongUse);
            };
            if let Some(epoch) = token.consumed_epoch {
                let spent_by_this_attempt = applied
                    .ledger
                    .response_for(spend_id)
                    .is_some_and(|r| r.outcome.is_ok());
                if !spent_by_this_attempt {
                    return Err(Refusal::JoinTokenSpent { epoch });
                }
            } else if token.expires_at_ms <= now_ms {
                return Err(Refusal::JoinTokenExpired {
                    expires_at_ms: token.expires_at_ms,
                });
            }
            Ok((tenant.clone(), workload.clone()))
        })
    }

    /// Consume the join token an issuance was granted on, through the
    /// ledger, once per attempt: the attempt's request id deduplicates
    /// retries (the broker's own, through elections and forwarding, and the
    /// caller's, when it sends the same `request_id`), and a duplicate of
    /// this attempt's own consumption is its first answer, a success.
    async fn spend_join_token(
        &self,
        token_hash: [u8; 32],
        spend_id: RequestId,
    ) -> Result<(), BrokerError> {
        let command = Command::ConsumeJoinToken {
            token_hash,
            presented: JoinUse::Workload,
        };
        let response = self.core.propose(spend_id, command).await?;
        match response.outcome {
            Ok(Applied::JoinTokenConsumed(JoinGrant::Workload { .. })) => Ok(()),
            Ok(_) => Err(BrokerError::Forbidden(
                "join token was not made for a workload".into(),
            )),
            Err(refusal) => Err(BrokerError::Refused(refusal)),
        }
    }

    fn attest_external(&self, token: &str) -> Result<Attested, BrokerError> {
        let claimed_issuer = unverified_issuer(token)?;
        let (config, issuer) = self
            .external
            .iter()
            .find(|(config, _)| config.issuer == claimed_issuer)
            .ok_or_else(|| {
                BrokerError::Unauthenticated(format!(
                    "external_jwt: issuer {claimed_issuer:?} is not configured"
                ))
            })?;
        let claims = issuer
            .verify(token, self.now_seconds(), self.settings.leeway_seconds)
            .map_err(|e| {
                BrokerError::Unauthenticated(format!("external_jwt from {claimed_issuer}: {e}"))
            })?;
        let name = claims
            .get(&config.workload_claim)
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                BrokerError::Unauthenticated(format!(
                    "external_jwt has no string claim {:?}",
                    config.workload_claim
                ))
            })?;
        let workload =
            WorkloadId::new(format!("{}{name}", config.workload_prefix)).map_err(|e| {
                BrokerError::Forbidden(format!("external_jwt maps to no workload id: {e}"))
            })?;
        let tenant =
            TenantId::new(config.tenant.clone()).map_err(|e| BrokerError::Broken(e.to_string()))?;
        Ok(Attested {
            tenant,
            workload,
            kind: AttestationKind::ExternalJwt {
                issuer: config.issuer.clone(),
            },
            bound_jkt: None,
            previous: None,
            join_token: None,
        })
    }

    fn attest_refresh(&self, request: &RefreshParams) -> Result<Attested, BrokerError> {
        let now = self.now_seconds();
        let keys = ledger_keys(&self.core);
        let verified = verify(
            &request.credential,
            &keys,
            &VerifyOptions {
                audience: None,
                issuer: Some(&self.settings.issuer),
                now_seconds: now,
                leeway_seconds: self.settings.leeway_seconds,
            },
        )
        .map_err(|e| BrokerError::Unauthenticated(format!("credential: {e}")))?;
        let claims = verified.claims;
        let revoked = self.core.view().read(|applied| {
            applied.ledger.is_revoked(
                claims.status_index(),
                &claims.tenant,
                &claims.sub,
                &verified.key_id,
                claims.iat * 1000,
            )
        });
        if revoked {
            return Err(BrokerError::Forbidden("credential has been revoked".into()));
        }
        if let Some(Confirmation { jkt }) = &claims.cnf {
            if request.dpop_proof.is_empty() {
                return Err(BrokerError::Unauthenticated(
                    "credential is bound to a key: a DPoP proof is required".into(),
                ));
            }
            let uri = self.settings.refresh_uri();
            let proof = verify_proof(
                &request.dpop_proof,
                &DpopExpectation {
                    method: "POST",
                    url: &uri,
                    access_token: Some(&request.credential),
                    now_seconds: now,
                    max_age_seconds: self.settings.dpop_max_age_seconds,
                    leeway_seconds: self.settings.leeway_seconds,
                },
            )
            .map_err(|e| BrokerError::Unauthenticated(format!("DPoP proof: {e}")))?;
            if &proof.jkt != jkt {
                return Err(BrokerError::Unauthenticated(
                    "DPoP proof is signed by a different key than the credential is bound to"
                        .into(),
                ));
            }
            self.replay
                .lock()
                .expect("replay lock")
                .check_and_remember(&proof.jti, now)
                .map_err(|e| BrokerError::Unauthenticated(format!("DPoP proof: {e}")))?;
        }
        Ok(Attested {
            tenant: claims.tenant.clone(),
            workload: claims.sub.clone(),
            kind: AttestationKind::Refresh {
                previous_index: claims.status_index().0,
            },
            bound_jkt: claims.cnf.as_ref().map(|c| c.jkt.clone()),
            previous: Some(claims),
            join_token: None,
        })
    }

    /// Decide, take an index, sign, record: the part every attestation shares.
    async fn grant(
        &self,
        attested: Attested,
        scopes: Vec<String>,
        audiences: Vec<String>,
        ttl_seconds: u64,
        jkt: Option<String>,
    ) -> Result<Issued, BrokerError> {
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
        let policy = self.core.view().read(|applied| {
            applied
                .ledger
                .policies
                .get(&attested.tenant)
                .map(|p| (p.version, p.text.clone()))
        });
        let decision = self.policies.decide(
            policy.as_ref().map(|(v, t)| (*v, t.as_str())),
            &IssueAsk {
                tenant: &attested.tenant,
                workload: &attested.workload,
                scopes: &scopes,
                audiences: &audiences,
                ttl_seconds,
            },
        );
        if !decision.allowed {
            let status = BrokerError::Forbidden(decision.reason.clone());
            return Err(self
                .refuse(Some(&attested), (&scopes, &audiences), decision, status)
                .await);
        }
        let Some(key) = self.keys.signing_key(&self.core) else {
            let status = BrokerError::Unavailable(
                "this broker has no committed signing key yet; retry shortly".into(),
            );
            return Err(self
                .refuse(Some(&attested), (&scopes, &audiences), decision, status)
                .await);
        };
        let now_ms = self.core.cluster_now();
        let index = match self.leases.take(now_ms) {
            Ok(index) => index,
            Err(spent) => {
                let status = BrokerError::Exhausted(spent.to_string());
                return Err(self
                    .refuse(Some(&attested), (&scopes, &audiences), decision, status)
                    .await);
            }
        };
        // Spent last, once nothing else can refuse: a refused or unavailable
        // issuance leaves the token usable. (An index taken for an attempt
        // that then fails is skipped, never reused.)
        if let Some((token_hash, spend_id)) = attested.join_token.clone()
            && let Err(status) = self.spend_join_token(token_hash, spend_id).await
        {
            return Err(self
                .refuse(Some(&attested), (&scopes, &audiences), decision, status)
                .await);
        }
        let now = now_ms / 1000;
        let jti: [u8; 16] = self.core.env().random_bytes();
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            sub: attested.workload.clone(),
            aud: audiences.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl_seconds,
            jti: hex::encode(jti),
            tenant: attested.tenant.clone(),
            scopes: scopes.clone(),
            status: StatusClaim {
                status_list: StatusListRef {
                    idx: index,
                    uri: format!(
                        "{}/statuslists/1",
                        self.settings.issuer.trim_end_matches('/')
                    ),
                },
            },
            cnf: jkt.map(|jkt| Confirmation { jkt }),
        };
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
        })
        .await?;
        Ok(Issued {
            credential,
            status_index: index,
            key_id: key.key_id().to_string(),
            expires_at: claims.exp,
            tenant: attested.tenant.to_string(),
            workload: attested.workload.to_string(),
            policy_version,
        })
    }
}

impl Issuer {
    /// Issue a credential to the workload the attestation proves, if its
    /// tenant's policy allows it. Every attempt is audited.
    pub async fn issue(&self, request: IssueParams) -> Result<Issued, BrokerError> {
        check_list("scopes", &request.scopes)?;
        check_list("audiences", &request.audiences)?;
        if request.audiences.is_empty() {
            return Err(BrokerError::Invalid(
                "audiences: name at least one audience".into(),
            ));
        }
        self.core.confirmed_cluster_now().await?;
        let jkt = Some(request.dpop_jkt.clone()).filter(|j| !j.is_empty());
        if let Some(jkt) = &jkt
            && (jkt.len() != 43
                || !jkt
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(BrokerError::Invalid(
                "dpop_jkt: expected an RFC 7638 SHA-256 thumbprint, base64url".into(),
            ));
        }
        let attested = match &request.attestation {
            Some(Attestation::JoinToken(token)) => {
                self.attest_join_token(token, &request.request_id).await
            }
            Some(Attestation::ExternalJwt(token)) => self.attest_external(token),
            None => Err(BrokerError::Invalid(
                "attestation: give a join_token or an external_jwt".into(),
            )),
        };
        let attested = match attested {
            Ok(attested) => attested,
            Err(error) => {
                return Err(self
                    .refuse_plainly(None, (&request.scopes, &request.audiences), error)
                    .await);
            }
        };
        if !request.tenant.is_empty() && request.tenant != attested.tenant.as_str() {
            let error = BrokerError::Forbidden(format!(
                "tenant mismatch: the attestation is for tenant {}, not {}",
                attested.tenant, request.tenant
            ));
            let asked = (request.scopes.as_slice(), request.audiences.as_slice());
            return Err(self.refuse_plainly(Some(&attested), asked, error).await);
        }
        self.grant(
            attested,
            request.scopes,
            request.audiences,
            request.ttl_seconds,
            jkt,
        )
        .await
    }

    /// Issue a fresh credential for the holder of a valid, unrevoked one,
    /// bound to the same key. Every attempt is audited.
    pub async fn refresh(&self, request: RefreshParams) -> Result<Issued, BrokerError> {
        check_list("scopes", &request.scopes)?;
        check_list("audiences", &request.audiences)?;
        self.core.confirmed_cluster_now().await?;
        let attested = match self.attest_refresh(&request) {
            Ok(attested) => attested,
            Err(error) => {
                return Err(self
                    .refuse_plainly(None, (&request.scopes, &request.audiences), error)
                    .await);
            }
        };
        // Without new scopes or audiences, keep the old ones.
        let previous = attested.previous.clone();
        let scopes = if request.scopes.is_empty() {
            previous
                .as_ref()
                .map(|c| c.scopes.clone())
                .unwrap_or_default()
        } else {
            request.scopes
        };
        let audiences = if request.audiences.is_empty() {
            previous.as_ref().map(|c| c.aud.clone()).unwrap_or_default()
        } else {
            request.audiences
        };
        let jkt = attested.bound_jkt.clone();
        self.grant(attested, scopes, audiences, request.ttl_seconds, jkt)
            .await
    }
}
