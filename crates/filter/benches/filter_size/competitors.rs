//! The structures `RevokedSet` is compared with: a Bloom filter
//! (`bloomfilter`), Mozilla's Bloom filter cascade (`rust_cascade`) and
//! Mozilla's ribbon-based `clubcard`, each built, encoded, decoded and
//! queried over the same workload as Lapse's own set.

use bloomfilter::Bloom;
use clubcard::builder::{ApproximateRibbon, ClubcardBuilder, ExactRibbon};
use clubcard::{AsQuery, Clubcard, Equation, Filterable, Membership, Queryable};
use lapse_filter::information_bound_bits;
use rust_cascade::{Cascade, CascadeBuilder, HashAlgorithm};

use super::{Config, Row, SplitMix64, Workload, group, median_time, mix64, time_lookups};

pub fn bloom(w: &Workload, cfg: Config) -> Row {
    const FP_RATE: f64 = 1e-6;
    let build_bloom = |seed: &[u8; 32]| {
        let mut b: Bloom<u64> =
            Bloom::new_for_fp_rate_with_seed(w.revoked.len(), FP_RATE, seed).expect("params");
        for i in &w.revoked {
            b.set(i);
        }
        b
    };
    // `bloomfilter` keys its two SipHashers with the two halves of the seed:
    // the seed must have distinct halves (see `equal_halves_fp` below).
    let mut rng = SplitMix64(0xB100_F11E);
    let mut seed = [0u8; 32];
    for c in seed.chunks_mut(8) {
        c.copy_from_slice(&rng.next().to_le_bytes());
    }
    let (build, bytes) = median_time(cfg.build_reps, || build_bloom(&seed).to_bytes());
    let (decode, b) = median_time(cfg.build_reps, || {
        Bloom::<u64>::from_bytes(bytes.clone()).expect("decodes")
    });
    let (lookup_ns, hits) = time_lookups(cfg.lookup_reps, &w.queries, |i| b.check(&i));
    assert!(hits >= w.member_queries);
    let (fp, fneg) = w.errors(|i| b.check(&i));
    let non_members = w.universe - w.count();
    // The same filter with a seed whose halves are equal (e.g. `[x; 32]`):
    // both hashes coincide and the k probes collapse onto one line.
    let degenerate = build_bloom(&[0x5A; 32]);
    let (equal_halves_fp, _) = w.errors(|i| degenerate.check(&i));
    Row {
        name: "bloomfilter 3 (fp 1e-6)".into(),
        bytes: bytes.len(),
        encoded: w.count(),
        bound_bits: information_bound_bits(w.universe, w.count()),
        build,
        decode: Some(decode),
        lookup_ns: Some(lookup_ns),
        fp: Some(fp),
        fneg: Some(fneg),
        note: format!(
            "{} hash functions; expected FP ≈ {:.1}; approximate: R·log2(1/ε) = {:.0} B is its own bound; \
             with a seed of two equal halves ([0x5A; 32]) the same filter gives {} FP",
            b.number_of_hash_functions(),
            non_members as f64 * FP_RATE,
            w.count() as f64 * (1.0 / FP_RATE).log2() / 8.0,
            group(equal_halves_fp)
        ),
    }
}

pub fn cascade(w: &Workload, cfg: Config, alg: HashAlgorithm, label: &str) -> Row {
    let salt = b"lapse-bench-salt".to_vec();
    let r = w.revoked.len();
    let excluded = w.universe as usize - r;
    let (build, bytes) = median_time(cfg.build_reps, || {
        let mut b = CascadeBuilder::new(alg, salt.clone(), r, excluded);
        for &i in &w.revoked {
            b.include(i.to_le_bytes().to_vec()).expect("include");
        }
        for (i, &m) in w.member.iter().enumerate() {
            if !m {
                b.exclude((i as u64).to_le_bytes().to_vec())
                    .expect("exclude");
            }
        }
        b.finalize()
            .expect("finalize")
            .to_bytes()
            .expect("serialises")
    });
    let (decode, c) = median_time(cfg.build_reps, || {
        Cascade::from_bytes(bytes.clone())
            .expect("decodes")
            .expect("not empty")
    });
    let has = |i: u64| c.has(i.to_le_bytes().to_vec());
    let (lookup_ns, hits) = time_lookups(cfg.lookup_reps, &w.queries, has);
    assert_eq!(hits, w.member_queries);
    let (fp, fneg) = w.errors(has);
    let layers = c.to_string().lines().count().saturating_sub(1);
    Row {
        name: format!("rust_cascade 1.5 ({label})"),
        bytes: bytes.len(),
        encoded: w.count(),
        bound_bits: information_bound_bits(w.universe, w.count()),
        build,
        decode: Some(decode),
        lookup_ns: Some(lookup_ns),
        fp: Some(fp),
        fneg: Some(fneg),
        note: format!("{layers} Bloom layers"),
    }
}

/// Width of a clubcard equation in 64-bit words (Firefox's CRLite uses 4).
const CC_W: usize = 4;

/// A status index as a clubcard item; hashed with a keyed splitmix64.
struct CcItem {
    key: [u8; 8],
    included: bool,
}

impl CcItem {
    fn new(index: u64, included: bool) -> Self {
        Self {
            key: index.to_le_bytes(),
            included,
        }
    }
}

impl AsQuery<CC_W> for CcItem {
    fn as_query(&self, m: usize) -> Equation<CC_W> {
        const KEY: u64 = 0x1A95_EC1B_CA4D_0001;
        let x = u64::from_le_bytes(self.key) ^ KEY;
        let word = |j: u64| mix64(x.wrapping_add(j.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let mut a = [0u64; CC_W];
        for (j, w) in a.iter_mut().enumerate() {
            *w = word(j as u64 + 1);
        }
        a[0] |= 1;
        let s = (word(0) % (m.max(1) as u64)) as usize;
        Equation::homogeneous(s, a)
    }

    fn block(&self) -> &[u8] {
        &[]
    }

    fn discriminant(&self) -> &[u8] {
        &self.key
    }
}

impl Filterable<CC_W> for CcItem {
    fn included(&self) -> bool {
        self.included
    }
}

impl Queryable<CC_W> for CcItem {
    /// The universe size.
    type UniverseMetadata = u64;
    type PartitionMetadata = ();

    fn in_universe(&self, universe: &u64) -> bool {
        u64::from_le_bytes(self.key) < *universe
    }
}

type CcFilter = Clubcard<CC_W, u64, ()>;

pub fn clubcard(w: &Workload, cfg: Config) -> Row {
    let (build, bytes) = median_time(cfg.build_reps, || {
        let mut b = ClubcardBuilder::<CC_W, CcItem>::new();
        let mut approx = b.new_approx_builder(&[]);
        for &i in &w.revoked {
            approx.insert(CcItem::new(i, true));
        }
        approx.set_universe_size(w.universe as usize);
        b.collect_approx_ribbons(vec![ApproximateRibbon::from(approx)]);
        let mut exact = b.new_exact_builder(&[]);
        for (i, &m) in w.member.iter().enumerate() {
            exact.insert(CcItem::new(i as u64, m));
        }
        let exact = ExactRibbon::from(exact);
        b.collect_exact_ribbons(vec![exact]);
        let card: CcFilter = b.build::<CcItem>(w.universe, ());
        bincode::serialize(&card).expect("serialises")
    });
    let (decode, card) = median_time(cfg.build_reps, || {
        bincode::deserialize::<CcFilter>(&bytes).expect("decodes")
    });
    let has = |i: u64| card.contains(&CcItem::new(i, false)) == Membership::Member;
    let (lookup_ns, hits) = time_lookups(cfg.lookup_reps, &w.queries, has);
    assert_eq!(hits, w.member_queries);
    let (fp, fneg) = w.errors(has);
    let exceptions: usize = card.index().values().map(|e| e.exceptions.len()).sum();
    let words: usize =
        card.approx_filter.iter().map(Vec::len).sum::<usize>() + card.exact_filter.len();
    Row {
        name: "clubcard 0.3 (ribbon, W=4)".into(),
        bytes: bytes.len(),
        encoded: w.count(),
        bound_bits: information_bound_bits(w.universe, w.count()),
        build,
        decode: Some(decode),
        lookup_ns: Some(lookup_ns),
        fp: Some(fp),
        fneg: Some(fneg),
        note: format!(
            "bincode 1; matrices {} B, {exceptions} exceptions",
            words * 8
        ),
    }
}
