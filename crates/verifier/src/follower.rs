//! Following the feed: subscribe to one broker of a list, apply what it
//! sends, ack the epochs applied (at most every [`ACK_INTERVAL`], by the
//! latest), and move to the next broker when the
//! current one fails, refuses, goes quiet or sends something unusable.
//! A new subscription resumes from the epoch held, so a failover misses
//! nothing. Emergency uses (break-glass and fail-open acceptances) go up
//! the same stream as `UseReport`s: after the first event of each
//! subscription, and whenever new ones are made; each is held until the
//! broker answers that it recorded it, and sent again on the next
//! subscription if this one ends first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapse_wire::feed::feed_client::FeedClient;
use lapse_wire::feed::feed_event::Kind;
use lapse_wire::feed::feed_request::Kind as RequestKind;
use lapse_wire::feed::{Ack, FeedEvent, FeedRequest, Hello, UseReport};

use crate::EmergencyUse;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::break_glass::MAX_USES_PER_REPORT;
use crate::event::MAX_EVENT_BYTES;
use crate::verifier::Verifier;

mod acks;
mod uses;

use acks::Acks;
pub(crate) use uses::MAX_REPORTS_IN_FLIGHT;
use uses::{InFlight, report_uses};

/// How a verifier follows the feed.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// Broker addresses (`host:port` or URLs), in order of preference.
    pub brokers: Vec<String>,
    /// This verifier's name, unique in the deployment.
    pub verifier_id: String,
    /// Where it runs; propagation is reported per region.
    pub region: String,
    /// A broker that sends nothing for this long is abandoned.
    pub idle_timeout: Duration,
    /// Time allowed to connect and subscribe.
    pub connect_timeout: Duration,
    /// Pause after every broker in the list failed once; doubled for each
    /// further round that fails (up to 8 times) and spread by the
    /// verifier's id, so verifiers refused together come back apart.
    pub retry_pause: Duration,
    /// Connections to use instead of opening one per broker, in the order
    /// of `brokers`: many verifiers in one process can share a few HTTP/2
    /// connections, each with its own stream.
    pub channels: Option<Vec<Channel>>,
    /// Called with the new epoch each time the verifier's epoch changes.
    pub on_apply: Option<OnApply>,
    /// Mutual TLS with the brokers: the cluster CA and this verifier's
    /// certificate. `None` dials in plaintext (brokers that run
    /// `insecure_plaintext`, on loopback).
    pub tls: Option<Arc<lapse_pki::Tls>>,
    /// Called with each event applied, before its ack (a relay passes it
    /// on to its leaves).
    pub on_event: Option<OnEvent>,
    /// Verifiers served from this one (a relay's leaves), reported up
    /// each subscription.
    pub downstream: Option<Arc<dyn Downstream>>,
}

/// A callback run with each event applied.
#[derive(Clone)]
pub struct OnEvent(pub Arc<dyn Fn(&FeedEvent) + Send + Sync>);

impl std::fmt::Debug for OnEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnEvent")
    }
}

/// What a relay reports up its subscription about the verifiers it
/// serves.
pub trait Downstream: Send + Sync {
    /// Woken when there is something new to report.
    fn changed(&self) -> &tokio::sync::Notify;
    /// The reports to send: on `all`, every leaf (the first of a
    /// subscription: the broker knows none); else those that changed
    /// since the last reports.
    fn report(&self, all: bool) -> Vec<FeedRequest>;
    /// What of the last [`Downstream::report`] the subscription could not
    /// take (its queue was full): what must not be lost is offered again
    /// by the next one.
    fn unsent(&self, reports: Vec<FeedRequest>) {
        let _ = reports;
    }
}

impl std::fmt::Debug for dyn Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Downstream")
    }
}

/// A callback run after each epoch change (keep it short: it runs on the
/// follower's task, before the ack is sent).
#[derive(Clone)]
pub struct OnApply(pub Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for OnApply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnApply")
    }
}

impl FollowConfig {
    pub fn new(brokers: Vec<String>, verifier_id: impl Into<String>) -> Self {
        Self {
            brokers,
            verifier_id: verifier_id.into(),
            region: "default".into(),
            idle_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            retry_pause: Duration::from_millis(200),
            channels: None,
            on_apply: None,
            tls: None,
            on_event: None,
            downstream: None,
        }
    }
}

/// Counters of the follower, for status and metrics.
#[derive(Debug, Default)]
pub struct FollowStats {
    pub subscriptions: AtomicU64,
    pub failovers: AtomicU64,
    pub acks: AtomicU64,
    /// `UseReport`s handed to a subscription.
    pub use_reports: AtomicU64,
    /// The broker followed now, if any.
    following: Mutex<Option<FollowedBroker>>,
}

/// The broker a verifier follows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FollowedBroker {
    /// Its address as given in the verifier's broker list.
    pub address: String,
    /// Its node id, as its feed events say; `None` until the first event.
    pub broker_id: Option<u64>,
}

impl FollowStats {
    /// The broker followed now; `None` between brokers.
    pub fn following(&self) -> Option<FollowedBroker> {
        self.following
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_following(&self, broker: Option<FollowedBroker>) {
        *self
            .following
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = broker;
    }
}

/// The URI of a broker given as `host:port` or as a URL.
pub fn broker_uri(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

/// The endpoint a verifier reaches `address` through: connect within
/// `connect_timeout`, and a ping every `idle_timeout` whether or not a
/// stream is open, so a connection whose path broke (a partition that
/// healed, a broker's host that vanished) is found dead and replaced within
/// two idle timeouts instead of holding every later subscription.
pub fn feed_endpoint(address: &str, config: &FollowConfig) -> Option<Endpoint> {
    Endpoint::from_shared(broker_uri(address)).ok().map(|e| {
        e.connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(config.idle_timeout)
            .keep_alive_timeout(config.idle_timeout)
            .keep_alive_while_idle(true)
    })
}

/// Follow the feed until `stop` resolves.
pub async fn follow(
    verifier: Verifier,
    config: FollowConfig,
    stats: Arc<FollowStats>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let channels: Vec<Option<Channel>> = match &config.channels {
        Some(shared) => shared.iter().cloned().map(Some).collect(),
        None => config
            .brokers
            .iter()
            .map(|address| {
                feed_endpoint(address, &config).map(|e| match &config.tls {
                    Some(tls) => {
                        lapse_pki::TlsConnector::new(tls.clone(), lapse_pki::Expect::FeedSource)
                            .channel(e)
                    }
                    None => e.connect_lazy(),
                })
            })
            .collect(),
    };
    let mut next = 0usize;
    let mut failures_in_round = 0usize;
    // Rounds in a row in which every broker failed: the pause after each
    // doubles, so that many verifiers refused at once (a relay or broker
    // that restarted, or one too busy to answer) come back spread out
    // instead of all together.
    let mut failed_rounds = 0u32;
    loop {
        if channels.is_empty() {
            tracing::error!("no brokers to follow");
            return;
        }
        let index = next % channels.len();
        let ended = tokio::select! {
            _ = &mut stop => return,
            ended = follow_one(&verifier, &config, &stats, index, channels[index].clone()) => ended,
        };
        stats.set_following(None);
        match ended {
            Ok(()) => {
                failures_in_round = 0;
                failed_rounds = 0;
            }
            Err(reason) => {
                tracing::info!(broker = %config.brokers[index], %reason, "leaving broker");
                failures_in_round += 1;
            }
        }
        stats.failovers.fetch_add(1, Ordering::Relaxed);
        next = index + 1;
        if failures_in_round >= channels.len() {
            failures_in_round = 0;
            let pause = retry_pause(&config, failed_rounds);
            failed_rounds = failed_rounds.saturating_add(1);
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Longest pause between rounds of failed subscriptions: 8 times
/// `retry_pause` (1.6 s by default), short beside the staleness bound a
/// verifier has to come back within once a broker answers again.
const MAX_BACKOFF_DOUBLINGS: u32 = 3;

/// The pause after `failed_rounds` rounds in a row in which every broker
/// failed: `retry_pause` doubled for each (at most 8 times it), then
/// spread over its upper half by the verifier's id and the round, so
/// verifiers refused together do not retry together. Derived, not drawn:
/// a simulation seed still replays a run exactly.
fn retry_pause(config: &FollowConfig, failed_rounds: u32) -> Duration {
    use std::hash::{Hash, Hasher};
    let full = config.retry_pause * (1u32 << failed_rounds.min(MAX_BACKOFF_DOUBLINGS));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (config.verifier_id.as_str(), failed_rounds).hash(&mut hasher);
    let share = (hasher.finish() % 1024) as u32;
    full / 2 + full / 2 * share / 1024
}

/// Follow one broker until it fails. `Ok` when it ended cleanly after
/// delivering something (worth trying the next at once).
async fn follow_one(
    verifier: &Verifier,
    config: &FollowConfig,
    stats: &FollowStats,
    index: usize,
    channel: Option<Channel>,
) -> Result<(), String> {
    let (mut events, requests) = subscribe(verifier, config, channel).await?;
    stats.subscriptions.fetch_add(1, Ordering::Relaxed);
    let address = config.brokers.get(index).cloned().unwrap_or_default();
    stats.set_following(Some(FollowedBroker {
        address: address.clone(),
        broker_id: None,
    }));
    let mut identified = false;
    let mut delivered = false;
    // A broker that only says why it withholds heartbeats is as good as a
    // silent one: leave it for another that can confirm its state.
    let mut alive_at = tokio::time::Instant::now();
    let mut withheld: Option<String> = None;
    let uses_queued = verifier.emergency_uses_queued();
    // Uses the stream could not take: retried after the next event.
    let mut owed = false;
    // Reports sent and not yet recorded: given back when this ends.
    let mut in_flight = InFlight {
        verifier,
        reports: Vec::new(),
    };
    let mut acks = Acks::default();
    let downstream = config.downstream.as_deref();
    let mut leaves_sent_at = tokio::time::Instant::now() - ACK_INTERVAL;
    loop {
        let patience = config.idle_timeout.saturating_sub(alive_at.elapsed());
        let ack_due = acks.due();
        let received = tokio::select! {
            received = tokio::time::timeout(patience, events.message()) => received,
            _ = tokio::time::sleep_until(ack_due.unwrap_or_else(tokio::time::Instant::now)), if ack_due.is_some() => {
                acks.flush(stats, &requests);
                continue;
            }
            _ = notified(downstream), if delivered && downstream.is_some() => {
                // Coalesced like acks: leaves that ack the same event
                // within the interval go up in one report.
                tokio::time::sleep_until(leaves_sent_at + ACK_INTERVAL).await;
                leaves_sent_at = tokio::time::Instant::now();
                if let Some(downstream) = downstream {
                    send_reports(downstream, false, &requests);
                }
                continue;
            }
            // Reports wait for the first event: until then the broker may
            // still refuse the subscription.
            _ = uses_queued.notified(), if delivered => {
                owed = !report_uses(&mut in_flight, config, stats, &requests);
                continue;
            }
        };
        let event = match received {
            Err(_) => {
                return Err(match withheld {
                    Some(reason) => format!(
                        "no heartbeat for {} ms; the broker withholds them: {reason}",
                        config.idle_timeout.as_millis()
                    ),
                    None => format!(
                        "nothing received for {} ms",
                        config.idle_timeout.as_millis()
                    ),
                });
            }
            Ok(Err(status)) => return Err(format!("{:?}: {}", status.code(), status.message())),
            Ok(Ok(None)) if delivered => return Ok(()),
            Ok(Ok(None)) => return Err("the broker closed the feed".into()),
            Ok(Ok(Some(event))) => event,
        };
        // The answer to a report: its uses are in the replicated audit.
        if let Some(Kind::UsesRecorded(recorded)) = &event.kind {
            in_flight.recorded(recorded.report_id);
            // A relay passes it on to the leaves whose report it was.
            if let Some(OnEvent(hook)) = &config.on_event {
                hook(&event);
            }
            if owed {
                owed = !report_uses(&mut in_flight, config, stats, &requests);
            }
            continue;
        }
        // Every event names the broker that sent it: record it once, so
        // the status says which broker this is, not only where it was
        // reached (a proxy or a load balancer may stand in between).
        if !identified && event.broker_id != 0 {
            identified = true;
            stats.set_following(Some(FollowedBroker {
                address: address.clone(),
                broker_id: Some(event.broker_id),
            }));
        }
        match &event.kind {
            Some(Kind::Withheld(notice)) => withheld = Some(notice.reason.clone()),
            _ => {
                alive_at = tokio::time::Instant::now();
                withheld = None;
            }
        }
        // The first event of a subscription is acked whatever it changed:
        // the broker counts a verifier as holding an epoch only once it
        // acks it, not for the epoch its hello claimed.
        apply_and_ack(verifier, config, &mut acks, &event, !delivered)?;
        acks.send_if_due(stats, &requests);
        if !delivered && let Some(downstream) = downstream {
            // A new subscription: the broker knows none of the leaves.
            send_reports(downstream, true, &requests);
            leaves_sent_at = tokio::time::Instant::now();
        }
        if !delivered || owed {
            owed = !report_uses(&mut in_flight, config, stats, &requests);
        }
        delivered = true;
    }
}

/// Acks are sent at most this often: the first ack after a quiet spell
/// goes at once, and epochs applied within this time of the last ack are
/// acked together, by the latest, when it ends. A burst of revocations
/// costs the broker one ack per interval per verifier instead of one per
/// event, and a delay measured from a coalesced ack is late by at most
/// this.
pub const ACK_INTERVAL: Duration = Duration::from_millis(2);

/// Open a subscription on `channel`, saying hello with the epoch held.
async fn subscribe(
    verifier: &Verifier,
    config: &FollowConfig,
    channel: Option<Channel>,
) -> Result<(tonic::Streaming<FeedEvent>, mpsc::Sender<FeedRequest>), String> {
    let channel = channel.ok_or("not a valid broker address")?;
    let mut client = FeedClient::new(channel)
        .max_decoding_message_size(MAX_EVENT_BYTES)
        .max_encoding_message_size(1 << 20);
    let (requests, outbound) = mpsc::channel::<FeedRequest>(64);
    let hello = FeedRequest {
        kind: Some(RequestKind::Hello(Hello {
            verifier_id: config.verifier_id.clone(),
            region: config.region.clone(),
            resume_epoch: verifier.epoch(),
        })),
    };
    requests
        .send(hello)
        .await
        .map_err(|_| "request channel closed")?;
    let subscribed = tokio::time::timeout(
        config.connect_timeout,
        client.subscribe(ReceiverStream::new(outbound)),
    )
    .await
    .map_err(|_| "subscribing timed out".to_string())?
    .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
    Ok((subscribed.into_inner(), requests))
}

/// Apply one event; owe an ack when the epoch held changed (or `always`).
/// A rejected event leaves the state as it was and ends this
/// subscription: another broker may do better.
fn apply_and_ack(
    verifier: &Verifier,
    config: &FollowConfig,
    acks: &mut Acks,
    event: &FeedEvent,
    always: bool,
) -> Result<(), String> {
    let before = verifier.epoch();
    let epoch = verifier
        .apply(event)
        .map_err(|error| format!("rejected a feed event: {error}"))?;
    let changed = before != Some(epoch);
    if changed || always {
        if changed && let Some(OnApply(hook)) = &config.on_apply {
            hook(epoch);
        }
        acks.owe(epoch, always);
    }
    if let Some(OnEvent(hook)) = &config.on_event {
        hook(event);
    }
    Ok(())
}

/// Woken when `downstream` has something to report (never without one).
async fn notified(downstream: Option<&dyn Downstream>) {
    match downstream {
        Some(downstream) => downstream.changed().notified().await,
        None => std::future::pending().await,
    }
}

/// Hand a relay's reports to the subscription. What does not fit in its
/// queue now (64 requests, drained as fast as the connection sends) goes
/// back to the relay ([`Downstream::unsent`]): its leaves' use reports are
/// offered again with the next reports; a leaf's acks are reported again
/// by its next ack, and a leaf whose going was lost stays counted until
/// the relay's subscription ends.
fn send_reports(downstream: &dyn Downstream, all: bool, requests: &mpsc::Sender<FeedRequest>) {
    let mut reports = downstream.report(all).into_iter();
    for report in reports.by_ref() {
        if let Err(full) = requests.try_send(report) {
            tracing::debug!("the subscription's queue is full; reports wait for the next");
            let mut unsent = vec![full.into_inner()];
            unsent.extend(reports);
            downstream.unsent(unsent);
            return;
        }
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn retry_pauses_grow_to_a_bound_and_spread_verifiers_apart() {
        let config = |id: &str| FollowConfig::new(vec!["127.0.0.1:1".into()], id);
        let base = config("v").retry_pause;
        let mut last = Duration::ZERO;
        for round in 0..10 {
            let pause = retry_pause(&config("v"), round);
            let full = base * (1 << round.min(MAX_BACKOFF_DOUBLINGS));
            assert!(
                pause >= full / 2 && pause <= full,
                "round {round}: {pause:?}"
            );
            if round <= MAX_BACKOFF_DOUBLINGS {
                assert!(pause * 2 > last, "round {round}: {pause:?} after {last:?}");
            }
            last = pause;
        }
        // The same verifier and round, the same pause (a seed replays).
        assert_eq!(retry_pause(&config("v"), 2), retry_pause(&config("v"), 2));
        // A hundred verifiers refused together do not all wait alike.
        let pauses: std::collections::BTreeSet<Duration> = (0..100)
            .map(|n| retry_pause(&config(&format!("v-{n}")), 3))
            .collect();
        assert!(pauses.len() > 50, "{}", pauses.len());
    }
}
