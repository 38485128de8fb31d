//! A relay: a verifier that serves the feed it follows to other verifiers
//! (`lapse verifier --relay ADDRESS`), so brokers feed a few hundred relays
//! and relays feed the edge.
//!
//! - **Events pass through unchanged.** Each delta, heartbeat (with the
//!   broker's signed voucher) and withheld notice the relay's own verifier
//!   applied is encoded once and sent as those bytes to every leaf at the
//!   epoch it follows from. A leaf that starts, or falls behind further
//!   than the recent deltas kept, gets a snapshot of the relay's state,
//!   encoded once per epoch. A leaf checking signatures trusts the broker
//!   that signed the heartbeat, not the relay: a relay that changes the
//!   state is caught when the next voucher does not match.
//! - **Acks flow up.** Leaves ack the relay; the relay reports each leaf's
//!   latest epoch on its own subscription (`LeafReport`, coalesced over
//!   [`crate::ACK_INTERVAL`]), so the broker counts the leaves in
//!   `lapse propagation` and `revoke --wait`, and forgets them when the
//!   relay's subscription ends.
//! - **Leaves fail over** like any verifier: their broker list names
//!   relays and brokers, and a relay that dies or goes quiet is left for
//!   the next.
//!
//! - **Emergency uses flow up too.** A leaf's `UseReport` (break-glass
//!   credentials it accepted, acceptances while stale) is forwarded on the
//!   relay's own subscription, and kept until the broker answers
//!   `UsesRecorded`, which the relay passes down to its leaves (a leaf
//!   ignores the ids of reports not its own). The relay forwards only uses
//!   a leaf reports under its own name, holds at most
//!   [`MAX_FORWARDED_REPORTS`] unanswered, and sends them all again on
//!   each new upstream subscription; a leaf keeps its uses until they are
//!   recorded, so a relay that dies with them loses nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapse_filter::{Message, encode_message};
use lapse_wire::feed::feed_event::Kind;
use lapse_wire::feed::feed_request::Kind as RequestKind;
use lapse_wire::feed::{FeedEvent, FeedRequest, Hello, Leaf, LeafReport, UseReport};
use lapse_wire::frames::{FeedFrame, FrameFeed};
use lapse_wire::names::{check_name, verifier_id_matches};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast};
use tonic::{Request, Response, Status, Streaming};

use crate::Verifier;

/// How long a new leaf has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a leaf waits for a relay that holds no state yet.
const FIRST_STATE_TIMEOUT: Duration = Duration::from_secs(5);
/// Leaves named in one `LeafReport`; more go in the next.
const LEAVES_PER_REPORT: usize = 1024;
/// Events a lagging leaf may be behind before it is sent a snapshot.
const BROADCAST_BUFFER: usize = 256;
/// Leaves' use reports forwarded and not yet recorded; a leaf whose report
/// finds no room is told to try another source.
pub const MAX_FORWARDED_REPORTS: usize = 64;
/// Of those, from one leaf (a verifier waits on at most 16 itself), so one
/// leaf cannot take every place.
const MAX_FORWARDED_PER_LEAF: usize = 16;

/// How a relay serves its leaves.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Leaves subscribed at once; more are refused (RESOURCE_EXHAUSTED).
    pub max_leaves: usize,
    /// Recent deltas kept, so a leaf a few epochs behind gets them
    /// instead of a snapshot.
    pub recent_deltas: usize,
    /// With TLS, only clients with a verifier certificate of the cluster
    /// may subscribe, under their certified name.
    pub require_verifier_certificate: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            max_leaves: 10_000,
            recent_deltas: 64,
            require_verifier_certificate: false,
        }
    }
}

/// What the relay passes to its leaves, each encoded once.
#[derive(Debug)]
enum Passed {
    Delta {
        from: u64,
        to: u64,
        frame: FeedFrame,
    },
    Heartbeat {
        epoch: u64,
        frame: FeedFrame,
    },
    /// The relay itself took a snapshot (it moved to another broker that
    /// resynchronised it): every leaf not at `epoch` gets it.
    Snapshot {
        epoch: u64,
        frame: FeedFrame,
    },
    Withheld {
        frame: FeedFrame,
    },
    /// A broker recorded a use report: every leaf gets it, and the one
    /// that sent the report stops holding it.
    Recorded {
        frame: FeedFrame,
    },
}

/// What the relay knows of one leaf.
#[derive(Debug)]
struct LeafEntry {
    region: String,
    acked: u64,
    sessions: usize,
    /// Changed since the last report.
    dirty: bool,
}

/// The relay, shared by its upstream follower and its leaves' sessions.
pub struct Relay {
    verifier: Verifier,
    config: RelayConfig,
    updates: broadcast::Sender<Arc<Passed>>,
    recent: Mutex<VecDeque<(u64, u64, FeedFrame)>>,
    /// The snapshot frame of the relay's state, for one epoch.
    snapshot: Mutex<Option<(u64, FeedFrame)>>,
    /// The last event from upstream: its broker, time and maximum lifetime
    /// are what a snapshot from the relay says.
    last: Mutex<Option<FeedEvent>>,
    leaves: Mutex<HashMap<String, LeafEntry>>,
    /// Leaves' use reports not yet recorded upstream, each with whether it
    /// went up on the current subscription.
    uses: Mutex<VecDeque<(UseReport, bool)>>,
    leaves_changed: Notify,
    permits: Arc<Semaphore>,
}

impl Relay {
    /// A relay serving what `verifier` follows.
    pub fn new(verifier: Verifier, config: RelayConfig) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(config.max_leaves)),
            verifier,
            updates: broadcast::channel(BROADCAST_BUFFER).0,
            recent: Mutex::new(VecDeque::with_capacity(config.recent_deltas)),
            snapshot: Mutex::new(None),
            last: Mutex::new(None),
            leaves: Mutex::new(HashMap::new()),
            uses: Mutex::new(VecDeque::new()),
            leaves_changed: Notify::new(),
            config,
        })
    }

    /// Leaves subscribed now.
    pub fn leaves(&self) -> usize {
        lock(&self.leaves)
            .values()
            .filter(|leaf| leaf.sessions > 0)
            .count()
    }

    /// Most leaves it serves at once.
    pub fn max_leaves(&self) -> usize {
        self.config.max_leaves
    }

    /// Pass on an event the relay's verifier applied (the follower calls
    /// this; see [`crate::FollowConfig::on_event`]).
    pub fn passed(&self, event: &FeedEvent) {
        if let Some(Kind::UsesRecorded(recorded)) = &event.kind {
            lock(&self.uses).retain(|(report, _)| report.report_id != recorded.report_id);
            let frame = FeedFrame::shared(event);
            let _ = self.updates.send(Arc::new(Passed::Recorded { frame }));
            return;
        }
        let passed = match &event.kind {
            Some(Kind::Delta(_)) => {
                let frame = FeedFrame::shared(event);
                let mut recent = lock(&self.recent);
                if recent.len() >= self.config.recent_deltas {
                    recent.pop_front();
                }
                if self.config.recent_deltas > 0 {
                    recent.push_back((event.from_epoch, event.epoch, frame.clone()));
                }
                Passed::Delta {
                    from: event.from_epoch,
                    to: event.epoch,
                    frame,
                }
            }
            Some(Kind::Heartbeat(_)) => Passed::Heartbeat {
                epoch: event.epoch,
                frame: FeedFrame::shared(event),
            },
            Some(Kind::Snapshot(_)) => {
                lock(&self.recent).clear();
                let frame = FeedFrame::shared(event);
                *lock(&self.snapshot) = Some((event.epoch, frame.clone()));
                Passed::Snapshot {
                    epoch: event.epoch,
                    frame,
                }
            }
            Some(Kind::Withheld(_)) => Passed::Withheld {
                frame: FeedFrame::shared(event),
            },
            Some(Kind::UsesRecorded(_)) | None => return,
        };
        // Its envelope only: the kind (a voucher, a state) is not kept.
        *lock(&self.last) = Some(FeedEvent {
            kind: None,
            epoch: event.epoch,
            from_epoch: event.from_epoch,
            cluster_time_ms: event.cluster_time_ms,
            broker_id: event.broker_id,
            max_credential_ttl_ms: event.max_credential_ttl_ms,
        });
        let _ = self.updates.send(Arc::new(passed));
    }

    /// The relay's state as a snapshot frame, encoded once per epoch.
    fn snapshot_frame(&self) -> Option<(u64, FeedFrame)> {
        let epoch = self.verifier.epoch()?;
        if let Some((at, frame)) = &*lock(&self.snapshot)
            && *at == epoch
        {
            return Some((epoch, frame.clone()));
        }
        let state = self.verifier.state_snapshot()?;
        let epoch = state.epoch;
        let bytes = encode_message(&Message::Full(Box::new(state))).ok()?;
        let last = lock(&self.last).clone().unwrap_or_default();
        let frame = FeedFrame::shared(&FeedEvent {
            kind: Some(Kind::Snapshot(bytes.into())),
            epoch,
            from_epoch: 0,
            ..last
        });
        *lock(&self.snapshot) = Some((epoch, frame.clone()));
        Some((epoch, frame))
    }

    /// The recent deltas from `from` to the relay's epoch, if kept.
    fn deltas_from(&self, from: u64, to: u64) -> Option<Vec<(u64, FeedFrame)>> {
        let recent = lock(&self.recent);
        let start = recent.iter().position(|(f, _, _)| *f == from)?;
        let mut chain = Vec::new();
        let mut at = from;
        for (f, t, frame) in recent.iter().skip(start) {
            if *f != at {
                return None;
            }
            chain.push((*t, frame.clone()));
            at = *t;
            if at == to {
                return Some(chain);
            }
        }
        None
    }

    fn leaf_connected(&self, id: &str, region: &str, epoch: u64) {
        let mut leaves = lock(&self.leaves);
        let entry = leaves.entry(id.to_owned()).or_insert_with(|| LeafEntry {
            region: region.to_owned(),
            acked: epoch,
            sessions: 0,
            dirty: true,
        });
        entry.sessions += 1;
        entry.region = region.to_owned();
        entry.dirty = true;
        drop(leaves);
        self.leaves_changed.notify_one();
    }

    fn leaf_acked(&self, id: &str, epoch: u64) {
        if let Some(entry) = lock(&self.leaves).get_mut(id)
            && epoch > entry.acked
        {
            entry.acked = epoch;
            entry.dirty = true;
        } else {
            return;
        }
        self.leaves_changed.notify_one();
    }

    /// Forward `report` from leaf `id` up the relay's subscription. Refused
    /// when a use names another verifier or the report holds more uses than
    /// a verifier sends, and when [`MAX_FORWARDED_REPORTS`] wait already.
    fn forward_uses(&self, id: &str, report: UseReport) -> Result<(), Status> {
        if report.uses.len() > crate::break_glass::MAX_USES_PER_REPORT {
            return Err(Status::invalid_argument(format!(
                "a use report holds at most {} uses",
                crate::break_glass::MAX_USES_PER_REPORT
            )));
        }
        if report.uses.iter().any(|use_| use_.verifier_id != id) {
            return Err(Status::invalid_argument(
                "a leaf reports only its own emergency uses",
            ));
        }
        if report.report_id == 0 || report.uses.is_empty() {
            return Ok(());
        }
        let mut uses = lock(&self.uses);
        let of_leaf = |held: &UseReport| held.uses.first().is_some_and(|u| u.verifier_id == id);
        // The same report again (a leaf resends what waits on its next
        // subscription) is forwarded once.
        if uses
            .iter()
            .any(|(held, _)| of_leaf(held) && held.report_id == report.report_id)
        {
            return Ok(());
        }
        let from_leaf = uses.iter().filter(|(held, _)| of_leaf(held)).count();
        if uses.len() >= MAX_FORWARDED_REPORTS || from_leaf >= MAX_FORWARDED_PER_LEAF {
            return Err(Status::resource_exhausted(format!(
                "this relay holds {} use reports not yet recorded ({from_leaf} of them this verifier's); report to another relay or a broker",
                uses.len()
            )));
        }
        tracing::info!(leaf = %id, uses = report.uses.len(), "forwarding a leaf's emergency uses");
        uses.push_back((report, false));
        drop(uses);
        self.leaves_changed.notify_one();
        Ok(())
    }

    /// Use reports forwarded and not yet recorded upstream.
    pub fn forwarded_uses(&self) -> usize {
        lock(&self.uses).len()
    }

    fn leaf_gone(&self, id: &str) {
        if let Some(entry) = lock(&self.leaves).get_mut(id) {
            entry.sessions = entry.sessions.saturating_sub(1);
            entry.dirty = true;
        }
        self.leaves_changed.notify_one();
    }
}

impl crate::follower::Downstream for Relay {
    fn changed(&self) -> &Notify {
        &self.leaves_changed
    }

    fn report(&self, all: bool) -> Vec<FeedRequest> {
        // Leaves' uses first, each once per subscription until recorded.
        let mut requests: Vec<FeedRequest> = lock(&self.uses)
            .iter_mut()
            .filter(|(_, sent)| all || !*sent)
            .map(|(report, sent)| {
                *sent = true;
                FeedRequest {
                    kind: Some(RequestKind::UseReport(report.clone())),
                }
            })
            .collect();
        let mut leaves = lock(&self.leaves);
        let mut reported = Vec::new();
        for (id, entry) in leaves.iter_mut() {
            if !(entry.dirty || all) || (all && entry.sessions == 0) {
                continue;
            }
            entry.dirty = false;
            reported.push(Leaf {
                verifier_id: id.clone(),
                region: entry.region.clone(),
                acked_epoch: entry.acked,
                gone: entry.sessions == 0,
            });
        }
        // Reported gone, or gone with nothing to report: forgotten.
        leaves.retain(|_, entry| entry.sessions > 0);
        requests.extend(reported.chunks(LEAVES_PER_REPORT).map(|chunk| FeedRequest {
            kind: Some(RequestKind::Leaves(LeafReport {
                leaves: chunk.to_vec(),
            })),
        }));
        requests
    }

    fn unsent(&self, reports: Vec<FeedRequest>) {
        let mut uses = lock(&self.uses);
        for request in reports {
            let Some(RequestKind::UseReport(unsent)) = request.kind else {
                continue;
            };
            let leaf = unsent.uses.first().map(|u| u.verifier_id.as_str());
            for (held, sent) in uses.iter_mut() {
                if held.report_id == unsent.report_id
                    && held.uses.first().map(|u| u.verifier_id.as_str()) == leaf
                {
                    *sent = false;
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The relay's `Feed` service.
pub struct RelayService(pub Arc<Relay>);

#[tonic::async_trait]
impl FrameFeed for RelayService {
    type Stream = futures::stream::BoxStream<'static, Result<FeedFrame, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<FeedRequest>>,
    ) -> Result<Response<Self::Stream>, Status> {
        let relay = self.0.clone();
        let certified = if relay.config.require_verifier_certificate {
            let principal = request
                .extensions()
                .get::<lapse_pki::PeerIdentity>()
                .and_then(|identity| identity.principal.as_ref());
            match principal.map(|p| &p.role) {
                Some(lapse_pki::Role::Verifier(name)) => Some(name.clone()),
                Some(other) => {
                    return Err(Status::permission_denied(format!(
                        "the feed is for verifiers; the client certificate names {other}"
                    )));
                }
                None => {
                    return Err(Status::unauthenticated(
                        "the feed needs a verifier certificate of this cluster (lapse certs verifier)",
                    ));
                }
            }
        } else {
            None
        };
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(FeedRequest {
                kind: Some(RequestKind::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(status),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a subscription must be a Hello",
                ));
            }
        };
        check_name("verifier_id", &hello.verifier_id, false)?;
        check_name("region", &hello.region, true)?;
        if let Some(name) = &certified {
            let id = &hello.verifier_id;
            if !verifier_id_matches(name, id) {
                return Err(Status::permission_denied(format!(
                    "verifier_id {id:?} is not this verifier's: its certificate names {name:?}"
                )));
            }
        }
        let permit = relay.permits.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this relay already serves its maximum of {} verifiers; try another",
                relay.config.max_leaves
            ))
        })?;
        let updates = relay.updates.subscribe();
        let session = LeafSession {
            relay,
            hello,
            inbound,
            updates,
            sent: None,
            ready: VecDeque::new(),
            started: false,
            ended: false,
            _permit: permit,
        };
        Ok(Response::new(Box::pin(futures::stream::unfold(
            session,
            |mut session| async move {
                let frame = session.next_frame().await?;
                Some((frame, session))
            },
        ))))
    }
}

/// One leaf's subscription: like a broker's session, the stream itself.
struct LeafSession {
    relay: Arc<Relay>,
    hello: Hello,
    inbound: Streaming<FeedRequest>,
    updates: broadcast::Receiver<Arc<Passed>>,
    /// The epoch the leaf holds once it applies what was sent.
    sent: Option<u64>,
    ready: VecDeque<FeedFrame>,
    started: bool,
    ended: bool,
    _permit: OwnedSemaphorePermit,
}

enum Woken {
    Request(Result<Option<FeedRequest>, Status>),
    Update(Result<Arc<Passed>, RecvError>),
}

impl LeafSession {
    async fn next_frame(&mut self) -> Option<Result<FeedFrame, Status>> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Some(Ok(frame));
            }
            if self.ended {
                return None;
            }
            let step = if self.started {
                self.wake().await
            } else {
                self.start().await
            };
            if let Err(status) = step {
                self.ended = true;
                self.ready.clear();
                return status.map(Err);
            }
        }
    }

    async fn start(&mut self) -> Result<(), Option<Status>> {
        let mut epochs = self.relay.verifier.epochs();
        // `wait_for` returns the watch's value held for reading: dropped
        // here, before the verifier's state is read below (the verifier
        // publishes its epoch to the watch after releasing its state).
        let held = tokio::time::timeout(FIRST_STATE_TIMEOUT, epochs.wait_for(|e| *e > 0))
            .await
            .is_ok_and(|waited| waited.is_ok());
        if !held && self.relay.verifier.epoch().is_none() {
            return Err(Some(Status::unavailable(
                "this relay holds no feed state yet; try another relay or a broker",
            )));
        }
        self.started = true;
        let resume = self.hello.resume_epoch;
        self.relay.leaf_connected(
            &self.hello.verifier_id,
            &self.hello.region,
            resume.unwrap_or(0),
        );
        self.sent = resume;
        self.catch_up();
        Ok(())
    }

    async fn wake(&mut self) -> Result<(), Option<Status>> {
        let woken = tokio::select! {
            request = self.inbound.message() => Woken::Request(request),
            update = self.updates.recv() => Woken::Update(update),
        };
        match woken {
            Woken::Request(Ok(Some(request))) => match request.kind {
                Some(RequestKind::Ack(ack)) => {
                    let epoch = ack.epoch.min(self.sent.unwrap_or(0));
                    self.relay.leaf_acked(&self.hello.verifier_id, epoch);
                    Ok(())
                }
                Some(RequestKind::UseReport(report)) => self
                    .relay
                    .forward_uses(&self.hello.verifier_id, report)
                    .map_err(Some),
                _ => Err(Some(Status::invalid_argument(
                    "after the Hello a subscriber sends only Acks and UseReports",
                ))),
            },
            Woken::Request(Ok(None) | Err(_)) => Err(None),
            Woken::Update(Ok(passed)) => {
                self.follow(&passed);
                Ok(())
            }
            Woken::Update(Err(RecvError::Lagged(_))) => {
                self.catch_up();
                Ok(())
            }
            Woken::Update(Err(RecvError::Closed)) => {
                Err(Some(Status::unavailable("the relay is stopping")))
            }
        }
    }

    fn follow(&mut self, passed: &Passed) {
        match passed {
            Passed::Delta { to, .. } if self.sent.is_some_and(|sent| sent >= *to) => {}
            Passed::Delta { from, to, frame } if self.sent == Some(*from) => {
                self.sent = Some(*to);
                self.ready.push_back(frame.clone());
            }
            Passed::Delta { .. } => self.catch_up(),
            Passed::Heartbeat { epoch, frame } => {
                if self.sent.is_none_or(|sent| sent < *epoch) {
                    self.catch_up();
                }
                if self.sent == Some(*epoch) {
                    self.ready.push_back(frame.clone());
                }
            }
            Passed::Snapshot { epoch, frame } => {
                if self.sent != Some(*epoch) {
                    self.sent = Some(*epoch);
                    self.ready.push_back(frame.clone());
                }
            }
            Passed::Withheld { frame } | Passed::Recorded { frame } => {
                self.ready.push_back(frame.clone())
            }
        }
    }

    /// Bring the leaf to the relay's epoch: by the recent deltas when they
    /// reach back to its epoch, else by a snapshot.
    fn catch_up(&mut self) {
        let Some(held) = self.relay.verifier.epoch() else {
            return;
        };
        match self.sent {
            // A leaf ahead of the relay waits for it to catch up.
            Some(sent) if sent >= held => {}
            Some(sent) if sent < held => match self.relay.deltas_from(sent, held) {
                Some(chain) => {
                    for (to, frame) in chain {
                        self.sent = Some(to);
                        self.ready.push_back(frame);
                    }
                }
                None => self.send_snapshot(),
            },
            _ => self.send_snapshot(),
        }
    }

    fn send_snapshot(&mut self) {
        if let Some((epoch, frame)) = self.relay.snapshot_frame() {
            self.sent = Some(epoch);
            self.ready.push_back(frame);
        }
    }
}

impl Drop for LeafSession {
    fn drop(&mut self) {
        if self.started {
            self.relay.leaf_gone(&self.hello.verifier_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use lapse_wire::feed::EmergencyUse;

    use super::*;
    use crate::VerifyConfig;
    use crate::follower::Downstream as _;

    fn report(leaf: &str, id: u64, uses: usize) -> UseReport {
        UseReport {
            uses: (0..uses)
                .map(|n| EmergencyUse {
                    verifier_id: leaf.into(),
                    jti: format!("{leaf}-{id}-{n}"),
                    ..Default::default()
                })
                .collect(),
            report_id: id,
        }
    }

    fn queued(relay: &Relay) -> Vec<u64> {
        relay
            .report(true)
            .into_iter()
            .filter_map(|request| match request.kind {
                Some(RequestKind::UseReport(report)) => Some(report.report_id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn forwarded_use_reports_are_bounded_per_leaf_and_in_all_and_leave_when_recorded() {
        let relay = Relay::new(
            Verifier::new(VerifyConfig::default()),
            RelayConfig::default(),
        );
        // A leaf's own uses are forwarded, once per report id.
        for id in 1..=MAX_FORWARDED_PER_LEAF as u64 {
            relay.forward_uses("a", report("a", id, 1)).unwrap();
        }
        relay.forward_uses("a", report("a", 1, 1)).unwrap();
        assert_eq!(relay.forwarded_uses(), MAX_FORWARDED_PER_LEAF);
        // One leaf cannot take every place.
        let refused = relay.forward_uses("a", report("a", 100, 1)).unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        // Others still can, up to the relay's bound.
        let mut id = 1_000;
        for leaf in ["b", "c", "d"] {
            for _ in 0..MAX_FORWARDED_PER_LEAF {
                id += 1;
                relay.forward_uses(leaf, report(leaf, id, 1)).unwrap();
            }
        }
        assert_eq!(relay.forwarded_uses(), MAX_FORWARDED_REPORTS);
        let refused = relay.forward_uses("e", report("e", 5_000, 1)).unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        // Another verifier's uses, or more than a verifier sends: refused.
        let foreign = relay.forward_uses("e", report("a", 2, 1)).unwrap_err();
        assert_eq!(foreign.code(), tonic::Code::InvalidArgument, "{foreign:?}");
        let oversized = relay
            .forward_uses(
                "e",
                report("e", 3, crate::break_glass::MAX_USES_PER_REPORT + 1),
            )
            .unwrap_err();
        assert_eq!(
            oversized.code(),
            tonic::Code::InvalidArgument,
            "{oversized:?}"
        );
        // Each goes up once per subscription, and all again on a new one.
        assert_eq!(queued(&relay).len(), MAX_FORWARDED_REPORTS);
        assert!(
            relay
                .report(false)
                .iter()
                .all(|r| !matches!(r.kind, Some(RequestKind::UseReport(_))))
        );
        // What the subscription could not take is offered again.
        let first = relay.report(false);
        assert!(first.is_empty());
        let all = relay.report(true);
        relay.unsent(all.into_iter().skip(60).collect());
        assert_eq!(
            relay
                .report(false)
                .iter()
                .filter(|r| matches!(r.kind, Some(RequestKind::UseReport(_))))
                .count(),
            MAX_FORWARDED_REPORTS - 60
        );
        assert!(relay.report(false).is_empty());
        // Recorded upstream: it leaves, and makes room.
        relay.passed(&FeedEvent {
            kind: Some(Kind::UsesRecorded(lapse_wire::feed::UsesRecorded {
                report_id: 1,
            })),
            ..Default::default()
        });
        assert_eq!(relay.forwarded_uses(), MAX_FORWARDED_REPORTS - 1);
        assert!(!queued(&relay).contains(&1));
        relay.forward_uses("a", report("a", 100, 1)).unwrap();
    }
}
