//! A leaf's subscription to a relay: the `Feed` service that admits it
//! (certificate, hello, a place among `max_leaves`) and the session that
//! is its response stream, passing on what the relay's verifier applied
//! and taking the leaf's acks and use reports.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use lapse_wire::feed::feed_request::Kind as RequestKind;
use lapse_wire::feed::{FeedRequest, Hello};
use lapse_wire::frames::{FeedFrame, FrameFeed};
use lapse_wire::names::{HELLO_TIMEOUT, check_hello, hello_of};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status, Streaming};

use super::{Passed, Relay};

/// How long a leaf waits for a relay that holds no state yet.
const FIRST_STATE_TIMEOUT: Duration = Duration::from_secs(5);

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
        // With TLS only a verifier may subscribe, under its certified name.
        let certified = if relay.config.require_verifier_certificate {
            Some(lapse_pki::PeerIdentity::certified_verifier(&request)?)
        } else {
            None
        };
        let mut inbound = request.into_inner();
        let hello = hello_of(
            tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
                .await
                .ok(),
        )?;
        check_hello(&hello, certified.as_deref())?;
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
