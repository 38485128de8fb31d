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
//!   ignores the ids of reports not its own); see `uses.rs`. A leaf keeps
//!   its uses until they are recorded, so a relay that dies with them
//!   loses nothing.
//!
//! `session.rs` is a leaf's subscription; this file is what the relay
//! shares between them and its own subscription upstream.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use lapse_filter::{Message, encode_message};
use lapse_wire::feed::feed_event::Kind;
use lapse_wire::feed::feed_request::Kind as RequestKind;
use lapse_wire::feed::{FeedEvent, FeedRequest, Leaf, LeafReport, UseReport};
use lapse_wire::frames::FeedFrame;
use tokio::sync::{Notify, Semaphore, broadcast};
use tonic::Status;

use crate::Verifier;

mod session;
mod uses;

pub use session::RelayService;
use uses::ForwardedUses;
pub use uses::MAX_FORWARDED_REPORTS;

/// Leaves named in one `LeafReport`; more go in the next.
const LEAVES_PER_REPORT: usize = 1024;
/// Events a lagging leaf may be behind before it is sent a snapshot.
const BROADCAST_BUFFER: usize = 256;

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
    /// Changed since the last report (its id is in [`Leaves::dirty`]).
    dirty: bool,
}

/// The relay's leaves, and which changed since the last report: a report
/// costs what changed, not every leaf (a revocation changes them all
/// within a few milliseconds, a heartbeat none).
#[derive(Debug, Default)]
struct Leaves {
    entries: HashMap<String, LeafEntry>,
    /// Ids whose entry is marked dirty, each once.
    dirty: Vec<String>,
}

impl Leaves {
    fn mark(dirty: &mut Vec<String>, id: &str, entry: &mut LeafEntry) {
        if !entry.dirty {
            entry.dirty = true;
            dirty.push(id.to_owned());
        }
    }
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
    leaves: Mutex<Leaves>,
    /// Leaves' use reports not yet recorded upstream.
    uses: Mutex<ForwardedUses>,
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
            leaves: Mutex::default(),
            uses: Mutex::default(),
            leaves_changed: Notify::new(),
            config,
        })
    }

    /// Leaves subscribed now.
    pub fn leaves(&self) -> usize {
        lock(&self.leaves)
            .entries
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
            lock(&self.uses).recorded(recorded.report_id);
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
        let Leaves { entries, dirty } = &mut *leaves;
        let entry = entries.entry(id.to_owned()).or_insert_with(|| LeafEntry {
            region: region.to_owned(),
            acked: epoch,
            sessions: 0,
            dirty: false,
        });
        entry.sessions += 1;
        entry.region = region.to_owned();
        Leaves::mark(dirty, id, entry);
        drop(leaves);
        self.leaves_changed.notify_one();
    }

    fn leaf_acked(&self, id: &str, epoch: u64) {
        let mut leaves = lock(&self.leaves);
        let Leaves { entries, dirty } = &mut *leaves;
        if let Some(entry) = entries.get_mut(id)
            && epoch > entry.acked
        {
            entry.acked = epoch;
            Leaves::mark(dirty, id, entry);
        } else {
            return;
        }
        drop(leaves);
        self.leaves_changed.notify_one();
    }

    /// Forward `report` from leaf `id` up the relay's subscription (see
    /// [`ForwardedUses::admit`] for what is refused).
    fn forward_uses(&self, id: &str, report: UseReport) -> Result<(), Status> {
        let uses = report.uses.len();
        if lock(&self.uses).admit(id, report)? {
            tracing::info!(leaf = %id, uses, "forwarding a leaf's emergency uses");
            self.leaves_changed.notify_one();
        }
        Ok(())
    }

    /// Use reports forwarded and not yet recorded upstream.
    pub fn forwarded_uses(&self) -> usize {
        lock(&self.uses).len()
    }

    fn leaf_gone(&self, id: &str) {
        let mut leaves = lock(&self.leaves);
        let Leaves { entries, dirty } = &mut *leaves;
        if let Some(entry) = entries.get_mut(id) {
            entry.sessions = entry.sessions.saturating_sub(1);
            Leaves::mark(dirty, id, entry);
        }
        drop(leaves);
        self.leaves_changed.notify_one();
    }
}

impl crate::follower::Downstream for Relay {
    fn changed(&self) -> &Notify {
        &self.leaves_changed
    }

    fn report(&self, all: bool) -> Vec<FeedRequest> {
        // Leaves' uses first, each once per subscription until recorded.
        let mut requests = lock(&self.uses).requests(all);
        let mut leaves = lock(&self.leaves);
        let Leaves { entries, dirty } = &mut *leaves;
        let leaf = |id: &str, entry: &LeafEntry| Leaf {
            verifier_id: id.to_owned(),
            region: entry.region.clone(),
            acked_epoch: entry.acked,
            gone: entry.sessions == 0,
        };
        let mut reported = Vec::new();
        if all {
            // A new subscription: the broker knows none, so every leaf
            // subscribed now, and none of those gone.
            dirty.clear();
            entries.retain(|id, entry| {
                entry.dirty = false;
                if entry.sessions > 0 {
                    reported.push(leaf(id, entry));
                }
                entry.sessions > 0
            });
        } else {
            for id in dirty.drain(..) {
                let Some(entry) = entries.get_mut(&id) else {
                    continue;
                };
                entry.dirty = false;
                reported.push(leaf(&id, entry));
                // Reported gone: forgotten.
                if entry.sessions == 0 {
                    entries.remove(&id);
                }
            }
        }
        requests.extend(reported.chunks(LEAVES_PER_REPORT).map(|chunk| FeedRequest {
            kind: Some(RequestKind::Leaves(LeafReport {
                leaves: chunk.to_vec(),
            })),
        }));
        requests
    }

    fn unsent(&self, reports: Vec<FeedRequest>) {
        lock(&self.uses).unsent(reports);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VerifyConfig;
    use crate::follower::Downstream;

    /// The leaves each report names: (id, acked epoch, gone).
    fn named(requests: Vec<FeedRequest>) -> Vec<(String, u64, bool)> {
        let mut leaves: Vec<_> = requests
            .into_iter()
            .flat_map(|request| match request.kind {
                Some(RequestKind::Leaves(report)) => report.leaves,
                _ => Vec::new(),
            })
            .map(|leaf| (leaf.verifier_id, leaf.acked_epoch, leaf.gone))
            .collect();
        leaves.sort();
        leaves
    }

    fn leaf(id: &str, acked: u64, gone: bool) -> (String, u64, bool) {
        (id.to_owned(), acked, gone)
    }

    #[test]
    fn reports_name_each_changed_leaf_once_and_forget_those_reported_gone() {
        let relay = Relay::new(
            Verifier::new(VerifyConfig::default()),
            RelayConfig::default(),
        );
        relay.leaf_connected("a", "eu", 0);
        relay.leaf_connected("b", "eu", 3);
        assert_eq!(
            named(relay.report(false)),
            [leaf("a", 0, false), leaf("b", 3, false)]
        );
        assert!(named(relay.report(false)).is_empty(), "nothing changed");

        relay.leaf_acked("a", 5);
        relay.leaf_acked("a", 7);
        relay.leaf_acked("b", 2); // behind what it said it held: no change
        assert_eq!(named(relay.report(false)), [leaf("a", 7, false)]);

        relay.leaf_gone("b");
        relay.leaf_connected("c", "us", 1);
        relay.leaf_gone("c");
        assert_eq!(relay.leaves(), 1);
        assert_eq!(
            named(relay.report(false)),
            [leaf("b", 3, true), leaf("c", 1, true)]
        );
        // Reported gone, so forgotten: a new subscription upstream names
        // only the leaf subscribed now.
        relay.leaf_acked("a", 9);
        assert_eq!(named(relay.report(true)), [leaf("a", 9, false)]);
        assert!(
            named(relay.report(false)).is_empty(),
            "the full report covered it"
        );
        assert_eq!(lock(&relay.leaves).entries.len(), 1);
        assert!(lock(&relay.leaves).dirty.is_empty());
    }
}
