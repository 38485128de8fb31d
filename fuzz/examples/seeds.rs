//! Writes seed corpora for `credential_proofs` and `verifier_http` into
//! `corpus/<target>/` (or the directory given as the first argument): real
//! signed credentials, break-glass credentials, external attestations and
//! DPoP proofs, and well-formed requests to every endpoint, so the fuzzer
//! starts from valid structure. Run from `fuzz/`:
//! `cargo +nightly run --example seeds`.

use std::path::{Path, PathBuf};

use lapse_credential::break_glass::{MintRequest, mint};
use lapse_credential::{TenantId, WorkloadId, make_proof};
use lapse_fuzz::credentials::{
    DPOP_URL, NOW, RS256_TEST_KEY, Signer, assemble, bound_claims, break_glass_key, claims,
    cluster_key, dpop_key, flags, http, join, part,
};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

/// A `credential_proofs` input: flags, token header and claims, proof
/// header and claims, method, URL.
fn seed(flag: u8, token: &str, proof: &str, method: &str, url: &str) -> Vec<u8> {
    let raw_token = flag & flags::TOKEN_RAW != 0;
    let raw_proof = flag & flags::PROOF_RAW != 0;
    let (t0, t1) = if raw_token {
        (token.as_bytes().to_vec(), Vec::new())
    } else {
        (part(token, 0), part(token, 1))
    };
    let (p0, p1) = if raw_proof {
        (proof.as_bytes().to_vec(), Vec::new())
    } else {
        (part(proof, 0), part(proof, 1))
    };
    let mut out = vec![flag];
    out.extend(join(&[
        &t0,
        &t1,
        &p0,
        &p1,
        method.as_bytes(),
        url.as_bytes(),
    ]));
    out
}

fn external(alg: jsonwebtoken::Algorithm, kid: Option<&str>) -> String {
    use jsonwebtoken::{EncodingKey, Header};
    let claims = serde_json::json!({
        "iss": lapse_fuzz::credentials::EXTERNAL_ISSUER,
        "aud": [lapse_fuzz::credentials::EXTERNAL_AUDIENCE, "other"],
        "sub": "system:serviceaccount:prod:payments",
        "exp": NOW + 600,
        "nbf": NOW - 10,
        "iat": NOW - 10,
        "kubernetes.io": {"namespace": "prod"}
    });
    if alg == jsonwebtoken::Algorithm::EdDSA {
        let mut header = serde_json::json!({"alg": "EdDSA", "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = kid.into();
        }
        return assemble(
            header.to_string().as_bytes(),
            claims.to_string().as_bytes(),
            Signer::Cluster,
        );
    }
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let key = match alg {
        jsonwebtoken::Algorithm::RS256 => EncodingKey::from_rsa_der(RS256_TEST_KEY),
        _ => lapse_fuzz::credentials::es256_key(),
    };
    jsonwebtoken::encode(&header, &claims, &key).expect("signs")
}

fn credential_seeds(dir: &Path) {
    let k = cluster_key();
    let valid = k.sign(&claims(5, "acme", NOW - 10, 600)).expect("signs");
    let bound = k.sign(&bound_claims(6, NOW - 10)).expect("signs");
    let proof = make_proof(&dpop_key(), "POST", DPOP_URL, None, NOW, "p-1").expect("proof");
    let bound_proof =
        make_proof(&dpop_key(), "POST", DPOP_URL, Some(&bound), NOW - 5, "p-2").expect("proof");
    let break_glass = mint(
        &break_glass_key(),
        &MintRequest {
            subject: WorkloadId::new("spiffe://acme.example/oncall").expect("valid"),
            audiences: vec!["billing".into()],
            tenant: TenantId::new("break-glass").expect("valid"),
            scopes: vec![],
            reason: "INC-1: every broker unreachable".into(),
            ttl_seconds: 600,
            now_seconds: NOW - 10,
            nonce: [3; 16],
        },
    )
    .expect("mints");
    let es = external(jsonwebtoken::Algorithm::ES256, Some("ec-1"));
    let rs = external(jsonwebtoken::Algorithm::RS256, Some("rsa-1"));
    let ed = external(jsonwebtoken::Algorithm::EdDSA, Some("ed-1"));
    let ed_anonymous = external(jsonwebtoken::Algorithm::EdDSA, None);
    let signer = |n: u8| n << flags::SIGNER_SHIFT;
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "valid",
            seed(flags::AUDIENCE, &valid, &proof, "POST", DPOP_URL),
        ),
        (
            "bound",
            seed(
                flags::AUDIENCE | flags::BOUND,
                &bound,
                &bound_proof,
                "POST",
                DPOP_URL,
            ),
        ),
        (
            "break-glass",
            seed(signer(1), &break_glass, &proof, "POST", DPOP_URL),
        ),
        (
            "external-es256",
            seed(signer(2), &es, &proof, "GET", DPOP_URL),
        ),
        ("external-eddsa", seed(0, &ed, &proof, "POST", DPOP_URL)),
        (
            "external-eddsa-no-kid",
            seed(0, &ed_anonymous, &proof, "POST", "https://x/y?q#f"),
        ),
        (
            "external-rs256-raw",
            seed(flags::TOKEN_RAW, &rs, &proof, "POST", DPOP_URL),
        ),
        (
            "valid-raw",
            seed(
                flags::TOKEN_RAW | flags::PROOF_RAW | flags::BOUND,
                &bound,
                &bound_proof,
                "POST",
                DPOP_URL,
            ),
        ),
        (
            "damaged",
            seed(flags::DAMAGE, &valid, &proof, "POST", DPOP_URL),
        ),
        (
            "proof-by-cluster-key",
            seed(flags::PROOF_BY_CLUSTER, &valid, &proof, "POST", DPOP_URL),
        ),
    ];
    for (name, bytes) in seeds {
        write(dir, name, &bytes);
    }
}

fn http_seeds(dir: &Path) {
    let at = |list: &[&str], s: &str| list.iter().position(|x| *x == s).expect("listed") as u8;
    let post = at(http::METHODS, "POST");
    let get = at(http::METHODS, "GET");
    let path = |p: &str| at(http::PATHS, p);
    let query = |q: &str| at(http::QUERIES, q);
    let json_header = [0, http::VALUE_DICTIONARY, 0];
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    // A verify request with each bank token, as JSON.
    for i in 0..http::BANK_LEN {
        let mut s = vec![post, path("/v1/verify"), 0, 1];
        s.extend(json_header);
        s.extend([http::BODY_VERIFY, 1, i]);
        seeds.push((format!("verify-{i}"), s));
    }
    // ... to each verifier by name, with audience and tenant.
    for q in 1..=5 {
        let mut s = vec![post, path("/v1/verify"), q, 0];
        s.extend([http::BODY_VERIFY, 7, 0, 0, 0]);
        seeds.push((format!("verify-query-{q}"), s));
    }
    // A bearer token and an empty body.
    seeds.push((
        "bearer".into(),
        vec![post, path("/v1/verify"), 0, 1, 2, http::VALUE_BEARER, 5, 0],
    ));
    // Verify-all with a true content-length.
    seeds.push((
        "verify-all".into(),
        vec![
            post,
            path("/v1/verify-all"),
            0,
            1,
            1,
            http::VALUE_LENGTH,
            http::BODY_VERIFY,
            1,
            0,
            0,
        ],
    ));
    seeds.push((
        "check-secret".into(),
        vec![post, path("/v1/check-secret"), 0, 0, http::BODY_SECRET, 0],
    ));
    seeds.push((
        "check-secret-empty".into(),
        vec![
            post,
            path("/v1/check-secret"),
            query("?verifier=v-empty"),
            0,
            http::BODY_SECRET,
            2,
        ],
    ));
    for p in ["/v1/status", "/metrics", "/healthz"] {
        seeds.push((
            format!("get{}", p.replace('/', "-")),
            vec![get, path(p), 0, 0, http::BODY_EMPTY],
        ));
    }
    seeds.push((
        "oversize".into(),
        vec![post, path("/v1/verify"), 0, 0, http::BODY_OVERSIZE, 0],
    ));
    seeds.push((
        "wrong-method".into(),
        vec![at(http::METHODS, "PUT"), path("/v1/verify"), 0, 0, 0],
    ));
    let mut raw = vec![post, path("/v1/verify"), 0, 0, http::BODY_RAW];
    raw.extend_from_slice(br#"{"token": "a.b.c", "audience": "billing"}"#);
    seeds.push(("raw-json".into(), raw));
    for (name, bytes) in seeds {
        write(dir, &name, &bytes);
    }
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("corpus"));
    credential_seeds(&root.join("credential_proofs"));
    http_seeds(&root.join("verifier_http"));
    println!("seeds written under {}", root.display());
}
