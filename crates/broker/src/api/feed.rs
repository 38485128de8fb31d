//! The `Feed` gRPC service: one session per subscribed verifier.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapse_wire::feed::feed_event::Kind as EventKind;
use lapse_wire::feed::feed_request::Kind as RequestKind;
use lapse_wire::feed::feed_server::Feed;
use lapse_wire::feed::{
    EmergencyUseKind, FeedEvent, FeedRequest, Heartbeat, Hello, UseReport, UsesRecorded, Withheld,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::feed::{FeedHub, Update};

/// How long a new subscriber has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a resuming verifier may wait for this broker to reach its epoch.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest verifier id and region accepted.
const MAX_NAME_BYTES: usize = 128;
/// Uses read from one `UseReport` (verifiers send at most 64); the rest
/// are counted as dropped.
const MAX_USES_PER_REPORT: usize = 256;
/// Longest string of a reported use logged; longer ones are cut.
const MAX_USE_FIELD_BYTES: usize = 512;

pub struct FeedService {
    pub hub: Arc<FeedHub>,
}

fn check_name(what: &str, value: &str, allow_empty: bool) -> Result<(), Status> {
    if value.is_empty() && !allow_empty {
        return Err(Status::invalid_argument(format!("{what} is empty")));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "{what} is {} bytes; at most {MAX_NAME_BYTES}",
            value.len()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-:/@".contains(*c)))
    {
        return Err(Status::invalid_argument(format!(
            "{what} {value:?} contains {c:?}; use letters, digits and . _ - : / @"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Feed for FeedService {
    type SubscribeStream = ReceiverStream<Result<FeedEvent, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<FeedRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        // With TLS only a verifier may subscribe, under its certified name.
        let certified = super::auth::check_verifier(&self.hub.core, &request)?;
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "no Hello within {} s",
                    HELLO_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => {
                return Err(Status::invalid_argument("the stream closed before a Hello"));
            }
            Ok(Ok(Some(FeedRequest {
                kind: Some(RequestKind::Hello(hello)),
            }))) => hello,
            Ok(Ok(Some(_))) => {
                return Err(Status::invalid_argument(
                    "the first message of a subscription must be a Hello",
                ));
            }
        };
        check_name("verifier_id", &hello.verifier_id, false)?;
        if let Some(name) = &certified
            && !super::auth::verifier_id_matches(name, &hello.verifier_id)
        {
            return Err(Status::permission_denied(format!(
                "verifier_id {:?} is not this verifier's: its certificate names {name:?} (use {name:?} or \"{name}/<suffix>\")",
                hello.verifier_id
            )));
        }
        check_name("region", &hello.region, true)?;
        let hub = &self.hub;
        let identity_slot = match &certified {
            Some(name) => Some(hub.identity_slot(name).ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "the certificate of verifier {name:?} already holds its maximum of {} subscriptions on broker {} (feed.max_subscribers_per_identity)",
                    hub.settings.max_subscribers_per_identity,
                    hub.core.id()
                ))
            })?),
            None => None,
        };
        let permit = hub.permits.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "broker {} already serves its maximum of {} verifiers; try another broker",
                hub.core.id(),
                hub.settings.max_subscribers
            ))
        })?;
        // Subscribe to the broadcast before reading the state, so nothing
        // published in between is missed.
        let updates = hub.updates.subscribe();
        let (out, events) = mpsc::channel(hub.settings.subscriber_queue);
        let session = Session {
            hub: hub.clone(),
            hello,
            out,
            sent: 0,
            sent_shared: Arc::new(AtomicU64::new(0)),
            _permit: permit,
            _identity_slot: identity_slot,
        };
        tokio::spawn(session.run(inbound, updates));
        Ok(Response::new(ReceiverStream::new(events)))
    }
}

/// Read a subscriber's acks until it goes away or breaks the protocol.
async fn read_acks(
    hub: Arc<FeedHub>,
    id: String,
    sent: Arc<AtomicU64>,
    mut inbound: Streaming<FeedRequest>,
    failed: tokio::sync::oneshot::Sender<End>,
    out: mpsc::Sender<Result<FeedEvent, Status>>,
) {
    // Emergency uses this subscriber reported.
    let mut reported: u64 = 0;
    let end = loop {
        match inbound.message().await {
            Ok(Some(FeedRequest {
                kind: Some(RequestKind::Ack(ack)),
            })) => {
                let sent = sent.load(Ordering::SeqCst);
                if ack.epoch > sent {
                    break End::Fail(Status::invalid_argument(format!(
                        "ack of epoch {} beyond the {sent} sent",
                        ack.epoch
                    )));
                }
                hub.note_commits_through(ack.epoch);
                let now = hub.cluster_now();
                hub.tracker
                    .lock()
                    .expect("tracker lock")
                    .ack(&id, ack.epoch, now);
            }
            Ok(Some(FeedRequest {
                kind: Some(RequestKind::UseReport(report)),
            })) => {
                let report_id = report.report_id;
                let (read, events) = note_use_report(&hub, &id, report, reported);
                reported = reported.saturating_add(read);
                tokio::spawn(record_uses(
                    hub.clone(),
                    id.clone(),
                    report_id,
                    events,
                    out.clone(),
                ));
            }
            Ok(Some(_)) => {
                break End::Fail(Status::invalid_argument(
                    "after the Hello a subscriber sends only Acks and UseReports",
                ));
            }
            Ok(None) | Err(_) => break End::Gone,
        }
    };
    let _ = failed.send(end);
}

/// A verifier's report of emergency uses: break-glass credentials it
/// accepted, and credentials it accepted while stale (fail-open). Logged
/// here, one line per use, with every string cut to
/// [`MAX_USE_FIELD_BYTES`]; never fails the session. `verifier` is the
/// subscription's (checked against its certificate), not the report's
/// word. Returns the uses read.
///
/// Returns the uses read, and the first [`MAX_USES_AUDITED`] as
/// control-plane audit events.
fn note_use_report(
    hub: &FeedHub,
    verifier: &str,
    report: UseReport,
    before: u64,
) -> (u64, Vec<AuditedUse>) {
    let cap = |text: &str| {
        let mut end = text.len().min(MAX_USE_FIELD_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    };
    let dropped = report.uses.len().saturating_sub(MAX_USES_PER_REPORT);
    let mut read = 0;
    let mut events = Vec::new();
    for use_ in report.uses.iter().take(MAX_USES_PER_REPORT) {
        read += 1;
        let kind = match EmergencyUseKind::try_from(use_.kind) {
            Ok(EmergencyUseKind::BreakGlass) => "break_glass",
            Ok(EmergencyUseKind::FailOpen) => "fail_open",
            _ => "unknown",
        };
        hub.uses.note(kind, use_.count);
        let audiences: Vec<String> = use_.audiences.iter().take(16).map(|a| cap(a)).collect();
        tracing::warn!(
            broker = hub.core.id(),
            verifier = %verifier,
            claimed_verifier = %cap(&use_.verifier_id),
            kind,
            jti = %cap(&use_.jti),
            sub = %cap(&use_.subject),
            tenant = %cap(&use_.tenant),
            aud = ?audiences,
            key = %cap(&use_.key_id),
            reason = %cap(&use_.reason),
            count = use_.count,
            at_ms = use_.at_ms,
            last_at_ms = use_.last_at_ms,
            reported_by_subscription = before + read,
            "emergency use reported by a verifier"
        );
        // Into the replicated control-plane audit, under the verifier's
        // certified name (the first uses of a report; the rest are logged).
        if read <= MAX_USES_AUDITED {
            let authorization = lapse_ledger::Authorization {
                principal: format!("verifier:{}", cap(verifier)),
                action: format!("{kind}_use"),
                tenant: lapse_credential::TenantId::new(use_.tenant.clone()).ok(),
                bindings_version: 0,
                policy_version: 0,
                justification: Some(cap(&use_.reason)).filter(|r| !r.is_empty()),
                grant: None,
            };
            let outcome = Ok(format!(
                "accepted {} time(s) from {} to {} (verifier clock): jti {}, sub {}, aud {:?}, key {}",
                use_.count,
                use_.at_ms,
                use_.last_at_ms,
                cap(&use_.jti),
                cap(&use_.subject),
                audiences,
                cap(&use_.key_id)
            ));
            events.push((authorization, outcome));
        }
    }
    if dropped > 0 {
        tracing::warn!(
            verifier = %verifier,
            dropped,
            "a verifier's use report held more than {MAX_USES_PER_REPORT} uses; the rest were not read"
        );
    }
    (read, events)
}

/// The most uses of one report that become control-plane audit events.
const MAX_USES_AUDITED: u64 = 64;

type AuditedUse = (lapse_ledger::Authorization, lapse_ledger::ControlOutcome);

/// Record a report's uses in the replicated audit, then tell the verifier
/// (`UsesRecorded`) so it stops holding them. Each use's request id is
/// derived from the verifier, the report and the use's place in it, so a
/// report sent again after a lost answer is recorded once.
async fn record_uses(
    hub: Arc<FeedHub>,
    verifier: String,
    report_id: u64,
    events: Vec<AuditedUse>,
    out: mpsc::Sender<Result<FeedEvent, Status>>,
) {
    use sha2::Digest as _;
    let mut recorded = true;
    for (place, (authorization, outcome)) in events.into_iter().enumerate() {
        let mut hasher = sha2::Sha256::new();
        hasher.update(verifier.as_bytes());
        hasher.update([0]);
        hasher.update(report_id.to_le_bytes());
        hasher.update((place as u64).to_le_bytes());
        let digest = hasher.finalize();
        let id = format!("use-{}", hex::encode(&digest[..20]));
        let Ok(id) = lapse_ledger::RequestId::new(id) else {
            return;
        };
        recorded &= super::cluster::record_as(&hub.core, id, authorization, outcome).await;
    }
    // A verifier that sends no report id (0) expects no answer.
    if recorded && report_id != 0 {
        let event = FeedEvent {
            kind: Some(EventKind::UsesRecorded(UsesRecorded { report_id })),
            broker_id: hub.core.id(),
            cluster_time_ms: hub.cluster_now(),
            ..FeedEvent::default()
        };
        let _ = out.send(Ok(event)).await;
    }
}

struct Session {
    hub: Arc<FeedHub>,
    hello: Hello,
    out: mpsc::Sender<Result<FeedEvent, Status>>,
    /// The epoch the verifier holds once it applies what was sent.
    sent: u64,
    /// `sent`, for the task that reads acks.
    sent_shared: Arc<AtomicU64>,
    _permit: OwnedSemaphorePermit,
    _identity_slot: Option<crate::feed::IdentitySlot>,
}

/// Why a session ended.
enum End {
    /// The verifier went away or stopped reading.
    Gone,
    /// Tell the verifier why, then end.
    Fail(Status),
}

impl Session {
    async fn run(
        mut self,
        inbound: Streaming<FeedRequest>,
        mut updates: broadcast::Receiver<Arc<Update>>,
    ) {
        let id = self.hello.verifier_id.clone();
        let resume = self.hello.resume_epoch;
        {
            let now = self.hub.cluster_now();
            self.hub.tracker.lock().expect("tracker lock").connected(
                &id,
                &self.hello.region,
                self.hub.core.id(),
                resume.unwrap_or(0),
                now,
            );
        }
        tracing::debug!(verifier = %id, region = %self.hello.region, ?resume, "feed subscriber");
        // Acks are read by their own task, so following the broadcast does
        // not poll the inbound stream for every event sent.
        let (failed, mut failure) = tokio::sync::oneshot::channel::<End>();
        let acks = tokio::spawn(read_acks(
            self.hub.clone(),
            id.clone(),
            self.sent_shared.clone(),
            inbound,
            failed,
            self.out.clone(),
        ));
        let ended: Result<(), End> = async {
            self.start(resume).await?;
            loop {
                tokio::select! {
                    end = &mut failure => return Err(end.unwrap_or(End::Gone)),
                    update = updates.recv() => match update {
                        Ok(update) => self.follow(&update).await?,
                        Err(RecvError::Lagged(missed)) => {
                            tracing::debug!(verifier = %id, missed, "subscriber fell behind; resynchronising");
                            self.send_snapshot().await?;
                        }
                        Err(RecvError::Closed) => {
                            return Err(End::Fail(Status::unavailable("the broker is stopping")));
                        }
                    },
                }
            }
        }
        .await;
        acks.abort();
        if let Err(End::Fail(status)) = ended {
            let _ = self.out.try_send(Err(status));
        }
        let now = self.hub.cluster_now();
        self.hub
            .tracker
            .lock()
            .expect("tracker lock")
            .disconnected(&id, now);
    }

    /// The first events: the deltas since the verifier's epoch when this
    /// broker can give them cheaply, a snapshot otherwise.
    async fn start(&mut self, resume: Option<u64>) -> Result<(), End> {
        let Some(epoch) = resume else {
            return self.send_snapshot().await;
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
            return self.send_snapshot().await;
        }
        // The verifier holds `epoch`: its ack of it (it acks the first
        // event, which is a heartbeat when nothing changed since) is no
        // ack of something not sent.
        self.sent_shared.store(epoch, Ordering::SeqCst);
        self.sent = epoch;
        self.catch_up().await
    }

    async fn follow(&mut self, update: &Update) -> Result<(), End> {
        match update {
            Update::Delta { to, .. } if *to <= self.sent => Ok(()),
            Update::Delta { from, to, bytes } if *from == self.sent => {
                let (from, to) = (*from, *to);
                self.send(EventKind::Delta(bytes.clone()), to, from).await
            }
            // The first events were built from a later state than this
            // broadcast, or a broadcast is missing: derive from the state.
            Update::Delta { .. } => self.catch_up().await,
            Update::Heartbeat {
                epoch,
                cluster_time_ms,
                voucher,
            } => {
                if self.sent < *epoch {
                    self.catch_up().await?;
                }
                // A signed heartbeat vouches for one epoch's state; one for
                // another epoch than this subscriber holds is no use to it
                // (it raced a newer delta), and the next one will match.
                if voucher.is_some() && self.sent != *epoch {
                    return Ok(());
                }
                let event = FeedEvent {
                    kind: Some(EventKind::Heartbeat(Heartbeat {
                        interval_ms: self.hub.settings.heartbeat_ms,
                        voucher: voucher.clone(),
                    })),
                    epoch: self.sent,
                    from_epoch: 0,
                    cluster_time_ms: *cluster_time_ms,
                    broker_id: self.hub.core.id(),
                    max_credential_ttl_ms: self.hub.max_ttl_ms(),
                };
                self.push(event).await
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
                self.push(event).await
            }
            Update::Resync => self.send_snapshot().await,
        }
    }

    async fn catch_up(&mut self) -> Result<(), End> {
        match self.hub.delta_from(self.sent) {
            Ok(None) => Ok(()),
            Ok(Some((to, bytes))) => {
                let from = self.sent;
                self.send(EventKind::Delta(bytes), to, from).await
            }
            Err(error) => {
                tracing::warn!(%error, "cannot follow a subscriber by delta; sending a snapshot");
                self.send_snapshot().await
            }
        }
    }

    async fn send_snapshot(&mut self) -> Result<(), End> {
        let (epoch, bytes) = self.hub.snapshot().map_err(|e| End::Fail(e.into()))?;
        if epoch < self.sent {
            // Never move a verifier backwards; a delta will follow.
            return Ok(());
        }
        self.send(EventKind::Snapshot(bytes), epoch, 0).await
    }

    async fn send(&mut self, kind: EventKind, epoch: u64, from: u64) -> Result<(), End> {
        // Published before the event leaves, so an ack of it is never taken
        // for an ack of something not sent.
        self.sent_shared.store(epoch, Ordering::SeqCst);
        let event = FeedEvent {
            kind: Some(kind),
            epoch,
            from_epoch: from,
            cluster_time_ms: self.hub.cluster_now(),
            broker_id: self.hub.core.id(),
            max_credential_ttl_ms: self.hub.max_ttl_ms(),
        };
        self.push(event).await?;
        self.sent = epoch;
        Ok(())
    }

    async fn push(&self, event: FeedEvent) -> Result<(), End> {
        if let Some(faults) = &self.hub.core.env().faults
            && faults.drop_feed_message(&self.hello.verifier_id)
        {
            return Ok(());
        }
        let patience = Duration::from_millis(self.hub.settings.send_timeout_ms);
        match tokio::time::timeout(patience, self.out.send(Ok(event))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                tracing::info!(verifier = %self.hello.verifier_id, "subscriber stopped reading; disconnecting");
                Err(End::Gone)
            }
        }
    }
}
