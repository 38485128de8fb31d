//! Attacks on credential verification, each performed and shown to fail:
//! a credential presented to a service it was not meant for, one from
//! another issuer, a JWT of another type signed by a key verifiers trust,
//! an `iat` in the future, a header with critical extensions; and external
//! attestation tokens verified with a key not meant for their algorithm,
//! without a `kid`, or kept long after they were issued.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lapse_credential::break_glass::{BreakGlassOptions, verify_break_glass};
use lapse_credential::*;

const NOW: u64 = 1_800_000_000;

fn signer() -> SigningKeyPair {
    SigningKeyPair::from_seed(KeyId::new("n1-1").unwrap(), [1; 32])
}

fn keys() -> BTreeMap<String, [u8; 32]> {
    BTreeMap::from([("n1-1".to_owned(), signer().public_key())])
}

fn claims() -> Claims {
    Claims {
        iss: DEFAULT_ISSUER.into(),
        sub: WorkloadId::new("spiffe://example.org/payments").unwrap(),
        aud: vec!["billing".into()],
        iat: NOW,
        nbf: NOW,
        exp: NOW + 600,
        jti: "j1".into(),
        tenant: TenantId::new("acme").unwrap(),
        scopes: vec![],
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

fn expecting(audience: &'static str) -> VerifyOptions<'static> {
    VerifyOptions {
        audience: AudienceCheck::Require(audience),
        issuer: DEFAULT_ISSUER,
        now_seconds: NOW,
        leeway_seconds: 30,
    }
}

/// `claims` signed by the trusted key under a header of the attacker's.
fn signed_under(header: serde_json::Value, claims: &impl serde::Serialize) -> String {
    let encode = |value: &serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let input = format!(
        "{}.{}",
        encode(&header),
        encode(&serde_json::to_value(claims).unwrap())
    );
    let signature = signer().sign_raw(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[test]
fn a_credential_for_another_service_is_refused() {
    let token = signer().sign(&claims()).unwrap();
    assert!(verify(&token, &keys(), &expecting("billing")).is_ok());
    assert_eq!(
        verify(&token, &keys(), &expecting("shipping")),
        Err(VerifyError::WrongAudience {
            expected: "shipping".into()
        })
    );
}

#[test]
fn a_credential_from_another_issuer_is_refused() {
    let mut foreign = claims();
    foreign.iss = "https://other-cluster.example".into();
    let token = signer().sign(&foreign).unwrap();
    assert_eq!(
        verify(&token, &keys(), &expecting("billing")),
        Err(VerifyError::WrongIssuer {
            expected: DEFAULT_ISSUER.into(),
            found: "https://other-cluster.example".into()
        })
    );
    // An issuer as long as the token allows is not repeated whole.
    foreign.iss = "x".repeat(10_000);
    let token = signer().sign(&foreign).unwrap();
    let error = verify(&token, &keys(), &expecting("billing")).unwrap_err();
    assert!(error.to_string().len() < 200, "{error}");
}

#[test]
fn a_jwt_of_another_type_signed_by_a_trusted_key_is_refused() {
    let token = signer().sign(&claims()).unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], CREDENTIAL_TYPE);
    // The same claims and key under any other type: a plain JWT, a DPoP
    // proof, a break-glass credential, or no type at all.
    for typ in [
        Some("JWT"),
        Some("dpop+jwt"),
        Some("lapse-break-glass+jwt"),
        Some("at+jwt"),
        None,
    ] {
        let mut header = serde_json::json!({"alg": "EdDSA", "kid": "n1-1"});
        if let Some(typ) = typ {
            header["typ"] = typ.into();
        }
        let forged = signed_under(header, &claims());
        assert!(
            matches!(
                verify(&forged, &keys(), &expecting("billing")),
                Err(VerifyError::WrongType { .. })
            ),
            "typ {typ:?}: {:?}",
            verify(&forged, &keys(), &expecting("billing"))
        );
    }
    // RFC 7515: the media type may carry `application/` and any case.
    let spelled = signed_under(
        serde_json::json!({"alg": "EdDSA", "kid": "n1-1", "typ": "application/Lapse+JWT"}),
        &claims(),
    );
    assert!(verify(&spelled, &keys(), &expecting("billing")).is_ok());
}

#[test]
fn an_iat_in_the_future_beyond_the_leeway_is_refused() {
    // Issued "later" than revocations of its workload's credentials issued
    // before some time, to outlive them.
    let mut future = claims();
    future.iat = NOW + 31;
    future.nbf = NOW - 10;
    let token = signer().sign(&future).unwrap();
    assert_eq!(
        verify(&token, &keys(), &expecting("billing")),
        Err(VerifyError::IssuedInFuture {
            iat: NOW + 31,
            now: NOW
        })
    );
    // Within the leeway, clocks merely differ.
    future.iat = NOW + 30;
    let token = signer().sign(&future).unwrap();
    assert!(verify(&token, &keys(), &expecting("billing")).is_ok());
}

#[test]
fn a_critical_header_extension_is_refused() {
    for crit in [
        serde_json::json!(["exp"]),
        serde_json::json!(["lapse-extension"]),
        serde_json::json!([]),
    ] {
        let header = serde_json::json!({
            "alg": "EdDSA", "kid": "n1-1", "typ": CREDENTIAL_TYPE, "crit": crit,
            "lapse-extension": true,
        });
        let token = signed_under(header, &claims());
        assert_eq!(
            verify(&token, &keys(), &expecting("billing")),
            Err(VerifyError::CriticalExtension),
            "crit {crit}"
        );
    }
    // Nor is a break-glass credential with one.
    let header = serde_json::json!({
        "alg": "EdDSA", "kid": "n1-1", "typ": "lapse-break-glass+jwt", "crit": ["exp"],
    });
    let token = signed_under(header, &claims());
    let options = BreakGlassOptions {
        now_seconds: NOW,
        leeway_seconds: 30,
        max_ttl_seconds: 3600,
    };
    let refused = verify_break_glass(&token, &keys(), &options).unwrap_err();
    assert!(refused.to_string().contains("crit"), "{refused}");
    // Nor a DPoP proof.
    let proof_signer = signer();
    let jwk = proof_signer.public_jwk();
    let header = serde_json::json!({
        "typ": "dpop+jwt", "alg": "EdDSA", "crit": ["htm"],
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jwk.x},
    });
    let proof = signed_under(
        header,
        &serde_json::json!({"jti": "p1", "htm": "POST", "htu": "https://lapse/refresh", "iat": NOW}),
    );
    let expectation = DpopExpectation {
        method: "POST",
        url: "https://lapse/refresh",
        access_token: None,
        now_seconds: NOW,
        max_age_seconds: 60,
        leeway_seconds: 5,
    };
    assert!(matches!(
        verify_proof(&proof, &expectation),
        Err(DpopError::Malformed(detail)) if detail.contains("crit")
    ));
}

/// An external issuer whose JWKS holds `key(9)`'s Ed25519 key under `ci-1`,
/// with `extra` JWK members.
fn external_issuer(extra: serde_json::Value) -> ExternalIssuer {
    let mut jwk = serde_json::json!({
        "kty": "OKP", "crv": "Ed25519", "kid": "ci-1",
        "x": SigningKeyPair::from_seed(KeyId::new("ci-1").unwrap(), [9; 32]).public_jwk().x,
    });
    for (name, value) in extra.as_object().unwrap() {
        jwk[name] = value.clone();
    }
    ExternalIssuer::from_jwks_json(
        "https://ci.example".into(),
        "lapse".into(),
        &serde_json::json!({ "keys": [jwk] }).to_string(),
    )
    .unwrap()
}

/// A CI token signed by `key(9)` with `header` members and `claims`.
fn ci_token(header: serde_json::Value, claims: serde_json::Value) -> String {
    let signer = SigningKeyPair::from_seed(KeyId::new("ci-1").unwrap(), [9; 32]);
    let encode = |value: &serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let input = format!("{}.{}", encode(&header), encode(&claims));
    let signature = signer.sign_raw(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn ci_claims(iat: u64) -> serde_json::Value {
    serde_json::json!({
        "iss": "https://ci.example", "aud": "lapse", "sub": "repo/app",
        "iat": iat, "exp": NOW + 600,
    })
}

#[test]
fn an_external_key_not_meant_for_the_tokens_algorithm_is_refused() {
    let header = serde_json::json!({"alg": "EdDSA", "kid": "ci-1"});
    let token = ci_token(header.clone(), ci_claims(NOW));
    // The key as published verifies the token: what follows fails on the
    // key's description alone.
    assert!(
        external_issuer(serde_json::json!({}))
            .verify(&token, NOW, 5)
            .is_ok()
    );
    for (what, extra) in [
        ("use enc", serde_json::json!({"use": "enc"})),
        ("alg RS256", serde_json::json!({"alg": "RS256"})),
        (
            "key_ops encrypt",
            serde_json::json!({"key_ops": ["encrypt"]}),
        ),
        ("an X25519 key", serde_json::json!({"crv": "X25519"})),
    ] {
        assert!(
            matches!(
                external_issuer(extra).verify(&token, NOW, 5),
                Err(VerifyError::KeyUnfit(_))
            ),
            "{what}"
        );
    }
    // An ES256 or RS256 header naming the Ed25519 key.
    for alg in ["ES256", "RS256"] {
        let token = ci_token(
            serde_json::json!({"alg": alg, "kid": "ci-1"}),
            ci_claims(NOW),
        );
        assert!(matches!(
            external_issuer(serde_json::json!({})).verify(&token, NOW, 5),
            Err(VerifyError::KeyUnfit(_))
        ));
    }
}

#[test]
fn an_external_token_without_a_kid_is_refused() {
    let token = ci_token(serde_json::json!({"alg": "EdDSA"}), ci_claims(NOW));
    let issuer = external_issuer(serde_json::json!({}));
    assert_eq!(
        issuer.verify(&token, NOW, 5),
        Err(VerifyError::MissingKeyId)
    );
    // Only when the issuer is configured to take its only key for one.
    let lenient = ExternalIssuer {
        require_key_id: false,
        ..issuer
    };
    assert!(lenient.verify(&token, NOW, 5).is_ok());
}

#[test]
fn an_old_external_token_is_refused() {
    let header = serde_json::json!({"alg": "EdDSA", "kid": "ci-1"});
    let issuer = ExternalIssuer {
        max_token_age_seconds: 600,
        ..external_issuer(serde_json::json!({}))
    };
    // Long-lived (exp far ahead) but issued long ago: a stolen token kept.
    let stolen = ci_token(header.clone(), ci_claims(NOW - 3600));
    assert_eq!(
        issuer.verify(&stolen, NOW, 5),
        Err(VerifyError::TooOld {
            age_seconds: 3600,
            max_seconds: 600
        })
    );
    assert!(
        issuer
            .verify(&ci_token(header.clone(), ci_claims(NOW - 600)), NOW, 5)
            .is_ok()
    );
    // Without iat its age is unknowable; from the future it dodges the limit.
    let mut ageless = ci_claims(NOW);
    ageless.as_object_mut().unwrap().remove("iat");
    assert!(matches!(
        issuer.verify(&ci_token(header.clone(), ageless), NOW, 5),
        Err(VerifyError::BadClaims(_))
    ));
    assert!(matches!(
        issuer.verify(&ci_token(header, ci_claims(NOW + 60)), NOW, 5),
        Err(VerifyError::IssuedInFuture { .. })
    ));
}

#[test]
fn a_jwks_too_large_to_hold_is_refused() {
    let key = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    let many = serde_json::json!({ "keys": vec![key; MAX_JWKS_KEYS + 1] });
    assert!(ExternalIssuer::from_jwks_json("i".into(), "a".into(), &many.to_string()).is_err());
    let huge = format!(
        "{{\"keys\": [], \"padding\": \"{}\"}}",
        "x".repeat(MAX_JWKS_BYTES)
    );
    assert!(ExternalIssuer::from_jwks_json("i".into(), "a".into(), &huge).is_err());
}
