//! One subscriber's session, as the stream of frames its response is.
//!
//! The session has no task or channel of its own: the task that sends the
//! subscriber's stream polls it, and it waits on three things at once:
//! the feed's broadcast, the subscriber's own requests (acks and use
//! reports) and the audit's answers to those reports. A delta or heartbeat
//! for subscribers at the epoch it follows from goes out as the frame the
//! broadcast carries, encoded once for all of them; only what is this
//! subscriber's alone (a snapshot, a catch-up delta, a heartbeat at
//! another epoch, an answer to its report) is encoded for it.
//!
//! A subscriber that stops reading stops being polled: its HTTP/2 window
//! bounds what is buffered for it, the broadcast it lags is bounded, and
//! when it reads again it is resynchronised with a snapshot. It keeps its
//! subscription slot until it goes away (HTTP/2 keepalive finds a dead
//! peer within `HTTP2_KEEPALIVE_INTERVAL` plus its timeout).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use lapse_wire::feed::feed_event::Kind as EventKind;
use lapse_wire::feed::feed_request::Kind as RequestKind;
use lapse_wire::feed::{
    FeedEvent, FeedRequest, Heartbeat, Hello, LeafReport, UsesRecorded, Withheld,
};
use lapse_wire::frames::FeedFrame;
use lapse_wire::names::check_name;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc};
use tonic::{Status, Streaming};

use crate::feed::{FeedHub, IdentitySlot, Update};

/// How long a resuming verifier may wait for this broker to reach its epoch.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// Use reports of one subscriber whose audit answer may wait to be sent.
const RECORDED_QUEUE: usize = 16;

/// Why a session ended.
enum End {
    /// The verifier went away.
    Gone,
    /// Tell the verifier why, then end.
    Fail(Status),
}

/// What woke the session.
enum Woken {
    Request(Result<Option<FeedRequest>, Status>),
    Recorded(Option<u64>),
    Update(Result<Arc<Update>, RecvError>),
}

pub(super) struct Session {
    hub: Arc<FeedHub>,
    hello: Hello,
    inbound: Streaming<FeedRequest>,
    updates: broadcast::Receiver<Arc<Update>>,
    /// Ids of this subscriber's use reports the audit recorded.
    recorded: mpsc::Receiver<u64>,
    recorder: mpsc::Sender<u64>,
    /// Emergency uses this subscriber reported.
    reported: u64,
    /// The epoch the verifier holds once it applies what was sent.
    sent: u64,
    /// Frames to send before waiting again.
    ready: VecDeque<FeedFrame>,
    /// The verifiers this subscriber relays the feed to, as it reported
    /// them (at most `feed.max_subscribers`).
    leaves: HashSet<String>,
    started: bool,
    ended: bool,
    _permit: OwnedSemaphorePermit,
    _identity_slot: Option<IdentitySlot>,
}

impl Session {
    pub(super) fn new(
        hub: Arc<FeedHub>,
        hello: Hello,
        inbound: Streaming<FeedRequest>,
        updates: broadcast::Receiver<Arc<Update>>,
        permit: OwnedSemaphorePermit,
        identity_slot: Option<IdentitySlot>,
    ) -> Self {
        let (recorder, recorded) = mpsc::channel(RECORDED_QUEUE);
        Self {
            hub,
            hello,
            inbound,
            updates,
            recorded,
            recorder,
            reported: 0,
            sent: 0,
            ready: VecDeque::new(),
            leaves: HashSet::new(),
            started: false,
            ended: false,
            _permit: permit,
            _identity_slot: identity_slot,
        }
    }

    /// The session as the response's stream.
    pub(super) fn into_stream(
        self,
    ) -> futures::stream::BoxStream<'static, Result<FeedFrame, Status>> {
        Box::pin(futures::stream::unfold(self, |mut session| async move {
            let frame = session.next_frame().await?;
            Some((frame, session))
        }))
    }

    /// The next frame to send; `None` when the session is over.
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
                self.started = true;
                self.connected();
                self.start().await
            };
            if let Err(end) = step {
                self.ended = true;
                self.ready.clear();
                return match end {
                    End::Gone => None,
                    End::Fail(status) => Some(Err(status)),
                };
            }
        }
    }

    fn connected(&self) {
        let now = self.hub.cluster_now();
        self.hub.tracker.lock().expect("tracker lock").connected(
            &self.hello.verifier_id,
            &self.hello.region,
            self.hub.core.id(),
            self.hello.resume_epoch.unwrap_or(0),
            now,
        );
        tracing::debug!(verifier = %self.hello.verifier_id, region = %self.hello.region, resume = ?self.hello.resume_epoch, "feed subscriber");
    }

    /// Wait for the next thing to do, and do it.
    async fn wake(&mut self) -> Result<(), End> {
        let woken = tokio::select! {
            request = self.inbound.message() => Woken::Request(request),
            id = self.recorded.recv() => Woken::Recorded(id),
            update = self.updates.recv() => Woken::Update(update),
        };
        match woken {
            Woken::Request(Ok(Some(request))) => self.on_request(request),
            Woken::Request(Ok(None) | Err(_)) => Err(End::Gone),
            Woken::Recorded(Some(report_id)) => {
                self.queue(FeedFrame::Own(FeedEvent {
                    kind: Some(EventKind::UsesRecorded(UsesRecorded { report_id })),
                    broker_id: self.hub.core.id(),
                    cluster_time_ms: self.hub.cluster_now(),
                    ..FeedEvent::default()
                }));
                Ok(())
            }
            // The session holds a sender: never closed.
            Woken::Recorded(None) => Ok(()),
            Woken::Update(Ok(update)) => self.follow(&update),
            Woken::Update(Err(RecvError::Lagged(missed))) => {
                tracing::debug!(verifier = %self.hello.verifier_id, missed, "subscriber fell behind; resynchronising");
                self.send_snapshot()
            }
            Woken::Update(Err(RecvError::Closed)) => {
                Err(End::Fail(Status::unavailable("the broker is stopping")))
            }
        }
    }

    fn on_request(&mut self, request: FeedRequest) -> Result<(), End> {
        match request.kind {
            Some(RequestKind::Ack(ack)) => {
                if ack.epoch > self.sent {
                    return Err(End::Fail(Status::invalid_argument(format!(
                        "ack of epoch {} beyond the {} sent",
                        ack.epoch, self.sent
                    ))));
                }
                self.hub.note_commits_through(ack.epoch);
                let now = self.hub.cluster_now();
                self.hub.tracker.lock().expect("tracker lock").ack(
                    &self.hello.verifier_id,
                    ack.epoch,
                    now,
                );
                Ok(())
            }
            Some(RequestKind::UseReport(report)) => {
                let report_id = report.report_id;
                let (read, events) = super::uses::note_use_report(
                    &self.hub,
                    &self.hello.verifier_id,
                    report,
                    self.reported,
                );
                self.reported = self.reported.saturating_add(read);
                tokio::spawn(super::uses::record_uses(
                    self.hub.clone(),
                    self.hello.verifier_id.clone(),
                    report_id,
                    events,
                    self.recorder.clone(),
                ));
                Ok(())
            }
            Some(RequestKind::Leaves(report)) => {
                self.on_leaves(report);
                Ok(())
            }
            _ => Err(End::Fail(Status::invalid_argument(
                "after the Hello a subscriber sends only Acks, UseReports and LeafReports",
            ))),
        }
    }

    /// A relay's report on its leaves: each is tracked as a subscriber of
    /// this broker while the relay's subscription lasts. A leaf name that
    /// is no verifier id, or one beyond `feed.max_subscribers` leaves,
    /// is skipped (and logged); an acked epoch beyond what this broker sent
    /// the relay counts as what it sent.
    fn on_leaves(&mut self, report: LeafReport) {
        let now = self.hub.cluster_now();
        let most = self.hub.settings.max_subscribers;
        let mut skipped = 0usize;
        let acked_most = report
            .leaves
            .iter()
            .filter(|leaf| !leaf.gone)
            .map(|leaf| leaf.acked_epoch.min(self.sent))
            .max();
        if let Some(epoch) = acked_most {
            self.hub.note_commits_through(epoch);
        }
        let mut tracker = self.hub.tracker.lock().expect("tracker lock");
        for leaf in report.leaves.iter().take(most) {
            let named = check_name("leaf verifier_id", &leaf.verifier_id, false)
                .and_then(|()| check_name("leaf region", &leaf.region, true));
            if named.is_err() || leaf.verifier_id == self.hello.verifier_id {
                skipped += 1;
                continue;
            }
            if leaf.gone {
                if self.leaves.remove(&leaf.verifier_id) {
                    tracker.disconnected(&leaf.verifier_id, now);
                }
                continue;
            }
            let epoch = leaf.acked_epoch.min(self.sent);
            if !self.leaves.contains(&leaf.verifier_id) {
                if self.leaves.len() >= most {
                    skipped += 1;
                    continue;
                }
                self.leaves.insert(leaf.verifier_id.clone());
                tracker.connected(
                    &leaf.verifier_id,
                    &leaf.region,
                    self.hub.core.id(),
                    epoch,
                    now,
                );
            }
            tracker.ack(&leaf.verifier_id, epoch, now);
        }
        skipped += report.leaves.len().saturating_sub(most);
        if skipped > 0 {
            tracing::warn!(relay = %self.hello.verifier_id, skipped, "a relay reported leaves that were not taken");
        }
    }

    /// The first events: the deltas since the verifier's epoch when this
    /// broker can give them cheaply, a snapshot otherwise.
    async fn start(&mut self) -> Result<(), End> {
        let Some(epoch) = self.hello.resume_epoch else {
            return self.send_snapshot();
        };
        if self.hub.current_epoch() < epoch {
            let mut changes = self.hub.core.view().changes();
            let hub = self.hub.clone();
            let caught_up = tokio::time::timeout(
                CATCH_UP_TIMEOUT,
                changes.wait_for(move |_| hub.current_epoch() >= epoch),
            )
            .await;
            if !matches!(caught_up, Ok(Ok(_))) {
                return Err(End::Fail(Status::unavailable(format!(
                    "broker {} is at epoch {}, behind the verifier's {epoch}; try another broker",
                    self.hub.core.id(),
                    self.hub.current_epoch()
                ))));
            }
        }
        if !self.hub.delta_is_smaller(epoch) {
            return self.send_snapshot();
        }
        // The verifier holds `epoch`: its ack of it (it acks the first
        // event, which is a heartbeat when nothing changed since) is no
        // ack of something not sent.
        self.sent = epoch;
        self.catch_up()
    }

    fn follow(&mut self, update: &Update) -> Result<(), End> {
        match update {
            Update::Delta { to, .. } if *to <= self.sent => Ok(()),
            Update::Delta {
                from, to, frame, ..
            } if *from == self.sent => {
                self.sent = *to;
                self.queue(frame.clone());
                Ok(())
            }
            // The first events were built from a later state than this
            // broadcast, or a broadcast is missing: derive from the state.
            Update::Delta { .. } => self.catch_up(),
            Update::Heartbeat {
                epoch,
                cluster_time_ms,
                voucher,
                frame,
            } => {
                if self.sent < *epoch {
                    self.catch_up()?;
                }
                if self.sent == *epoch {
                    self.queue(frame.clone());
                    return Ok(());
                }
                // A signed heartbeat vouches for one epoch's state; one for
                // another epoch than this subscriber holds is no use to it
                // (it raced a newer delta), and the next one will match.
                if voucher.is_some() {
                    return Ok(());
                }
                let event = FeedEvent {
                    kind: Some(EventKind::Heartbeat(Heartbeat {
                        interval_ms: self.hub.settings.heartbeat_ms,
                        voucher: None,
                    })),
                    epoch: self.sent,
                    from_epoch: 0,
                    cluster_time_ms: *cluster_time_ms,
                    broker_id: self.hub.core.id(),
                    max_credential_ttl_ms: self.hub.max_ttl_ms(),
                };
                self.queue(FeedFrame::Own(event));
                Ok(())
            }
            Update::Withheld { reason } => {
                let event = FeedEvent {
                    kind: Some(EventKind::Withheld(Withheld {
                        reason: reason.clone(),
                    })),
                    epoch: self.sent,
                    from_epoch: 0,
                    cluster_time_ms: self.hub.cluster_now(),
                    broker_id: self.hub.core.id(),
                    max_credential_ttl_ms: self.hub.max_ttl_ms(),
                };
                self.queue(FeedFrame::Own(event));
                Ok(())
            }
            Update::Resync => self.send_snapshot(),
        }
    }

    fn catch_up(&mut self) -> Result<(), End> {
        match self.hub.delta_from(self.sent) {
            Ok(None) => Ok(()),
            Ok(Some((to, bytes))) => {
                let from = self.sent;
                self.send(EventKind::Delta(bytes), to, from);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "cannot follow a subscriber by delta; sending a snapshot");
                self.send_snapshot()
            }
        }
    }

    fn send_snapshot(&mut self) -> Result<(), End> {
        let (epoch, bytes) = self.hub.snapshot().map_err(|e| End::Fail(e.into()))?;
        if epoch < self.sent {
            // Never move a verifier backwards; a delta will follow.
            return Ok(());
        }
        self.send(EventKind::Snapshot(bytes), epoch, 0);
        Ok(())
    }

    /// Queue an event made for this subscriber that moves it to `epoch`.
    fn send(&mut self, kind: EventKind, epoch: u64, from: u64) {
        let event = FeedEvent {
            kind: Some(kind),
            epoch,
            from_epoch: from,
            cluster_time_ms: self.hub.cluster_now(),
            broker_id: self.hub.core.id(),
            max_credential_ttl_ms: self.hub.max_ttl_ms(),
        };
        // Noted before the event leaves, so an ack of it is never taken
        // for an ack of something not sent.
        self.sent = epoch;
        self.queue(FeedFrame::Own(event));
    }

    fn queue(&mut self, frame: FeedFrame) {
        if let Some(faults) = &self.hub.core.env().faults
            && faults.drop_feed_message(&self.hello.verifier_id)
        {
            return;
        }
        self.ready.push_back(frame);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        let now = self.hub.cluster_now();
        let mut tracker = self.hub.tracker.lock().expect("tracker lock");
        tracker.disconnected(&self.hello.verifier_id, now);
        // A relay's leaves go with it (they will subscribe elsewhere).
        for leaf in self.leaves.drain() {
            tracker.disconnected(&leaf, now);
        }
    }
}
