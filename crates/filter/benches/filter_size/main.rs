//! Revocation filter size and speed.
//!
//! Compares Lapse's exact [`RevokedSet`] (and a [`RevokedDelta`]) with a Bloom
//! filter (`bloomfilter`, fp rate 1e-6), Mozilla's Bloom filter cascade
//! (`rust_cascade`, as used by CRLite) and Mozilla's ribbon-based `clubcard`,
//! for U = 1,000,000 / R = 10,000 and U = 10,000,000 / R = 100,000, with the
//! revoked indices drawn uniformly at random by a fixed-seed splitmix64.
//!
//! Per structure it prints encoded bytes, bytes per revoked credential, the
//! ratio to the `log2 C(U, R)` bound, build time (sorted revoked indices in
//! memory to encoded bytes), decode time, lookup time over a 50/50 mix of
//! members and non-members, false positives over every non-member of the
//! universe and false negatives over every member. Baselines measured in the
//! same run (sorting R random `u64`s, a `BTreeSet<u64>`) let figures from a
//! noisy machine be reported as ratios.
//!
//! ```sh
//! cargo bench -p lapse-filter --bench filter_size
//! LAPSE_BENCH_QUICK=1 cargo bench -p lapse-filter --bench filter_size
//! cargo bench -p lapse-filter --bench filter_size -- --quick   # the same
//! ```

// A benchmark has to read the clock; the crate's purity rule is for the library.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use lapse_filter::{RevokedDelta, RevokedSet, information_bound_bits};
use rust_cascade::HashAlgorithm;

mod competitors;

use competitors::{bloom, cascade, clubcard};

/// splitmix64: a small fixed-seed PRNG so every run measures the same sets.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The splitmix64 finaliser.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Repeat counts: the defaults, or smaller ones with `LAPSE_BENCH_QUICK=1`.
#[derive(Clone, Copy)]
struct Config {
    quick: bool,
    build_reps: usize,
    lookup_reps: usize,
    queries: usize,
}

impl Config {
    fn from_env() -> Self {
        let quick = std::env::var("LAPSE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Self {
                quick,
                build_reps: 3,
                lookup_reps: 3,
                queries: 50_000,
            }
        } else {
            Self {
                quick,
                build_reps: 7,
                lookup_reps: 7,
                queries: 200_000,
            }
        }
    }
}

/// Median wall time of `reps` runs of `f`, and the result of the last run.
fn median_time<T>(reps: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(reps);
    let mut last = None;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let v = black_box(f());
        times.push(t.elapsed());
        last = Some(v);
    }
    times.sort();
    (times[times.len() / 2], last.expect("at least one run"))
}

/// Median ns per lookup over `queries`, and how many answered "revoked".
fn time_lookups(reps: usize, queries: &[u64], f: impl Fn(u64) -> bool) -> (f64, usize) {
    let (d, hits) = median_time(reps, || {
        queries.iter().filter(|&&q| f(black_box(q))).count()
    });
    (d.as_nanos() as f64 / queries.len() as f64, hits)
}

/// The workload for one (U, R) point.
struct Workload {
    universe: u64,
    /// Revoked indices, sorted.
    revoked: Vec<u64>,
    /// The same indices in the order they were drawn.
    drawn: Vec<u64>,
    /// `member[i]` iff index `i` is revoked.
    member: Vec<bool>,
    /// Lookups: about half members, half non-members, in random order.
    queries: Vec<u64>,
    /// How many of `queries` are members.
    member_queries: usize,
}

impl Workload {
    fn new(universe: u64, count: usize, seed: u64, n_queries: usize) -> Self {
        let mut rng = SplitMix64(seed);
        let mut member = vec![false; universe as usize];
        let mut drawn = Vec::with_capacity(count);
        while drawn.len() < count {
            let i = rng.below(universe);
            if !member[i as usize] {
                member[i as usize] = true;
                drawn.push(i);
            }
        }
        let mut revoked = drawn.clone();
        revoked.sort_unstable();
        let mut queries = Vec::with_capacity(n_queries);
        let mut member_queries = 0;
        while queries.len() < n_queries {
            if rng.next() & 1 == 0 {
                queries.push(revoked[rng.below(count as u64) as usize]);
                member_queries += 1;
            } else {
                let i = rng.below(universe);
                if !member[i as usize] {
                    queries.push(i);
                }
            }
        }
        Self {
            universe,
            revoked,
            drawn,
            member,
            queries,
            member_queries,
        }
    }

    fn count(&self) -> u64 {
        self.revoked.len() as u64
    }

    /// False positives over every non-member and false negatives over every
    /// member of the universe.
    fn errors(&self, f: impl Fn(u64) -> bool) -> (u64, u64) {
        let (mut fp, mut fneg) = (0u64, 0u64);
        for (i, &m) in self.member.iter().enumerate() {
            let got = f(i as u64);
            if m && !got {
                fneg += 1;
            } else if !m && got {
                fp += 1;
            }
        }
        (fp, fneg)
    }
}

/// One line of the results table.
struct Row {
    name: String,
    bytes: usize,
    /// Elements the structure encodes (R, or the delta's additions).
    encoded: u64,
    bound_bits: f64,
    build: Duration,
    decode: Option<Duration>,
    lookup_ns: Option<f64>,
    fp: Option<u64>,
    fneg: Option<u64>,
    note: String,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.bound_bits
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "–".to_string(), f)
}

fn group(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| std::str::from_utf8(c).expect("ASCII digits"))
        .collect();
    groups.join(",")
}

fn lapse_exact(w: &Workload, cfg: Config) -> Row {
    let (build, bytes) = median_time(cfg.build_reps, || {
        RevokedSet::from_sorted(0, w.universe, w.revoked.iter().copied())
            .expect("valid set")
            .encode()
    });
    let (decode, set) = median_time(cfg.build_reps, || {
        RevokedSet::decode(&bytes).expect("decodes")
    });
    assert_eq!(set.len() as u64, w.count());
    let (lookup_ns, hits) = time_lookups(cfg.lookup_reps, &w.queries, |i| set.contains(i));
    assert_eq!(hits, w.member_queries);
    let (fp, fneg) = w.errors(|i| set.contains(i));
    Row {
        name: "Lapse RevokedSet (exact, Rice)".into(),
        bytes: bytes.len(),
        encoded: w.count(),
        bound_bits: information_bound_bits(w.universe, w.count()),
        build,
        decode: Some(decode),
        lookup_ns: Some(lookup_ns),
        fp: Some(fp),
        fneg: Some(fneg),
        note: String::new(),
    }
}

/// A delta adding `R / 100` random non-members to the set.
fn lapse_delta(w: &Workload, cfg: Config, seed: u64) -> (Row, Duration) {
    let n_added = (w.revoked.len() / 100).max(1);
    let mut rng = SplitMix64(seed);
    let mut added = BTreeSet::new();
    while added.len() < n_added {
        let i = rng.below(w.universe);
        if !w.member[i as usize] {
            added.insert(i);
        }
    }
    let added: Vec<u64> = added.into_iter().collect();
    let (build, bytes) = median_time(cfg.build_reps, || {
        RevokedDelta::new(1, 2, added.clone(), None)
            .expect("valid delta")
            .encode()
    });
    let (decode, delta) = median_time(cfg.build_reps, || {
        RevokedDelta::decode(&bytes).expect("decodes")
    });
    let base = RevokedSet::from_sorted(0, w.universe, w.revoked.iter().copied()).expect("valid");
    // Time only the apply: the copy it works on is made outside the clock.
    let mut apply_times = Vec::new();
    let mut applied = base.clone();
    for _ in 0..cfg.build_reps {
        let mut s = base.clone();
        let t = Instant::now();
        s.apply(&delta).expect("applies");
        apply_times.push(t.elapsed());
        applied = s;
    }
    apply_times.sort();
    let apply = apply_times[apply_times.len() / 2];
    assert_eq!(applied.len(), w.revoked.len() + n_added);
    assert!(added.iter().all(|&i| applied.contains(i)));
    let bound_bits = information_bound_bits(w.universe, n_added as u64);
    let aim = bound_bits * 1.3 / 8.0 + 64.0;
    let row = Row {
        name: format!("Lapse RevokedDelta (+{n_added})"),
        bytes: bytes.len(),
        encoded: n_added as u64,
        bound_bits,
        build,
        decode: Some(decode),
        lookup_ns: None,
        fp: None,
        fneg: None,
        note: format!(
            "own bound log2 C(U, {n_added}) = {:.0} B; aim ≤ 1.3×bound + 64 B = {aim:.0} B; apply {} ms",
            bound_bits / 8.0,
            ms(apply)
        ),
    };
    (row, apply)
}

/// Baselines measured in the same run: sorting R random `u64`s, and a
/// `BTreeSet<u64>` built from them and probed with the same queries.
struct Baseline {
    sort: Duration,
    btree_build: Duration,
    btree_lookup_ns: f64,
}

fn baseline(w: &Workload, cfg: Config) -> Baseline {
    let (sort, _) = median_time(cfg.build_reps, || {
        let mut v = w.drawn.clone();
        v.sort_unstable();
        v
    });
    let (btree_build, set) = median_time(cfg.build_reps, || {
        w.drawn.iter().copied().collect::<BTreeSet<u64>>()
    });
    let (btree_lookup_ns, hits) = time_lookups(cfg.lookup_reps, &w.queries, |i| set.contains(&i));
    assert_eq!(hits, w.member_queries);
    Baseline {
        sort,
        btree_build,
        btree_lookup_ns,
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

fn run_point(universe: u64, count: usize, seed: u64, cfg: Config) {
    let w = Workload::new(universe, count, seed, cfg.queries);
    let bound_bits = information_bound_bits(universe, count as u64);
    println!(
        "\n### U = {}, R = {} (log2 C(U,R) = {:.0} bits = {:.0} B, {:.2} bits per revoked)\n",
        group(universe),
        group(count as u64),
        bound_bits,
        bound_bits / 8.0,
        bound_bits / count as f64
    );
    let base = baseline(&w, cfg);
    let exact = lapse_exact(&w, cfg);
    let (delta, _apply) = lapse_delta(&w, cfg, seed ^ 0xDE17A);
    let rows = vec![
        exact,
        delta,
        bloom(&w, cfg),
        cascade(&w, cfg, HashAlgorithm::Sha256, "SHA-256"),
        cascade(&w, cfg, HashAlgorithm::MurmurHash3, "Murmur3"),
        clubcard(&w, cfg),
    ];
    print_table(&rows, &base, universe - count as u64);
    print_aims(&rows[0], &rows[1], &base, universe);
    print_csv(&rows, &base, universe);
}

/// The results as a Markdown table, then each row's note.
fn print_table(rows: &[Row], base: &Baseline, non_members: u64) {
    println!(
        "| structure | bytes | B/revoked | × bound | build ms | decode ms | lookup ns | FP / non-members | FN |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.3} | {:.3} | {} | {} | {} | {} | {} |",
            r.name,
            group(r.bytes as u64),
            r.bytes as f64 / r.encoded as f64,
            r.ratio(),
            ms(r.build),
            opt(r.decode, ms),
            opt(r.lookup_ns, |n| format!("{n:.1}")),
            opt(r.fp, |f| format!("{f} / {}", group(non_members))),
            opt(r.fneg, |f| f.to_string()),
        );
    }
    println!(
        "| baseline: sort R random u64 | – | – | – | {} | – | – | – | – |",
        ms(base.sort)
    );
    println!(
        "| baseline: BTreeSet<u64> | – | – | – | {} | – | {:.1} | 0 | 0 |",
        ms(base.btree_build),
        base.btree_lookup_ns
    );
    println!();
    for r in rows {
        if !r.note.is_empty() {
            println!("- {}: {}", r.name, r.note);
        }
    }
}

/// Each aim with its verdict, and the exact set's ratios to the baselines.
fn print_aims(exact: &Row, delta: &Row, base: &Baseline, universe: u64) {
    println!();
    println!(
        "Aim, exact set ≤ 1.05 × bound with 0 FP: {:.4} × bound, {} FP, {} FN → {}",
        exact.ratio(),
        exact.fp.unwrap_or(u64::MAX),
        exact.fneg.unwrap_or(u64::MAX),
        verdict(exact.ratio() <= 1.05 && exact.fp == Some(0) && exact.fneg == Some(0))
    );
    let delta_aim = delta.bound_bits * 1.3 / 8.0 + 64.0;
    println!(
        "Aim, delta ≤ 1.3 × bound + 64 B: {} B vs {:.0} B ({:.3} × its bound) → {}",
        delta.bytes,
        delta_aim,
        delta.ratio(),
        verdict(delta.bytes as f64 <= delta_aim)
    );
    if universe >= 10_000_000 {
        println!(
            "Aim, exact build ≤ 100 ms at U = 10M: {} ms → {}",
            ms(exact.build),
            verdict(exact.build <= Duration::from_millis(100))
        );
    }
    println!(
        "Ratios to baseline: exact build {:.2} × sort(R); exact lookup {:.2} × BTreeSet lookup",
        exact.build.as_secs_f64() / base.sort.as_secs_f64(),
        exact.lookup_ns.unwrap_or(f64::NAN) / base.btree_lookup_ns
    );
}

/// One machine-readable line per row (`;`-separated), for taking medians
/// across runs.
fn print_csv(rows: &[Row], base: &Baseline, universe: u64) {
    for r in rows {
        println!(
            "csv;{};{};{};{};{:.4};{:.4};{:.4};{};{};{}",
            universe,
            r.name,
            r.bytes,
            r.ratio(),
            r.build.as_secs_f64() * 1e3,
            r.decode.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
            r.lookup_ns.unwrap_or(f64::NAN),
            r.fp.map_or(String::new(), |f| f.to_string()),
            r.fneg.map_or(String::new(), |f| f.to_string()),
            r.bytes as f64 / r.encoded as f64,
        );
    }
    println!(
        "csv;{};baseline;{:.4};{:.4};{:.2}",
        universe,
        base.sort.as_secs_f64() * 1e3,
        base.btree_build.as_secs_f64() * 1e3,
        base.btree_lookup_ns
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `--quick` is accepted as well as the
    // environment variable.
    let mut cfg = Config::from_env();
    if std::env::args().any(|a| a == "--quick") && !cfg.quick {
        cfg = Config {
            quick: true,
            build_reps: 3,
            lookup_reps: 3,
            queries: 50_000,
        };
    }
    println!(
        "## Revocation filter size and speed ({}: build/decode median of {}, lookups median of {} × {} queries)",
        if cfg.quick { "quick" } else { "full" },
        cfg.build_reps,
        cfg.lookup_reps,
        group(cfg.queries as u64)
    );
    run_point(1_000_000, 10_000, 0x5EED_0001, cfg);
    run_point(10_000_000, 100_000, 0x5EED_0002, cfg);
}
