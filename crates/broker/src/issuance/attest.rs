//! Attestation: how a workload proves who it is before a credential is
//! issued (a join token made for it, a JWT from a configured external
//! issuer, or a current credential to refresh, with its DPoP proof when
//! key-bound), and spending a join token once the issuance is granted.

use std::time::Duration;

use lapse_credential::{
    AudienceCheck, Confirmation, DpopExpectation, KeyId, KeyLookup, TenantId, Verified,
    VerifyError, VerifyOptions, WorkloadId, verify, verify_proof,
};
use lapse_ledger::{Applied, AttestationKind, Command, JoinGrant, JoinUse, Refusal, RequestId};
use sha2::{Digest, Sha256};

use super::issuer::{Attested, Issuer, RefreshParams};
use super::signed::Signed;
use crate::core::SharedCore;
use crate::error::BrokerError;

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

/// The ledger's registered, unrevoked keys, looked up one at a time where
/// they are (no copy of them all per request).
struct LedgerKeys<'a>(&'a SharedCore);

impl KeyLookup for LedgerKeys<'_> {
    fn public_key(&self, key_id: &str) -> Option<[u8; 32]> {
        let key_id = KeyId::new(key_id).ok()?;
        self.0.view().read(|applied| {
            let key = applied.ledger.keys.get(&key_id)?;
            if key.revoked.is_some() {
                return None;
            }
            key.public_key.as_slice().try_into().ok()
        })
    }
}

/// At most the first 128 bytes of a caller's string, for an error.
fn capped(text: &str) -> &str {
    let mut end = text.len().min(128);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Issuer {
    /// Check a join token against this broker's applied state, without
    /// spending it: the token is consumed through the ledger only once the
    /// issuance it pays for has been granted (see [`Self::spend_join_token`]).
    /// A token this broker has not applied yet is looked up again after
    /// confirming its state is current, so a token just created elsewhere
    /// works, and a guessed one costs no Raft commit.
    pub(super) async fn attest_join_token(
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
            chain: None,
            join_token: Some((token_hash, spend_id)),
            until: None,
            agent: Default::default(),
            presented_sha256: Some(token_hash),
        })
    }

    /// What the applied ledger says of a join token: the workload it is for,
    /// or why it cannot be used. A token spent by this same attempt (a
    /// retry whose first try committed) is still good for it.
    pub(super) fn join_grant(
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
    pub(super) async fn spend_join_token(
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

    pub(super) fn attest_external(&self, token: &str) -> Result<Attested, BrokerError> {
        let claimed_issuer = unverified_issuer(token)?;
        let keys = self
            .external
            .iter()
            .find(|keys| keys.config.issuer == claimed_issuer)
            .ok_or_else(|| {
                BrokerError::Unauthenticated(format!(
                    "external_jwt: issuer {:?} is not configured",
                    capped(&claimed_issuer)
                ))
            })?;
        let config = &keys.config;
        let claims = keys
            .verify(
                token,
                self.now_seconds(),
                self.settings.leeway_seconds,
                self.core.env().monotonic_ms(),
            )
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
            chain: None,
            join_token: None,
            until: None,
            agent: Default::default(),
            presented_sha256: Some(Sha256::digest(token.as_bytes()).into()),
        })
    }

    /// A proof's nonce must be one this broker handed out in this life:
    /// a proof seen once cannot be played to another broker, or to this
    /// one after a restart. Without one (or with a stale one) the caller
    /// gets a fresh nonce to make the proof again with.
    fn check_nonce(&self, nonce: Option<&str>) -> Result<(), BrokerError> {
        let now_ms = self.core.cluster_now();
        match nonce {
            Some(nonce) if self.nonces.accepts(nonce, now_ms) => Ok(()),
            _ => Err(BrokerError::DpopNonce {
                nonce: self.nonces.current(now_ms),
            }),
        }
    }

    /// The DPoP proof that the caller of an issuance holds the key `jkt`
    /// it asks the credential to be bound to.
    pub(super) fn check_issue_proof(&self, jkt: &str, proof: &str) -> Result<(), BrokerError> {
        if proof.is_empty() {
            return Err(BrokerError::Unauthenticated(
                "binding a credential to a key (dpop_jkt) needs a DPoP proof made with it for POST <issuer>/issue".into(),
            ));
        }
        let now = self.now_seconds();
        let uri = self.settings.issue_uri();
        let proof = verify_proof(
            proof,
            &DpopExpectation {
                method: "POST",
                url: &uri,
                access_token: None,
                now_seconds: now,
                max_age_seconds: self.settings.dpop_max_age_seconds,
                leeway_seconds: self.settings.leeway_seconds,
            },
        )
        .map_err(|e| BrokerError::Unauthenticated(format!("DPoP proof: {e}")))?;
        if proof.jkt != jkt {
            return Err(BrokerError::Unauthenticated(
                "DPoP proof is signed by another key than dpop_jkt names".into(),
            ));
        }
        self.check_nonce(proof.nonce.as_deref())?;
        self.replay
            .lock()
            .expect("replay lock")
            .check_and_remember(&proof.jti, now)
            .map_err(|e| BrokerError::Unauthenticated(format!("DPoP proof: {e}")))
    }

    /// Check a credential presented to refresh or exchange it, as a
    /// verifier would: signature by a registered key, time, every
    /// revocation (its index, its ancestors', the rules, the key, its own
    /// hash), and, when it is key-bound, a DPoP proof for `uri` by that key.
    pub(super) fn check_presented(
        &self,
        credential: &str,
        dpop_proof: &str,
        uri: &str,
    ) -> Result<Presented, BrokerError> {
        let now = self.now_seconds();
        let token_sha256: [u8; 32] = Sha256::digest(credential.trim().as_bytes()).into();
        // A credential this broker signed itself, byte for byte the same
        // (the hash is of the exact text only when nothing was trimmed),
        // needs no signature check; every other check below still runs.
        let recent = (credential.len() == credential.trim().len())
            .then(|| self.keys.recently_signed().get(&token_sha256))
            .flatten();
        let verified = match recent {
            Some(signed) if self.key_usable(&signed.key_id) => {
                self.check_signed_here(&signed, now)
                    .map_err(|e| BrokerError::Unauthenticated(format!("credential: {e}")))?;
                Verified {
                    key_id: signed.key_id.clone(),
                    claims: signed.claims.clone(),
                }
            }
            _ => verify(
                credential,
                &LedgerKeys(&self.core),
                &VerifyOptions {
                    // Renewed or delegated for whatever it was for.
                    audience: AudienceCheck::Any,
                    issuer: &self.settings.issuer,
                    now_seconds: now,
                    leeway_seconds: self.settings.leeway_seconds,
                },
            )
            .map_err(|e| BrokerError::Unauthenticated(format!("credential: {e}")))?,
        };
        let claims = verified.claims;
        if let Some(problem) = claims.agent.problem() {
            return Err(BrokerError::Unauthenticated(format!(
                "credential: {problem}"
            )));
        }
        let (revoked, revoked_ancestor, lease_until_ms) = self.core.view().read(|applied| {
            let ledger = &applied.ledger;
            let revoked = ledger.is_revoked(
                claims.status_index(),
                &claims.tenant,
                &claims.sub,
                &verified.key_id,
                claims.iat * 1000,
                claims.agent.task.as_deref(),
                &claims.agent.ancestors,
            ) || ledger.revoked_secrets.contains_key(&token_sha256);
            let ancestor = claims
                .agent
                .ancestors
                .iter()
                .copied()
                .find(|index| ledger.revoked_indices.contains_key(index));
            let lease = ledger
                .lease_of(claims.status_index().0)
                .map(|lease| lease.credentials_expire_by_ms);
            (revoked, ancestor, lease)
        });
        // The ancestor first: it says which revocation reached this one.
        if let Some(index) = revoked_ancestor {
            return Err(BrokerError::Forbidden(format!(
                "credential has been revoked: it was delegated from status index {index}, which is revoked"
            )));
        }
        if revoked {
            return Err(BrokerError::Forbidden("credential has been revoked".into()));
        }
        if let Some(Confirmation { jkt }) = &claims.cnf {
            self.check_holder_proof(jkt, credential, dpop_proof, uri)?;
        }
        Ok(Presented {
            claims,
            token_sha256,
            lease_until_ms,
        })
    }

    /// Whether the ledger still holds `key_id` registered and unrevoked: what
    /// a full verification would look it up by.
    fn key_usable(&self, key_id: &KeyId) -> bool {
        self.core.view().read(|applied| {
            applied
                .ledger
                .keys
                .get(key_id)
                .is_some_and(|key| key.revoked.is_none())
        })
    }

    /// The checks of [`verify`] that do not depend on the signature, for a
    /// credential this broker signed: its times against `now` (with the
    /// leeway) and its issuer, in the same order and with the same errors.
    fn check_signed_here(&self, signed: &Signed, now: u64) -> Result<(), VerifyError> {
        let claims = &signed.claims;
        let leeway = self.settings.leeway_seconds;
        if now > claims.exp.saturating_add(leeway) {
            return Err(VerifyError::Expired {
                exp: claims.exp,
                now,
            });
        }
        if now.saturating_add(leeway) < claims.nbf {
            return Err(VerifyError::NotYetValid {
                nbf: claims.nbf,
                now,
            });
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(VerifyError::IssuedInFuture {
                iat: claims.iat,
                now,
            });
        }
        if claims.iss != self.settings.issuer {
            return Err(VerifyError::WrongIssuer {
                expected: self.settings.issuer.clone(),
                found: claims.iss.clone(),
            });
        }
        Ok(())
    }

    /// A DPoP proof for `POST uri` by the key `jkt` a presented
    /// `credential` is bound to, with one of this broker's nonces, seen
    /// once.
    fn check_holder_proof(
        &self,
        jkt: &str,
        credential: &str,
        dpop_proof: &str,
        uri: &str,
    ) -> Result<(), BrokerError> {
        let now = self.now_seconds();
        if dpop_proof.is_empty() {
            return Err(BrokerError::Unauthenticated(
                "credential is bound to a key: a DPoP proof is required".into(),
            ));
        }
        let proof = verify_proof(
            dpop_proof,
            &DpopExpectation {
                method: "POST",
                url: uri,
                access_token: Some(credential),
                now_seconds: now,
                max_age_seconds: self.settings.dpop_max_age_seconds,
                leeway_seconds: self.settings.leeway_seconds,
            },
        )
        .map_err(|e| BrokerError::Unauthenticated(format!("DPoP proof: {e}")))?;
        if proof.jkt != jkt {
            return Err(BrokerError::Unauthenticated(
                "DPoP proof is signed by a different key than the credential is bound to".into(),
            ));
        }
        self.check_nonce(proof.nonce.as_deref())?;
        self.replay
            .lock()
            .expect("replay lock")
            .check_and_remember(&proof.jti, now)
            .map_err(|e| BrokerError::Unauthenticated(format!("DPoP proof: {e}")))
    }

    /// Whether the holder of `credential` may revoke it itself (RFC 7009):
    /// `Ok(true)` when it is a current credential of this cluster (with a
    /// DPoP proof for `POST <issuer>/revoke` when it is key-bound),
    /// `Ok(false)` when there is nothing to revoke (malformed, badly
    /// signed, expired), `Err` when a key-bound credential comes without
    /// a good proof.
    pub fn holder_may_revoke(
        &self,
        credential: &str,
        dpop_proof: &str,
    ) -> Result<bool, BrokerError> {
        let Ok(verified) = verify(
            credential,
            &LedgerKeys(&self.core),
            &VerifyOptions {
                audience: AudienceCheck::Any,
                issuer: &self.settings.issuer,
                now_seconds: self.now_seconds(),
                leeway_seconds: self.settings.leeway_seconds,
            },
        ) else {
            return Ok(false);
        };
        if let Some(Confirmation { jkt }) = &verified.claims.cnf {
            self.check_holder_proof(jkt, credential, dpop_proof, &self.settings.revoke_uri())?;
        }
        Ok(true)
    }

    pub(super) fn attest_refresh(&self, request: &RefreshParams) -> Result<Attested, BrokerError> {
        let now = self.now_seconds();
        let presented = self.check_presented(
            &request.credential,
            &request.dpop_proof,
            &self.settings.refresh_uri(),
        )?;
        let claims = presented.claims;
        // A delegated credential lives within its parent's life: renewing
        // it could outlive the parent, so the delegate asks again.
        if claims.agent.depth() > 0 {
            return Err(BrokerError::Forbidden(
                "a delegated credential is not refreshed: exchange its parent for a new one".into(),
            ));
        }
        // The chain this refresh continues: its index (which the new
        // credential keeps) and the time of its attestation.
        let chain = claims.chain.unwrap_or(lapse_credential::Chain {
            idx: claims.status_index().0,
            iat: claims.iat,
        });
        if chain.idx != claims.status_index().0 {
            return Err(BrokerError::Forbidden(format!(
                "credential's chain index {} is not its status index {}",
                chain.idx,
                claims.status_index().0
            )));
        }
        let max_age = self.settings.max_chain_age_seconds;
        let age = now.saturating_sub(chain.iat);
        if age >= max_age {
            return Err(BrokerError::Forbidden(format!(
                "the refresh chain began {age} s ago, at the limit of issuance.max_chain_age_seconds ({max_age}): attest again"
            )));
        }
        // The index must stay revocable as long as the new credential
        // lives: no later than its lease's credentials may.
        let Some(lease_until_ms) = presented.lease_until_ms.filter(|until| *until / 1000 > now)
        else {
            return Err(BrokerError::Forbidden(format!(
                "the refresh chain's status index {} is no longer live: attest again",
                chain.idx
            )));
        };
        let until = (chain.iat.saturating_add(max_age)).min(lease_until_ms / 1000);
        Ok(Attested {
            tenant: claims.tenant.clone(),
            workload: claims.sub.clone(),
            kind: AttestationKind::Refresh {
                previous_index: claims.status_index().0,
            },
            bound_jkt: claims.cnf.as_ref().map(|c| c.jkt.clone()),
            until: None,
            agent: claims.agent.clone(),
            previous: Some(claims),
            chain: Some((chain, until)),
            join_token: None,
            presented_sha256: Some(presented.token_sha256),
        })
    }
}

/// A presented credential that passed [`Issuer::check_presented`].
pub(super) struct Presented {
    pub claims: lapse_credential::Claims,
    /// SHA-256 of the credential as presented.
    pub token_sha256: [u8; 32],
    /// When the lease of its status index lets its credentials live until
    /// (ms), if the lease is still held.
    pub lease_until_ms: Option<u64>,
}
