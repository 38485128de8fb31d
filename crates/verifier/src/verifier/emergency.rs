//! The verifier's emergency paths: break-glass credentials checked against
//! the keys and limits it was given, and the emergency uses (break-glass,
//! or acceptance while stale under fail-open) queued for reporting.

use super::*;

impl Verifier {
    /// Log an emergency use and queue it for reporting.
    pub(super) fn emergency_use(&self, accepted: &Accepted) {
        let at_ms = self.cluster_now_ms();
        let (kind, reason) = match &accepted.break_glass {
            Some(break_glass) => (UseKind::BreakGlass, break_glass.reason.clone()),
            None => {
                let inner = self.inner.read().expect("verifier lock");
                let why = self.staleness(&inner).map(|r| r.to_string());
                (UseKind::FailOpen, why.unwrap_or_else(|| "stale".into()))
            }
        };
        let use_ = EmergencyUse {
            kind,
            at_ms,
            last_at_ms: at_ms,
            count: 1,
            jti: accepted.jti.clone(),
            subject: accepted.subject.clone(),
            tenant: accepted.tenant.clone(),
            audiences: accepted.audiences.clone(),
            reason: capped(&reason, crate::break_glass::MAX_REPORTED_FIELD_BYTES),
            key_id: accepted.key_id.clone(),
        };
        let recorded = self
            .uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(use_.clone());
        // Every break-glass acceptance is logged; a fail-open one when it
        // is the credential's first since the last report, so a verifier
        // failing open under load does not flood its log.
        if kind == UseKind::BreakGlass {
            tracing::warn!(
                jti = %use_.jti,
                sub = %use_.subject,
                tenant = %use_.tenant,
                aud = ?use_.audiences,
                key = %use_.key_id,
                reason = %use_.reason,
                stale = accepted.stale,
                queued = ?recorded,
                "break-glass credential accepted"
            );
        } else if recorded != Recorded::Counted {
            tracing::warn!(
                jti = %use_.jti,
                sub = %use_.subject,
                tenant = %use_.tenant,
                key = %use_.key_id,
                stale_reason = %use_.reason,
                queued = ?recorded,
                "credential accepted while stale (fail-open)"
            );
        }
        if recorded != Recorded::Dropped {
            self.uses_queued.notify_one();
        }
    }

    /// Hand over at most `max` pending emergency uses, oldest first, for
    /// reporting to a broker: the verifier forgets them (give back what
    /// could not be sent with [`Verifier::give_back_emergency_uses`]).
    pub fn take_emergency_uses(&self, max: usize) -> Vec<EmergencyUse> {
        self.uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(max)
    }

    /// Take back emergency uses that could not be handed to a broker
    /// (without waking [`Verifier::emergency_uses_queued`]: the caller
    /// retries when it can).
    pub fn give_back_emergency_uses(&self, uses: Vec<EmergencyUse>) {
        if uses.is_empty() {
            return;
        }
        self.uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .give_back(uses);
    }

    /// A broker confirmed it recorded `entries` of the emergency uses
    /// handed over with [`Verifier::take_emergency_uses`].
    pub fn emergency_uses_recorded(&self, entries: usize) {
        self.uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .confirmed(entries);
    }

    /// Wakes (once per wake-up, even if nobody was waiting) when an
    /// emergency use is queued.
    pub fn emergency_uses_queued(&self) -> Arc<tokio::sync::Notify> {
        self.uses_queued.clone()
    }

    /// A break-glass credential: signed by a configured break-glass key,
    /// every audience allowed for break-glass, lifetime within the
    /// configured maximum and the cluster's maximum credential lifetime
    /// (so no revocation rule can age out before it expires), valid now
    /// in cluster time, and not revoked by a key, tenant or subject rule
    /// or by its own hash. Accepted when stale: break-glass is for when
    /// brokers cannot be reached. Not without any state: a verifier that
    /// never received the revocation state could not honour a revocation.
    pub(super) fn verify_break_glass(
        &self,
        token: &str,
        expect: &Expect,
    ) -> Result<Accepted, Rejection> {
        let Some(config) = &self.config.break_glass else {
            return Err(Rejection::Invalid {
                detail: "this verifier accepts no break-glass credentials".into(),
            });
        };
        let inner = self.inner.read().expect("verifier lock");
        let stale = self.staleness(&inner).is_some();
        let vouched_state = inner.vouched.as_ref().ok_or(Rejection::NoState)?;
        let vouched = &vouched_state.state;
        let current = inner.state.as_ref();
        let now_ms = self.cluster_now_locked(&inner);
        let mut max_ttl_seconds = config.max_ttl().as_secs();
        if vouched_state.max_ttl_ms > 0 {
            max_ttl_seconds = max_ttl_seconds.min(vouched_state.max_ttl_ms / 1000);
        }
        let options = BreakGlassOptions {
            now_seconds: now_ms / 1000,
            leeway_seconds: self.config.leeway_seconds,
            max_ttl_seconds,
        };
        let verified =
            verify_break_glass(token, config.keys(), &options).map_err(|e| Rejection::Invalid {
                detail: format!("break-glass credential: {e}"),
            })?;
        let claims = &verified.claims;
        if let Some(audience) = claims.aud.iter().find(|a| !config.audiences().contains(*a)) {
            return Err(Rejection::Invalid {
                detail: format!(
                    "break-glass credential: audience {audience:?} is not one break-glass credentials may be used for here"
                ),
            });
        }
        if let Some(audience) = expect.audience.or(self.config.audience.as_deref())
            && !claims.aud.iter().any(|a| a == audience)
        {
            return Err(Rejection::Invalid {
                detail: format!(
                    "break-glass credential: {}",
                    VerifyError::WrongAudience {
                        expected: audience.to_owned()
                    }
                ),
            });
        }
        let (tenant, subject) = (claims.tenant.as_str(), claims.sub.as_str());
        if let Some(expected) = expect.tenant
            && tenant != expected
        {
            return Err(Rejection::WrongTenant {
                expected: expected.to_owned(),
                found: tenant.to_owned(),
            });
        }
        let kid = verified.key_id.as_str();
        let issued_at_ms = claims.iat.saturating_mul(1000);
        let token_hash: SecretHash = Sha256::digest(token.as_bytes()).into();
        // A break-glass credential is never delegated and has no task or
        // status index: its key, tenant, subject and hash are what can
        // revoke it.
        let facts = CredentialFacts {
            tenant,
            subject,
            key_id: kid,
            issued_at_ms,
            secret_hash: Some(&token_hash),
            ..CredentialFacts::default()
        };
        let revoked = |state: &Snapshot| state.revoked_by(&facts);
        if let Some(by) = current.and_then(revoked).or_else(|| revoked(vouched)) {
            return Err(Rejection::Revoked {
                by: revoked_words(by, 0, kid, tenant, subject, None),
            });
        }
        Ok(Accepted {
            subject: subject.to_owned(),
            tenant: tenant.to_owned(),
            audiences: claims.aud.clone(),
            scopes: claims.scopes.clone(),
            key_id: kid.to_owned(),
            status_index: 0,
            expires_at: claims.exp,
            jti: claims.jti.clone(),
            epoch: current.unwrap_or(vouched).epoch,
            stale,
            break_glass: Some(BreakGlassAccepted {
                reason: claims.lapse_break_glass.reason.clone(),
            }),
            agent: AcceptedAgent::default(),
        })
    }
}
