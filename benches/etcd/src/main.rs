//! `etcd-propagation`: the etcd half of Lapse's propagation benchmark.
//!
//! Opens N watch streams (default 1000) on one key prefix, spread over the
//! members of an etcd cluster, then makes P puts (default 200) under that
//! prefix one at a time. For each put it measures, from the moment the put
//! RPC returned, the time until each watcher received the event for that
//! revision, and reports the delay to the last watcher per put plus overall
//! percentiles. With `--cacert` (and `--cert`/`--key`) every connection is
//! TLS with a client certificate. Every wait is bounded; the tool exits by
//! itself.

mod args;
mod put;
mod report;
mod stats;
mod watch;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use args::{Args, parse_args};
use put::{Putter, find_leader, tls_options};
use watch::{Note, wait_all};

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

async fn run(args: Args) -> Result<Run, String> {
    let n = args.watchers;
    let setup_deadline = Instant::now() + args.setup_timeout;
    let tls = args.tls.as_ref().map(tls_options).transpose()?;
    let leader = find_leader(&args.endpoints, tls.as_ref()).await?;
    let put_endpoint = match (&args.put_endpoint, &leader) {
        (Some(ep), _) => ep.clone(),
        (None, Some(l)) => l.clone(),
        (None, None) => return Err("no member reports a leader".into()),
    };
    let put_to_leader = leader.as_deref() == Some(put_endpoint.as_str());
    let mut watchers = watch::open(&args, tls.as_ref(), setup_deadline).await?;

    // Warm-up: every watcher must see one put before anything is measured.
    let putter = Putter::start(
        put_endpoint.clone(),
        format!("{}key", args.prefix),
        tls.clone(),
    )
    .await?;
    let (rev, sent, returned) = putter.put("warmup".into()).await?;
    let w = wait_all(&mut watchers.notes, n, rev, returned, setup_deadline).await?;
    if w.missed > 0 {
        return Err(format!(
            "warm-up put (revision {rev}) not seen by {} of {n} watchers",
            w.missed
        ));
    }
    let warmup = sent.elapsed();
    let (puts, each, missed) = measure(&args, &putter, &mut watchers.notes).await?;
    Ok(Run {
        put_endpoint,
        put_to_leader,
        per_member: watchers.per_member,
        connections: watchers.connections,
        setup: watchers.setup,
        warmup,
        puts,
        each,
        missed,
        args,
    })
}

/// Makes `args.puts` puts, each once every watcher has seen the one before
/// (or its timeout passed): every put's result, every watcher's delay, and
/// how many watcher-put pairs were missed.
async fn measure(
    args: &Args,
    putter: &Putter,
    notes: &mut mpsc::UnboundedReceiver<Note>,
) -> Result<(Vec<PutResult>, Vec<Duration>, usize), String> {
    let n = args.watchers;
    let mut puts = Vec::with_capacity(args.puts);
    let mut each = Vec::with_capacity(n * args.puts);
    let mut missed = 0;
    for i in 0..args.puts {
        let (rev, sent, t0) = putter.put(i.to_string()).await?;
        let w = wait_all(notes, n, rev, t0, t0 + args.put_timeout).await?;
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
    Ok((puts, each, missed))
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
        report::table(&r, &mut std::io::stderr()).and_then(|()| {
            use std::io::Write;
            writeln!(std::io::stdout(), "{}", report::json(&r))
        })
    } else {
        report::table(&r, &mut std::io::stdout())
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
