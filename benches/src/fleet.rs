//! The verifiers of the propagation benchmark: many `Verifier`s following
//! the feed as tasks in this process, spread over the brokers and sharing a
//! few connections, with the instant each one applied each epoch. With TLS
//! they present a verifier certificate and check the brokers' signed
//! heartbeats, as `lapse verifier` does.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapse_verifier::{FollowConfig, FollowStats, OnApply, Verifier, follow};
use tonic::transport::Channel;

use crate::transport::{Caller, Dialer, VERIFIER};

/// When one verifier reached each epoch.
pub type ApplyLog = Arc<Mutex<Vec<(u64, Instant)>>>;

/// For each of `logs` that reached `epoch` (or a later one), how long after
/// `since` it first held it (zero if before).
pub fn delays_of(logs: &[ApplyLog], epoch: u64, since: Instant) -> Vec<Duration> {
    let mut delays = Vec::with_capacity(logs.len());
    for log in logs {
        let log = log.lock().expect("log lock");
        if let Some((_, at)) = log.iter().find(|(held, _)| *held >= epoch) {
            delays.push(at.saturating_duration_since(since));
        }
    }
    delays
}

/// Verifiers following the feed until the fleet is stopped.
pub struct Fleet {
    verifiers: Vec<Verifier>,
    logs: Vec<ApplyLog>,
    progress: Arc<Progress>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Fleet {
    /// Start `count` verifiers following `brokers`. Verifier `i` prefers
    /// broker `i mod 3` and reports region `region-{i mod 3}`; each
    /// `per_connection` of them share one connection to each broker (1: a
    /// connection each), every verifier with its own stream. Verifier `i`
    /// is named `bench/{i}` (under the verifier certificate's name).
    pub fn start(
        dialer: &Dialer,
        brokers: &[String],
        count: usize,
        per_connection: usize,
    ) -> anyhow::Result<Self> {
        Self::start_with(
            dialer,
            brokers,
            count,
            per_connection,
            &FleetOptions::default(),
        )
    }

    /// [`Fleet::start`] with `options`.
    pub fn start_with(
        dialer: &Dialer,
        brokers: &[String],
        count: usize,
        per_connection: usize,
        options: &FleetOptions,
    ) -> anyhow::Result<Self> {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let groups = count.div_ceil(per_connection).max(1);
        let pools = if options.pinned {
            pinned_pools(dialer, brokers, count, per_connection)?
        } else {
            connection_pools(dialer, brokers, groups)?
        };
        let verify = dialer.verify_config();
        let ramp = options
            .subscribing
            .map(|most| Arc::new(tokio::sync::Semaphore::new(most.max(1))));
        let progress = Arc::new(Progress {
            target: AtomicU64::new(1),
            reached: AtomicUsize::new(0),
            marked: (0..count).map(|_| AtomicBool::new(false)).collect(),
            all: tokio::sync::Notify::new(),
            count,
        });
        let mut verifiers = Vec::new();
        let mut logs: Vec<ApplyLog> = Vec::new();
        for i in 0..count {
            let verifier = Verifier::new(verify.clone());
            let mut config = FollowConfig::new(brokers.to_vec(), format!("{VERIFIER}/{i}"));
            config.tls = dialer.verifier_tls();
            if let Some(idle_timeout) = options.idle_timeout {
                config.idle_timeout = idle_timeout;
                // As patient to subscribe as to hear from a source.
                config.connect_timeout = config.connect_timeout.max(idle_timeout);
            }
            config.brokers.rotate_left(i % brokers.len());
            if options.pinned {
                // Its one source, on the connection it shares.
                config.brokers.truncate(1);
                config.channels = Some(vec![
                    pools[pinned_group(i, brokers.len(), per_connection)][0].clone(),
                ]);
            } else if per_connection > 1 {
                let mut pool = pools[i / per_connection].clone();
                pool.rotate_left(i % brokers.len());
                config.channels = Some(pool);
            }
            config.region = format!("region-{}", i % 3);
            let log: ApplyLog = Arc::default();
            let (record, progress_of) = (log.clone(), progress.clone());
            // Held from subscribing until the first state is applied.
            let subscribing: Arc<Mutex<Option<tokio::sync::OwnedSemaphorePermit>>> = Arc::default();
            let first_state = subscribing.clone();
            config.on_apply = Some(OnApply(Arc::new(move |epoch| {
                record
                    .lock()
                    .expect("log lock")
                    .push((epoch, Instant::now()));
                progress_of.reached(i, epoch);
                first_state.lock().expect("permit lock").take();
            })));
            let mut stop = stop_rx.clone();
            let (verifier_of, ramp) = (verifier.clone(), ramp.clone());
            tokio::spawn(async move {
                if let Some(ramp) = ramp
                    && let Ok(permit) = ramp.acquire_owned().await
                {
                    *subscribing.lock().expect("permit lock") = Some(permit);
                }
                follow(
                    verifier_of,
                    config,
                    Arc::new(FollowStats::default()),
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                )
                .await
            });
            logs.push(log);
            verifiers.push(verifier);
        }
        Ok(Self {
            verifiers,
            logs,
            progress,
            stop,
        })
    }

    /// Wait, at most `patience`, until every verifier holds `epoch`;
    /// whether they all do.
    pub async fn wait_all(&self, epoch: u64, patience: Duration) -> bool {
        self.progress.start(epoch, &self.verifiers);
        let progress = &self.progress;
        tokio::time::timeout(patience, async {
            loop {
                let notified = progress.all.notified();
                if progress.reached.load(Ordering::SeqCst) >= progress.count {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    /// For each verifier that applied `epoch` (or a later one), how long
    /// after `since` it first held it (zero if before).
    pub fn delays(&self, epoch: u64, since: Instant) -> Vec<Duration> {
        delays_of(&self.logs, epoch, since)
    }

    /// What the verifiers' own counters say, summed.
    pub fn summary(&self) -> FleetSummary {
        let mut summary = FleetSummary::default();
        for verifier in &self.verifiers {
            let status = verifier.status();
            summary.signed_heartbeats |= status.signed_heartbeats;
            summary.fresh += usize::from(status.fresh);
            summary.heartbeats += status.heartbeats;
            summary.rejected_events += status.rejected_events;
        }
        summary
    }

    /// Stop every verifier.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// The verifiers' counters, summed over the fleet.
#[derive(Debug, Default, Clone, Copy)]
pub struct FleetSummary {
    /// Whether heartbeats had to be signed (TLS).
    pub signed_heartbeats: bool,
    /// Verifiers fresh when asked.
    pub fresh: usize,
    /// Heartbeats accepted (with TLS: signature and digest checked).
    pub heartbeats: u64,
    /// Feed events refused.
    pub rejected_events: u64,
}

/// How a [`Fleet`] follows.
#[derive(Debug, Clone, Default)]
pub struct FleetOptions {
    /// Each verifier follows only its preferred source (verifier `i`,
    /// source `i mod n`), never failing over, and the verifiers of one
    /// source share its connections, `per_connection` to each: a fleet of
    /// 100,000 behind relays needs only its share of connections, not one
    /// to every relay per group.
    pub pinned: bool,
    /// How long a verifier waits on a silent source before leaving it,
    /// and at least as long to subscribe (default: the verifier's own).
    pub idle_timeout: Option<Duration>,
    /// At most this many verifiers subscribing at once: each waits for a
    /// turn, and gives it up once it applied its first state. A hundred
    /// thousand verifiers on two cores asking at once would time out on
    /// each other. `None`: all at once.
    pub subscribing: Option<usize>,
}

/// The connection group of pinned verifier `i` of `sources`: its source's
/// verifiers in order, `per_connection` to a group.
fn pinned_group(i: usize, sources: usize, per_connection: usize) -> usize {
    // Group g serves source g mod sources.
    let (source, rank) = (i % sources, i / sources);
    source + sources * (rank / per_connection)
}

/// For pinned verifiers: one lazily connected channel per group of
/// [`pinned_group`], to that group's source.
fn pinned_pools(
    dialer: &Dialer,
    sources: &[String],
    count: usize,
    per_connection: usize,
) -> anyhow::Result<Vec<Vec<Channel>>> {
    let groups = (0..count)
        .map(|i| pinned_group(i, sources.len(), per_connection) + 1)
        .max()
        .unwrap_or(0);
    (0..groups)
        .map(|group| {
            Ok(vec![
                dialer.lazy(&sources[group % sources.len()], Caller::Verifier)?,
            ])
        })
        .collect()
}

/// `groups` sets of lazily connected channels, one channel per broker in
/// each set.
fn connection_pools(
    dialer: &Dialer,
    brokers: &[String],
    groups: usize,
) -> anyhow::Result<Vec<Vec<Channel>>> {
    let mut pools = Vec::new();
    for _ in 0..groups {
        let mut pool = Vec::new();
        for address in brokers {
            pool.push(dialer.lazy(address, Caller::Verifier)?);
        }
        pools.push(pool);
    }
    Ok(pools)
}

/// Which verifiers hold the epoch being waited for.
struct Progress {
    target: AtomicU64,
    reached: AtomicUsize,
    marked: Vec<AtomicBool>,
    all: tokio::sync::Notify,
    count: usize,
}

impl Progress {
    /// Verifier `i` now holds `epoch`.
    fn reached(&self, i: usize, epoch: u64) {
        if epoch >= self.target.load(Ordering::SeqCst)
            && !self.marked[i].swap(true, Ordering::SeqCst)
        {
            let reached = self.reached.fetch_add(1, Ordering::SeqCst) + 1;
            if reached >= self.count {
                self.all.notify_one();
            }
        }
    }

    /// Wait for `epoch` next; count verifiers that already hold it.
    fn start(&self, epoch: u64, verifiers: &[Verifier]) {
        // No verifier is marked while the marks are reset.
        self.target.store(u64::MAX, Ordering::SeqCst);
        self.reached.store(0, Ordering::SeqCst);
        for mark in &self.marked {
            mark.store(false, Ordering::SeqCst);
        }
        self.target.store(epoch, Ordering::SeqCst);
        for (i, verifier) in verifiers.iter().enumerate() {
            if let Some(held) = verifier.epoch() {
                self.reached(i, held);
            }
        }
    }
}
