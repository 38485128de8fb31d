//! The broker's HTTP side: the JWKS at `/.well-known/jwks.json` and issuer
//! metadata at `/.well-known/openid-configuration`, `/healthz` and
//! `/metrics`, RFC 8693 token exchange at `/exchange` ([`oauth`]), the
//! Token Status List at `/statuslists/<k>` and RFC 7662 introspection at
//! `/introspect` ([`status`]), and the one mapping from [`BrokerError`] to an HTTP answer
//! ([`error_response`]). The JWKS and metadata let standard JWT
//! libraries can verify Lapse credentials. Keys come from the ledger: every
//! registered key, from every broker, until it is revoked or every
//! credential it signed has expired.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use lapse_credential::{Jwk, JwkSet, KeyId};
use serde_json::json;

use crate::core::SharedCore;
use crate::error::BrokerError;

mod oauth;
mod revocation;
mod ssf;
mod status;

/// What every HTTP handler may read.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub core: SharedCore,
    pub feed: std::sync::Arc<crate::feed::FeedHub>,
    pub issuer: std::sync::Arc<crate::issuance::issuer::Issuer>,
    pub guards: std::sync::Arc<Guards>,
    pub base_url: String,
}

/// What the HTTP server serves from.
pub struct HttpParts {
    pub core: SharedCore,
    pub feed: std::sync::Arc<crate::feed::FeedHub>,
    pub issuer: std::sync::Arc<crate::issuance::issuer::Issuer>,
    pub guards: Guards,
    /// The URL clients reach this listener at.
    pub base_url: String,
}

/// The limits on the broker's listeners, whose counters `/metrics` shows.
pub struct Guards {
    /// The gRPC port's connection caps (none in simulation).
    pub grpc: Option<std::sync::Arc<lapse_pki::ConnectionGate>>,
    /// The HTTP port's connection caps.
    pub http: Option<std::sync::Arc<lapse_pki::ConnectionGate>>,
    /// Rates per caller on the Cluster and Issuer services.
    pub callers: std::sync::Arc<crate::api::guard::CallerLimits>,
}

/// The JWKS of the cluster's published signing keys.
pub fn jwks(core: &SharedCore) -> JwkSet {
    let keys = crate::issuance::issuer::ledger_keys(core);
    JwkSet {
        keys: keys
            .iter()
            .filter_map(|(id, public_key)| {
                Some(Jwk::from_public_key(
                    Some(&KeyId::new(id.clone()).ok()?),
                    public_key,
                ))
            })
            .collect(),
    }
}

async fn jwks_handler(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        axum::Json(jwks(&state.core)),
    )
}

async fn openid_configuration(State(state): State<HttpState>) -> impl IntoResponse {
    axum::Json(json!({
        "issuer": state.core.config().issuance.issuer,
        "jwks_uri": format!("{}/.well-known/jwks.json", state.base_url),
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint": format!("{}/exchange", state.base_url),
        "introspection_endpoint": format!("{}/introspect", state.base_url),
        "revocation_endpoint": format!("{}/revoke", state.base_url),
        "grant_types_supported": [oauth::TOKEN_EXCHANGE_GRANT],
        "token_endpoint_auth_methods_supported": ["none"],
        "dpop_signing_alg_values_supported": ["EdDSA"],
    }))
}

/// Metrics are for brokers and for operators the access policy lets read
/// the status: they name verifiers, regions and delays. Relying parties
/// need only the JWKS and metadata, which are public.
async fn metrics(
    State(state): State<HttpState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let identity = request
        .extensions()
        .get::<axum::extract::ConnectInfo<lapse_pki::PeerIdentity>>()
        .and_then(|info| info.0.principal.clone());
    let caller = crate::api::auth::http_caller(&state.core, identity.as_ref(), request.headers());
    let decided = caller.and_then(|operator| match operator {
        None => Ok(()),
        Some(principal) => may_read_status(&state.core, &principal),
    });
    if let Err(error) = decided {
        return error_response(&error);
    }
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = crate::metrics::Format::accepted(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        crate::metrics::exposition(&state.feed, &state.issuer, &state.guards, format),
    )
        .into_response()
}

/// Whether the access policy lets `principal` read the status.
fn may_read_status(core: &SharedCore, principal: &str) -> Result<(), BrokerError> {
    let bootstrap = &core.config().auth.cluster_admins;
    // Read before the view is: `cluster_now` reads it too.
    let now = core.cluster_now();
    core.view()
        .read(|a| {
            crate::access::decide(
                &a.ledger,
                bootstrap,
                principal,
                crate::access::Action::ReadStatus,
                None,
                None,
                now,
            )
        })
        .map(|_| ())
        .map_err(|denied| BrokerError::Forbidden(denied.0))
}

async fn health() -> &'static str {
    "ok\n"
}

/// Answer 503 in the broker's JSON shape when a request takes longer than
/// `limits.http_request_timeout_ms`.
async fn request_deadline(
    State(deadline): State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error_response(&BrokerError::Unavailable(format!(
            "the request took longer than the server's {} ms (limits.http_request_timeout_ms)",
            deadline.as_millis()
        ))),
    }
}

/// Serve until `stop` resolves, on `listener` behind `guards.http`'s caps.
pub async fn serve(
    parts: HttpParts,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let HttpParts {
        core,
        feed,
        issuer,
        guards,
        base_url,
    } = parts;
    let limits = &core.config().limits;
    let deadline = std::time::Duration::from_millis(limits.http_request_timeout_ms);
    let gate = guards
        .http
        .clone()
        .unwrap_or_else(|| lapse_pki::ConnectionGate::new(limits.http_connections()));
    let app = Router::new()
        .route("/.well-known/jwks.json", get(jwks_handler))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/statuslists/{list}", get(status::status_list))
        .route(
            "/introspect",
            axum::routing::post(status::introspect).layer(axum::extract::DefaultBodyLimit::max(
                status::MAX_INTROSPECTION_BYTES,
            )),
        )
        .route(
            "/revoke",
            axum::routing::post(revocation::revoke).layer(axum::extract::DefaultBodyLimit::max(
                revocation::MAX_REVOCATION_BYTES,
            )),
        )
        .route(
            "/exchange",
            axum::routing::post(oauth::exchange)
                .layer(axum::extract::DefaultBodyLimit::max(oauth::MAX_FORM_BYTES)),
        )
        .merge(ssf::routes())
        .with_state(HttpState {
            core: core.clone(),
            feed,
            issuer,
            guards: std::sync::Arc::new(guards),
            base_url,
        })
        .layer(axum::middleware::from_fn_with_state(
            deadline,
            request_deadline,
        ));
    match core.tls() {
        None => {
            let listener = lapse_pki::limits::LimitedListener::new(listener, gate);
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<lapse_pki::PeerIdentity>(),
            )
            .with_graceful_shutdown(stop)
            .await
        }
        Some(tls) => {
            let listener = lapse_pki::transport::TlsListener::new(tls.clone(), listener, gate)?;
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<lapse_pki::PeerIdentity>(),
            )
            .with_graceful_shutdown(stop)
            .await
        }
    }
}

/// The one mapping from a broker error to an HTTP answer: its status code
/// and a JSON body `{"error": kind, "message": text}` (with `"refusal"`,
/// the ledger's refusal code, when the ledger refused).
pub fn error_response(error: &BrokerError) -> axum::response::Response {
    let (status, kind) = match error {
        // The ledger's word that what was named is not there, or not the
        // caller's (one receiver's stream is unknown to every other).
        BrokerError::Refused(
            lapse_ledger::Refusal::SsfUnknownStream(_)
            | lapse_ledger::Refusal::SsfUnknownReceiver(_),
        ) => (StatusCode::NOT_FOUND, "refused"),
        BrokerError::Refused(lapse_ledger::Refusal::SsfBadRequest(_)) => {
            (StatusCode::BAD_REQUEST, "refused")
        }
        BrokerError::Refused(_) => (StatusCode::CONFLICT, "refused"),
        BrokerError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
        BrokerError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        BrokerError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        BrokerError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        BrokerError::Exists(_) => (StatusCode::CONFLICT, "exists"),
        BrokerError::Precondition(_) => (StatusCode::CONFLICT, "precondition"),
        BrokerError::Exhausted(_) => (StatusCode::TOO_MANY_REQUESTS, "exhausted"),
        BrokerError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        BrokerError::Broken(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        BrokerError::DpopNonce { .. } => (StatusCode::UNAUTHORIZED, "use_dpop_nonce"),
    };
    let mut body = json!({ "error": kind, "message": error.to_string() });
    if let BrokerError::Refused(refusal) = error {
        body["refusal"] = json!(refusal.code());
    }
    (status, axum::Json(body)).into_response()
}

/// The base URL for an HTTP listener address.
pub fn base_url(advertise: Option<&str>, bound: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    advertise
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{scheme}://{bound}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapse_ledger::Refusal;

    #[tokio::test(start_paused = true)]
    async fn a_slow_http_request_is_answered_503_in_json_at_the_deadline() {
        let mut app = Router::new()
            .route("/slow", get(std::future::pending::<&'static str>))
            .layer(axum::middleware::from_fn_with_state(
                std::time::Duration::from_secs(5),
                request_deadline,
            ));
        let request = axum::http::Request::get("/slow")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tonic::codegen::Service::call(&mut app, request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "unavailable");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("limits.http_request_timeout_ms")
        );
    }

    #[test]
    fn each_kind_of_error_has_its_status_and_a_json_body() {
        let cases = [
            (BrokerError::Refused(Refusal::JoinTokenUnknown), 409),
            (BrokerError::Invalid("x".into()), 400),
            (BrokerError::Unauthenticated("x".into()), 401),
            (BrokerError::Forbidden("x".into()), 403),
            (BrokerError::NotFound("x".into()), 404),
            (BrokerError::Exhausted("x".into()), 429),
            (BrokerError::Unavailable("x".into()), 503),
            (BrokerError::Broken("x".into()), 500),
        ];
        for (error, code) in cases {
            let response = error_response(&error);
            assert_eq!(response.status().as_u16(), code, "{error:?}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/json",
                "{error:?}"
            );
        }
    }
}
