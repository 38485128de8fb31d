//! Verifying a credential against the held state: signatures (remembered
//! or checked, one at a time or in a batch), claims, revocation and
//! staleness.

use super::*;

impl Verifier {
    /// Verify a credential against the current state. A break-glass
    /// credential (by its `typ`) is judged by the break-glass rules when
    /// the verifier has break-glass keys. Every acceptance of a
    /// break-glass credential, and every acceptance while stale, is an
    /// emergency use: logged, counted and queued for reporting.
    pub fn verify(&self, token: &str, expect: &Expect) -> Result<Accepted, Rejection> {
        self.verify_checked(token, expect, None)
    }

    /// [`Verifier::verify`], taking the signature as checked when `checked`
    /// was made for this very credential (by its hash) and this verifier's
    /// key set holds the key that signed it, with the same bytes. Anything
    /// else is judged as by `verify`.
    pub fn verify_checked(
        &self,
        token: &str,
        expect: &Expect,
        checked: Option<&CheckedSignature>,
    ) -> Result<Accepted, Rejection> {
        let break_glass = self.config.break_glass.is_some() && is_break_glass(token);
        let no_audience = expect.audience.is_none()
            && self.config.audience.is_none()
            && !self.config.any_audience;
        let result = if no_audience {
            Err(Rejection::NoAudience)
        } else if break_glass {
            self.verify_break_glass(token, expect)
        } else {
            self.verify_inner(token, expect, checked.map(|c| &c.0))
        };
        use std::sync::atomic::Ordering::Relaxed;
        match &result {
            Ok(accepted) => {
                self.counters.accepted.fetch_add(1, Relaxed);
                if accepted.stale {
                    self.counters.accepted_while_stale.fetch_add(1, Relaxed);
                }
                if break_glass {
                    self.counters.break_glass_accepted.fetch_add(1, Relaxed);
                }
                if break_glass || accepted.stale {
                    self.emergency_use(accepted);
                }
            }
            Err(rejection) => {
                if let Rejection::Stale { .. } = rejection {
                    self.counters.stale.fetch_add(1, Relaxed);
                }
                if break_glass {
                    self.counters.break_glass_rejected.fetch_add(1, Relaxed);
                    tracing::debug!(reason = rejection.code(), %rejection, "break-glass credential refused");
                }
                self.counters.rejected.fetch_add(1, Relaxed);
            }
        };
        result
    }

    fn verify_inner(
        &self,
        token: &str,
        expect: &Expect,
        checked: Option<&Arc<Signed>>,
    ) -> Result<Accepted, Rejection> {
        // What a check of this very credential established, if one was
        // made (a batch) or remembered; and the credential's own hash for
        // the leaked-secret check, which such a check already holds.
        let remembered = checked
            .filter(|c| &*c.token == token)
            .cloned()
            .or_else(|| self.signatures.get(token));
        let token_hash: TokenHash = match &remembered {
            Some(signed) => signed.token_hash,
            None => Sha256::digest(token.as_bytes()).into(),
        };
        let inner = self.inner.read().expect("verifier lock");
        let stale = self.staleness(&inner);
        if let Some(rejection) = &stale
            && !self.config.fail_open
        {
            return Err(rejection.clone());
        }
        let vouched = &inner.vouched.as_ref().ok_or(Rejection::NoState)?.state;
        let current = inner.state.as_ref();
        let keys = FeedKeys { vouched, current };
        let now_ms = self.cluster_now_locked(&inner);
        // `verify` refused a call with no audience unless any will do.
        let audience = match expect.audience.or(self.config.audience.as_deref()) {
            Some(audience) => AudienceCheck::Require(audience),
            None => AudienceCheck::Any,
        };
        let options = VerifyOptions {
            audience,
            issuer: &self.config.issuer,
            now_seconds: now_ms / 1000,
            leeway_seconds: self.config.leeway_seconds,
        };
        let (signed, key) = self.signed(token, &token_hash, &keys, remembered)?;
        let claims = &signed.claims;
        check_claims(claims, &options).map_err(|e| invalid(e, token))?;
        // Checked after the signature: a forged context never gets here.
        if let Some(problem) = claims.agent.problem() {
            return Err(Rejection::Invalid {
                detail: format!("malformed agent context: {problem}"),
            });
        }
        let kid = signed.key_id.as_str();
        let issued_at_ms = claims.iat.saturating_mul(1000);
        let leeway_ms = self.config.leeway_seconds * 1000;
        // `iat` is whole seconds: the signing moment lies in [iat, iat + 1 s).
        if issued_at_ms.saturating_add(1000 + leeway_ms) < key.not_before_ms
            || issued_at_ms > key.not_after_ms.saturating_add(leeway_ms)
        {
            return Err(Rejection::KeyOutsideWindow {
                key_id: kid.to_owned(),
                issued_at_ms,
            });
        }
        if let Some(tenant) = expect.tenant
            && claims.tenant.as_str() != tenant
        {
            return Err(Rejection::WrongTenant {
                expected: tenant.to_owned(),
                found: claims.tenant.as_str().to_owned(),
            });
        }
        let index = claims.status_index().0;
        let (tenant, subject) = (claims.tenant.as_str(), claims.sub.as_str());
        let task = claims.agent.task.as_deref();
        let facts = CredentialFacts {
            tenant,
            subject,
            key_id: kid,
            issued_at_ms,
            status_index: Some(index),
            ancestors: &claims.agent.ancestors,
            task,
            secret_hash: Some(&token_hash),
        };
        let revoked = |state: &Snapshot| state.revoked_by(&facts);
        // With nothing received since the last vouched state, the state
        // received is a copy of the vouched one (see `Inner::changed`):
        // one check covers both.
        let by = match current {
            Some(current) if !inner.unvouched_changes => revoked(current),
            Some(current) => revoked(current).or_else(|| revoked(vouched)),
            None => revoked(vouched),
        };
        if let Some(by) = by {
            return Err(Rejection::Revoked {
                by: revoked_words(by, index, kid, tenant, subject, task),
            });
        }
        if let Some(bound) = &claims.cnf {
            self.check_possession(token, &bound.jkt, expect.dpop, now_ms / 1000)?;
        }
        Ok(Accepted {
            subject: subject.to_owned(),
            tenant: tenant.to_owned(),
            audiences: claims.aud.clone(),
            scopes: claims.scopes.clone(),
            key_id: kid.to_owned(),
            status_index: index,
            expires_at: claims.exp,
            jti: claims.jti.clone(),
            epoch: current.unwrap_or(vouched).epoch,
            stale: stale.is_some(),
            break_glass: None,
            agent: AcceptedAgent::of(&claims.agent),
        })
    }

    /// What the credential's signature establishes, and the key that
    /// signed it as `keys` hold it: from `remembered` (a check of this very
    /// credential) while `keys` hold the key that signed with the same
    /// bytes, else by verifying the signature (and remembering what it
    /// established).
    fn signed(
        &self,
        token: &str,
        token_hash: &TokenHash,
        keys: &FeedKeys,
        remembered: Option<Arc<Signed>>,
    ) -> Result<(Arc<Signed>, KeyWindow), Rejection> {
        if let Some(signed) = remembered {
            match key_window(keys, &signed.key_id, &signed.public_key) {
                Some(window) => {
                    self.signatures.recall();
                    return Ok((signed, window));
                }
                // The key left the key set or changed: judged anew below.
                None => self.signatures.remove(token),
            }
        }
        let unverified = Unverified::parse(token).map_err(|e| invalid(e, token))?;
        let key = unverified.key(keys).map_err(|e| invalid(e, token))?;
        unverified
            .check_signature(&key)
            .map_err(|e| invalid(e, token))?;
        let signed = Arc::new(Signed {
            token: token.into(),
            token_hash: *token_hash,
            key_id: key.key_id().as_str().to_owned(),
            public_key: *key.public_key(),
            claims: unverified.claims().map_err(|e| invalid(e, token))?,
        });
        self.signatures.insert(signed.clone());
        let window = key_window(keys, &signed.key_id, &signed.public_key).ok_or_else(|| {
            Rejection::Invalid {
                detail: format!("no key {:?} in the revocation feed", signed.key_id),
            }
        })?;
        Ok((signed, window))
    }

    /// Check the signatures of `tokens` together, in one Ed25519 batch
    /// (each alone when the batch fails, so each gets its own answer),
    /// skipping those the signature memory already holds. For each token,
    /// what its signature established, or `None` when it established
    /// nothing (its verification says why). What is checked is remembered.
    pub fn check_signatures(&self, tokens: &[&str]) -> Vec<Option<CheckedSignature>> {
        let mut checked = vec![None; tokens.len()];
        let mut pending = Vec::new();
        {
            let inner = self.inner.read().expect("verifier lock");
            let Some(vouched) = inner.vouched.as_ref() else {
                return checked;
            };
            let keys = FeedKeys {
                vouched: &vouched.state,
                current: inner.state.as_ref(),
            };
            for (n, token) in tokens.iter().enumerate() {
                if let Some(signed) = self.signatures.get(token)
                    && key_window(&keys, &signed.key_id, &signed.public_key).is_some()
                {
                    checked[n] = Some(CheckedSignature(signed));
                    continue;
                }
                let Ok(unverified) = Unverified::parse(token) else {
                    continue;
                };
                if let Ok(key) = unverified.key(&keys) {
                    let token_hash: TokenHash = Sha256::digest(token.as_bytes()).into();
                    pending.push((n, *token, token_hash, unverified, key));
                }
            }
        }
        let items: Vec<_> = pending.iter().map(|(_, _, _, u, k)| (u, k)).collect();
        let answers = lapse_credential::batch::verify_batch(&items);
        for ((n, token, token_hash, unverified, key), answer) in pending.iter().zip(answers) {
            if answer.is_err() {
                continue;
            }
            let Ok(claims) = unverified.claims() else {
                continue;
            };
            let signed = Arc::new(Signed {
                token: (*token).into(),
                token_hash: *token_hash,
                key_id: key.key_id().as_str().to_owned(),
                public_key: *key.public_key(),
                claims,
            });
            self.signatures.insert(signed.clone());
            checked[*n] = Some(CheckedSignature(signed));
        }
        checked
    }

    /// Verify several credentials, their signatures checked in one batch
    /// ([`Verifier::check_signatures`]): each answer is the one
    /// [`Verifier::verify`] gives for that credential alone.
    pub fn verify_batch(&self, requests: &[(&str, Expect)]) -> Vec<Result<Accepted, Rejection>> {
        let tokens: Vec<&str> = requests.iter().map(|(token, _)| *token).collect();
        let checked = self.check_signatures(&tokens);
        requests
            .iter()
            .zip(&checked)
            .map(|((token, expect), checked)| self.verify_checked(token, expect, checked.as_ref()))
            .collect()
    }

    /// Whether a static secret has been revoked as leaked (by the sha256 of
    /// its bytes). Staleness applies as for credentials.
    pub fn check_secret_hash(&self, hash: &SecretHash) -> Result<bool, Rejection> {
        let inner = self.inner.read().expect("verifier lock");
        if let Some(rejection) = self.staleness(&inner)
            && !self.config.fail_open
        {
            return Err(rejection);
        }
        let vouched = &inner.vouched.as_ref().ok_or(Rejection::NoState)?.state;
        Ok(vouched.secrets.contains(hash)
            || inner
                .state
                .as_ref()
                .is_some_and(|s| s.secrets.contains(hash)))
    }
}

/// When a key may have signed: the narrower of the windows the vouched
/// state and the state received give it.
struct KeyWindow {
    not_before_ms: u64,
    not_after_ms: u64,
}

/// The window of key `kid` while the vouched state and the state received
/// both hold it with exactly `bytes`; `None` otherwise. Copies no key.
fn key_window(keys: &FeedKeys, kid: &str, bytes: &[u8; 32]) -> Option<KeyWindow> {
    let vouched = keys.vouched.keys.get(kid)?;
    if vouched.bytes.as_slice() != bytes.as_slice() {
        return None;
    }
    let mut window = KeyWindow {
        not_before_ms: vouched.not_before_ms,
        not_after_ms: vouched.not_after_ms,
    };
    if let Some(current) = keys.current {
        let other = current.keys.get(kid)?;
        if other.algorithm != vouched.algorithm || other.bytes != vouched.bytes {
            return None;
        }
        window.not_before_ms = window.not_before_ms.max(other.not_before_ms);
        window.not_after_ms = window.not_after_ms.min(other.not_after_ms);
    }
    Some(window)
}

/// A credential refused for what its signature or claims say.
fn invalid(error: VerifyError, token: &str) -> Rejection {
    match error {
        VerifyError::WrongType { .. } if is_break_glass(token) => Rejection::Invalid {
            detail: "a break-glass credential; this verifier accepts no break-glass credentials"
                .into(),
        },
        VerifyError::UnknownKeyId(kid) => Rejection::Invalid {
            detail: format!("no key {kid:?} in the revocation feed"),
        },
        other => Rejection::Invalid {
            detail: other.to_string(),
        },
    }
}

/// What revoked a credential, in words.
pub(super) fn revoked_words(
    by: RevokedBy,
    index: u64,
    kid: &str,
    tenant: &str,
    subject: &str,
    task: Option<&str>,
) -> String {
    match by {
        RevokedBy::StatusIndex => format!("status index {index}"),
        RevokedBy::Ancestor { index } => format!("an ancestor (index {index}) is revoked"),
        RevokedBy::SecretHash => "the credential's own hash".into(),
        RevokedBy::KeyId => format!("signing key {kid}"),
        RevokedBy::Tenant => format!("tenant {tenant}"),
        RevokedBy::Subject => format!("workload {subject}"),
        RevokedBy::Task => format!("task {} of tenant {tenant}", task.unwrap_or_default()),
    }
}
