//! Fuzz the verifier's HTTP API: requests built from the input go through
//! the real axum router (`lapse_verifier::http::router`) with
//! `tower::ServiceExt::oneshot` on a current-thread runtime, to four
//! verifiers: fresh with break-glass keys (`v-fresh`), stale and failing
//! open (`v-open`), without state (`v-empty`) and without an audience
//! (`v-noaud`). Nothing may panic; every status is one the API answers
//! with; every refusal from our handlers is JSON with a `reason`, and a
//! verify answer's `valid` agrees with its status.
//!
//! Input (`credentials::http`): method, path, query, headers (from
//! dictionaries, bearer tokens from a bank of real credentials, or raw
//! bytes), then a body mode: raw bytes, a verify request built from the
//! bank or raw text, a check-secret request, an oversized body, or blanks.
//!
//! Refusals that axum makes before our handlers run (unknown route, wrong
//! method, body limit, query string) are not JSON today; they are tallied
//! and the first of each kind is printed to stderr, not failed on.
//! `LAPSE_FUZZ_TRACE=1` prints every response.

#![no_main]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use lapse_credential::break_glass::{MintRequest, mint};
use lapse_credential::{KeyId, SigningKeyPair, TenantId, WorkloadId};
use lapse_filter::{
    KeyAlgorithm, KeySet, Message, PublicKey, RevokedSet, RuleSet, SecretSet, Snapshot,
    encode_message,
};
use lapse_fuzz::Source;
use lapse_fuzz::credentials::{
    CLUSTER_KID, Signer, assemble, break_glass_key, claims, cluster_key, http, part,
};
use lapse_verifier::http::{Served, router};
use lapse_verifier::{BreakGlassConfig, FollowStats, Verifier, VerifyConfig};
use lapse_wire::feed::feed_event::Kind;
use lapse_wire::feed::{FeedEvent, Heartbeat};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

/// The statuses the API answers with.
const DOCUMENTED: &[u16] = &[200, 400, 401, 403, 404, 405, 413, 415, 422, 503];
/// Largest body the API reads; requests above it are refused.
const LIMIT: usize = 64 * 1024;
/// A leaked static secret, revoked in the feed.
const LEAKED: &[u8] = b"leaked-api-key";

struct World {
    runtime: tokio::runtime::Runtime,
    app: Router,
    bank: Vec<String>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn event(kind: Kind, epoch: u64, now_ms: u64) -> FeedEvent {
    FeedEvent {
        kind: Some(kind),
        epoch,
        from_epoch: 0,
        cluster_time_ms: now_ms,
        broker_id: 1,
        max_credential_ttl_ms: 86_400_000,
    }
}

/// Epoch 10: index 3 revoked, tenant `evil` revoked, the leaked secret
/// and the bank's last credential revoked by hash; the cluster key and an
/// old key whose window has closed.
fn snapshot_event(now: u64, revoked_token: &str) -> FeedEvent {
    let mut keys = KeySet::new();
    let key = |k: &SigningKeyPair, from: u64, to: u64| PublicKey {
        algorithm: KeyAlgorithm::Ed25519,
        bytes: k.public_key().to_vec(),
        not_before_ms: from * 1000,
        not_after_ms: to * 1000,
    };
    keys.insert(CLUSTER_KID, key(&cluster_key(), now - 86_400, now + 86_400))
        .expect("valid key");
    keys.insert(
        "n2-old",
        key(&old_key(), now - 3 * 86_400, now - 2 * 86_400),
    )
    .expect("valid key");
    let mut secrets = SecretSet::new(100, 1e-6, [1; 32]).expect("valid");
    secrets.insert(Sha256::digest(LEAKED).into()).expect("room");
    secrets
        .insert(Sha256::digest(revoked_token.as_bytes()).into())
        .expect("room");
    let mut rules = RuleSet::new();
    rules
        .revoke_tenant("evil", (now + 86_400) * 1000)
        .expect("valid rule");
    let snapshot = Snapshot {
        epoch: 10,
        set: RevokedSet::from_sorted(0, 1 << 20, [3]).expect("valid"),
        secrets,
        rules,
        keys,
    };
    let bytes = encode_message(&Message::Full(Box::new(snapshot))).expect("encodes");
    event(Kind::Snapshot(bytes.into()), 10, now * 1000)
}

fn heartbeat(now: u64) -> FeedEvent {
    event(
        Kind::Heartbeat(Heartbeat {
            interval_ms: 200,
            voucher: None,
        }),
        10,
        now * 1000,
    )
}

fn old_key() -> SigningKeyPair {
    SigningKeyPair::from_seed(KeyId::new("n2-old").expect("valid"), [8; 32])
}

fn sign(key: &SigningKeyPair, c: &lapse_credential::Claims) -> String {
    key.sign(c).expect("signs")
}

/// `BANK_LEN` tokens, each reaching another verdict at `v-fresh`.
fn bank(now: u64) -> Vec<String> {
    let k = cluster_key();
    let valid = sign(&k, &claims(5, "acme", now - 10, 86_400));
    let mut for_shipping = claims(6, "acme", now - 10, 86_400);
    for_shipping.aud = vec!["shipping".into()];
    let break_glass = mint(
        &break_glass_key(),
        &MintRequest {
            subject: WorkloadId::new("spiffe://acme.example/oncall").expect("valid"),
            audiences: vec!["billing".into()],
            tenant: TenantId::new("break-glass").expect("valid"),
            scopes: vec![],
            reason: "INC-1: fuzzing".into(),
            ttl_seconds: 3600,
            now_seconds: now,
            nonce: [3; 16],
        },
    )
    .expect("mints");
    let mut bank = vec![
        valid.clone(),
        sign(&k, &claims(3, "acme", now - 10, 86_400)),
        sign(&k, &claims(7, "evil", now - 10, 86_400)),
        sign(&k, &claims(8, "acme", now - 7200, 600)),
        sign(&k, &for_shipping),
        break_glass,
        assemble(&part(&valid, 0), &part(&valid, 1), Signer::Stranger),
        sign(&old_key(), &claims(9, "acme", now - 10, 86_400)),
        "not.a.token".into(),
        sign(&k, &claims(11, "acme", now - 10, 86_400)),
    ];
    bank.truncate(usize::from(http::BANK_LEN));
    bank
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let now = now_s();
        let bank = bank(now);
        let revoked_by_hash = bank.last().expect("a bank").clone();
        let snapshot = snapshot_event(now, &revoked_by_hash);
        let for_billing = VerifyConfig {
            audience: Some("billing".into()),
            ..VerifyConfig::default()
        };
        let make = |id: &str, config: VerifyConfig, state: bool| {
            let verifier = Verifier::new(config);
            if state {
                verifier.apply(&snapshot).expect("the snapshot applies");
                verifier
                    .apply(&heartbeat(now))
                    .expect("the heartbeat applies");
            }
            Served {
                id: id.into(),
                region: "fuzz".into(),
                verifier,
                stats: Arc::new(FollowStats::default()),
            }
        };
        let break_glass = BreakGlassConfig::new(
            [break_glass_key().public_key()],
            ["billing".to_owned()],
            Duration::from_secs(3600),
        )
        .expect("valid break-glass configuration");
        let verifiers = vec![
            make(
                "v-fresh",
                VerifyConfig {
                    staleness: Duration::from_secs(30 * 86_400),
                    break_glass: Some(break_glass),
                    ..for_billing.clone()
                },
                true,
            ),
            make(
                "v-open",
                VerifyConfig {
                    staleness: Duration::ZERO,
                    fail_open: true,
                    any_audience: true,
                    ..VerifyConfig::default()
                },
                true,
            ),
            make("v-empty", for_billing.clone(), false),
            make(
                "v-noaud",
                VerifyConfig {
                    staleness: Duration::from_secs(30 * 86_400),
                    ..VerifyConfig::default()
                },
                true,
            ),
        ];
        World {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime"),
            app: router(verifiers, None),
            bank,
        }
    })
}

fn pick<'a>(list: &[&'a str], b: u8) -> &'a str {
    list[usize::from(b) % list.len()]
}

/// A token: from the bank, or text from the input.
fn token(src: &mut Source<'_>, bank: &[String]) -> String {
    let choice = src.byte();
    match bank.get(usize::from(choice)) {
        Some(t) => t.clone(),
        None => String::from_utf8_lossy(src.chunk()).into_owned(),
    }
}

/// A JSON string value: from a small dictionary, or text from the input.
fn value(src: &mut Source<'_>, dictionary: &[&str]) -> serde_json::Value {
    let b = src.byte();
    match dictionary.get(usize::from(b)) {
        Some(v) => (*v).into(),
        None if b & 0x80 != 0 => serde_json::Value::Null,
        None => String::from_utf8_lossy(src.chunk()).into_owned().into(),
    }
}

struct Built {
    request: Request<Body>,
    path: &'static str,
    head: bool,
    body_len: usize,
}

fn build(data: &[u8], bank: &[String]) -> Option<Built> {
    let mut src = Source::new(data);
    let method = pick(http::METHODS, src.byte());
    let path_byte = src.byte();
    let path = pick(http::PATHS, path_byte & 0x7f);
    let query = pick(http::QUERIES, src.byte());
    let mut uri = format!("{path}{query}").into_bytes();
    if path_byte & 0x80 != 0 {
        uri.extend_from_slice(src.chunk());
    }
    let uri = Uri::try_from(uri).ok()?;
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("a valid method"))
        .uri(uri);
    // The body comes last in the input, but its length is known only once
    // it is built: headers asking for the true length are filled in later.
    let mut length_headers = Vec::new();
    for _ in 0..src.byte() % 6 {
        let name = HeaderName::from_static(pick(http::HEADER_NAMES, src.byte()));
        let v = match src.byte() % http::VALUE_MODES {
            http::VALUE_DICTIONARY => {
                HeaderValue::from_static(pick(http::CONTENT_TYPES, src.byte()))
            }
            http::VALUE_BEARER => {
                let t = token(&mut src, bank);
                HeaderValue::from_str(&format!("Bearer {t}")).ok()?
            }
            http::VALUE_LENGTH => {
                length_headers.push(name);
                continue;
            }
            _ => HeaderValue::from_bytes(src.chunk()).ok()?,
        };
        builder = builder.header(name, v);
    }
    let body: Vec<u8> = match src.byte() % http::BODY_MODES {
        http::BODY_EMPTY => Vec::new(),
        http::BODY_RAW => src.rest().to_vec(),
        http::BODY_VERIFY => {
            let mut map = serde_json::Map::new();
            let fields = src.byte();
            if fields & 1 != 0 {
                map.insert("token".into(), token(&mut src, bank).into());
            }
            if fields & 2 != 0 {
                map.insert(
                    "audience".into(),
                    value(&mut src, &["billing", "shipping", ""]),
                );
            }
            if fields & 4 != 0 {
                map.insert("tenant".into(), value(&mut src, &["acme", "evil", ""]));
            }
            if fields & 8 != 0 {
                map.insert("extra".into(), serde_json::Value::Bool(true));
            }
            let mut bytes = serde_json::to_vec(&map).expect("serialises");
            if fields & 16 != 0 {
                // Damage the JSON text: cut it, or add input bytes.
                let at = usize::from(src.byte()) % (bytes.len() + 1);
                bytes.truncate(at);
                bytes.extend_from_slice(src.chunk());
            }
            bytes
        }
        http::BODY_SECRET => {
            let hash = match src.byte() % 4 {
                0 => hex(&Sha256::digest(LEAKED)),
                1 => hex(&Sha256::digest(src.chunk())),
                2 => format!(" {} ", hex(&Sha256::digest(LEAKED)).to_uppercase()),
                _ => String::from_utf8_lossy(src.chunk()).into_owned(),
            };
            serde_json::to_vec(&serde_json::json!({"sha256": hash})).expect("serialises")
        }
        http::BODY_OVERSIZE => {
            let mut bytes = br#"{"token": ""#.to_vec();
            bytes.resize(LIMIT + 1 + usize::from(src.byte()), b'a');
            bytes.extend_from_slice(br#""}"#);
            bytes
        }
        _ => vec![b' '; usize::from(src.byte())],
    };
    for name in length_headers {
        let claimed = match src.byte() % 3 {
            0 => body.len(),
            1 => body.len() + 1,
            _ => LIMIT * 2,
        };
        builder = builder.header(name, claimed);
    }
    let body_len = body.len();
    let request = builder.body(Body::from(body)).ok()?;
    Some(Built {
        request,
        path,
        head: method == "HEAD",
        body_len,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `LAPSE_FUZZ_TRACE=1` prints every response (to check what seeds reach).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("LAPSE_FUZZ_TRACE").is_some())
}

/// Print the first response of each kind that is not from our handlers.
fn tally(status: StatusCode, path: &str, content_type: &str, body: &[u8]) {
    static SEEN: OnceLock<Mutex<BTreeSet<(u16, String)>>> = OnceLock::new();
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    COUNT.fetch_add(1, Ordering::Relaxed);
    let kind = (status.as_u16(), content_type.to_owned());
    let mut seen = SEEN.get_or_init(Default::default).lock().expect("lock");
    if seen.insert(kind) {
        eprintln!(
            "verifier_http: not JSON from axum: {status} on {path} ({content_type:?}): {:?}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let Some(Built {
        request,
        path,
        head,
        body_len,
    }) = build(data, &w.bank)
    else {
        return;
    };
    let response = w
        .runtime
        .block_on(w.app.clone().oneshot(request))
        .expect("the router is infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = w
        .runtime
        .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .expect("a response body reads");
    if trace() {
        eprintln!(
            "{path} -> {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    assert!(
        DOCUMENTED.contains(&status.as_u16()),
        "undocumented status {status} on {path}"
    );
    if head {
        return;
    }
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    match (status, path) {
        (StatusCode::OK, "/metrics") => {
            assert!(body.ends_with(b"# EOF\n"), "metrics end with # EOF");
        }
        (StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE, "/healthz") => {
            // Documented plain text: "ok" or "stale: <n>".
        }
        (StatusCode::OK, _) => {
            let json = json.expect("a 200 from the API is JSON");
            if path == "/v1/verify" {
                assert_eq!(json["valid"], true, "200 but not valid: {json}");
            }
        }
        _ => match json {
            Some(json) if json.get("reason").is_some_and(|r| r.is_string()) => {
                assert_eq!(json["valid"], false, "a refusal says valid: false: {json}");
            }
            _ => {
                // Not from our handlers: axum's own rejections.
                assert!(
                    matches!(status.as_u16(), 400 | 404 | 405 | 413 | 415 | 422),
                    "{status} on {path} is neither JSON with a reason nor an axum rejection: {:?}",
                    String::from_utf8_lossy(&body)
                );
                tally(status, path, &content_type, &body);
            }
        },
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        assert!(body_len > LIMIT, "413 for a body of {body_len} bytes");
    }
});
