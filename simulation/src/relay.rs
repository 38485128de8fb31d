//! A feed relay: it follows brokers and serves their feed to verifiers,
//! passing acks back up. Told to, it attacks the feed as anything on the
//! path between broker and verifier could: it drops revocations, injects
//! a signing key, rewrites the maximum credential lifetime, signs
//! heartbeats of its own with another CA's broker certificate, or replays
//! old heartbeats in place of new ones.
//!
//! Lapse's claim is that a verifier checking broker signatures needs no
//! trust in what stands between: the worst such a relay can do is make
//! it refuse credentials or go stale. The simulation runs one in a region
//! (the `relay` of a region in a scenario) and the end-to-end hostile-feed
//! test puts one between real brokers and a real `lapse verifier`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lapse_filter::{
    DeltaMessage, Message, PublicKey, RevokedDelta, RuleSet, Snapshot, Statement, decode_message,
    encode_message,
};
use lapse_pki::Credentials;
use lapse_wire::feed::feed_client::FeedClient;
use lapse_wire::feed::feed_event::Kind;
use lapse_wire::feed::feed_request::Kind as RequestKind;
use lapse_wire::feed::feed_server::{Feed, FeedServer};
use lapse_wire::feed::{FeedEvent, FeedRequest, Heartbeat, Voucher};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// Largest feed event the relay takes from a broker.
const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;
/// Heartbeats kept for replay.
const REPLAY_KEPT: usize = 16;
/// Time allowed for a broker to take the relay's subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the relay does to the feed it passes on. The default passes it
/// on unchanged.
#[derive(Default)]
pub struct Tamper {
    /// Strip every revocation (indices, rules, leaked secrets) from deltas,
    /// keeping their epochs, so the verifier's state misses them.
    pub drop_revocations: bool,
    /// Add this key to every delta, as if the cluster had registered it.
    pub inject_key: Option<(String, PublicKey)>,
    /// Put this maximum credential lifetime on every event.
    pub ttl_ms: Option<u64>,
    /// Once a subscription's feed was changed, replace every heartbeat's
    /// voucher with one signed by these credentials over the state passed
    /// on (as an attacker would, to hide the change).
    pub resign_with: Option<Arc<Credentials>>,
    /// While set, nothing from the brokers is passed on; each heartbeat
    /// that arrives is replaced by one recorded before.
    pub replay: Arc<AtomicBool>,
    /// When given, the changes above wait until it is set: the feed passes
    /// unchanged until then.
    pub armed: Option<Arc<AtomicBool>>,
}

impl Tamper {
    fn changes_deltas(&self) -> bool {
        self.drop_revocations || self.inject_key.is_some()
    }

    fn armed(&self) -> bool {
        self.armed
            .as_ref()
            .is_none_or(|armed| armed.load(Ordering::SeqCst))
    }
}

/// What the relay did, for tests and traces.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub subscriptions: AtomicU64,
    pub forwarded: AtomicU64,
    /// Deltas passed on changed.
    pub tampered_deltas: AtomicU64,
    /// Revocations (indices, rules and secrets) stripped.
    pub dropped_revocations: AtomicU64,
    /// Heartbeats passed on with a voucher of the relay's own.
    pub resigned: AtomicU64,
    /// Old heartbeats sent in place of new ones.
    pub replayed: AtomicU64,
    /// The highest epoch of an event passed on whose delta was changed.
    pub last_tampered_epoch: AtomicU64,
}

/// The relay's feed service.
pub struct Relay {
    upstream: Vec<Channel>,
    rename: Option<String>,
    tamper: Arc<Tamper>,
    stats: Arc<RelayStats>,
    next_id: AtomicU64,
}

impl Relay {
    /// A relay following `upstream` (brokers, in order of preference).
    /// With `rename`, each subscription is passed on as
    /// `<rename>/<n>` (the name the relay's own certificate proves).
    pub fn new(upstream: Vec<Channel>, rename: Option<String>, tamper: Tamper) -> Self {
        Self {
            upstream,
            rename,
            tamper: Arc::new(tamper),
            stats: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    pub fn into_service(self) -> FeedServer<Self> {
        FeedServer::new(self)
            .max_decoding_message_size(1 << 20)
            .max_encoding_message_size(MAX_EVENT_BYTES)
    }

    /// Subscribe to the first broker that takes `hello`.
    async fn subscribe_upstream(
        &self,
        hello: &FeedRequest,
    ) -> Result<(Streaming<FeedEvent>, mpsc::Sender<FeedRequest>), Status> {
        let mut last = Status::unavailable("the relay follows no broker");
        for channel in &self.upstream {
            let (requests, outbound) = mpsc::channel::<FeedRequest>(64);
            requests
                .send(hello.clone())
                .await
                .map_err(|_| Status::internal("request channel closed"))?;
            let mut client = FeedClient::new(channel.clone())
                .max_decoding_message_size(MAX_EVENT_BYTES)
                .max_encoding_message_size(1 << 20);
            let subscribed = tokio::time::timeout(
                SUBSCRIBE_TIMEOUT,
                client.subscribe(ReceiverStream::new(outbound)),
            )
            .await;
            match subscribed {
                Ok(Ok(response)) => return Ok((response.into_inner(), requests)),
                Ok(Err(status)) => last = status,
                Err(_) => last = Status::unavailable("a broker did not take the subscription"),
            }
        }
        Err(last)
    }
}

#[tonic::async_trait]
impl Feed for Relay {
    type SubscribeStream = ReceiverStream<Result<FeedEvent, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<FeedRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut inbound = request.into_inner();
        let mut hello = match inbound.message().await? {
            Some(FeedRequest {
                kind: Some(RequestKind::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "a subscription starts with a Hello",
                ));
            }
        };
        if let Some(prefix) = &self.rename {
            let n = self.next_id.fetch_add(1, Ordering::Relaxed);
            hello.verifier_id = format!("{prefix}/{n}");
        }
        let hello = FeedRequest {
            kind: Some(RequestKind::Hello(hello)),
        };
        let (mut events, acks) = self.subscribe_upstream(&hello).await?;
        self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        // Acks go up as they come.
        tokio::spawn(async move {
            while let Ok(Some(request)) = inbound.message().await {
                if acks.send(request).await.is_err() {
                    return;
                }
            }
        });
        let (out, stream) = mpsc::channel(64);
        let tamper = self.tamper.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let mut path = Path::new(tamper, stats);
            loop {
                let event = match events.message().await {
                    Ok(Some(event)) => event,
                    Ok(None) => return,
                    Err(status) => {
                        let _ = out.send(Err(status)).await;
                        return;
                    }
                };
                for event in path.pass(event) {
                    if out.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// One subscription's path through the relay: what it changes, and the
/// state it has passed on (to sign for, when it signs).
struct Path {
    tamper: Arc<Tamper>,
    stats: Arc<RelayStats>,
    /// The state as passed on; `None` when it could not be followed.
    state: Option<Snapshot>,
    /// Whether a delta of this subscription was changed.
    tampered: bool,
    /// The epoch of the last snapshot or delta passed on.
    passed_epoch: u64,
    /// Heartbeats recorded for replay.
    recorded: VecDeque<FeedEvent>,
    replays: usize,
}

impl Path {
    fn new(tamper: Arc<Tamper>, stats: Arc<RelayStats>) -> Self {
        Self {
            tamper,
            stats,
            state: None,
            tampered: false,
            passed_epoch: 0,
            recorded: VecDeque::new(),
            replays: 0,
        }
    }

    /// What to send on for one event from a broker.
    fn pass(&mut self, mut event: FeedEvent) -> Vec<FeedEvent> {
        if self.tamper.replay.load(Ordering::SeqCst) {
            // Old heartbeats for the epoch last passed on, so that they
            // match the state the verifier holds.
            let old: Vec<&FeedEvent> = self
                .recorded
                .iter()
                .filter(|h| h.epoch == self.passed_epoch)
                .collect();
            if !matches!(event.kind, Some(Kind::Heartbeat(_))) || old.is_empty() {
                return Vec::new();
            }
            let old = old[self.replays % old.len()].clone();
            self.replays += 1;
            self.stats.replayed.fetch_add(1, Ordering::Relaxed);
            return vec![old];
        }
        if matches!(event.kind, Some(Kind::Snapshot(_) | Kind::Delta(_))) {
            self.passed_epoch = event.epoch;
        }
        let armed = self.tamper.armed();
        if let Some(ttl) = self.tamper.ttl_ms.filter(|_| armed) {
            event.max_credential_ttl_ms = ttl;
        }
        match event.kind.take() {
            Some(Kind::Snapshot(bytes)) => {
                self.state = match decode_message(&bytes) {
                    Ok(Message::Full(snapshot)) => Some(*snapshot),
                    _ => None,
                };
                event.kind = Some(Kind::Snapshot(bytes));
            }
            Some(Kind::Delta(bytes)) => {
                let bytes = self.delta(bytes.to_vec(), event.epoch, armed);
                event.kind = Some(Kind::Delta(bytes.into()));
            }
            Some(Kind::Heartbeat(heartbeat)) => {
                let heartbeat = self.heartbeat(heartbeat, &event);
                event.kind = Some(Kind::Heartbeat(heartbeat));
                if self.recorded.len() == REPLAY_KEPT {
                    self.recorded.pop_front();
                }
                self.recorded.push_back(event.clone());
            }
            other => event.kind = other,
        }
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        vec![event]
    }

    /// A delta as passed on, changed as told; the state passed on follows it.
    fn delta(&mut self, bytes: Vec<u8>, epoch: u64, armed: bool) -> Vec<u8> {
        let Ok(Message::Delta(mut delta)) = decode_message(&bytes) else {
            self.state = None;
            return bytes;
        };
        let bytes = if armed && self.tamper.changes_deltas() && self.change(&mut delta) {
            self.tampered = true;
            self.stats.tampered_deltas.fetch_add(1, Ordering::Relaxed);
            self.stats
                .last_tampered_epoch
                .fetch_max(epoch, Ordering::SeqCst);
            encode_message(&Message::Delta(delta.clone())).unwrap_or(bytes)
        } else {
            bytes
        };
        if let Some(state) = &mut self.state
            && state.apply(&delta).is_err()
        {
            self.state = None;
        }
        bytes
    }

    /// Change a delta as told; whether anything changed.
    fn change(&self, delta: &mut DeltaMessage) -> bool {
        let mut changed = false;
        if self.tamper.drop_revocations {
            let dropped =
                delta.revoked.added().len() + delta.rules.len() + delta.added_secrets.len();
            if dropped > 0
                && let Ok(kept) = RevokedDelta::new(
                    delta.revoked.from_epoch(),
                    delta.revoked.to_epoch(),
                    Vec::new(),
                    delta.revoked.removed_below(),
                )
            {
                delta.revoked = kept;
                delta.rules = RuleSet::new();
                delta.added_secrets.clear();
                self.stats
                    .dropped_revocations
                    .fetch_add(dropped as u64, Ordering::Relaxed);
                changed = true;
            }
        }
        if let Some((kid, key)) = &self.tamper.inject_key
            && delta.keys.get(kid).is_none()
            && delta.keys.insert(kid, key.clone()).is_ok()
        {
            changed = true;
        }
        changed
    }

    /// A heartbeat as passed on: with a voucher of the relay's own, when
    /// told to sign, over the state it passed on.
    fn heartbeat(&mut self, mut heartbeat: Heartbeat, event: &FeedEvent) -> Heartbeat {
        let (Some(signer), Some(state), true) =
            (&self.tamper.resign_with, &self.state, self.tampered)
        else {
            return heartbeat;
        };
        let max_ttl_ms = event.max_credential_ttl_ms;
        let statement = Statement {
            broker_id: event.broker_id,
            epoch: state.epoch,
            cluster_time_ms: event.cluster_time_ms,
            max_ttl_ms,
            interval_ms: heartbeat.interval_ms,
            digest: state.digest_at(None, event.cluster_time_ms, max_ttl_ms),
        }
        .encode();
        if let Ok(signed) = signer.sign(&statement) {
            heartbeat.voucher = Some(Voucher {
                statement,
                signature: signed.signature,
                scheme: u32::from(signed.scheme),
                chain: signed.chain,
            });
            self.stats.resigned.fetch_add(1, Ordering::Relaxed);
        }
        heartbeat
    }
}
