//! The local verify API, for services written in other languages. HTTP on
//! loopback only: it answers about credentials, so it must not be reachable
//! from elsewhere.
//!
//! - `POST /v1/verify` with `{"token": "...", "audience"?: "...",
//!   "tenant"?: "..."}`, or with `Authorization: Bearer <token>`:
//!   200 and the credential's facts when valid; 401 when malformed, badly
//!   signed, expired or for another audience; 403 when revoked or for
//!   another tenant; 400 (`no_audience`) when neither the request nor the
//!   verifier names an audience and the verifier was not told to accept
//!   any; 503 when the verifier is stale or has no state yet.
//!   Every refusal is `{"valid": false, "reason": "...", "detail": "...",
//!   "error": "..."}` (`error` says it in words).
//!   With several verifiers in one process, `?verifier=<id>` picks one;
//!   `POST /v1/verify-all` answers for each, the credential's signature
//!   checked once for all of them that hold the key that signed it.
//!   A key-bound credential (`cnf.jkt`) needs its DPoP proof (RFC 9449):
//!   `"dpop": {"proof": "...", "method": "GET", "uri": "https://..."}`,
//!   the method and URI of the request the proof came with (the proof may
//!   come in a `DPoP` header instead, and the token as `Authorization:
//!   DPoP <token>`); without a valid, fresh, unreplayed proof by its key it
//!   is refused with 401 (`proof_of_possession`).
//!   The answer says who acts and for whom: `actor` (the party acting now,
//!   the outermost RFC 8693 `act.sub`, or `null` when the credential is
//!   not delegated), `actors` (the whole chain, current first),
//!   `ancestors` (the status indices it was exchanged from, root first),
//!   `delegation_depth`, `task`, `on_behalf_of` and `intent`; `subject`
//!   stays the workload at the root of the chain.
//!   A break-glass credential's answer adds `"break_glass": {"reason":
//!   ...}` (its `status_index` is 0); `"stale": true` says it was
//!   accepted while stale.
//! - `POST /v1/check-secret` with `{"sha256": "<hex>"}`: whether a static
//!   secret has been revoked as leaked.
//! - `GET /v1/status`: every verifier's health as JSON, keyed by verifier
//!   id: its epoch, freshness, clock offset and drift, counters, `region`,
//!   `failovers` (times it left a broker), and `following_broker`, the
//!   broker it follows now: `{"address": "<as given in --brokers>",
//!   "broker_id": <node id, from the feed; null until the first event>}`,
//!   or `null` while it is between brokers; `fail_open`,
//!   `accepted_while_stale`, the break-glass keys and counters, and the
//!   emergency uses pending, reported (`use_reports`: reports sent) and
//!   dropped; and the signature memory: `signatures_remembered`,
//!   `signature_memory_capacity` and `signatures_recalled`.
//! - `GET /metrics`: Prometheus text.
//! - `GET /healthz`: 200 when every verifier is fresh, 503 otherwise.
//!
//! Whatever is refused is refused in JSON with an `error` field, including
//! what never reaches a handler: an unknown path (404), a wrong method
//! (405), a body over 64 KiB (413), a body that is not JSON (400), a body
//! of another content type than JSON (415; curl's default form type is
//! read as JSON, so `curl -d` works) and a malformed query (400).
//!
//! Here: the routes, the refusals and the status; `verify.rs` the two
//! verify endpoints, `guard.rs` the limits, `scrape.rs` `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::follower::FollowStats;
use crate::verifier::Verifier;
use crate::verifier::VerifierStatus;
use lapse_metrics::{Labels, Scrape, Value as Sample};

mod guard;
mod scrape;
mod verify;

pub use guard::ApiLimits;
use guard::{ApiGuards, guard};
#[cfg(test)]
use scrape::exposition;
use scrape::metrics;
use verify::{verify_all, verify_one};

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// One verifier as the HTTP API sees it.
#[derive(Clone)]
pub struct Served {
    pub id: String,
    pub region: String,
    pub verifier: Verifier,
    pub stats: Arc<FollowStats>,
    /// The relay this verifier serves its feed through (`--relay`).
    pub relay: Option<Arc<crate::relay::Relay>>,
}

#[derive(Clone)]
struct AppState {
    verifiers: Arc<BTreeMap<String, Served>>,
    guards: Arc<ApiGuards>,
    first: String,
    /// The process's TLS with the brokers, whose certificate expiry
    /// `/metrics` shows.
    tls: Option<Arc<lapse_pki::Tls>>,
}

#[derive(Deserialize)]
struct Which {
    verifier: Option<String>,
}

/// Refuse anything but a loopback address.
pub fn check_loopback(address: SocketAddr) -> Result<(), String> {
    if address.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "the verify API listens on loopback only; {address} is not a loopback address"
        ))
    }
}

/// Serve until `stop` resolves, within `limits`. `tls` is the verifiers'
/// TLS with the brokers, if any (its certificate's expiry goes into
/// `/metrics`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    verifiers: Vec<Served>,
    tls: Option<Arc<lapse_pki::Tls>>,
    limits: ApiLimits,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gate = lapse_pki::ConnectionGate::new(limits.connections);
    let app = routes(verifiers, tls, limits, gate.clone());
    let listener = lapse_pki::limits::LimitedListener::new(listener, gate);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<lapse_pki::PeerIdentity>(),
    )
    .with_graceful_shutdown(stop)
    .await
}

/// The API's routes over `verifiers`, as [`serve`] answers them with the
/// default limits: a request that names no verifier goes to the first. For
/// driving the API without a socket (tests, fuzzing).
pub fn router(verifiers: Vec<Served>, tls: Option<Arc<lapse_pki::Tls>>) -> Router {
    let limits = ApiLimits::default();
    let gate = lapse_pki::ConnectionGate::new(limits.connections);
    routes(verifiers, tls, limits, gate)
}

fn routes(
    verifiers: Vec<Served>,
    tls: Option<Arc<lapse_pki::Tls>>,
    limits: ApiLimits,
    gate: Arc<lapse_pki::ConnectionGate>,
) -> Router {
    let first = verifiers.first().map(|s| s.id.clone()).unwrap_or_default();
    let state = AppState {
        verifiers: Arc::new(verifiers.into_iter().map(|s| (s.id.clone(), s)).collect()),
        guards: Arc::new(ApiGuards {
            gate,
            limiter: std::sync::Mutex::new(lapse_pki::RateLimiter::new(limits.rate)),
            limits,
            started: std::time::Instant::now(),
            refused: std::sync::atomic::AtomicU64::new(0),
        }),
        first,
        tls,
    };
    Router::new()
        .route("/v1/verify", post(verify_one))
        .route("/v1/verify-all", post(verify_all))
        .route("/v1/check-secret", post(check_secret))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(health))
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

fn error(status: StatusCode, reason: &str, detail: impl Into<String>) -> Response {
    let detail = detail.into();
    (
        status,
        axum::Json(json!({"valid": false, "reason": reason, "error": detail, "detail": detail})),
    )
        .into_response()
}

async fn unknown_path(uri: axum::http::Uri) -> Response {
    let path: String = uri.path().chars().take(128).collect();
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such path {path:?}; the API is POST /v1/verify, POST /v1/verify-all, POST /v1/check-secret, GET /v1/status, GET /metrics and GET /healthz"
        ),
    )
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let path: String = uri.path().chars().take(128).collect();
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {path}"),
    )
}

/// The body of a POST, or the JSON refusal of one that could not be read
/// (over [`MAX_BODY_BYTES`], or cut off) or is not declared as JSON.
fn body_of(
    headers: &HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<axum::body::Bytes, Box<Response>> {
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        let kind = kind
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        // curl -d sends its form type: taken as JSON, as the README shows.
        if !matches!(
            kind.as_str(),
            "application/json" | "application/x-www-form-urlencoded"
        ) {
            let kind: String = kind.chars().take(64).collect();
            return Err(Box::new(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("the body is {kind:?}; send application/json"),
            )));
        }
    }
    body.map_err(|rejection| {
        let status = rejection.status();
        let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "bad_request"
        };
        let detail = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the body is larger than the {MAX_BODY_BYTES} bytes accepted")
        } else {
            format!("the body could not be read: {}", rejection.body_text())
        };
        Box::new(error(status, reason, detail))
    })
}

/// The `?verifier=` of a request, or the JSON refusal of a malformed query.
fn which_of(query: Result<Query<Which>, QueryRejection>) -> Result<Which, Box<Response>> {
    query.map(|Query(which)| which).map_err(|rejection| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the query is not ?verifier=<id>: {}", rejection.body_text()),
        ))
    })
}

async fn check_secret(
    State(state): State<AppState>,
    query: Result<Query<Which>, QueryRejection>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    let (which, body) = match (which_of(query), body_of(&headers, body)) {
        (Ok(which), Ok(body)) => (which, body),
        (Err(response), _) | (_, Err(response)) => return *response,
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        sha256: String,
    }
    let parsed: Body = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body is not {{\"sha256\": \"<64 hex digits>\"}}: {e}"),
            );
        }
    };
    let hash: [u8; 32] = match hex::decode(parsed.sha256.trim()).map(<[u8; 32]>::try_from) {
        Ok(Ok(hash)) => hash,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "sha256 must be 64 hex digits",
            );
        }
    };
    let id = which.verifier.unwrap_or_else(|| state.first.clone());
    let Some(served) = state.verifiers.get(&id) else {
        let id: String = id.chars().take(128).collect();
        return error(
            StatusCode::NOT_FOUND,
            "unknown_verifier",
            format!("no verifier {id:?} in this process"),
        );
    };
    match served.verifier.check_secret_hash(&hash) {
        Ok(revoked) => axum::Json(json!({"revoked": revoked})).into_response(),
        Err(rejection) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            rejection.code(),
            rejection.to_string(),
        ),
    }
}

async fn status(State(state): State<AppState>) -> Response {
    let all: BTreeMap<&String, Value> = state
        .verifiers
        .iter()
        .map(|(id, served)| (id, status_of(served)))
        .collect();
    axum::Json(all).into_response()
}

/// One verifier's entry in `GET /v1/status`.
fn status_of(served: &Served) -> Value {
    let mut status = serde_json::to_value(served.verifier.status()).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut status {
        map.insert("region".into(), json!(served.region));
        map.insert("following_broker".into(), json!(served.stats.following()));
        map.insert(
            "use_reports".into(),
            json!(
                served
                    .stats
                    .use_reports
                    .load(std::sync::atomic::Ordering::Relaxed)
            ),
        );
        map.insert(
            "failovers".into(),
            json!(
                served
                    .stats
                    .failovers
                    .load(std::sync::atomic::Ordering::Relaxed)
            ),
        );
        if let Some(relay) = &served.relay {
            map.insert(
                "relay".into(),
                json!({
                    "leaves": relay.leaves(),
                    "max_leaves": relay.max_leaves(),
                    "forwarded_use_reports": relay.forwarded_uses(),
                }),
            );
        }
    }
    status
}

async fn health(State(state): State<AppState>) -> Response {
    let stale: Vec<&String> = state
        .verifiers
        .iter()
        .filter(|(_, s)| !s.verifier.status().fresh)
        .map(|(id, _)| id)
        .collect();
    if stale.is_empty() {
        axum::Json(json!({"healthy": true, "verifiers": state.verifiers.len()})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "healthy": false,
                "error": format!("{} of {} verifiers are stale", stale.len(), state.verifiers.len()),
                "stale": stale.iter().take(16).collect::<Vec<_>>(),
            })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stale_rejection_read_before_its_rejection_does_not_underflow_the_metrics() {
        // `/metrics` reads `rejected`, then `stale`; a verification that
        // counted its stale rejection in between left stale one ahead. The
        // plain subtraction panicked in debug builds.
        assert_eq!(scrape::other_rejections(3, 4), 0);
        assert_eq!(scrape::other_rejections(5, 2), 3);
    }

    use super::*;
    use crate::follower::FollowedBroker;
    use crate::verifier::VerifyConfig;

    #[test]
    fn status_names_the_followed_broker_by_address_and_id() {
        let served = Served {
            id: "v-0".into(),
            region: "eu".into(),
            verifier: Verifier::new(VerifyConfig::default()),
            stats: Arc::new(FollowStats::default()),
            relay: None,
        };
        assert_eq!(status_of(&served)["following_broker"], Value::Null);
        served.stats.set_following(Some(FollowedBroker {
            address: "127.0.0.1:7402".into(),
            broker_id: None,
        }));
        assert_eq!(
            status_of(&served)["following_broker"],
            json!({"address": "127.0.0.1:7402", "broker_id": null})
        );
        served.stats.set_following(Some(FollowedBroker {
            address: "127.0.0.1:7402".into(),
            broker_id: Some(2),
        }));
        let status = status_of(&served);
        assert_eq!(
            status["following_broker"],
            json!({"address": "127.0.0.1:7402", "broker_id": 2})
        );
        assert_eq!(status["region"], "eu");
        assert_eq!(status["failovers"], 0);
    }

    #[test]
    fn metrics_label_each_verifier_and_count_by_result() {
        let served = |id: &str, region: &str| Served {
            id: id.into(),
            region: region.into(),
            verifier: Verifier::new(VerifyConfig::default()),
            stats: Arc::new(FollowStats::default()),
            relay: None,
        };
        let verifiers = BTreeMap::from([
            ("v-0".to_string(), served("v-0", "eu")),
            ("v-1".to_string(), served("v-1", "us \"east\"")),
        ]);
        let text = exposition(&verifiers, None);
        assert!(
            !text.contains("lapse_tls_certificate_expiry_timestamp_seconds"),
            "{text}"
        );
        assert!(
            text.contains("lapse_verifier_fresh{verifier=\"v-0\",region=\"eu\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("lapse_verifier_fresh{verifier=\"v-1\",region=\"us \\\"east\\\"\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE lapse_verifier_verifications counter\n"),
            "{text}"
        );
        for result in ["accepted", "rejected", "stale"] {
            let line = format!(
                "lapse_verifier_verifications_total{{verifier=\"v-0\",region=\"eu\",result=\"{result}\"}} 0\n"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        // A verifier that holds no state yet has no epoch sample.
        assert!(!text.contains("lapse_verifier_epoch{"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert!(
            text.contains(
                "lapse_verifier_unvouched_drops_total{verifier=\"v-0\",region=\"eu\"} 0\n"
            ),
            "{text}"
        );
        let text = exposition(&verifiers, Some(1_800_000_000));
        assert!(
            text.contains("lapse_tls_certificate_expiry_timestamp_seconds 1800000000\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
