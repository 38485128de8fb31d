//! Signing, verification, DPoP and external-issuer checks, including every
//! way a token must be refused and a check by a second JWT library.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lapse_credential::*;
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000;

fn key(n: u8) -> SigningKeyPair {
    SigningKeyPair::from_seed(KeyId::new(format!("key-{n}")).unwrap(), [n; 32])
}

fn claims(exp: u64) -> Claims {
    Claims {
        iss: "lapse".into(),
        sub: WorkloadId::new("spiffe://example.org/payments").unwrap(),
        aud: vec!["billing".into()],
        iat: NOW,
        nbf: NOW,
        exp,
        jti: "j1".into(),
        tenant: TenantId::new("acme").unwrap(),
        scopes: vec!["payments:read".into()],
        status: StatusClaim {
            status_list: StatusListRef {
                idx: 42,
                uri: "lapse/statuslists/1".into(),
            },
        },
        cnf: None,
        chain: None,
        agent: Default::default(),
    }
}

fn keys(pairs: &[&SigningKeyPair]) -> BTreeMap<String, [u8; 32]> {
    pairs
        .iter()
        .map(|k| (k.key_id().to_string(), k.public_key()))
        .collect()
}

fn options(now: u64) -> VerifyOptions<'static> {
    VerifyOptions {
        audience: AudienceCheck::Require("billing"),
        issuer: "lapse",
        now_seconds: now,
        leeway_seconds: 30,
    }
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

#[test]
fn a_signed_credential_verifies_and_round_trips() {
    let signer = key(1);
    let token = signer.sign(&claims(NOW + 600)).unwrap();
    let verified = verify(&token, &keys(&[&signer]), &options(NOW + 10)).unwrap();
    assert_eq!(verified.claims, claims(NOW + 600));
    assert_eq!(verified.key_id.as_str(), "key-1");
    assert_eq!(verified.claims.status_index(), StatusIndex(42));
    assert_eq!(peek_key_id(&token).unwrap().as_deref(), Some("key-1"));
    // The status claim has the Token Status List shape.
    let payload: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["status"]["status_list"]["idx"], 42);
    assert!(payload.get("cnf").is_none());
    assert!(
        !format!("{signer:?}").contains(&hex_of(&[1u8; 32])),
        "Debug must not print the private key"
    );
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn time_audience_and_issuer_are_checked_against_the_given_now() {
    let signer = key(1);
    let ring = keys(&[&signer]);
    let token = signer.sign(&claims(NOW + 600)).unwrap();
    assert_eq!(
        verify(&token, &ring, &options(NOW + 631)),
        Err(VerifyError::Expired {
            exp: NOW + 600,
            now: NOW + 631
        })
    );
    assert!(
        verify(&token, &ring, &options(NOW + 630)).is_ok(),
        "within leeway"
    );
    assert_eq!(
        verify(&token, &ring, &options(NOW - 31)),
        Err(VerifyError::NotYetValid {
            nbf: NOW,
            now: NOW - 31
        })
    );
    assert!(
        verify(&token, &ring, &options(NOW - 30)).is_ok(),
        "within leeway"
    );
    let other_audience = VerifyOptions {
        audience: AudienceCheck::Require("shipping"),
        ..options(NOW)
    };
    assert!(matches!(
        verify(&token, &ring, &other_audience),
        Err(VerifyError::WrongAudience { .. })
    ));
    let other_issuer = VerifyOptions {
        issuer: "someone-else",
        ..options(NOW)
    };
    assert!(matches!(
        verify(&token, &ring, &other_issuer),
        Err(VerifyError::WrongIssuer { .. })
    ));
}

#[test]
fn forged_and_foreign_tokens_are_refused() {
    let signer = key(1);
    let ring = keys(&[&signer]);
    let body = b64(&serde_json::to_value(claims(NOW + 600)).unwrap());

    // alg: none, no signature.
    let none = format!(
        "{}.{body}.",
        b64(&serde_json::json!({"alg": "none", "kid": "key-1"}))
    );
    assert_eq!(
        verify(&none, &ring, &options(NOW)),
        Err(VerifyError::UnsupportedAlgorithm("none".into()))
    );

    // HS256 "signed" with the public key as the HMAC secret.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("key-1".into());
    let hs256 = jsonwebtoken::encode(
        &header,
        &claims(NOW + 600),
        &jsonwebtoken::EncodingKey::from_secret(&signer.public_key()),
    )
    .unwrap();
    assert_eq!(
        verify(&hs256, &ring, &options(NOW)),
        Err(VerifyError::UnsupportedAlgorithm("HS256".into()))
    );

    // No kid, unknown kid, another key's signature, a tampered payload.
    let der = {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        ed25519_dalek::SigningKey::from_bytes(&[1u8; 32])
            .to_pkcs8_der()
            .unwrap()
    };
    let mut typed = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    typed.typ = Some(CREDENTIAL_TYPE.into());
    let no_kid = jsonwebtoken::encode(
        &typed,
        &claims(NOW + 600),
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        verify(&no_kid, &ring, &options(NOW)),
        Err(VerifyError::MissingKeyId)
    );
    let stranger = key(2).sign(&claims(NOW + 600)).unwrap();
    assert_eq!(
        verify(&stranger, &ring, &options(NOW)),
        Err(VerifyError::UnknownKeyId("key-2".into()))
    );
    let token = signer.sign(&claims(NOW + 600)).unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut tampered = claims(NOW + 600);
    tampered.scopes.push("payments:admin".into());
    parts[1] = b64(&serde_json::to_value(tampered).unwrap());
    assert_eq!(
        verify(&parts.join("."), &ring, &options(NOW)),
        Err(VerifyError::BadSignature)
    );
    // A key id whose public key is someone else's: the signature fails.
    let mut swapped = ring.clone();
    swapped.insert("key-1".into(), key(3).public_key());
    assert_eq!(
        verify(&token, &swapped, &options(NOW)),
        Err(VerifyError::BadSignature)
    );

    for garbage in ["", "a.b", "a.b.c.d", "!!!.???.###", "e30.e30.e30"] {
        assert!(
            matches!(
                verify(garbage, &ring, &options(NOW)),
                Err(VerifyError::Malformed(_)) | Err(VerifyError::UnsupportedAlgorithm(_))
            ),
            "{garbage:?}"
        );
    }
}

// jwt-simple checks times against the real clock and takes std sets, so
// this one test reads the clock the crate itself never reads.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
#[test]
fn a_second_jwt_library_accepts_lapse_credentials() {
    use jwt_simple::prelude::*;
    let signer = key(7);
    // jwt-simple reads the real clock, so this credential is valid for years.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut c = claims(now + 10 * 365 * 24 * 3600);
    c.iat = now - 60;
    c.nbf = now - 60;
    let token = signer.sign(&c).unwrap();
    let public = Ed25519PublicKey::from_bytes(&signer.public_key()).unwrap();
    let options = VerificationOptions {
        allowed_audiences: Some(HashSet::from_strings(&["billing"])),
        allowed_issuers: Some(HashSet::from_strings(&["lapse"])),
        ..Default::default()
    };
    let verified = public
        .verify_token::<serde_json::Value>(&token, Some(options))
        .unwrap();
    assert_eq!(
        verified.subject.as_deref(),
        Some("spiffe://example.org/payments")
    );
    assert_eq!(verified.custom["tenant"], "acme");
    // And it refuses one signed by another key.
    let forged = key(8).sign(&c).unwrap();
    assert!(
        public
            .verify_token::<serde_json::Value>(&forged, None)
            .is_err()
    );
}

#[test]
fn jwk_thumbprints_follow_rfc_7638() {
    let jwk = key(1).public_jwk();
    let expected = {
        use sha2::Digest;
        let canonical =
            serde_json::to_string(&serde_json::json!({"crv": "Ed25519", "kty": "OKP", "x": jwk.x}))
                .unwrap();
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
    };
    assert_eq!(jwk.thumbprint(), expected);
    assert_eq!(jwk.public_key().unwrap(), key(1).public_key());
    // kid, alg and use do not change the thumbprint.
    let mut bare = jwk.clone();
    bare.kid = None;
    bare.alg = None;
    assert_eq!(bare.thumbprint(), jwk.thumbprint());
    let mut wrong = jwk;
    wrong.crv = "P-256".into();
    assert!(wrong.public_key().is_err());
}

const URL: &str = "https://broker.example/refresh";

fn expect(access_token: Option<&str>, now: u64) -> DpopExpectation<'_> {
    DpopExpectation {
        method: "POST",
        url: URL,
        access_token,
        now_seconds: now,
        max_age_seconds: 60,
        leeway_seconds: 5,
    }
}

#[test]
fn dpop_proofs_are_bound_to_method_url_time_token_and_key() {
    let holder = key(5);
    let proof = make_proof(&holder, "POST", URL, Some("tok"), NOW, "p1").unwrap();
    let verified = verify_proof(&proof, &expect(Some("tok"), NOW)).unwrap();
    assert_eq!(verified.jkt, holder.public_jwk().thumbprint());
    assert_eq!(verified.jti, "p1");

    let with_query = make_proof(
        &holder,
        "POST",
        &format!("{URL}?x=1#f"),
        Some("tok"),
        NOW,
        "p2",
    )
    .unwrap();
    assert!(
        verify_proof(&with_query, &expect(Some("tok"), NOW)).is_ok(),
        "query and fragment are ignored"
    );

    let get = make_proof(&holder, "GET", URL, Some("tok"), NOW, "p3").unwrap();
    assert!(matches!(
        verify_proof(&get, &expect(Some("tok"), NOW)),
        Err(DpopError::WrongMethod { .. })
    ));
    let elsewhere = make_proof(
        &holder,
        "POST",
        "https://evil.example/refresh",
        Some("tok"),
        NOW,
        "p4",
    )
    .unwrap();
    assert!(matches!(
        verify_proof(&elsewhere, &expect(Some("tok"), NOW)),
        Err(DpopError::WrongUrl { .. })
    ));
    assert!(matches!(
        verify_proof(&proof, &expect(Some("tok"), NOW + 66)),
        Err(DpopError::Stale { .. })
    ));
    assert!(matches!(
        verify_proof(&proof, &expect(Some("tok"), NOW - 6)),
        Err(DpopError::Stale { .. })
    ));
    let no_ath = make_proof(&holder, "POST", URL, None, NOW, "p5").unwrap();
    assert_eq!(
        verify_proof(&no_ath, &expect(Some("tok"), NOW)),
        Err(DpopError::MissingAccessTokenHash)
    );
    assert_eq!(
        verify_proof(&proof, &expect(Some("other"), NOW)),
        Err(DpopError::WrongAccessTokenHash)
    );

    // A tampered claim breaks the signature; a private key in the header is refused.
    let parts: Vec<&str> = proof.split('.').collect();
    let claims = b64(
        &serde_json::json!({"jti": "p1", "htm": "POST", "htu": URL, "iat": NOW + 1, "ath": access_token_hash("tok")}),
    );
    let tampered = format!("{}.{claims}.{}", parts[0], parts[2]);
    assert_eq!(
        verify_proof(&tampered, &expect(Some("tok"), NOW)),
        Err(DpopError::BadSignature)
    );
    let mut jwk = serde_json::to_value(holder.public_jwk()).unwrap();
    jwk["d"] = "c2VjcmV0".into();
    let leaky = format!(
        "{}.{}.{}",
        b64(&serde_json::json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk})),
        parts[1],
        parts[2]
    );
    assert_eq!(
        verify_proof(&leaky, &expect(Some("tok"), NOW)),
        Err(DpopError::PrivateKeyInProof)
    );
    let wrong_type = format!(
        "{}.{}.{}",
        b64(&serde_json::json!({"typ": "JWT", "alg": "EdDSA"})),
        parts[1],
        parts[2]
    );
    assert_eq!(
        verify_proof(&wrong_type, &expect(Some("tok"), NOW)),
        Err(DpopError::WrongType)
    );
}

#[test]
fn replayed_proofs_are_refused_within_the_window() {
    let mut cache = ReplayCache::new(2, 60);
    cache.check_and_remember("a", NOW).unwrap();
    assert_eq!(
        cache.check_and_remember("a", NOW + 1),
        Err(DpopError::Replayed("a".into()))
    );
    cache.check_and_remember("b", NOW).unwrap();
    assert_eq!(
        cache.check_and_remember("c", NOW + 1),
        Err(DpopError::CacheFull)
    );
    // After the window the old entries are forgotten.
    cache.check_and_remember("c", NOW + 61).unwrap();
    assert_eq!(cache.len(), 1);
    cache.check_and_remember("a", NOW + 62).unwrap();
}

#[test]
fn external_issuer_tokens_are_checked_against_their_jwks() {
    let ci = key(9);
    let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ci.public_jwk().x, "kid": "ci-1", "alg": "EdDSA"}]});
    let issuer = ExternalIssuer::from_jwks_json(
        "https://ci.example".into(),
        "lapse".into(),
        &jwks.to_string(),
    )
    .unwrap();
    let sign = |claims: serde_json::Value, kid: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid.into());
        let der = {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            ed25519_dalek::SigningKey::from_bytes(&[9u8; 32])
                .to_pkcs8_der()
                .unwrap()
        };
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
        )
        .unwrap()
    };
    let good = serde_json::json!({"iss": "https://ci.example", "aud": "lapse", "sub": "repo/app", "iat": NOW - 5, "exp": NOW + 60});
    let claims = issuer.verify(&sign(good.clone(), "ci-1"), NOW, 5).unwrap();
    assert_eq!(claims["sub"], "repo/app");

    let mut wrong_issuer = good.clone();
    wrong_issuer["iss"] = "https://other.example".into();
    assert!(matches!(
        issuer.verify(&sign(wrong_issuer, "ci-1"), NOW, 5),
        Err(VerifyError::WrongIssuer { .. })
    ));
    let mut wrong_audience = good.clone();
    wrong_audience["aud"] = serde_json::json!(["someone"]);
    assert!(matches!(
        issuer.verify(&sign(wrong_audience, "ci-1"), NOW, 5),
        Err(VerifyError::WrongAudience { .. })
    ));
    assert!(matches!(
        issuer.verify(&sign(good.clone(), "ci-1"), NOW + 70, 5),
        Err(VerifyError::Expired { .. })
    ));
    assert!(matches!(
        issuer.verify(&sign(good.clone(), "ci-2"), NOW, 5),
        Err(VerifyError::UnknownKeyId(_))
    ));
    let forged = key(10).sign(&self::claims(NOW + 60)).unwrap();
    assert!(issuer.verify(&forged, NOW, 5).is_err());
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none"})),
        b64(&good)
    );
    assert_eq!(
        issuer.verify(&none, NOW, 5),
        Err(VerifyError::UnsupportedAlgorithm("none".into()))
    );
}

proptest! {
    #[test]
    fn untrusted_input_never_panics(text in ".{0,300}", dots in proptest::collection::vec("[A-Za-z0-9_-]{0,40}", 0..5)) {
        let ring = keys(&[&key(1)]);
        let joined = dots.join(".");
        for input in [text.as_str(), joined.as_str()] {
            prop_assert!(verify(input, &ring, &options(NOW)).is_err());
            prop_assert!(verify_proof(input, &expect(None, NOW)).is_err());
            let _ = peek_key_id(input);
        }
    }
}
