//! The revocation feed: what this broker tells edge verifiers, and what it
//! learns from their acks.
//!
//! Every broker (leader, follower or learner) derives the feed from its own
//! applied ledger state (`lapse_ledger::feed`):
//!
//! - a **publisher** task wakes when the applied state changes and
//!   broadcasts one delta from the last published epoch to the current one
//!   (so deltas coalesce under load): the filter delta and the feed event
//!   carrying it are each encoded once, and every subscriber at the epoch
//!   it follows from is sent those bytes;
//! - a **heartbeat** task confirms, at a fixed interval, that this broker's
//!   state is current (a read index from the leader, then waiting to apply
//!   up to it) and only then broadcasts a heartbeat with the epoch and the
//!   cluster's time, likewise encoded once. A broker cut off from the leader sends no heartbeats,
//!   so its verifiers go stale and fail closed or move to another broker;
//! - each **subscriber** session (see [`crate::api::feed`]) sends a snapshot or the
//!   deltas since the verifier's epoch, then follows the broadcast. The
//!   broadcast channel is bounded: a subscriber that falls behind it is
//!   resynchronised with a snapshot, so no subscriber can grow the broker's
//!   memory;
//! - verifiers' acks feed the propagation [`propagation::Tracker`].

pub mod freshness;
pub mod histogram;
pub mod propagation;
mod report;
pub mod revoke_time;
pub mod wait;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapse_filter::{Message, Snapshot, StateDigest, Statement, encode_message};
use lapse_ledger::feed;
use lapse_wire::feed::feed_event::Kind as EventKind;
use lapse_wire::feed::{FeedEvent, Heartbeat, Voucher};
use lapse_wire::frames::FeedFrame;
use prost::bytes::Bytes;
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinHandle;

use crate::config::FeedConfig;
use crate::core::SharedCore;
use crate::error::BrokerError;
use propagation::{LocalReport, Tracker};

/// One broadcast to every subscriber.
#[derive(Debug)]
pub enum Update {
    /// The delta from `from` to `to`, as the event carrying it encoded
    /// once for every subscriber at `from`.
    Delta {
        from: u64,
        to: u64,
        frame: FeedFrame,
    },
    /// The broker confirmed that `epoch` was current at `cluster_time_ms`;
    /// the voucher signs that, with the digest of the state at `epoch`
    /// (absent on a broker with no certificate).
    Heartbeat {
        epoch: u64,
        cluster_time_ms: u64,
        voucher: Option<Voucher>,
        /// The heartbeat event for subscribers at `epoch`, encoded once.
        frame: FeedFrame,
    },
    /// The broker could not confirm its state; no heartbeat this time.
    Withheld { reason: String },
    /// The state cannot be followed by deltas (it moved in a way a delta
    /// does not describe): every subscriber gets a snapshot.
    Resync,
}

/// The feed snapshot of one epoch, kept until the epoch moves: its
/// encoding for subscribers, and the state and digest heartbeats vouch for.
struct CachedSnapshot {
    epoch: u64,
    bytes: Bytes,
    state: Arc<Snapshot>,
    epoch_digest: StateDigest,
}

/// The shared state of this broker's feed.
pub struct FeedHub {
    pub(crate) core: SharedCore,
    pub(crate) settings: FeedConfig,
    seed: [u8; 32],
    pub(crate) updates: broadcast::Sender<Arc<Update>>,
    snapshot_cache: Mutex<Option<Arc<CachedSnapshot>>>,
    pub(crate) permits: Arc<Semaphore>,
    /// Subscriptions held now by each certified verifier name (only names
    /// with at least one, so never more entries than subscriptions).
    identities: Arc<Mutex<HashMap<String, usize>>>,
    pub(crate) tracker: Mutex<Tracker>,
    /// Local monotonic time (ms since the hub started) of the last
    /// confirmed heartbeat, and its epoch.
    last_confirmed: Mutex<Option<(tokio::time::Instant, u64)>>,
    heartbeats_sent: AtomicU64,
    pub freshness: freshness::Freshness,
    /// Emergency uses verifiers reported to this broker.
    pub uses: EmergencyUses,
}

/// Emergency uses verifiers reported (each `UseReport` entry's count of
/// acceptances), by kind.
#[derive(Debug, Default)]
pub struct EmergencyUses {
    break_glass: AtomicU64,
    fail_open: AtomicU64,
    unknown: AtomicU64,
}

impl EmergencyUses {
    /// `kind` is `break_glass`, `fail_open` or anything else (`unknown`).
    pub fn note(&self, kind: &str, count: u32) {
        let counter = match kind {
            "break_glass" => &self.break_glass,
            "fail_open" => &self.fail_open,
            _ => &self.unknown,
        };
        counter.fetch_add(u64::from(count.max(1)), Ordering::Relaxed);
    }

    /// Each kind with its count.
    pub fn by_kind(&self) -> [(&'static str, u64); 3] {
        [
            ("break_glass", &self.break_glass),
            ("fail_open", &self.fail_open),
            ("unknown", &self.unknown),
        ]
        .map(|(kind, n)| (kind, n.load(Ordering::Relaxed)))
    }
}

/// One subscription slot of a certified verifier name, given back on drop.
pub(crate) struct IdentitySlot {
    identities: Arc<Mutex<HashMap<String, usize>>>,
    name: String,
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        let mut held = self.identities.lock().expect("identity lock");
        if let Some(count) = held.get_mut(&self.name) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.name);
            }
        }
    }
}

impl FeedHub {
    pub fn new(core: SharedCore) -> Arc<Self> {
        let settings = core.config().feed.clone();
        let (updates, _) = broadcast::channel(settings.buffered_updates);
        let seed = core.env().random_bytes::<32>();
        let epoch = core.view().read(|a| a.ledger.revocation_epoch);
        let freshness = freshness::Freshness::new(core.config());
        if let Some(problem) = freshness::config_problem(core.config()) {
            tracing::warn!("verifiers cannot stay fresh: {problem}");
        }
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(settings.max_subscribers)),
            identities: Arc::default(),
            core,
            settings,
            seed,
            updates,
            snapshot_cache: Mutex::new(None),
            tracker: Mutex::new(Tracker::starting_at(epoch)),
            last_confirmed: Mutex::new(None),
            heartbeats_sent: AtomicU64::new(0),
            freshness,
            uses: EmergencyUses::default(),
        })
    }

    /// Take one of `name`'s subscription slots, if it has one left: a
    /// certificate may hold at most `max_subscribers_per_identity` of this
    /// broker's subscriptions at once. The slot is given back when the
    /// returned guard drops.
    pub(crate) fn identity_slot(&self, name: &str) -> Option<IdentitySlot> {
        let mut held = self.identities.lock().expect("identity lock");
        let count = held.entry(name.to_owned()).or_insert(0);
        if *count >= self.settings.max_subscribers_per_identity {
            return None;
        }
        *count += 1;
        Some(IdentitySlot {
            identities: self.identities.clone(),
            name: name.to_owned(),
        })
    }

    /// Certified verifier names holding subscriptions now.
    pub fn identities_subscribed(&self) -> usize {
        self.identities.lock().expect("identity lock").len()
    }

    /// Start the publisher and heartbeat tasks.
    pub fn spawn(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(self.clone().publish()),
            tokio::spawn(self.clone().heartbeats()),
        ]
    }

    /// The cluster's time as this broker knows it (see [`crate::time`]).
    pub fn cluster_now(&self) -> u64 {
        self.core.cluster_now()
    }

    /// A feed event from this broker moving a subscriber to `epoch`.
    fn event(
        &self,
        kind: EventKind,
        epoch: u64,
        from_epoch: u64,
        cluster_time_ms: u64,
    ) -> FeedEvent {
        FeedEvent {
            kind: Some(kind),
            epoch,
            from_epoch,
            cluster_time_ms,
            broker_id: self.core.id(),
            max_credential_ttl_ms: self.max_ttl_ms(),
        }
    }

    pub(crate) fn max_ttl_ms(&self) -> u64 {
        self.core.config().ledger_params().max_credential_ttl_ms
    }

    /// Make sure the commit times of every revocation up to `epoch` are
    /// known before an ack of it is measured: a session can send an epoch
    /// (catching up on a heartbeat, or resuming) before the publisher has
    /// noted it, and an ack measured without it would lose its samples.
    pub fn note_commits_through(&self, epoch: u64) {
        let noted = self.tracker.lock().expect("tracker lock").noted_through();
        if noted >= epoch {
            return;
        }
        let (current, commits) = self.core.view().read(|a| {
            (
                a.ledger.revocation_epoch,
                feed::revocations_since(&a.ledger, noted),
            )
        });
        self.tracker
            .lock()
            .expect("tracker lock")
            .note_commits(commits, current);
    }

    /// The current feed epoch of this broker's applied state.
    pub fn current_epoch(&self) -> u64 {
        self.core.view().read(|a| a.ledger.revocation_epoch)
    }

    /// A snapshot of the current state, encoded; built once per epoch.
    pub(crate) fn snapshot(&self) -> Result<(u64, Bytes), BrokerError> {
        self.cached_snapshot().map(|c| (c.epoch, c.bytes.clone()))
    }

    fn cached_snapshot(&self) -> Result<Arc<CachedSnapshot>, BrokerError> {
        let epoch = self.current_epoch();
        if let Some(cached) = &*self.snapshot_cache.lock().expect("cache lock")
            && cached.epoch == epoch
        {
            return Ok(cached.clone());
        }
        let snapshot = self
            .core
            .view()
            .read(|a| feed::snapshot(&a.ledger, self.seed))
            .map_err(|e| BrokerError::Broken(format!("cannot build a feed snapshot: {e}")))?;
        let epoch = snapshot.epoch;
        let epoch_digest = snapshot.epoch_digest();
        let state = Arc::new(snapshot);
        let bytes = Bytes::from(
            encode_message(&Message::Full(Box::new((*state).clone())))
                .map_err(|e| BrokerError::Broken(format!("cannot encode a feed snapshot: {e}")))?,
        );
        let cached = Arc::new(CachedSnapshot {
            epoch,
            bytes,
            state,
            epoch_digest,
        });
        *self.snapshot_cache.lock().expect("cache lock") = Some(cached.clone());
        Ok(cached)
    }

    /// The identity heartbeats are signed with: the TLS certificate (as
    /// reloaded), else the environment's, else none.
    fn signing_identity(&self) -> Option<Arc<lapse_pki::Credentials>> {
        match self.core.tls() {
            Some(tls) => Some(tls.credentials()),
            None => self.core.env().feed_identity.clone(),
        }
    }

    /// The signed heartbeat for the current state at cluster time `now`:
    /// its epoch, and the voucher (`None` with no identity to sign with,
    /// or when signing failed, which is logged: verifiers that check
    /// signatures then stay stale rather than trust an unsigned word).
    fn vouch(&self, identity: &lapse_pki::Credentials) -> (u64, u64, Option<Voucher>) {
        let cached = match self.cached_snapshot() {
            Ok(cached) => cached,
            Err(error) => {
                tracing::warn!(%error, "heartbeat sent unsigned");
                return (self.current_epoch(), self.cluster_now(), None);
            }
        };
        // Read after the state: cluster time never falls behind the
        // ledger's stamps, so whatever the ledger pruned is dead by then.
        let cluster_time_ms = self.cluster_now();
        let max_ttl_ms = self.max_ttl_ms();
        let statement = Statement {
            broker_id: self.core.id(),
            epoch: cached.epoch,
            cluster_time_ms,
            max_ttl_ms,
            interval_ms: self.settings.heartbeat_ms,
            digest: cached
                .state
                .digest_at(Some(cached.epoch_digest), cluster_time_ms, max_ttl_ms),
        };
        let statement = statement.encode();
        match identity.sign(&statement) {
            Ok(signed) => (
                cached.epoch,
                cluster_time_ms,
                Some(Voucher {
                    statement,
                    signature: signed.signature,
                    scheme: u32::from(signed.scheme),
                    chain: signed.chain,
                }),
            ),
            Err(error) => {
                tracing::warn!(%error, "heartbeat sent unsigned");
                (cached.epoch, cluster_time_ms, None)
            }
        }
    }

    /// The delta from `from` to the current state, encoded; `None` when the
    /// state is at `from`.
    pub(crate) fn delta_from(&self, from: u64) -> Result<Option<(u64, Bytes)>, BrokerError> {
        let delta = self
            .core
            .view()
            .read(|a| feed::delta_since(&a.ledger, from));
        encode_delta(from, delta)
    }

    /// Whether a delta from `from` is worth sending rather than a snapshot.
    pub(crate) fn delta_is_smaller(&self, from: u64) -> bool {
        self.core.view().read(|a| {
            let since = feed::indices_since(&a.ledger, from);
            since <= a.ledger.revoked_indices.len() / 2 + 1024
        })
    }

    async fn publish(self: Arc<Self>) {
        let mut changes = self.core.view().changes();
        let mut published = self.current_epoch();
        loop {
            if changes.changed().await.is_err() {
                return;
            }
            // One read of the state: the commit times noted and the delta
            // sent cover exactly the same epochs.
            let subscribed = self.updates.receiver_count() > 0;
            let Some((current, commits, delta)) = self.core.view().read(|a| {
                let ledger = &a.ledger;
                (ledger.revocation_epoch != published).then(|| {
                    (
                        ledger.revocation_epoch,
                        feed::revocations_since(ledger, published),
                        subscribed.then(|| feed::delta_since(ledger, published)),
                    )
                })
            }) else {
                continue;
            };
            self.tracker
                .lock()
                .expect("tracker lock")
                .note_commits(commits, current);
            let update = match delta.map(|delta| encode_delta(published, delta)) {
                Some(Ok(Some((to, bytes)))) => Some(Update::Delta {
                    from: published,
                    to,
                    frame: FeedFrame::shared(&self.event(
                        EventKind::Delta(bytes),
                        to,
                        published,
                        self.cluster_now(),
                    )),
                }),
                None | Some(Ok(None)) => None,
                Some(Err(error)) => {
                    tracing::warn!(%error, "feed resynchronises its subscribers");
                    Some(Update::Resync)
                }
            };
            published = current;
            if let Some(update) = update {
                let _ = self.updates.send(Arc::new(update));
            }
        }
    }

    async fn heartbeats(self: Arc<Self>) {
        let period = Duration::from_millis(self.settings.heartbeat_ms);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let forget_ms = self.settings.forget_after_seconds * 1000;
        loop {
            tick.tick().await;
            let started = tokio::time::Instant::now();
            match self
                .core
                .confirm_current(self.confirm_patience(period))
                .await
            {
                Ok(()) => {
                    let took_ms = started.elapsed().as_millis() as u64;
                    if let Some((since, reason)) = self.freshness.confirmed(took_ms) {
                        let after_ms = self.core.env().now_ms().saturating_sub(since);
                        tracing::info!(after_ms, last_reason = %reason, "feed heartbeats resume");
                        self.note(format_args!("heartbeats resume after {after_ms} ms"));
                    }
                    let (epoch, cluster_time_ms, voucher) = match self.signing_identity() {
                        Some(identity) => self.vouch(&identity),
                        None => (self.current_epoch(), self.cluster_now(), None),
                    };
                    *self.last_confirmed.lock().expect("confirm lock") =
                        Some((tokio::time::Instant::now(), epoch));
                    let heartbeat = EventKind::Heartbeat(Heartbeat {
                        interval_ms: self.settings.heartbeat_ms,
                        voucher: voucher.clone(),
                    });
                    let update = Update::Heartbeat {
                        epoch,
                        cluster_time_ms,
                        voucher,
                        frame: FeedFrame::shared(&self.event(heartbeat, epoch, 0, cluster_time_ms)),
                    };
                    let _ = self.updates.send(Arc::new(update));
                    self.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    let reason = freshness::cap(&format!("state not confirmed current: {error}"));
                    if self.freshness.withheld(self.core.env().now_ms(), &reason) {
                        tracing::warn!(%reason, "feed heartbeats withheld");
                        self.note(format_args!("heartbeats withheld: {reason}"));
                    }
                    let _ = self.updates.send(Arc::new(Update::Withheld { reason }));
                }
            }
            let now = self.cluster_now();
            self.tracker
                .lock()
                .expect("tracker lock")
                .forget_gone(now, forget_ms);
        }
    }

    /// Tell a simulation's trace (production brokers have no observer).
    fn note(&self, event: std::fmt::Arguments<'_>) {
        if let Some(faults) = &self.core.env().faults {
            faults.note(&event.to_string());
        }
    }

    /// How long one confirmation may take: a follower's needs the round
    /// trip to the leader, the leader's quorum round trip and the wait to
    /// apply, so it gets the peer RPC deadline (a confirmation that succeeds
    /// is sent as soon as it does; this only bounds a failing one).
    fn confirm_patience(&self, period: Duration) -> Duration {
        period.max(Duration::from_millis(
            self.core.config().raft.rpc_timeout_ms,
        ))
    }

    /// Whether this broker keeps its verifiers fresh.
    pub fn freshness_report(&self) -> freshness::FreshnessReport {
        self.freshness.report(self.core.env().now_ms())
    }

    /// This broker's own subscribers and measurements.
    pub fn local_report(&self) -> LocalReport {
        let epoch = self.current_epoch();
        let now = self.cluster_now();
        self.tracker
            .lock()
            .expect("tracker lock")
            .report(self.core.id(), epoch, now)
    }

    /// Time to revoke per region, now.
    pub fn revoke_times(
        &self,
    ) -> std::collections::BTreeMap<String, revoke_time::RegionRevokeTime> {
        let now = self.cluster_now();
        self.tracker.lock().expect("tracker lock").revoke_times(now)
    }

    /// Verifiers subscribed here that are stale as this broker sees them:
    /// all of them while heartbeats have been withheld for longer than
    /// their staleness bound, else those that have not applied a
    /// revocation committed more than the bound ago.
    pub fn stale_verifiers(&self) -> usize {
        let bound_ms = self.settings.verifier_staleness_ms;
        let fresh = self.freshness_report();
        let tracker = self.tracker.lock().expect("tracker lock");
        if fresh.withheld_reason.is_some() && fresh.withheld_for_ms > bound_ms {
            return tracker.subscribers();
        }
        tracker.stale_verifiers(self.cluster_now(), bound_ms)
    }

    /// Seconds since this broker last confirmed its state current.
    pub fn confirmed_age_seconds(&self) -> Option<f64> {
        self.last_confirmed
            .lock()
            .expect("confirm lock")
            .map(|(at, _)| at.elapsed().as_secs_f64())
    }

    /// Confirmed heartbeats broadcast so far.
    pub fn heartbeats_sent(&self) -> u64 {
        self.heartbeats_sent.load(Ordering::Relaxed)
    }
}

/// Encode the delta from `from` derived from the state, if there is one.
fn encode_delta(
    from: u64,
    delta: Result<Option<lapse_filter::DeltaMessage>, lapse_filter::FilterError>,
) -> Result<Option<(u64, Bytes)>, BrokerError> {
    let delta = delta.map_err(|e| {
        BrokerError::Broken(format!("cannot derive a delta from epoch {from}: {e}"))
    })?;
    let Some(delta) = delta else {
        return Ok(None);
    };
    let to = delta.revoked.to_epoch();
    let bytes = encode_message(&Message::Delta(delta))
        .map_err(|e| BrokerError::Broken(format!("cannot encode a delta: {e}")))?;
    Ok(Some((to, Bytes::from(bytes))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_slot_whose_count_is_already_zero_does_not_underflow() {
        // A slot given back for a name whose count some other path already
        // brought to zero: `*count -= 1` panicked in debug builds, inside
        // a drop, ending the subscriber's session task.
        let identities: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        identities.lock().unwrap().insert("edge".into(), 0);
        drop(IdentitySlot {
            identities: identities.clone(),
            name: "edge".into(),
        });
        assert!(identities.lock().unwrap().is_empty());
    }
}
