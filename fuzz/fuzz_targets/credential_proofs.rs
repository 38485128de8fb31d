//! Fuzz credential parsing with proofs: a token and a DPoP proof (and the
//! method and URL the proof is checked against) through every check the
//! `lapse-credential` crate offers a presented token: `peek_key_id`,
//! `verify`, `presented`, break-glass verification, an external issuer's
//! `verify`, `verify_proof` with its replay cache, and `access_token_hash`.
//! Nothing may panic, and what one check accepts must agree with the
//! others.
//!
//! Input: a flags byte (`credentials::flags`), then six segments split on
//! `0x00`: token header JSON, token claims JSON, proof header JSON, proof
//! claims JSON, method, URL. The target encodes and signs header and
//! claims itself (so the claims are read, not only the signature), or,
//! with the raw flags, takes segment 0 (2) as the whole token (proof).
//! `LAPSE_FUZZ_TRACE=1` prints every verdict.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use lapse_credential::break_glass::{
    BREAK_GLASS_ISSUER, BreakGlassOptions, MAX_TTL_SECONDS, is_break_glass, verify_break_glass,
};
use lapse_credential::presented::{MAX_PRESENTED_BYTES, presented};
use lapse_credential::{
    AudienceCheck, DpopError, DpopExpectation, ExternalIssuer, ReplayCache, VerifyOptions,
    access_token_hash, peek_key_id, verify, verify_proof,
};
use lapse_fuzz::credentials::{
    CLUSTER_KID, EXTERNAL_AUDIENCE, EXTERNAL_ISSUER, NOW, Signer, assemble, break_glass_ring,
    cluster_ring, external_jwks, flags, segments,
};
use libfuzzer_sys::fuzz_target;

const LEEWAY: u64 = 30;
const DPOP_MAX_AGE: u64 = 60;
const DPOP_LEEWAY: u64 = 5;

struct Fixture {
    ring: BTreeMap<String, [u8; 32]>,
    break_glass: BTreeMap<String, [u8; 32]>,
    /// Requires `kid`.
    external: ExternalIssuer,
    /// One Ed25519 key, taken for a token that names none.
    external_lenient: ExternalIssuer,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let external =
            ExternalIssuer::from_jwks_json(EXTERNAL_ISSUER.into(), EXTERNAL_AUDIENCE.into(), &external_jwks())
                .expect("the JWKS parses");
        let single = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": lapse_fuzz::credentials::cluster_key().public_jwk().x},
        ]});
        let mut external_lenient = ExternalIssuer::from_jwks_json(
            EXTERNAL_ISSUER.into(),
            EXTERNAL_AUDIENCE.into(),
            &single.to_string(),
        )
        .expect("the JWKS parses");
        external_lenient.require_key_id = false;
        external_lenient.max_token_age_seconds = 60;
        Fixture {
            ring: cluster_ring(),
            break_glass: break_glass_ring(),
            external,
            external_lenient,
        }
    })
}

/// `LAPSE_FUZZ_TRACE=1` prints every verdict (to check what seeds reach).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("LAPSE_FUZZ_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let seg = segments(rest, 6);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let signer = match (flags >> flags::SIGNER_SHIFT) & 3 {
        0 => Signer::Cluster,
        1 => Signer::BreakGlass,
        2 => Signer::Es256,
        _ => Signer::Stranger,
    };
    let mut token = if flags & flags::TOKEN_RAW != 0 {
        text(seg[0])
    } else {
        assemble(seg[0], seg[1], signer)
    };
    if flags & flags::DAMAGE != 0 {
        // Change the last character of the signature (its padding bits
        // included): a signature that is still base64url but not the one
        // signed.
        if let Some(last) = token.pop() {
            token.push(if last == 'A' { 'B' } else { 'A' });
        }
    }
    let proof_signer = if flags & flags::PROOF_BY_CLUSTER != 0 {
        Signer::Cluster
    } else {
        Signer::Dpop
    };
    let proof = if flags & flags::PROOF_RAW != 0 {
        text(seg[2])
    } else {
        assemble(seg[2], seg[3], proof_signer)
    };
    let method = text(seg[4]);
    let url = text(seg[5]);
    let f = fixture();

    // The kid, read without verifying.
    let peeked = peek_key_id(&token);

    // A cluster credential.
    let audience = if flags & flags::AUDIENCE != 0 {
        AudienceCheck::Require("billing")
    } else {
        AudienceCheck::Any
    };
    let options = VerifyOptions {
        audience,
        issuer: lapse_credential::DEFAULT_ISSUER,
        now_seconds: NOW,
        leeway_seconds: LEEWAY,
    };
    let verified = verify(&token, &f.ring, &options);
    if let Ok(v) = &verified {
        assert_eq!(v.key_id.as_str(), CLUSTER_KID);
        assert_eq!(
            peeked.as_ref().ok().cloned().flatten().as_deref(),
            Some(CLUSTER_KID)
        );
        assert_eq!(v.claims.iss, lapse_credential::DEFAULT_ISSUER);
        assert!(
            NOW <= v.claims.exp.saturating_add(LEEWAY),
            "accepted expired"
        );
        assert!(
            NOW.saturating_add(LEEWAY) >= v.claims.nbf,
            "accepted not yet valid"
        );
        assert!(v.claims.iat <= NOW + LEEWAY, "accepted from the future");
        if let AudienceCheck::Require(a) = audience {
            assert!(v.claims.aud.iter().any(|x| x == a));
        }
        assert!(
            !is_break_glass(&token),
            "a credential that is also break-glass"
        );
        assert_eq!(
            verify(&token, &f.ring, &options).as_ref(),
            Ok(v),
            "not deterministic"
        );
    }

    // The same token presented for revocation: no clock, but the same
    // signature check, so it proves what `verify` read.
    let shown = presented(&token, &f.ring);
    if let Ok(v) = &verified {
        if token.len() <= MAX_PRESENTED_BYTES {
            let p = shown
                .as_ref()
                .expect("a verified credential can be presented");
            assert_eq!(p.index, v.claims.status_index());
            assert_eq!(p.tenant, v.claims.tenant);
            assert_eq!(p.key_id, v.key_id);
        }
    }
    if let Ok(p) = &shown {
        assert_eq!(p.key_id.as_str(), CLUSTER_KID);
    }

    // A break-glass credential.
    let bg_options = BreakGlassOptions {
        now_seconds: NOW,
        leeway_seconds: LEEWAY,
        max_ttl_seconds: if flags & 1 == 0 { MAX_TTL_SECONDS } else { 600 },
    };
    let bg = verify_break_glass(&token, &f.break_glass, &bg_options);
    if let Ok(v) = &bg {
        assert!(is_break_glass(&token));
        assert_eq!(v.claims.iss, BREAK_GLASS_ISSUER);
        assert_eq!(v.claims.lapse_break_glass.key, v.key_id.as_str());
        assert!(v.claims.exp >= v.claims.iat);
        assert!(v.claims.exp - v.claims.iat <= bg_options.max_ttl_seconds.min(MAX_TTL_SECONDS));
        assert!(!v.claims.aud.is_empty());
        assert!(verified.is_err(), "accepted as both kinds");
    }

    // An external issuer's attestation.
    for issuer in [&f.external, &f.external_lenient] {
        if let Ok(claims) = issuer.verify(&token, NOW, LEEWAY) {
            assert_eq!(
                claims.get("iss").and_then(|v| v.as_str()),
                Some(EXTERNAL_ISSUER)
            );
            let iat = claims
                .get("iat")
                .and_then(|v| v.as_u64())
                .expect("iat checked");
            assert!(iat <= NOW + LEEWAY);
            assert!(NOW - iat.min(NOW) <= issuer.max_token_age_seconds + LEEWAY);
        }
    }

    // The DPoP proof, for the token or for no token.
    let ath = access_token_hash(&token);
    assert_eq!(ath.len(), 43);
    let bound = flags & flags::BOUND != 0;
    let expected = DpopExpectation {
        method: &method,
        url: &url,
        access_token: bound.then_some(token.as_str()),
        now_seconds: NOW,
        max_age_seconds: DPOP_MAX_AGE,
        leeway_seconds: DPOP_LEEWAY,
    };
    let checked = verify_proof(&proof, &expected);
    if trace() {
        eprintln!(
            "verify: {:?}\npresented: {:?}\nbreak-glass: {:?}\nexternal: {:?}\nproof: {:?}",
            verified.as_ref().map(|v| v.claims.status_index()),
            shown,
            bg.as_ref().map(|v| &v.key_id),
            f.external.verify(&token, NOW, LEEWAY).map(|c| c.len()),
            checked,
        );
    }
    match checked {
        Ok(p) => {
            assert!(!p.jti.is_empty() && p.jti.len() <= 256);
            assert!(p.iat + DPOP_MAX_AGE + DPOP_LEEWAY >= NOW && p.iat <= NOW + DPOP_LEEWAY);
            assert_eq!(p.jkt.len(), 43);
            // A replay is refused; the cache stays bounded.
            let mut cache = ReplayCache::new(2, DPOP_MAX_AGE);
            cache.check_and_remember(&p.jti, NOW).expect("first use");
            assert_eq!(
                cache.check_and_remember(&p.jti, NOW),
                Err(DpopError::Replayed(p.jti.clone()))
            );
            assert!(cache.check_and_remember(&p.jti, NOW + DPOP_MAX_AGE).is_ok());
        }
        Err(DpopError::Replayed(_) | DpopError::CacheFull) => {
            panic!("verify_proof keeps no replay state")
        }
        Err(_) => {}
    }
});
