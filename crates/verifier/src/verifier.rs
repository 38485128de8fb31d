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
mod apply;
mod cache;
mod emergency;
mod possession;
mod verify;

pub use answers::{
    Accepted, AcceptedAgent, BreakGlassAccepted, Rejection, VerifierStatus, WithheldNotice,
};
pub use possession::Proof;

use cache::{SignatureCache, Signed, TokenHash};
use verify::revoked_words;

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
