//! Fuzz `RevokedSet::decode`: a decoded set lists strictly increasing indices
//! inside its window, contains every index it lists, and re-encodes to the
//! same bytes.
//!
//! Mode byte: even → the rest as raw bytes; odd → a valid set built from the
//! rest, encoded, then damaged.

#![no_main]

use lapse_filter::RevokedSet;
use lapse_fuzz::{Source, mutate, raw_or_valid, valid_set};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (raw, rest) = raw_or_valid(data);
    let bytes = if raw {
        rest.to_vec()
    } else {
        let mut src = Source::new(rest);
        let set = valid_set(&mut src);
        let mut b = set.encode();
        assert_eq!(RevokedSet::decode(&b).expect("valid set decodes"), set);
        mutate(&mut b, &mut src);
        b
    };
    let Ok(set) = RevokedSet::decode(&bytes) else {
        return;
    };
    let mut prev = None;
    let mut n = 0;
    for i in set.iter() {
        assert!(set.contains(i), "listed index {i} not contained");
        assert!(i >= set.base() && i - set.base() < set.universe());
        assert!(prev < Some(i), "indices not strictly increasing");
        prev = Some(i);
        n += 1;
    }
    assert_eq!(n, set.len());
    let again = set.encode();
    assert_eq!(
        RevokedSet::decode(&again).expect("re-encoding decodes"),
        set
    );
    assert_eq!(again, bytes, "accepted a non-canonical encoding");
});
