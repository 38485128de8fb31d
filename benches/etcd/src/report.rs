//! The report of a run: a table of every put with the summary, and the
//! one-object JSON summary the propagation script compares.

use crate::Run;
use crate::stats::{Summary, ms};

/// Writes the human-readable report.
pub fn table(r: &Run, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let a = &r.args;
    let spread: Vec<String> = r.per_member.iter().map(|c| c.to_string()).collect();
    writeln!(
        out,
        "etcd propagation ({}): {} watchers ({} over {} members, {} connections), {} puts to {} ({})",
        if a.tls.is_some() { "tls" } else { "plaintext" },
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
    let last = Summary::of(r.puts.iter().map(|p| p.last));
    let each = Summary::of(r.each.iter().copied());
    let rpc = Summary::of(r.puts.iter().map(|p| p.rpc));
    let sent_last = Summary::of(r.puts.iter().map(|p| p.sent_last));
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

/// The one-object JSON summary, fields in a fixed order: the compared
/// delays, then for context the put RPC and put sent -> last watcher.
pub fn json(r: &Run) -> String {
    let last = Summary::of(r.puts.iter().map(|p| p.last));
    let each = Summary::of(r.each.iter().copied());
    let rpc = Summary::of(r.puts.iter().map(|p| p.rpc));
    let sent_last = Summary::of(r.puts.iter().map(|p| p.sent_last));
    let early: usize = r.puts.iter().map(|p| p.early).sum();
    format!(
        "{{\"system\":\"etcd\",\"transport\":\"{}\",\"watchers\":{},\"puts\":{},\
         \"last_p50_ms\":{:.3},\"last_p99_ms\":{:.3},\"last_max_ms\":{:.3},\
         \"each_p50_ms\":{:.3},\"each_p99_ms\":{:.3},\"each_max_ms\":{:.3},\
         \"rpc_p50_ms\":{:.3},\"rpc_p99_ms\":{:.3},\
         \"sent_last_p50_ms\":{:.3},\"sent_last_p99_ms\":{:.3},\
         \"early\":{},\"missed\":{}}}",
        if r.args.tls.is_some() {
            "tls"
        } else {
            "plaintext"
        },
        r.args.watchers,
        r.args.puts,
        ms(last.p50),
        ms(last.p99),
        ms(last.max),
        ms(each.p50),
        ms(each.p99),
        ms(each.max),
        ms(rpc.p50),
        ms(rpc.p99),
        ms(sent_last.p50),
        ms(sent_last.p99),
        early,
        r.missed
    )
}
