//! `etcd-propagation`: the etcd half of Lapse's propagation benchmark.
//!
//! Opens N watch streams (default 1000) on one key prefix, spread over the
//! members of an etcd cluster, then makes P puts (default 200) under that
//! prefix one at a time. For each put it measures, from the moment the put
//! RPC returned, the time until each watcher received the event for that
//! revision, and reports the delay to the last watcher per put plus overall
//! percentiles. Every wait is bounded; the tool exits by itself.

mod stats;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, WatchClient, WatchOptions};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::timeout;

use stats::{Summary, ms};

const USAGE: &str = "\
etcd-propagation: put-to-watcher delay over many etcd watch streams

USAGE:
    etcd-propagation [OPTIONS]

OPTIONS:
    --endpoints A,B,C     etcd client URLs, one per member
                          [default: http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793]
    --watchers N          watch streams to open [default: 1000]
    --puts P              measured puts [default: 200]
    --per-conn K          watch streams sharing one gRPC connection [default: 50]
    --prefix S            key prefix to watch and put under [default: /lapse-bench/]
    --put-endpoint URL    where puts go [default: the current leader]
    --put-timeout-ms T    wait for all watchers per put at most T ms [default: 10000]
    --setup-timeout-ms T  bound on connecting, opening watches and warm-up [default: 60000]
    --json                print one JSON object on stdout (the table goes to stderr)
    -h, --help            print this help
";

/// Command-line settings.
#[derive(Debug, Clone)]
struct Args {
    endpoints: Vec<String>,
    watchers: usize,
    puts: usize,
    per_conn: usize,
    prefix: String,
    put_endpoint: Option<String>,
    put_timeout: Duration,
    setup_timeout: Duration,
    json: bool,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            endpoints: vec![
                "http://127.0.0.1:23791".into(),
                "http://127.0.0.1:23792".into(),
                "http://127.0.0.1:23793".into(),
            ],
            watchers: 1000,
            puts: 200,
            per_conn: 50,
            prefix: "/lapse-bench/".into(),
            put_endpoint: None,
            put_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(60),
            json: false,
        }
    }
}

/// Parses the command line; `Ok(None)` means help was printed.
fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args::default();
    fn value(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, String> {
        it.next().ok_or_else(|| format!("{flag} needs a value"))
    }
    fn number(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<u64, String> {
        let v = value(it, flag)?;
        v.parse()
            .map_err(|_| format!("{flag}: not a non-negative integer: {v}"))
    }
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--endpoints" => {
                a.endpoints = value(&mut it, &flag)?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "--watchers" => a.watchers = number(&mut it, &flag)? as usize,
            "--puts" => a.puts = number(&mut it, &flag)? as usize,
            "--per-conn" => a.per_conn = number(&mut it, &flag)? as usize,
            "--prefix" => a.prefix = value(&mut it, &flag)?,
            "--put-endpoint" => a.put_endpoint = Some(value(&mut it, &flag)?),
            "--put-timeout-ms" => {
                a.put_timeout = Duration::from_millis(number(&mut it, &flag)?);
            }
            "--setup-timeout-ms" => {
                a.setup_timeout = Duration::from_millis(number(&mut it, &flag)?);
            }
            "--json" => a.json = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument: {other}\n\n{USAGE}")),
        }
    }
    if a.endpoints.is_empty() {
        return Err("--endpoints: no endpoint given".into());
    }
    if a.watchers == 0 || a.puts == 0 || a.per_conn == 0 {
        return Err("--watchers, --puts and --per-conn must be at least 1".into());
    }
    if a.prefix.is_empty() {
        return Err("--prefix must not be empty".into());
    }
    Ok(Some(a))
}

/// What a watcher task tells the measuring loop.
enum Note {
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
async fn watcher(
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
struct Wait {
    /// Per watcher that saw it: arrival minus `t0`, clamped at zero.
    delays: Vec<Duration>,
    /// Arrivals that came before `t0` (the put RPC had not returned yet).
    early: usize,
    /// Watchers that had not seen it when the deadline passed.
    missed: usize,
    /// The latest arrival.
    latest: Option<Instant>,
}

/// Collects notes until every one of `n` watchers has seen `rev` or
/// `deadline` passes. Notes for older revisions (late arrivals after an
/// earlier timeout) are dropped. A failed watcher aborts the run.
async fn wait_all(
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

/// One measured put.
struct PutResult {
    rev: i64,
    rpc: Duration,
    /// Put sent -> last watcher saw it (the put timeout if one missed it).
    sent_last: Duration,
    first: Duration,
    last: Duration,
    seen: usize,
    early: usize,
}

/// Everything the report needs.
struct Run {
    args: Args,
    put_endpoint: String,
    put_to_leader: bool,
    per_member: Vec<usize>,
    connections: usize,
    setup: Duration,
    warmup: Duration,
    puts: Vec<PutResult>,
    each: Vec<Duration>,
    missed: usize,
}

async fn connect(endpoint: &str) -> Result<Client, String> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    timeout(
        Duration::from_secs(10),
        Client::connect([endpoint], Some(opts)),
    )
    .await
    .map_err(|_| format!("{endpoint}: connect timed out"))?
    .map_err(|e| format!("{endpoint}: {e}"))
}

/// Returns the endpoint of the current leader, if a member names one that
/// is among `endpoints`.
async fn find_leader(endpoints: &[String]) -> Result<Option<String>, String> {
    let mut ids = Vec::new();
    let mut leader = None;
    for ep in endpoints {
        let mut c = connect(ep).await?;
        let s = timeout(Duration::from_secs(5), c.status())
            .await
            .map_err(|_| format!("{ep}: status timed out"))?
            .map_err(|e| format!("{ep}: status: {e}"))?;
        let me = s.header().map(|h| h.member_id()).unwrap_or(0);
        ids.push((me, ep.clone()));
        if s.leader() != 0 {
            leader = Some(s.leader());
        }
    }
    Ok(leader.and_then(|l| ids.into_iter().find(|(id, _)| *id == l).map(|(_, ep)| ep)))
}

async fn put(client: &mut Client, key: &str, value: String) -> Result<i64, String> {
    let resp = timeout(Duration::from_secs(10), client.put(key, value, None))
        .await
        .map_err(|_| "put timed out after 10 s".to_string())?
        .map_err(|e| format!("put: {e}"))?;
    resp.header()
        .map(|h| h.revision())
        .ok_or_else(|| "put response has no header".to_string())
}

/// What the putter answers per put: the revision, when the RPC was sent and
/// when it returned.
type PutReply = Result<(i64, Instant, Instant), String>;

/// Handle to the putter thread.
struct Putter {
    requests: mpsc::UnboundedSender<(String, oneshot::Sender<PutReply>)>,
}

impl Putter {
    /// Starts a thread with its own single-threaded runtime and connection
    /// to `endpoint`, so that the instant a put returns is taken as soon as
    /// its response arrives, not after the watchers' work queued on the
    /// main runtime.
    async fn start(endpoint: String, key: String) -> Result<Self, String> {
        let (requests, mut rx) = mpsc::unbounded_channel::<(String, oneshot::Sender<PutReply>)>();
        let (ready_tx, ready_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("putter".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("putter runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut client = match connect(&endpoint).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    while let Some((value, reply)) = rx.recv().await {
                        let sent = Instant::now();
                        let r = put(&mut client, &key, value).await;
                        let returned = Instant::now();
                        let _ = reply.send(r.map(|rev| (rev, sent, returned)));
                    }
                });
            })
            .map_err(|e| format!("putter thread: {e}"))?;
        match timeout(Duration::from_secs(15), ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(Self { requests }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err("putter thread ended".into()),
            Err(_) => Err("putter did not connect in 15 s".into()),
        }
    }

    /// Puts `value`; returns the revision, send and return instants.
    async fn put(&self, value: String) -> PutReply {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((value, tx))
            .map_err(|_| "putter thread is gone".to_string())?;
        rx.await
            .map_err(|_| "putter thread dropped the put".to_string())?
    }
}

async fn run(args: Args) -> Result<Run, String> {
    let n = args.watchers;
    let setup_deadline = Instant::now() + args.setup_timeout;
    let leader = find_leader(&args.endpoints).await?;
    let put_endpoint = match (&args.put_endpoint, &leader) {
        (Some(ep), _) => ep.clone(),
        (None, Some(l)) => l.clone(),
        (None, None) => return Err("no member reports a leader".into()),
    };
    let put_to_leader = leader.as_deref() == Some(put_endpoint.as_str());

    // Watcher i goes to member i mod M; each member's watchers share its
    // connections, one connection per `per_conn` of them.
    let m = args.endpoints.len();
    let per_member: Vec<usize> = (0..m).map(|j| (n + m - 1 - j) / m).collect();
    let mut clients: Vec<Vec<Client>> = Vec::with_capacity(m);
    for (j, &count) in per_member.iter().enumerate() {
        let mut member = Vec::new();
        for _ in 0..count.div_ceil(args.per_conn) {
            member.push(connect(&args.endpoints[j]).await?);
        }
        clients.push(member);
    }
    let connections = clients.iter().map(Vec::len).sum();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
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
        match tokio::time::timeout_at(setup_deadline.into(), ready_rx.recv()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => return Err("watcher tasks ended during setup".into()),
            Err(_) => return Err("timed out opening watch streams".into()),
        }
    }
    let setup = started.elapsed();

    // Warm-up: every watcher must see one put before anything is measured.
    let putter = Putter::start(put_endpoint.clone(), format!("{}key", args.prefix)).await?;
    let (rev, sent, returned) = putter.put("warmup".into()).await?;
    let w = wait_all(&mut notes, n, rev, returned, setup_deadline).await?;
    if w.missed > 0 {
        return Err(format!(
            "warm-up put (revision {rev}) not seen by {} of {n} watchers",
            w.missed
        ));
    }
    let warmup = sent.elapsed();

    let mut puts = Vec::with_capacity(args.puts);
    let mut each = Vec::with_capacity(n * args.puts);
    let mut missed = 0;
    for i in 0..args.puts {
        let (rev, sent, t0) = putter.put(i.to_string()).await?;
        let w = wait_all(&mut notes, n, rev, t0, t0 + args.put_timeout).await?;
        let first = w.delays.iter().min().copied().unwrap_or_default();
        let last = if w.missed > 0 {
            args.put_timeout
        } else {
            w.delays.iter().max().copied().unwrap_or_default()
        };
        missed += w.missed;
        puts.push(PutResult {
            rev,
            rpc: t0 - sent,
            sent_last: match w.latest {
                Some(at) if w.missed == 0 => at - sent,
                _ => args.put_timeout,
            },
            first,
            last,
            seen: w.delays.len(),
            early: w.early,
        });
        each.extend(w.delays);
    }
    Ok(Run {
        args,
        put_endpoint,
        put_to_leader,
        per_member,
        connections,
        setup,
        warmup,
        puts,
        each,
        missed,
    })
}

/// Writes the human-readable report.
fn table(r: &Run, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let a = &r.args;
    let spread: Vec<String> = r.per_member.iter().map(|c| c.to_string()).collect();
    writeln!(
        out,
        "etcd propagation: {} watchers ({} over {} members, {} connections), {} puts to {} ({})",
        a.watchers,
        spread.join("/"),
        a.endpoints.len(),
        r.connections,
        a.puts,
        r.put_endpoint,
        if r.put_to_leader {
            "leader"
        } else {
            "not the leader"
        },
    )?;
    writeln!(
        out,
        "setup: {} watch streams created in {:.1} ms; warm-up put sent -> seen by all in {:.3} ms",
        a.watchers,
        ms(r.setup),
        ms(r.warmup)
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:>5} {:>9} {:>10} {:>9} {:>9} {:>6} {:>6}",
        "put", "revision", "put_rpc_ms", "first_ms", "last_ms", "seen", "early"
    )?;
    for (i, p) in r.puts.iter().enumerate() {
        writeln!(
            out,
            "{:>5} {:>9} {:>10.3} {:>9.3} {:>9.3} {:>6} {:>6}",
            i,
            p.rev,
            ms(p.rpc),
            ms(p.first),
            ms(p.last),
            p.seen,
            p.early
        )?;
    }
    let last = Summary::of(r.puts.iter().map(|p| p.last).collect());
    let each = Summary::of(r.each.clone());
    let rpc = Summary::of(r.puts.iter().map(|p| p.rpc).collect());
    let sent_last = Summary::of(r.puts.iter().map(|p| p.sent_last).collect());
    let early: usize = r.puts.iter().map(|p| p.early).sum();
    writeln!(out)?;
    writeln!(
        out,
        "{:<30} {:>8} {:>9} {:>9} {:>9}",
        "", "samples", "p50_ms", "p99_ms", "max_ms"
    )?;
    for (name, s) in [
        ("put returned -> last watcher", &last),
        ("put returned -> each watcher", &each),
        ("put rpc (sent -> returned)", &rpc),
        ("put sent -> last watcher", &sent_last),
    ] {
        writeln!(
            out,
            "{:<30} {:>8} {:>9.3} {:>9.3} {:>9.3}",
            name,
            s.count,
            ms(s.p50),
            ms(s.p99),
            ms(s.max)
        )?;
    }
    writeln!(
        out,
        "missed (watcher-put pairs not seen within {} ms): {}; seen before the put returned: {}",
        a.put_timeout.as_millis(),
        r.missed,
        early
    )?;
    Ok(())
}

/// The one-object JSON summary, fields in a fixed order.
fn json(r: &Run) -> String {
    let last = Summary::of(r.puts.iter().map(|p| p.last).collect());
    let each = Summary::of(r.each.clone());
    format!(
        "{{\"system\":\"etcd\",\"watchers\":{},\"puts\":{},\
         \"last_p50_ms\":{:.3},\"last_p99_ms\":{:.3},\"last_max_ms\":{:.3},\
         \"each_p50_ms\":{:.3},\"each_p99_ms\":{:.3},\"each_max_ms\":{:.3},\
         \"missed\":{}}}",
        r.args.watchers,
        r.args.puts,
        ms(last.p50),
        ms(last.p99),
        ms(last.max),
        ms(each.p50),
        ms(each.p99),
        ms(each.max),
        r.missed
    )
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etcd-propagation: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("etcd-propagation: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(run(args));
    // Watcher tasks are still parked on their streams; do not wait for them.
    rt.shutdown_timeout(Duration::from_secs(1));
    let r = match outcome {
        Ok(r) => r,
        Err(e) => {
            eprintln!("etcd-propagation: {e}");
            return ExitCode::FAILURE;
        }
    };
    let written = if r.args.json {
        table(&r, &mut std::io::stderr()).and_then(|()| {
            use std::io::Write;
            writeln!(std::io::stdout(), "{}", json(&r))
        })
    } else {
        table(&r, &mut std::io::stdout())
    };
    if let Err(e) = written {
        eprintln!("etcd-propagation: writing the report: {e}");
        return ExitCode::FAILURE;
    }
    if r.missed > 0 {
        eprintln!(
            "etcd-propagation: {} watcher-put pairs were not seen in time",
            r.missed
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Option<Args>, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        let a = parse(&[]).unwrap().unwrap();
        assert_eq!((a.watchers, a.puts, a.per_conn), (1000, 200, 50));
        assert_eq!(a.endpoints.len(), 3);
        let a = parse(&["--watchers", "10", "--puts", "3", "--json"])
            .unwrap()
            .unwrap();
        assert_eq!((a.watchers, a.puts, a.json), (10, 3, true));
        assert!(parse(&["--watchers", "0"]).is_err());
        assert!(parse(&["--watchers"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
    }
}
