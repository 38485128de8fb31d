//! Fuzz `RevokedDelta::decode`: a decoded delta re-encodes to the same bytes,
//! and applying it to small fixed sets never panics (on success the result
//! is checked, on failure the set must be unchanged).
//!
//! Mode byte: even → the rest as raw bytes; odd → a valid delta built from
//! the rest, encoded, then damaged.

#![no_main]

use lapse_filter::RevokedDelta;
use lapse_fuzz::{Source, check_apply, fixed_sets, mutate, raw_or_valid, valid_delta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (raw, rest) = raw_or_valid(data);
    let bytes = if raw {
        rest.to_vec()
    } else {
        let mut src = Source::new(rest);
        let delta = valid_delta(&mut src);
        let mut b = delta.encode();
        assert_eq!(
            RevokedDelta::decode(&b).expect("valid delta decodes"),
            delta
        );
        mutate(&mut b, &mut src);
        b
    };
    let Ok(delta) = RevokedDelta::decode(&bytes) else {
        return;
    };
    assert!(delta.from_epoch() < delta.to_epoch());
    assert!(delta.added().windows(2).all(|w| w[0] < w[1]));
    let again = delta.encode();
    assert_eq!(
        RevokedDelta::decode(&again).expect("re-encoding decodes"),
        delta
    );
    assert_eq!(again, bytes, "accepted a non-canonical encoding");
    for set in fixed_sets() {
        check_apply(&set, &delta);
    }
});
