//! The verifier's revoked set in memory: Elias-Fano against a sorted
//! `Vec<u64>`.
//!
//! For a uniform random set of R revoked indices in a window of U (10^7 and
//! 10^5, then 10^6 and 10^4), one run prints: the heap the `RevokedSet`
//! holds against the information bound `log2 C(U, R)` and against the
//! former in-memory form (a sorted `Vec<u64>`, 8 bytes per index); lookup
//! time for random hits and random misses in both (a binary search of the
//! sorted `Vec<u64>` measured in the same run; the median of five passes
//! over 65,536 queries repeated, so a throughput of independent lookups on
//! one thread); the time to decode the wire form; and the time to apply a
//! delta of one addition (the mean over 4,096 successive deltas, so
//! merges of the pending buffer are amortised in, and the slowest one) and
//! of 1,000 additions (best of 21), beside the same deltas merged into a
//! sorted `Vec<u64>` as the former `apply` did. Lookups and the mean
//! single-addition apply are the thread's on-CPU time
//! (`/proc/thread-self/schedstat`, so a machine shared with other work does
//! not count the waits for a core; it is accounted at scheduler ticks, so
//! only over long loops), lookups also in wall time; decode, the slowest
//! single apply and the 1,000-addition apply are wall time, the fastest of
//! 21 runs. BENCHMARKS.md takes the median of three runs.
//!
//! ```sh
//! cargo bench -p lapse-benches --bench revoked_set -- [--json]
//! ```

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Instant;

use clap::Parser;
use lapse_benches::{CargoBench, print_json};
use lapse_filter::{RevokedDelta, RevokedSet, information_bound_bits};
use serde_json::json;

/// The verifier's revoked set in memory: Elias-Fano against a sorted Vec.
#[derive(Debug, Parser)]
#[command(
    name = "revoked_set",
    bin_name = "cargo bench -p lapse-benches --bench revoked_set --"
)]
struct RevokedSetBench {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cargo: CargoBench,
}

/// splitmix64: a fixed-seed PRNG, so every run measures the same sets.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Distinct queries per lookup pass.
const QUERIES: usize = 1 << 16;
/// Lookups per pass.
const LOOKUPS_PER_PASS: usize = 1 << 23;
/// Successive single-addition deltas.
const SINGLE_DELTAS: usize = 4096;

/// What one window size measured.
struct Figures {
    universe: u64,
    revoked: u64,
    bound_bytes: f64,
    heap_bytes: usize,
    vec_bytes: usize,
    wire_bytes: usize,
    /// On-CPU and wall nanoseconds per lookup.
    hit_ns: (f64, f64),
    miss_ns: (f64, f64),
    vec_hit_ns: (f64, f64),
    vec_miss_ns: (f64, f64),
    decode_ms: f64,
    one_mean_us: f64,
    one_max_us: f64,
    vec_one_us: f64,
    thousand_us: f64,
    vec_thousand_us: f64,
}

/// This thread's time on a CPU, in nanoseconds, from
/// `/proc/thread-self/schedstat` (Linux): on a machine shared with other
/// work, wall time also counts the time spent waiting for a core.
fn on_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A stopwatch reading on-CPU time where the kernel reports it (and wall
/// time as well).
struct Stopwatch {
    wall: Instant,
    cpu: Option<u64>,
}

impl Stopwatch {
    fn start() -> Self {
        let cpu = on_cpu_ns();
        Self {
            wall: Instant::now(),
            cpu,
        }
    }

    /// Wall nanoseconds and on-CPU nanoseconds (wall if unavailable).
    fn elapsed_ns(&self) -> (f64, f64) {
        let wall = self.wall.elapsed().as_nanos() as f64;
        let cpu = match (self.cpu, on_cpu_ns()) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64,
            _ => wall,
        };
        (wall, cpu)
    }

    /// On-CPU nanoseconds (wall if unavailable). The kernel accounts
    /// on-CPU time at scheduler ticks, so this is for intervals of many
    /// milliseconds.
    fn cpu_ns(&self) -> f64 {
        self.elapsed_ns().1
    }

    /// Wall nanoseconds, for short intervals.
    fn wall_ns(&self) -> f64 {
        self.elapsed_ns().0
    }
}

/// The fastest of several short runs, in wall time: the one least
/// disturbed by other work on the machine.
fn best(v: Vec<f64>) -> f64 {
    v.into_iter().fold(f64::INFINITY, f64::min)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// On-CPU and wall nanoseconds per lookup: the median of five passes.
fn lookup_ns(queries: &[u64], f: impl Fn(u64) -> bool) -> (f64, f64) {
    let (cpu, wall): (Vec<f64>, Vec<f64>) = (0..5)
        .map(|_| {
            let watch = Stopwatch::start();
            let mut hits = 0usize;
            for _ in 0..LOOKUPS_PER_PASS / queries.len() {
                for &q in queries {
                    hits += usize::from(f(black_box(q)));
                }
            }
            black_box(hits);
            let (wall, cpu) = watch.elapsed_ns();
            let n = LOOKUPS_PER_PASS as f64;
            (cpu / n, wall / n)
        })
        .unzip();
    (median(cpu), median(wall))
}

/// The former `apply`: drop what fell below the base, merge the additions
/// into a new sorted vector.
fn vec_apply(v: &[u64], new_base: u64, added: &[u64]) -> Vec<u64> {
    let kept = &v[v.partition_point(|&i| i < new_base)..];
    let mut out = Vec::with_capacity(kept.len() + added.len());
    let (mut a, mut b) = (kept.iter().peekable(), added.iter().peekable());
    while let (Some(&&x), Some(&&y)) = (a.peek(), b.peek()) {
        if x < y {
            out.push(x);
            a.next();
        } else {
            out.push(y);
            b.next();
        }
    }
    out.extend(a);
    out.extend(b);
    out
}

/// `n` fresh random indices in the window, none in `taken`, sorted.
fn fresh(rng: &mut SplitMix64, universe: u64, taken: &BTreeSet<u64>, n: usize) -> Vec<u64> {
    let mut out = BTreeSet::new();
    while out.len() < n {
        let i = rng.next() % universe;
        if !taken.contains(&i) {
            out.insert(i);
        }
    }
    out.into_iter().collect()
}

fn measure(universe: u64, revoked: u64) -> anyhow::Result<Figures> {
    let mut rng = SplitMix64(0x5E7_u64 ^ universe);
    let mut model = BTreeSet::new();
    while (model.len() as u64) < revoked {
        model.insert(rng.next() % universe);
    }
    let sorted: Vec<u64> = model.iter().copied().collect();
    let set = RevokedSet::from_sorted(0, universe, sorted.iter().copied())?;
    let wire = set.encode();

    let hits: Vec<u64> = (0..QUERIES)
        .map(|_| sorted[(rng.next() % revoked) as usize])
        .collect();
    let misses: Vec<u64> = (0..QUERIES)
        .map(|_| {
            loop {
                let i = rng.next() % universe;
                if !model.contains(&i) {
                    break i;
                }
            }
        })
        .collect();
    let hit_ns = lookup_ns(&hits, |i| set.contains(i));
    let miss_ns = lookup_ns(&misses, |i| set.contains(i));
    let vec_hit_ns = lookup_ns(&hits, |i| sorted.binary_search(&i).is_ok());
    let vec_miss_ns = lookup_ns(&misses, |i| sorted.binary_search(&i).is_ok());
    anyhow::ensure!(
        hits.iter().all(|&i| set.contains(i)) && !misses.iter().any(|&i| set.contains(i)),
        "lookups disagree with the model"
    );

    let decode_ms = best(
        (0..21)
            .map(|_| {
                let watch = Stopwatch::start();
                let decoded = RevokedSet::decode(black_box(&wire)).expect("decodes");
                let t = watch.wall_ns();
                black_box(decoded.len());
                t / 1e6
            })
            .collect(),
    );
    anyhow::ensure!(RevokedSet::decode(&wire)? == set, "round trip");

    // Single additions, one delta each, applied in turn.
    let singles = fresh(&mut rng, universe, &model, SINGLE_DELTAS);
    let mut order: Vec<u64> = singles.clone();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let deltas: Vec<RevokedDelta> = order
        .iter()
        .enumerate()
        .map(|(e, &i)| RevokedDelta::new(e as u64, e as u64 + 1, vec![i], Some(0)))
        .collect::<Result<_, _>>()?;
    let mut applied = set.clone();
    let mut slowest = 0f64;
    let watch = Stopwatch::start();
    for d in &deltas {
        let t = Stopwatch::start();
        applied.apply(d)?;
        slowest = slowest.max(t.wall_ns());
    }
    let one_mean_us = watch.cpu_ns() / 1e3 / deltas.len() as f64;
    anyhow::ensure!(
        applied.len() as u64 == revoked + SINGLE_DELTAS as u64,
        "single deltas applied"
    );
    let mut v = sorted.clone();
    let watch = Stopwatch::start();
    for d in &deltas {
        v = vec_apply(&v, 0, d.added());
    }
    let vec_one_us = watch.cpu_ns() / 1e3 / deltas.len() as f64;
    black_box(v.len());

    // A thousand additions in one delta, from the fresh set each time.
    let thousand = fresh(&mut rng, universe, &model, 1000);
    let big = RevokedDelta::new(1, 2, thousand.clone(), Some(0))?;
    let mut thousand_runs = Vec::new();
    let mut vec_thousand_runs = Vec::new();
    for _ in 0..21 {
        let mut s = set.clone();
        let watch = Stopwatch::start();
        s.apply(&big)?;
        thousand_runs.push(watch.wall_ns() / 1e3);
        black_box(s.len());
        let watch = Stopwatch::start();
        let v = vec_apply(&sorted, 0, &thousand);
        vec_thousand_runs.push(watch.wall_ns() / 1e3);
        black_box(v.len());
    }

    Ok(Figures {
        universe,
        revoked,
        bound_bytes: information_bound_bits(universe, revoked) / 8.0,
        heap_bytes: set.heap_bytes(),
        vec_bytes: sorted.capacity() * 8,
        wire_bytes: wire.len(),
        hit_ns,
        miss_ns,
        vec_hit_ns,
        vec_miss_ns,
        decode_ms,
        one_mean_us,
        one_max_us: slowest / 1e3,
        vec_one_us,
        thousand_us: best(thousand_runs),
        vec_thousand_us: best(vec_thousand_runs),
    })
}

fn main() -> anyhow::Result<()> {
    let args = RevokedSetBench::parse();
    let figures = [(10_000_000, 100_000), (1_000_000, 10_000)]
        .into_iter()
        .map(|(u, r)| measure(u, r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.json {
        print_json(&json!(
            figures
                .iter()
                .map(|f| json!({
                    "universe": f.universe,
                    "revoked": f.revoked,
                    "bound_bytes": f.bound_bytes,
                    "heap_bytes": f.heap_bytes,
                    "heap_over_bound": f.heap_bytes as f64 / f.bound_bytes,
                    "sorted_vec_bytes": f.vec_bytes,
                    "sorted_vec_over_bound": f.vec_bytes as f64 / f.bound_bytes,
                    "wire_bytes": f.wire_bytes,
                    "hit_ns": f.hit_ns.0,
                    "miss_ns": f.miss_ns.0,
                    "sorted_vec_hit_ns": f.vec_hit_ns.0,
                    "sorted_vec_miss_ns": f.vec_miss_ns.0,
                    "hit_wall_ns": f.hit_ns.1,
                    "miss_wall_ns": f.miss_ns.1,
                    "sorted_vec_hit_wall_ns": f.vec_hit_ns.1,
                    "sorted_vec_miss_wall_ns": f.vec_miss_ns.1,
                    "decode_ms": f.decode_ms,
                    "apply_1_mean_us": f.one_mean_us,
                    "apply_1_max_us": f.one_max_us,
                    "sorted_vec_apply_1_us": f.vec_one_us,
                    "apply_1000_us": f.thousand_us,
                    "sorted_vec_apply_1000_us": f.vec_thousand_us,
                }))
                .collect::<Vec<_>>()
        ));
        return Ok(());
    }
    println!(
        "lookups and the mean apply: on-CPU time (/proc/thread-self/schedstat); the rest: wall time"
    );
    for f in &figures {
        println!("U = {}, R = {} (one thread):", f.universe, f.revoked);
        println!("  bound log2 C(U, R)   {:>10.0} B", f.bound_bytes.ceil());
        println!(
            "  RevokedSet heap      {:>10} B  {:.3} x bound  (wire {} B, {:.3} x)",
            f.heap_bytes,
            f.heap_bytes as f64 / f.bound_bytes,
            f.wire_bytes,
            f.wire_bytes as f64 / f.bound_bytes
        );
        println!(
            "  sorted Vec<u64>      {:>10} B  {:.3} x bound",
            f.vec_bytes,
            f.vec_bytes as f64 / f.bound_bytes
        );
        println!(
            "  lookup, hits         {:>10.1} ns  (sorted Vec {:.1} ns; wall {:.1} / {:.1} ns)",
            f.hit_ns.0, f.vec_hit_ns.0, f.hit_ns.1, f.vec_hit_ns.1
        );
        println!(
            "  lookup, misses       {:>10.1} ns  (sorted Vec {:.1} ns; wall {:.1} / {:.1} ns)",
            f.miss_ns.0, f.vec_miss_ns.0, f.miss_ns.1, f.vec_miss_ns.1
        );
        println!(
            "  decode               {:>10.3} ms  (wall, best of 21)",
            f.decode_ms
        );
        println!(
            "  apply, 1 addition    {:>10.2} us mean over {SINGLE_DELTAS}, slowest {:.0} us wall  (sorted Vec {:.2} us)",
            f.one_mean_us, f.one_max_us, f.vec_one_us
        );
        println!(
            "  apply, 1,000 added   {:>10.0} us  (wall, best of 21; sorted Vec {:.0} us)",
            f.thousand_us, f.vec_thousand_us
        );
    }
    Ok(())
}
