//! The watchers: one task per etcd watch stream, forwarding the revision
//! and arrival instant of every event, and the wait for all of them to
//! see one revision.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, TlsOptions, WatchClient, WatchOptions};
use tokio::sync::{Semaphore, mpsc};

use crate::args::Args;
use crate::put::connect;

/// What a watcher task tells the measuring loop.
pub enum Note {
    /// Watcher `watcher` received the event at revision `rev` at time `at`.
    Seen {
        watcher: usize,
        rev: i64,
        at: Instant,
    },
    /// The watcher's stream failed or was cancelled; the run is void.
    Failed { watcher: usize, error: String },
}

/// Opens one watch stream on `prefix`, confirms it was created, then
/// forwards every event's revision with its arrival time.
pub async fn watcher(
    id: usize,
    mut client: WatchClient,
    prefix: String,
    opening: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Result<usize, String>>,
    notes: mpsc::UnboundedSender<Note>,
) {
    let permit = opening.acquire_owned().await;
    let opened = async {
        let mut stream = client
            .watch(prefix, Some(WatchOptions::new().with_prefix()))
            .await
            .map_err(|e| format!("watch: {e}"))?;
        match stream.message().await {
            Ok(Some(r)) if r.created() => Ok(stream),
            Ok(Some(r)) => Err(format!(
                "first response was not 'created' (canceled={}, reason={:?})",
                r.canceled(),
                r.cancel_reason()
            )),
            Ok(None) => Err("stream ended before 'created'".to_string()),
            Err(e) => Err(format!("waiting for 'created': {e}")),
        }
    }
    .await;
    drop(permit);
    let mut stream = match opened {
        Ok(s) => {
            let _ = ready.send(Ok(id));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(format!("watcher {id}: {e}")));
            return;
        }
    };
    loop {
        let error = match stream.message().await {
            Ok(Some(resp)) => {
                let at = Instant::now();
                if resp.canceled() {
                    format!("cancelled by server: {:?}", resp.cancel_reason())
                } else {
                    for ev in resp.events() {
                        if let Some(kv) = ev.kv() {
                            let note = Note::Seen {
                                watcher: id,
                                rev: kv.mod_revision(),
                                at,
                            };
                            if notes.send(note).is_err() {
                                return;
                            }
                        }
                    }
                    continue;
                }
            }
            Ok(None) => "stream closed by server".to_string(),
            Err(e) => format!("stream error: {e}"),
        };
        let _ = notes.send(Note::Failed { watcher: id, error });
        return;
    }
}

/// Outcome of waiting for every watcher to see one revision.
pub struct Wait {
    /// Per watcher that saw it: arrival minus `t0`, clamped at zero.
    pub delays: Vec<Duration>,
    /// Arrivals that came before `t0` (the put RPC had not returned yet).
    pub early: usize,
    /// Watchers that had not seen it when the deadline passed.
    pub missed: usize,
    /// The latest arrival.
    pub latest: Option<Instant>,
}

/// Collects notes until every one of `n` watchers has seen `rev` or
/// `deadline` passes. Notes for older revisions (late arrivals after an
/// earlier timeout) are dropped. A failed watcher aborts the run.
pub async fn wait_all(
    notes: &mut mpsc::UnboundedReceiver<Note>,
    n: usize,
    rev: i64,
    t0: Instant,
    deadline: Instant,
) -> Result<Wait, String> {
    let mut seen = vec![false; n];
    let mut w = Wait {
        delays: Vec::with_capacity(n),
        early: 0,
        missed: 0,
        latest: None,
    };
    while w.delays.len() < n {
        let note = match tokio::time::timeout_at(deadline.into(), notes.recv()).await {
            Ok(Some(note)) => note,
            Ok(None) => return Err("all watchers are gone".into()),
            Err(_) => {
                w.missed = n - w.delays.len();
                break;
            }
        };
        match note {
            Note::Seen {
                watcher,
                rev: r,
                at,
            } if r == rev => {
                if std::mem::replace(&mut seen[watcher], true) {
                    return Err(format!("watcher {watcher} saw revision {rev} twice"));
                }
                if at < t0 {
                    w.early += 1;
                }
                w.delays.push(at.saturating_duration_since(t0));
                w.latest = w.latest.max(Some(at));
            }
            Note::Seen { rev: r, .. } if r < rev => {}
            Note::Seen {
                watcher, rev: r, ..
            } => {
                return Err(format!(
                    "watcher {watcher} saw revision {r} while waiting for {rev}: \
                     is something else writing under the prefix?"
                ));
            }
            Note::Failed { watcher, error } => {
                return Err(format!("watcher {watcher} failed: {error}"));
            }
        }
    }
    Ok(w)
}

/// Watch streams, every one created and delivering into `notes`.
pub struct Watchers {
    pub notes: mpsc::UnboundedReceiver<Note>,
    /// Watchers per member.
    pub per_member: Vec<usize>,
    /// Connections the watchers share.
    pub connections: usize,
    /// Time to open every stream and see it created.
    pub setup: Duration,
    /// The connections, open as long as the watchers are.
    _clients: Vec<Vec<Client>>,
}

/// Opens `args.watchers` watch streams on `args.prefix` and waits, until
/// `deadline` at most, for etcd to confirm each one. Watcher i goes to
/// member i mod M; each member's watchers share its connections, one
/// connection per `per_conn` of them, with `tls` if given.
pub async fn open(
    args: &Args,
    tls: Option<&TlsOptions>,
    deadline: Instant,
) -> Result<Watchers, String> {
    let n = args.watchers;
    let m = args.endpoints.len();
    let per_member: Vec<usize> = (0..m).map(|j| (n + m - 1 - j) / m).collect();
    let mut clients: Vec<Vec<Client>> = Vec::with_capacity(m);
    for (j, &count) in per_member.iter().enumerate() {
        let mut member = Vec::new();
        for _ in 0..count.div_ceil(args.per_conn) {
            member.push(connect(&args.endpoints[j], tls).await?);
        }
        clients.push(member);
    }
    let connections = clients.iter().map(Vec::len).sum();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (notes_tx, notes) = mpsc::unbounded_channel();
    let opening = Arc::new(Semaphore::new(64));
    let started = Instant::now();
    for id in 0..n {
        let member = &clients[id % m];
        let client = &member[(id / m) % member.len()];
        tokio::spawn(watcher(
            id,
            client.watch_client(),
            args.prefix.clone(),
            opening.clone(),
            ready_tx.clone(),
            notes_tx.clone(),
        ));
    }
    drop((ready_tx, notes_tx));
    for _ in 0..n {
        match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => return Err("watcher tasks ended during setup".into()),
            Err(_) => return Err("timed out opening watch streams".into()),
        }
    }
    Ok(Watchers {
        notes,
        per_member,
        connections,
        setup: started.elapsed(),
        _clients: clients,
    })
}
