//! Edge cases of the credential format: claim validation, truncated tokens,
//! the exact wire shape, DPoP corner cases, and external issuers with RS256,
//! ES256, EdDSA and refused HMAC keys.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lapse_credential::*;

const NOW: u64 = 1_800_000_000;

/// Test-only keys, generated once with openssl; they protect nothing.
/// PKCS#1 DER.
const RS256_TEST_KEY: &[u8] = include_bytes!("fixtures/external-rs256-test-key.der");
const RS256_TEST_N: &str = "y_iIDx1nI_dhz-cHG-k7_FevionvsCa_V1jF1bKR0ThAlaU6WrcqU6Fet4VZXOyTyFws7lb3Q2hZmUhTl-PQsGrjwMntGeZPzZdMmkfqtDxTi-p4QSwdiblkElLL8Mq7nvP0U3ibQPXGyv1Yg2Up8adXky4eBiLxQ71mIJUUUHxC-Glb_iOR1Mf4xdxEFE4pgTv_a5wO4zyccw2U0r_1H-rl-1FBf2m8S7eK5OdGgOiPLpWk8kgv8bKZi_ft8OWSENeQgEjlDseXFk5sHhcZxgMuP_FnjRpRzT6hQ0zkyI3yQz3IHVPmfzxGV9QqA8Hc-4wS81Ckxith--9B8pN6yQ";
/// PKCS#8 DER.
const ES256_TEST_KEY: &[u8] = include_bytes!("fixtures/external-es256-test-key.der");
const ES256_TEST_X: &str = "3G3mRhlZG2lICIXMoISaM41BFRN3X7ocJXoGSE_W6_U";
const ES256_TEST_Y: &str = "iPKLNpkf5D6b8VLC0rNGvuET-z0A8ZHU3CMiky-d3p4";

fn key(n: u8) -> SigningKeyPair {
    SigningKeyPair::from_seed(KeyId::new(format!("key-{n}")).unwrap(), [n; 32])
}

fn claims(exp: u64) -> Claims {
    Claims {
        iss: "lapse".into(),
        sub: WorkloadId::new("spiffe://example.org/payments").unwrap(),
        aud: vec!["billing".into(), "shipping".into()],
        iat: NOW,
        nbf: NOW,
        exp,
        jti: "j1".into(),
        tenant: TenantId::new("acme").unwrap(),
        scopes: vec!["payments:read".into(), "payments:write".into()],
        status: StatusClaim {
            status_list: StatusListRef {
                idx: 7,
                uri: "https://lapse.example/status/acme".into(),
            },
        },
        cnf: None,
        chain: None,
        agent: Default::default(),
    }
}

fn ring(pairs: &[&SigningKeyPair]) -> BTreeMap<String, [u8; 32]> {
    pairs
        .iter()
        .map(|k| (k.key_id().to_string(), k.public_key()))
        .collect()
}

fn options(now: u64, leeway: u64) -> VerifyOptions<'static> {
    VerifyOptions {
        audience: AudienceCheck::Require("billing"),
        issuer: "lapse",
        now_seconds: now,
        leeway_seconds: leeway,
    }
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

fn part(token: &str, n: usize) -> serde_json::Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(n).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// Sign arbitrary JSON claims with `key(n)`'s private key under `kid`.
fn sign_json(n: u8, kid: &str, claims: &serde_json::Value) -> String {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let der = ed25519_dalek::SigningKey::from_bytes(&[n; 32])
        .to_pkcs8_der()
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.typ = Some(CREDENTIAL_TYPE.into());
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap()
}

#[test]
fn the_wire_shape_is_as_specified() {
    let signer = key(1);
    let mut c = claims(NOW + 600);
    c.cnf = Some(Confirmation { jkt: "abc".into() });
    let token = signer.sign(&c).unwrap();
    let header = part(&token, 0);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "lapse+jwt");
    assert_eq!(header["kid"], "key-1");
    let payload = part(&token, 1);
    assert_eq!(payload["aud"], serde_json::json!(["billing", "shipping"]));
    assert_eq!(
        payload["scopes"],
        serde_json::json!(["payments:read", "payments:write"])
    );
    assert!(payload.get("scope").is_none());
    assert_eq!(payload["sub"], "spiffe://example.org/payments");
    assert_eq!(payload["tenant"], "acme");
    assert_eq!(payload["cnf"]["jkt"], "abc");
    assert_eq!(
        payload["status"],
        serde_json::json!({"status_list": {"idx": 7, "uri": "https://lapse.example/status/acme"}})
    );
    let verified = verify(&token, &ring(&[&signer]), &options(NOW, 0)).unwrap();
    assert_eq!(verified.claims, c);
    // The raw signature is plain Ed25519 over the message.
    use ed25519_dalek::Verifier;
    let raw = signer.sign_raw(b"hello");
    ed25519_dalek::VerifyingKey::from_bytes(&signer.public_key())
        .unwrap()
        .verify(b"hello", &ed25519_dalek::Signature::from_bytes(&raw))
        .unwrap();
}

#[test]
fn debug_never_shows_the_private_key() {
    let seed = [0xA5u8; 32];
    let signer = SigningKeyPair::from_seed(KeyId::new("k").unwrap(), seed);
    let shown = format!("{signer:?} {signer:#?}");
    assert!(!shown.contains(&format!("{seed:?}")));
    assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(seed)));
    assert!(!shown.contains(&"a5".repeat(32)));
    assert!(!shown.contains("165, 165, 165"));
    assert!(shown.contains("SigningKeyPair"));
}

#[test]
fn claims_that_do_not_parse_are_bad_claims() {
    let signer = key(1);
    let keys = ring(&[&signer]);
    let good = serde_json::to_value(claims(NOW + 600)).unwrap();
    let mut not_spiffe = good.clone();
    not_spiffe["sub"] = "payments".into();
    let mut bad_tenant = good.clone();
    bad_tenant["tenant"] = "ACME".into();
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut negative_exp = good.clone();
    negative_exp["exp"] = (-1).into();
    let mut string_aud = good.clone();
    string_aud["aud"] = "billing".into();
    for (what, body) in [
        ("sub", not_spiffe),
        ("tenant", bad_tenant),
        ("no exp", no_exp),
        ("negative exp", negative_exp),
        ("aud string", string_aud),
    ] {
        let token = sign_json(1, "key-1", &body);
        assert!(
            matches!(
                verify(&token, &keys, &options(NOW, 0)),
                Err(VerifyError::BadClaims(_))
            ),
            "{what}: {:?}",
            verify(&token, &keys, &options(NOW, 0))
        );
    }
    // A signed payload that is not a claims object at all.
    assert!(matches!(
        verify(
            &sign_json(1, "key-1", &serde_json::json!([1, 2])),
            &keys,
            &options(NOW, 0)
        ),
        Err(VerifyError::Malformed(_) | VerifyError::BadClaims(_))
    ));
    // The unaltered claims pass, so the failures above are about the claims.
    assert!(verify(&sign_json(1, "key-1", &good), &keys, &options(NOW, 0)).is_ok());
}

#[test]
fn not_yet_valid_with_and_without_leeway() {
    let signer = key(1);
    let keys = ring(&[&signer]);
    let token = signer.sign(&claims(NOW + 600)).unwrap();
    assert_eq!(
        verify(&token, &keys, &options(NOW - 1, 0)),
        Err(VerifyError::NotYetValid {
            nbf: NOW,
            now: NOW - 1
        })
    );
    assert!(verify(&token, &keys, &options(NOW - 1, 1)).is_ok());
    assert!(verify(&token, &keys, &options(NOW, 0)).is_ok());
    assert!(
        verify(&token, &keys, &options(NOW + 600, 0)).is_ok(),
        "exp is inclusive"
    );
    assert_eq!(
        verify(&token, &keys, &options(NOW + 601, 0)),
        Err(VerifyError::Expired {
            exp: NOW + 600,
            now: NOW + 601
        })
    );
    // Huge leeway or now never overflow.
    assert!(verify(&token, &keys, &options(u64::MAX, u64::MAX)).is_ok());
    assert!(matches!(
        verify(&token, &keys, &options(u64::MAX, 0)),
        Err(VerifyError::Expired { .. })
    ));
    // Accepting any audience is said explicitly; the issuer is always checked.
    let open = VerifyOptions {
        audience: AudienceCheck::Any,
        issuer: "lapse",
        now_seconds: NOW,
        leeway_seconds: 0,
    };
    assert!(verify(&token, &keys, &open).is_ok());
    let shipping = VerifyOptions {
        audience: AudienceCheck::Require("shipping"),
        ..options(NOW, 0)
    };
    assert!(
        verify(&token, &keys, &shipping).is_ok(),
        "any listed audience"
    );
    assert_eq!(
        verify(
            &token,
            &keys,
            &VerifyOptions {
                audience: AudienceCheck::Require("billing-x"),
                ..options(NOW, 0)
            }
        ),
        Err(VerifyError::WrongAudience {
            expected: "billing-x".into()
        })
    );
    assert_eq!(
        verify(
            &token,
            &keys,
            &VerifyOptions {
                issuer: "lapse2",
                ..options(NOW, 0)
            }
        ),
        Err(VerifyError::WrongIssuer {
            expected: "lapse2".into(),
            found: "lapse".into()
        })
    );
}

#[test]
fn truncated_and_garbage_tokens_are_malformed() {
    let signer = key(1);
    let keys = ring(&[&signer]);
    let token = signer.sign(&claims(NOW + 600)).unwrap();
    for end in 0..token.len() {
        let cut = &token[..end];
        assert!(
            matches!(
                verify(cut, &keys, &options(NOW, 0)),
                Err(VerifyError::Malformed(_))
            ),
            "cut at {end}: {:?}",
            verify(cut, &keys, &options(NOW, 0))
        );
    }
    let header = token.split('.').next().unwrap();
    for garbage in [
        "",
        ".",
        "..",
        "a.b",
        "a.b.c.d",
        "!!!.???.###",
        "e30",
        "W10.e30.e30",
        &format!("{header}.e30.{}", "A".repeat(87)),
        &"a".repeat(70_000),
    ] {
        assert!(
            matches!(
                verify(garbage, &keys, &options(NOW, 0)),
                Err(VerifyError::Malformed(_))
            ),
            "{garbage:?}: {:?}",
            verify(garbage, &keys, &options(NOW, 0))
        );
    }
    // A well-formed but wrong signature is checked before the payload is read.
    for payload in ["!!!", "e30"] {
        assert_eq!(
            verify(
                &format!("{header}.{payload}.{}", "A".repeat(86)),
                &keys,
                &options(NOW, 0)
            ),
            Err(VerifyError::BadSignature)
        );
    }
    // A header without alg names the empty algorithm.
    assert_eq!(
        verify("e30.e30.", &keys, &options(NOW, 0)),
        Err(VerifyError::UnsupportedAlgorithm(String::new()))
    );
}

#[test]
fn peeking_reads_the_kid_without_verifying() {
    let token = key(3).sign(&claims(NOW + 600)).unwrap();
    assert_eq!(peek_key_id(&token), Ok(Some("key-3".into())));
    let no_kid = format!("{}.e30.", b64(&serde_json::json!({"alg": "EdDSA"})));
    assert_eq!(peek_key_id(&no_kid), Ok(None));
    assert!(matches!(
        peek_key_id("nope"),
        Err(VerifyError::Malformed(_))
    ));
    assert!(matches!(
        peek_key_id("W10.e30.e30"),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn jwks_have_the_rfc_8037_shape() {
    let signer = key(4);
    let jwk = signer.public_jwk();
    let json = serde_json::to_value(&jwk).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(signer.public_key()),
            "kid": "key-4", "alg": "EdDSA", "use": "sig"
        })
    );
    let bare = Jwk::from_public_key(None, &signer.public_key());
    assert_eq!(
        serde_json::to_value(&bare).unwrap().get("kid"),
        None,
        "no kid member when there is none"
    );
    let set = JwkSet {
        keys: vec![jwk.clone()],
    };
    let back: JwkSet = serde_json::from_str(&serde_json::to_string(&set).unwrap()).unwrap();
    assert_eq!(back, set);
    assert_eq!(back.keys[0].public_key(), Ok(signer.public_key()));

    let mut rsa = jwk.clone();
    rsa.kty = "RSA".into();
    assert_eq!(rsa.public_key(), Err(JwkError::WrongKeyType("RSA".into())));
    let mut x448 = jwk.clone();
    x448.crv = "Ed448".into();
    assert_eq!(x448.public_key(), Err(JwkError::WrongCurve("Ed448".into())));
    for x in ["", "AAAA", "!!", &URL_SAFE_NO_PAD.encode([0u8; 33])] {
        let mut short = jwk.clone();
        short.x = x.into();
        assert_eq!(short.public_key(), Err(JwkError::BadPublicKey), "{x:?}");
    }

    // RFC 8037 appendix A.3 known answer.
    let rfc = Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
        kid: None,
        alg: None,
        use_: None,
        d: None,
    };
    assert_eq!(
        rfc.thumbprint(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

const URL: &str = "https://broker.example/v1/refresh";

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

fn resign_proof(header: &serde_json::Value, claims: &serde_json::Value, n: u8) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let signature = key(n).sign_raw(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[test]
fn dpop_corner_cases() {
    let holder = key(5);
    let proof = make_proof(&holder, "POST", URL, None, NOW, "p1").unwrap();
    let header = part(&proof, 0);
    assert_eq!(header["typ"], "dpop+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["jwk"].get("d").is_none());
    let body = part(&proof, 1);
    assert_eq!(body["htm"], "POST");
    assert!(body.get("ath").is_none());
    // No access token expected: no ath needed.
    let verified = verify_proof(&proof, &expect(None, NOW)).unwrap();
    assert_eq!(verified.iat, NOW);
    assert_eq!(verified.jkt, holder.public_jwk().thumbprint());
    // An ath is ignored if no token is expected.
    let with_ath = make_proof(&holder, "POST", URL, Some("tok"), NOW, "p2").unwrap();
    assert!(verify_proof(&with_ath, &expect(None, NOW)).is_ok());
    assert_eq!(
        part(&with_ath, 1)["ath"],
        serde_json::Value::from(access_token_hash("tok"))
    );

    // The window boundaries: [now - 65, now + 5].
    assert!(verify_proof(&proof, &expect(None, NOW + 65)).is_ok());
    assert_eq!(
        verify_proof(&proof, &expect(None, NOW + 66)),
        Err(DpopError::Stale {
            iat: NOW,
            now: NOW + 66
        })
    );
    assert!(verify_proof(&proof, &expect(None, NOW - 5)).is_ok());
    assert!(matches!(
        verify_proof(&proof, &expect(None, NOW - 6)),
        Err(DpopError::Stale { .. })
    ));
    let huge = DpopExpectation {
        max_age_seconds: u64::MAX,
        leeway_seconds: u64::MAX,
        ..expect(None, NOW)
    };
    assert!(verify_proof(&proof, &huge).is_ok(), "no overflow");

    // Method is case-sensitive.
    let lower = make_proof(&holder, "post", URL, None, NOW, "p3").unwrap();
    assert_eq!(
        verify_proof(&lower, &expect(None, NOW)),
        Err(DpopError::WrongMethod {
            expected: "POST".into(),
            found: "post".into()
        })
    );
    // Query in the expected URL is ignored as well; the path is not.
    let query_expected = DpopExpectation {
        url: "https://broker.example/v1/refresh?tenant=acme",
        ..expect(None, NOW)
    };
    assert!(verify_proof(&proof, &query_expected).is_ok());
    let other_path = make_proof(&holder, "POST", &format!("{URL}/x"), None, NOW, "p4").unwrap();
    assert!(matches!(
        verify_proof(&other_path, &expect(None, NOW)),
        Err(DpopError::WrongUrl { .. })
    ));

    let jwk = serde_json::to_value(holder.public_jwk()).unwrap();
    let good_header = serde_json::json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk});
    assert!(verify_proof(&resign_proof(&good_header, &body, 5), &expect(None, NOW)).is_ok());
    // Signed by another key than the one in the header.
    assert_eq!(
        verify_proof(&resign_proof(&good_header, &body, 6), &expect(None, NOW)),
        Err(DpopError::BadSignature)
    );
    // Algorithms other than EdDSA.
    for alg in ["none", "HS256", "ES256", "eddsa"] {
        let mut h = good_header.clone();
        h["alg"] = alg.into();
        assert_eq!(
            verify_proof(&resign_proof(&h, &body, 5), &expect(None, NOW)),
            Err(DpopError::UnsupportedAlgorithm(alg.into()))
        );
    }
    // No jwk, a jwk of the wrong type, a jwk with a private key even if broken.
    let mut h = good_header.clone();
    h.as_object_mut().unwrap().remove("jwk");
    assert_eq!(
        verify_proof(&resign_proof(&h, &body, 5), &expect(None, NOW)),
        Err(DpopError::MissingKey)
    );
    let mut h = good_header.clone();
    h["jwk"]["crv"] = "P-256".into();
    assert_eq!(
        verify_proof(&resign_proof(&h, &body, 5), &expect(None, NOW)),
        Err(DpopError::MissingKey)
    );
    let h = serde_json::json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "d": "c2VjcmV0"}});
    assert_eq!(
        verify_proof(&resign_proof(&h, &body, 5), &expect(None, NOW)),
        Err(DpopError::PrivateKeyInProof)
    );
    let mut h = good_header.clone();
    h.as_object_mut().unwrap().remove("typ");
    assert_eq!(
        verify_proof(&resign_proof(&h, &body, 5), &expect(None, NOW)),
        Err(DpopError::WrongType)
    );
    // An empty jti, a missing htu.
    let mut b = body.clone();
    b["jti"] = "".into();
    assert!(matches!(
        verify_proof(&resign_proof(&good_header, &b, 5), &expect(None, NOW)),
        Err(DpopError::Malformed(_))
    ));
    let mut b = body.clone();
    b.as_object_mut().unwrap().remove("htu");
    assert!(matches!(
        verify_proof(&resign_proof(&good_header, &b, 5), &expect(None, NOW)),
        Err(DpopError::Malformed(_))
    ));
    // Truncations never verify and never panic.
    for end in 0..proof.len() {
        assert!(verify_proof(&proof[..end], &expect(None, NOW)).is_err());
    }
}

#[test]
fn replay_cache_forgets_after_the_window_and_is_bounded() {
    let mut cache = ReplayCache::new(3, 10);
    assert!(cache.is_empty());
    cache.check_and_remember("a", 100).unwrap();
    cache.check_and_remember("b", 105).unwrap();
    assert_eq!(
        cache.check_and_remember("a", 109),
        Err(DpopError::Replayed("a".into()))
    );
    // "a" expires at 110, "b" at 115.
    cache.check_and_remember("a", 110).unwrap();
    assert_eq!(cache.len(), 2);
    cache.check_and_remember("c", 111).unwrap();
    assert_eq!(
        cache.check_and_remember("d", 111),
        Err(DpopError::CacheFull)
    );
    assert_eq!(
        cache.check_and_remember("b", 114),
        Err(DpopError::Replayed("b".into()))
    );
    cache.check_and_remember("d", 115).unwrap();
    assert_eq!(cache.len(), 3);
    // A refused entry (cache full) was not remembered.
    cache.check_and_remember("e", 200).unwrap();
    assert_eq!(cache.len(), 1);
}

fn external_token(
    algorithm: jsonwebtoken::Algorithm,
    kid: Option<&str>,
    key: &jsonwebtoken::EncodingKey,
    claims: &serde_json::Value,
) -> String {
    let mut header = jsonwebtoken::Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn k8s_claims() -> serde_json::Value {
    serde_json::json!({
        "iss": "https://kubernetes.default.svc",
        "aud": ["lapse", "other"],
        "sub": "system:serviceaccount:prod:payments",
        "exp": NOW + 600,
        "nbf": NOW - 10,
        "iat": NOW - 10,
        "kubernetes.io": {"namespace": "prod"}
    })
}

#[test]
fn external_rs256_and_es256_issuers() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let jwks = serde_json::json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": RS256_TEST_N, "e": "AQAB"},
        {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": ES256_TEST_X, "y": ES256_TEST_Y},
        {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": key(9).public_jwk().x},
    ]});
    let issuer = ExternalIssuer::from_jwks_json(
        "https://kubernetes.default.svc".into(),
        "lapse".into(),
        &jwks.to_string(),
    )
    .unwrap();
    let rsa = EncodingKey::from_rsa_der(RS256_TEST_KEY);
    let ec = EncodingKey::from_ec_der(ES256_TEST_KEY);

    let rs = external_token(Algorithm::RS256, Some("rsa-1"), &rsa, &k8s_claims());
    let claims = issuer.verify(&rs, NOW, 0).unwrap();
    assert_eq!(claims["kubernetes.io"]["namespace"], "prod");
    let es = external_token(Algorithm::ES256, Some("ec-1"), &ec, &k8s_claims());
    assert_eq!(
        issuer.verify(&es, NOW, 0).unwrap()["sub"],
        "system:serviceaccount:prod:payments"
    );
    let ed = sign_json(9, "ed-1", &k8s_claims());
    assert!(issuer.verify(&ed, NOW, 0).is_ok());

    // A token signed by one key but naming another kid fails.
    let lying = external_token(Algorithm::ES256, Some("rsa-1"), &ec, &k8s_claims());
    assert!(issuer.verify(&lying, NOW, 0).is_err());
    let lying = sign_json(9, "ec-1", &k8s_claims());
    assert!(issuer.verify(&lying, NOW, 0).is_err());
    // A tampered RS256 payload fails the signature.
    let mut parts: Vec<String> = rs.split('.').map(str::to_owned).collect();
    let mut more = k8s_claims();
    more["sub"] = "system:serviceaccount:kube-system:admin".into();
    parts[1] = b64(&more);
    assert_eq!(
        issuer.verify(&parts.join("."), NOW, 0),
        Err(VerifyError::BadSignature)
    );
    // Several keys and no kid: which one is meant is unknowable.
    let anonymous = external_token(Algorithm::RS256, None, &rsa, &k8s_claims());
    assert_eq!(
        issuer.verify(&anonymous, NOW, 0),
        Err(VerifyError::MissingKeyId)
    );
    // Other algorithms are refused, whatever the key.
    for alg in [Algorithm::RS384, Algorithm::PS256] {
        let t = external_token(alg, Some("rsa-1"), &rsa, &k8s_claims());
        assert!(matches!(
            issuer.verify(&t, NOW, 0),
            Err(VerifyError::UnsupportedAlgorithm(_))
        ));
    }
}

#[test]
fn external_issuer_edge_cases() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let single = serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": key(9).public_jwk().x},
    ]});
    let issuer = ExternalIssuer::from_jwks_json(
        "https://kubernetes.default.svc".into(),
        "lapse".into(),
        &single.to_string(),
    )
    .unwrap();
    let ed = {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let der = ed25519_dalek::SigningKey::from_bytes(&[9; 32])
            .to_pkcs8_der()
            .unwrap();
        EncodingKey::from_ed_der(der.as_bytes())
    };
    // One key and no kid: refused, unless the issuer is configured to
    // take its only key for a token that names none.
    let anonymous = external_token(Algorithm::EdDSA, None, &ed, &k8s_claims());
    assert_eq!(
        issuer.verify(&anonymous, NOW, 0),
        Err(VerifyError::MissingKeyId)
    );
    let issuer = ExternalIssuer {
        require_key_id: false,
        ..issuer
    };
    assert!(issuer.verify(&anonymous, NOW, 0).is_ok());
    // aud as a single string.
    let mut c = k8s_claims();
    c["aud"] = "lapse".into();
    assert!(
        issuer
            .verify(&external_token(Algorithm::EdDSA, None, &ed, &c), NOW, 0)
            .is_ok()
    );
    c["aud"] = "lapse-x".into();
    assert_eq!(
        issuer.verify(&external_token(Algorithm::EdDSA, None, &ed, &c), NOW, 0),
        Err(VerifyError::WrongAudience {
            expected: "lapse".into()
        })
    );
    let mut c = k8s_claims();
    c.as_object_mut().unwrap().remove("aud");
    assert!(matches!(
        issuer.verify(&external_token(Algorithm::EdDSA, None, &ed, &c), NOW, 0),
        Err(VerifyError::WrongAudience { .. })
    ));
    // nbf, with and without leeway.
    assert_eq!(
        issuer.verify(&anonymous, NOW - 11, 0),
        Err(VerifyError::NotYetValid {
            nbf: NOW - 10,
            now: NOW - 11
        })
    );
    assert!(issuer.verify(&anonymous, NOW - 11, 1).is_ok());
    assert!(issuer.verify(&anonymous, NOW + 605, 5).is_ok());
    assert_eq!(
        issuer.verify(&anonymous, NOW + 606, 5),
        Err(VerifyError::Expired {
            exp: NOW + 600,
            now: NOW + 606
        })
    );
    // A token without exp is refused.
    let mut c = k8s_claims();
    c.as_object_mut().unwrap().remove("exp");
    assert!(matches!(
        issuer.verify(&external_token(Algorithm::EdDSA, None, &ed, &c), NOW, 0),
        Err(VerifyError::BadClaims(_))
    ));
    // A missing issuer is a wrong issuer.
    let mut c = k8s_claims();
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        issuer.verify(&external_token(Algorithm::EdDSA, None, &ed, &c), NOW, 0),
        Err(VerifyError::WrongIssuer {
            expected: "https://kubernetes.default.svc".into(),
            found: String::new()
        })
    );

    // HMAC is never accepted, even when the JWKS holds a symmetric key.
    let secret = b"shared-secret-shared-secret-shared";
    let oct = serde_json::json!({"keys": [
        {"kty": "oct", "kid": "h", "k": URL_SAFE_NO_PAD.encode(secret)},
    ]});
    let hmac_issuer = ExternalIssuer::from_jwks_json(
        "https://kubernetes.default.svc".into(),
        "lapse".into(),
        &oct.to_string(),
    )
    .unwrap();
    let hs = external_token(
        Algorithm::HS256,
        Some("h"),
        &EncodingKey::from_secret(secret),
        &k8s_claims(),
    );
    assert_eq!(
        hmac_issuer.verify(&hs, NOW, 0),
        Err(VerifyError::UnsupportedAlgorithm("HS256".into()))
    );
    // Nor may an RS256/EdDSA header be paired with a symmetric key.
    let mut forged_header = part(&hs, 0);
    forged_header["alg"] = "EdDSA".into();
    let parts: Vec<&str> = hs.split('.').collect();
    let forged = format!("{}.{}.{}", b64(&forged_header), parts[1], parts[2]);
    assert!(hmac_issuer.verify(&forged, NOW, 0).is_err());

    for bad in ["", "{}", "[]", "{\"keys\": 3}", "not json"] {
        assert!(
            matches!(
                ExternalIssuer::from_jwks_json("i".into(), "a".into(), bad),
                Err(VerifyError::Malformed(_))
            ),
            "{bad:?}"
        );
    }
    for garbage in ["", "a.b", "a.b.c.d", "e30.e30.e30"] {
        assert!(issuer.verify(garbage, NOW, 0).is_err());
    }
}
