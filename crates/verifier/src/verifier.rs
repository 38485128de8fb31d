//! The verifier's state and its verification: what a service calls.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use lapse_credential::break_glass::{BreakGlassOptions, is_break_glass, verify_break_glass};
use lapse_credential::{AudienceCheck, Unverified, VerifyError, VerifyOptions, check_claims};
use lapse_filter::{CredentialFacts, RevokedBy, SecretHash, Snapshot};
use lapse_wire::feed::FeedEvent;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::break_glass::{BreakGlassConfig, EmergencyUse, Recorded, UseKind, UseQueue, capped};
use crate::clock::{Clock, OffsetEstimator, SystemClock};
use crate::event::{Body, Decoded, FeedError, decode_event};
use crate::vouched::{FeedKeys, Vouched, check_voucher};

mod answers;
mod cache;
mod emergency;
mod possession;

pub use answers::{
    Accepted, AcceptedAgent, BreakGlassAccepted, Rejection, VerifierStatus, WithheldNotice,
};
pub use possession::Proof;

use cache::{SignatureCache, Signed, TokenHash};

/// How a verifier judges credentials.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// With no confirmed heartbeat for this long the verifier is stale.
    pub staleness: Duration,
    /// When stale, accept credentials anyway (default: reject them all).
    pub fail_open: bool,
    /// Allowed difference between `exp`/`nbf` and cluster time.
    pub leeway_seconds: u64,
    /// The audience every credential must name, unless a call names
    /// another (`Expect::audience`). With none here, each call must name
    /// one, or `any_audience` must say that any will do: a credential
    /// meant for one service is never accepted by another by omission
    /// (RFC 8725 §3.9).
    pub audience: Option<String>,
    /// Accept a credential for any audience when neither this
    /// configuration nor the call names one (`lapse verifier
    /// --any-audience`).
    pub any_audience: bool,
    /// The `iss` every credential must carry: the cluster's `[issuance]
    /// issuer`, `lapse` unless configured otherwise.
    pub issuer: String,
    /// Whose word makes the verifier fresh. With a checker (the cluster
    /// CA), only heartbeats signed by a broker certificate of that CA,
    /// whose digest matches the state held, do; anything that could make
    /// the verifier accept more (a key, a window move, a maximum
    /// lifetime) counts only once such a heartbeat covers it. `None`
    /// takes heartbeats at their word: for plaintext experiments on
    /// loopback only.
    pub trust: Option<lapse_pki::SignatureChecker>,
    /// Offline break-glass keys and the limits their credentials are
    /// accepted within (see `break_glass.rs`); `None` accepts none.
    pub break_glass: Option<BreakGlassConfig>,
    /// How old a DPoP proof may be (RFC 9449), beside the leeway.
    pub dpop_max_age_seconds: u64,
    /// How many recent DPoP proof ids are remembered to refuse replays; a
    /// proof that finds the memory full is refused (retry shortly).
    pub dpop_replay_capacity: usize,
    /// How many verified signatures are remembered (default 16,384; 0
    /// remembers none), so that a repeated credential costs a SHA-256
    /// instead of an Ed25519 verification. Only the signature and the
    /// decoded claims are remembered, and only while the key that signed
    /// stays in the key set: time, audience, issuer, tenant, DPoP proof and
    /// every revocation check run on every call. The memory holds at most
    /// this many entries, whatever it is sent.
    pub signature_cache: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            staleness: Duration::from_secs(2),
            fail_open: false,
            leeway_seconds: 30,
            audience: None,
            any_audience: false,
            issuer: lapse_credential::DEFAULT_ISSUER.into(),
            trust: None,
            break_glass: None,
            dpop_max_age_seconds: 60,
            dpop_replay_capacity: 100_000,
            signature_cache: 16_384,
        }
    }
}

impl VerifyConfig {
    /// Why a verifier with this configuration must not start, if it must
    /// not: no audience and no word that any will do, or no issuer.
    pub fn problem(&self) -> Option<String> {
        match (&self.audience, self.any_audience) {
            (None, false) => Some(
                "name the audience credentials must be for, or say that any audience will do"
                    .into(),
            ),
            (Some(audience), _) if audience.is_empty() => {
                Some("an empty audience matches no credential".into())
            }
            _ if self.issuer.is_empty() => {
                Some("name the issuer credentials must come from".into())
            }
            _ => None,
        }
    }
}

/// What a caller may additionally require of one credential.
#[derive(Debug, Clone, Default)]
pub struct Expect<'a> {
    pub audience: Option<&'a str>,
    pub tenant: Option<&'a str>,
    /// The DPoP proof sent with the credential, and the request it was
    /// sent with. A key-bound credential (`cnf.jkt`) is accepted only with
    /// a valid proof by that key.
    pub dpop: Option<Proof<'a>>,
}

struct Inner {
    /// The state as received: the vouched state plus every event since.
    state: Option<Snapshot>,
    /// The state a heartbeat last vouched for. A credential must pass both
    /// it and `state`, so an event nobody vouched for can make the
    /// verifier refuse more, never accept more.
    vouched: Option<Vouched>,
    /// `state` changed since it was last vouched for. While false, `state`
    /// is a copy of the vouched state, and a verification checks one of
    /// them for revocations.
    unvouched_changes: bool,
    /// The epoch digest of `state`, once computed (cleared when it changes).
    epoch_digest: Option<lapse_filter::StateDigest>,
    heartbeat_broker: Option<u64>,
    withheld: Option<(u64, String, Instant)>,
    last_heartbeat: Option<Instant>,
    broker_id: Option<u64>,
    clock: OffsetEstimator,
    applied_events: u64,
    rejected_events: u64,
    unvouched_drops: u64,
    age_outs: u64,
    snapshots: u64,
    deltas: u64,
    heartbeats: u64,
}

impl Inner {
    /// The state received changed.
    fn changed(&mut self) {
        self.unvouched_changes = true;
        self.epoch_digest = None;
    }

    /// The state held is now vouched for, as of cluster time `at_ms`.
    fn vouch(&mut self, at_ms: u64, max_ttl_ms: u64) {
        match (&mut self.vouched, &self.state) {
            (_, None) => {}
            (Some(vouched), Some(_)) if !self.unvouched_changes => {
                vouched.at_ms = at_ms;
                vouched.max_ttl_ms = max_ttl_ms;
            }
            (vouched, Some(state)) => {
                *vouched = Some(Vouched {
                    state: state.clone(),
                    at_ms,
                    max_ttl_ms,
                });
            }
        }
        self.unvouched_changes = false;
    }
}

/// An edge verifier's state: cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<RwLock<Inner>>,
    counters: Arc<Counters>,
    config: Arc<VerifyConfig>,
    clock: Arc<dyn Clock>,
    epochs: Arc<tokio::sync::watch::Sender<u64>>,
    uses: Arc<Mutex<UseQueue>>,
    uses_queued: Arc<tokio::sync::Notify>,
    /// Recent DPoP proof ids, to refuse replays (bounded).
    proofs_seen: Arc<Mutex<lapse_credential::ReplayCache>>,
    /// Signatures verified recently (bounded, see `cache.rs`).
    signatures: Arc<SignatureCache>,
}

/// A credential whose signature a verifier checked, for another verifier
/// of the process to verify the same credential without checking the
/// signature again ([`Verifier::verify_checked`]). It counts only for the
/// credential it was made for, and only while the verifier using it holds
/// the same key under the same id.
#[derive(Clone)]
pub struct CheckedSignature(Arc<Signed>);

impl std::fmt::Debug for CheckedSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedSignature")
            .field("key_id", &self.0.key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Counters {
    accepted: std::sync::atomic::AtomicU64,
    rejected: std::sync::atomic::AtomicU64,
    stale: std::sync::atomic::AtomicU64,
    accepted_while_stale: std::sync::atomic::AtomicU64,
    break_glass_accepted: std::sync::atomic::AtomicU64,
    break_glass_rejected: std::sync::atomic::AtomicU64,
}

impl Verifier {
    pub fn new(config: VerifyConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: VerifyConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Inner {
                state: None,
                vouched: None,
                unvouched_changes: false,
                epoch_digest: None,
                heartbeat_broker: None,
                withheld: None,
                last_heartbeat: None,
                broker_id: None,
                clock: OffsetEstimator::default(),
                applied_events: 0,
                rejected_events: 0,
                unvouched_drops: 0,
                age_outs: 0,
                snapshots: 0,
                deltas: 0,
                heartbeats: 0,
            })),
            counters: Arc::default(),
            clock,
            epochs: Arc::new(tokio::sync::watch::channel(0).0),
            uses: Arc::default(),
            uses_queued: Arc::default(),
            proofs_seen: Arc::new(Mutex::new(lapse_credential::ReplayCache::new(
                config.dpop_replay_capacity,
                config.dpop_max_age_seconds + 2 * config.leeway_seconds,
            ))),
            signatures: Arc::new(SignatureCache::new(config.signature_cache)),
            config: Arc::new(config),
        }
    }

    /// How many verified signatures the verifier remembers now.
    pub fn remembered_signatures(&self) -> usize {
        self.signatures.len()
    }

    /// A receiver that sees the epoch held change (0 before any state). Do
    /// not hold its value (`borrow`, `wait_for`) while calling into the
    /// verifier: drop it first.
    pub fn epochs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epochs.subscribe()
    }

    pub fn config(&self) -> &VerifyConfig {
        &self.config
    }

    /// The epoch held, if any state has arrived.
    pub fn epoch(&self) -> Option<u64> {
        let inner = self.inner.read().expect("verifier lock");
        inner.state.as_ref().map(|s| s.epoch)
    }

    /// A copy of the state held, if any (a relay serves it to leaves that
    /// start or fall behind).
    pub fn state_snapshot(&self) -> Option<lapse_filter::Snapshot> {
        let inner = self.inner.read().expect("verifier lock");
        inner.state.clone()
    }

    /// The cluster's time as this verifier estimates it (its own wall
    /// clock until the first heartbeat).
    pub fn cluster_now_ms(&self) -> u64 {
        let inner = self.inner.read().expect("verifier lock");
        self.cluster_now_locked(&inner)
    }

    fn cluster_now_locked(&self, inner: &Inner) -> u64 {
        inner
            .clock
            .cluster_now(self.clock.monotonic_ms())
            .unwrap_or_else(|| self.clock.now_ms())
    }

    /// Apply one feed event. On error the state is unchanged. Returns the
    /// epoch held afterwards.
    pub fn apply(&self, event: &FeedEvent) -> Result<u64, FeedError> {
        let decoded = decode_event(event);
        let result = {
            let mut inner = self.inner.write().expect("verifier lock");
            let result = decoded.and_then(|decoded| self.apply_decoded(&mut inner, decoded));
            match &result {
                Ok(_) => inner.applied_events += 1,
                Err(_) => inner.rejected_events += 1,
            }
            result
        };
        // Published once the state's lock is released: whoever holds the
        // watch's value (a relay's leaf waiting for a first state) may take
        // the state's lock while holding it, and the watch's writer waits
        // for such readers.
        if let Ok(epoch) = &result {
            self.epochs.send_if_modified(|held| {
                let changed = *held != *epoch;
                *held = *epoch;
                changed
            });
        }
        result
    }

    fn apply_decoded(&self, inner: &mut Inner, event: Decoded) -> Result<u64, FeedError> {
        let held = inner.state.as_ref().map(|s| s.epoch);
        match event.body {
            Body::Snapshot(snapshot) => {
                // With signed heartbeats a snapshot may take the state back
                // to any epoch at or after the vouched one: a state received
                // from further ahead was never vouched for.
                let floor = match &self.config.trust {
                    Some(_) => inner.vouched.as_ref().map(|v| v.state.epoch),
                    None => held,
                };
                if let Some(floor) = floor
                    && floor > snapshot.epoch
                {
                    return Err(FeedError::EpochBackwards {
                        held: floor,
                        offered: snapshot.epoch,
                    });
                }
                inner.state = Some(*snapshot);
                inner.snapshots += 1;
                inner.changed();
            }
            Body::Delta(delta) => {
                let state = inner.state.as_mut().ok_or(FeedError::NoSnapshot {
                    from: delta.revoked.from_epoch(),
                })?;
                state.apply(&delta)?;
                inner.deltas += 1;
                inner.changed();
            }
            Body::Heartbeat { voucher, .. } => match &self.config.trust {
                Some(checker) => self.vouched_heartbeat(inner, checker, voucher)?,
                None => {
                    if held != Some(event.epoch) {
                        return Err(FeedError::HeartbeatEpoch {
                            held: held.unwrap_or(0),
                            offered: event.epoch,
                        });
                    }
                    let max_ttl_ms = match event.max_credential_ttl_ms {
                        0 => inner.vouched.as_ref().map_or(0, |v| v.max_ttl_ms),
                        ttl => ttl,
                    };
                    inner.vouch(event.cluster_time_ms, max_ttl_ms);
                    self.refreshed(inner, event.broker_id, event.cluster_time_ms);
                }
            },
            Body::Withheld { reason } => {
                inner.withheld = Some((event.broker_id, reason, Instant::now()));
                return Ok(held.unwrap_or(0));
            }
        }
        inner.broker_id = Some(event.broker_id);
        Ok(inner.state.as_ref().map(|s| s.epoch).unwrap_or(0))
    }

    /// A heartbeat when heartbeats must be signed: check the broker's
    /// signature, then that the statement covers exactly the state held.
    /// Only then is the state vouched for and the verifier fresh.
    fn vouched_heartbeat(
        &self,
        inner: &mut Inner,
        checker: &lapse_pki::SignatureChecker,
        voucher: Option<lapse_wire::feed::Voucher>,
    ) -> Result<(), FeedError> {
        let now = std::time::UNIX_EPOCH + Duration::from_millis(self.clock.now_ms());
        let statement = check_voucher(checker, voucher, now)?;
        let Some(state) = inner.state.as_ref() else {
            return Err(FeedError::HeartbeatEpoch {
                held: 0,
                offered: statement.epoch,
            });
        };
        let epoch_digest = match inner.epoch_digest {
            Some(digest) if state.epoch == statement.epoch => Some(digest),
            _ => None,
        };
        let matches = state.epoch == statement.epoch && {
            let epoch_digest = epoch_digest.unwrap_or_else(|| state.epoch_digest());
            inner.epoch_digest = Some(epoch_digest);
            state.digest_at(
                Some(epoch_digest),
                statement.cluster_time_ms,
                statement.max_ttl_ms,
            ) == statement.digest
        };
        if !matches {
            // A broker vouches for another state than the one received:
            // what was received since the last vouched state is dropped,
            // and the next subscription resumes from the vouched state.
            let held = state.epoch;
            inner.state = inner.vouched.as_ref().map(|v| v.state.clone());
            inner.changed();
            inner.unvouched_changes = false;
            inner.unvouched_drops += 1;
            return Err(FeedError::Unvouched {
                broker_id: statement.broker_id,
                vouched: statement.epoch,
                held,
            });
        }
        // A heartbeat no newer than the last one vouched for refreshes
        // nothing: a replayed heartbeat cannot keep a verifier fresh.
        if inner
            .vouched
            .as_ref()
            .is_some_and(|v| statement.cluster_time_ms <= v.at_ms)
        {
            return Ok(());
        }
        inner.vouch(statement.cluster_time_ms, statement.max_ttl_ms);
        self.refreshed(inner, statement.broker_id, statement.cluster_time_ms);
        Ok(())
    }

    /// A heartbeat made the verifier fresh.
    fn refreshed(&self, inner: &mut Inner, broker_id: u64, cluster_time_ms: u64) {
        inner.last_heartbeat = Some(Instant::now());
        inner.heartbeat_broker = Some(broker_id);
        inner.withheld = None;
        inner.heartbeats += 1;
        inner
            .clock
            .observe(cluster_time_ms, self.clock.monotonic_ms());
    }

    fn staleness(&self, inner: &Inner) -> Option<Rejection> {
        let bound_ms = self.config.staleness.as_millis() as u64;
        let stale_ms = match inner.last_heartbeat {
            None => u64::MAX,
            Some(at) => at.elapsed().as_millis() as u64,
        };
        (stale_ms > bound_ms).then_some(Rejection::Stale { stale_ms, bound_ms })
    }

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

    /// Drop rules and keys that can no longer matter: every credential
    /// they cover has expired by the cluster time of the last vouched
    /// heartbeat, with the lifetime it named (a broker's digest filters by
    /// the same rule at a later time, so both sides agree).
    pub fn age_out(&self) {
        let mut inner = self.inner.write().expect("verifier lock");
        let Some((now, ttl)) = inner.vouched.as_ref().map(|v| (v.at_ms, v.max_ttl_ms)) else {
            return;
        };
        if ttl == 0 {
            return;
        }
        inner.age_outs += 1;
        let prune = |state: &mut Snapshot| {
            let expired: Vec<String> = state
                .keys
                .iter()
                .filter(|(_, key)| key.not_after_ms.saturating_add(ttl) <= now)
                .map(|(kid, _)| kid.to_owned())
                .collect();
            for kid in &expired {
                state.keys.remove(kid);
            }
            state
                .rules
                .retain_cutoffs(|cutoff| cutoff.saturating_add(ttl) > now);
        };
        if let Some(vouched) = inner.vouched.as_mut() {
            prune(&mut vouched.state);
        }
        // Pruned by the same rule as the vouched copy, so still vouched
        // for; rules and keys are not part of the epoch digest.
        if let Some(state) = inner.state.as_mut() {
            prune(state);
        }
    }

    /// The verifier's health.
    pub fn status(&self) -> VerifierStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let (uses_pending, uses_unconfirmed, uses_reported, uses_dropped) = {
            let uses = self.uses.lock().unwrap_or_else(PoisonError::into_inner);
            (uses.len(), uses.unconfirmed, uses.handed_over, uses.dropped)
        };
        let inner = self.inner.read().expect("verifier lock");
        let since = inner
            .last_heartbeat
            .map(|at| at.elapsed().as_millis() as u64);
        let state = inner.state.as_ref();
        let stale = self.staleness(&inner);
        let withheld = inner
            .withheld
            .as_ref()
            .map(|(broker_id, reason, at)| WithheldNotice {
                broker_id: *broker_id,
                reason: reason.clone(),
                age_ms: at.elapsed().as_millis() as u64,
            });
        let stale_reason = stale.map(|rejection| {
            let mut words = match (&rejection, inner.heartbeat_broker) {
                (Rejection::Stale { stale_ms, bound_ms }, Some(broker)) if *stale_ms != u64::MAX => {
                    format!(
                        "no confirmed heartbeat for {stale_ms} ms (bound {bound_ms} ms); the last came from broker {broker}"
                    )
                }
                _ => rejection.to_string(),
            };
            if let Some(notice) = &withheld {
                words.push_str(&format!(
                    "; broker {} withholds heartbeats ({} ms ago): {}",
                    notice.broker_id, notice.age_ms, notice.reason
                ));
            }
            words
        });
        VerifierStatus {
            epoch: state.map(|s| s.epoch),
            vouched_epoch: inner.vouched.as_ref().map(|v| v.state.epoch),
            signed_heartbeats: self.config.trust.is_some(),
            fresh: stale_reason.is_none(),
            stale_reason,
            heartbeat_broker_id: inner.heartbeat_broker,
            withheld,
            fail_open: self.config.fail_open,
            since_heartbeat_ms: since,
            staleness_bound_ms: self.config.staleness.as_millis() as u64,
            broker_id: inner.broker_id,
            clock_offset_ms: inner
                .clock
                .offset_ms()
                .map(|_| self.cluster_now_locked(&inner) as i64 - self.clock.now_ms() as i64),
            clock_drift_ppm: inner.clock.drift_ppm(),
            revoked_indices: state.map_or(0, |s| s.set.len()),
            rules: state.map_or(0, |s| s.rules.len()),
            secrets: state.map_or(0, |s| s.secrets.len()),
            keys: state.map_or(0, |s| s.keys.len()),
            applied_events: inner.applied_events,
            rejected_events: inner.rejected_events,
            unvouched_drops: inner.unvouched_drops,
            age_outs: inner.age_outs,
            snapshots: inner.snapshots,
            deltas: inner.deltas,
            heartbeats: inner.heartbeats,
            accepted: self.counters.accepted.load(Relaxed),
            rejected: self.counters.rejected.load(Relaxed),
            stale_rejections: self.counters.stale.load(Relaxed),
            accepted_while_stale: self.counters.accepted_while_stale.load(Relaxed),
            break_glass_keys: self
                .config
                .break_glass
                .iter()
                .flat_map(|c| c.key_ids().map(str::to_owned))
                .collect(),
            break_glass_accepted: self.counters.break_glass_accepted.load(Relaxed),
            break_glass_rejected: self.counters.break_glass_rejected.load(Relaxed),
            emergency_uses_pending: uses_pending,
            emergency_uses_unconfirmed: uses_unconfirmed,
            emergency_uses_reported: uses_reported,
            emergency_uses_dropped: uses_dropped,
            signatures_remembered: self.signatures.len(),
            signature_memory_capacity: self.signatures.capacity(),
            signatures_recalled: self.signatures.recalled(),
        }
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
fn revoked_words(
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
