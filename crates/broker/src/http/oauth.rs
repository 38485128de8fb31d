//! OAuth endpoints over HTTP: RFC 8693 token exchange at `POST /exchange`
//! (form-encoded, as a token endpoint takes it), answering with RFC 8693's
//! response or RFC 6749 §5.2's error JSON. The same exchange as the gRPC
//! `Issuer.Exchange`, under the same rate limit per caller.

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lapse_pki::PeerIdentity;
use serde_json::json;

use super::HttpState;
use crate::error::BrokerError;
use crate::issuance::exchange::ExchangeParams;

/// RFC 8693's grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of a Lapse credential (RFC 8693 §3).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The most bytes of a form this endpoint reads.
pub const MAX_FORM_BYTES: usize = 32 * 1024;
/// The most times one parameter may repeat (`audience`).
const MAX_REPEATS: usize = 32;

/// An RFC 6749 §5.2 error: `error`, a description, and the HTTP status.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// A broker error as RFC 6749 §5.2 says a token endpoint answers.
fn token_error(error: &BrokerError) -> Response {
    let text = error.to_string();
    match error {
        BrokerError::Invalid(_) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &text),
        BrokerError::Unauthenticated(_) | BrokerError::Forbidden(_) => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &text)
        }
        BrokerError::DpopNonce { nonce } => {
            let mut response = oauth_error(StatusCode::BAD_REQUEST, "use_dpop_nonce", &text);
            if let Ok(value) = HeaderValue::from_str(nonce) {
                response.headers_mut().insert("dpop-nonce", value);
            }
            response
        }
        BrokerError::Exhausted(_) | BrokerError::Unavailable(_) => oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &text,
        ),
        _ => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &text),
    }
}

/// Refuse a request whose body is not `application/x-www-form-urlencoded`.
fn check_form_type(headers: &HeaderMap) -> Result<(), BrokerError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(BrokerError::Invalid(
            "send the request as application/x-www-form-urlencoded".into(),
        ));
    }
    Ok(())
}

/// The form's parameters, each name with its values in order. Refuses a
/// body that is not `application/x-www-form-urlencoded`.
fn form(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, BrokerError> {
    check_form_type(headers)?;
    Ok(form_urlencoded::parse(body).into_owned().collect())
}

/// The credential a form of at most `max` bytes names as its one `token`
/// parameter (RFC 7662 introspection, RFC 7009 revocation), trimmed.
pub(super) fn token_param(
    headers: &HeaderMap,
    body: &[u8],
    max: usize,
) -> Result<String, BrokerError> {
    check_form_type(headers)?;
    if body.len() > max {
        return Err(BrokerError::Invalid(format!(
            "the form is more than {max} bytes"
        )));
    }
    let tokens: Vec<String> = form_urlencoded::parse(body)
        .filter(|(name, _)| name == "token")
        .map(|(_, value)| value.trim().to_owned())
        .collect();
    match <[String; 1]>::try_from(tokens) {
        Ok([token]) => Ok(token),
        Err(_) => Err(BrokerError::Invalid(
            "give the credential as exactly one token parameter".into(),
        )),
    }
}

/// The one value of `name`, if given; twice is an error (RFC 6749 §3.2).
fn single<'a>(params: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, BrokerError> {
    let mut values = params.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
    let first = values.next();
    if values.next().is_some() {
        return Err(BrokerError::Invalid(format!(
            "{name}: given more than once"
        )));
    }
    Ok(first.map(String::as_str))
}

/// `POST /exchange`: RFC 8693 token exchange for delegation. Parameters:
/// `grant_type`, `subject_token` and `subject_token_type` (a Lapse JWT),
/// optionally `requested_token_type` (only JWT), `scope` (space-separated),
/// `audience` (repeatable), and Lapse's own `actor` (the delegate's SPIFFE
/// id, required), `actor_jkt`, `expires_in` (seconds), `task`,
/// `on_behalf_of` and `intent`. A DPoP proof for a key-bound subject token
/// comes in the `DPoP` header.
pub(super) async fn exchange(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<PeerIdentity>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(caller) = lapse_pki::limits::caller_key(Some(&peer), None)
        && let Err(refused) = state.guards.callers.check_caller(&caller)
    {
        return oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            &refused.to_string(),
        );
    }
    if body.len() > MAX_FORM_BYTES {
        return oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            &format!("the form is more than {MAX_FORM_BYTES} bytes"),
        );
    }
    let params = match exchange_params(&headers, &body) {
        Ok(params) => params,
        Err(error) => return token_error(&error),
    };
    match state.issuer.exchange(params).await {
        Ok(issued) => {
            let now = state.core.cluster_now() / 1000;
            (
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(json!({
                    "access_token": issued.credential,
                    "issued_token_type": JWT_TOKEN_TYPE,
                    "token_type": if issued.key_bound { "DPoP" } else { "Bearer" },
                    "expires_in": issued.expires_at.saturating_sub(now),
                    "scope": issued.scopes.join(" "),
                })),
            )
                .into_response()
        }
        Err(error) => token_error(&error),
    }
}

/// The exchange a token request asks for.
fn exchange_params(headers: &HeaderMap, body: &[u8]) -> Result<ExchangeParams, BrokerError> {
    let params = form(headers, body)?;
    match single(&params, "grant_type")? {
        Some(TOKEN_EXCHANGE_GRANT) => {}
        Some(other) => {
            return Err(BrokerError::Invalid(format!(
                "grant_type {:?} is not supported here: only {TOKEN_EXCHANGE_GRANT}",
                other.chars().take(100).collect::<String>()
            )));
        }
        None => return Err(BrokerError::Invalid("grant_type is required".into())),
    }
    let subject_token = single(&params, "subject_token")?
        .ok_or_else(|| BrokerError::Invalid("subject_token is required".into()))?;
    match single(&params, "subject_token_type")? {
        Some(JWT_TOKEN_TYPE) | Some("urn:ietf:params:oauth:token-type:access_token") => {}
        _ => {
            return Err(BrokerError::Invalid(format!(
                "subject_token_type must be {JWT_TOKEN_TYPE}"
            )));
        }
    }
    if let Some(requested) = single(&params, "requested_token_type")?
        && requested != JWT_TOKEN_TYPE
    {
        return Err(BrokerError::Invalid(format!(
            "requested_token_type: Lapse issues only {JWT_TOKEN_TYPE}"
        )));
    }
    if single(&params, "actor_token")?.is_some() {
        return Err(BrokerError::Invalid(
            "actor_token is not taken: name the delegate with actor (its SPIFFE id)".into(),
        ));
    }
    let audiences: Vec<String> = params
        .iter()
        .filter(|(name, _)| name == "audience")
        .map(|(_, value)| value.clone())
        .collect();
    if audiences.len() > MAX_REPEATS {
        return Err(BrokerError::Invalid(format!(
            "audience: at most {MAX_REPEATS}"
        )));
    }
    let text = |name: &str| single(&params, name).map(|v| v.unwrap_or_default().to_owned());
    let ttl_seconds = match single(&params, "expires_in")? {
        None => 0,
        Some(seconds) => seconds
            .parse()
            .map_err(|_| BrokerError::Invalid("expires_in: a whole number of seconds".into()))?,
    };
    Ok(ExchangeParams {
        subject_token: subject_token.to_owned(),
        dpop_proof: headers
            .get("dpop")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        actor: single(&params, "actor")?
            .ok_or_else(|| {
                BrokerError::Invalid("actor is required: the delegate's SPIFFE id".into())
            })?
            .to_owned(),
        actor_jkt: text("actor_jkt")?,
        scopes: single(&params, "scope")?
            .map(|s| {
                s.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        audiences,
        ttl_seconds,
        task: text("task")?,
        on_behalf_of: text("on_behalf_of")?,
        intent: text("intent")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers
    }

    #[test]
    fn a_token_request_is_read_as_rfc_8693_says() {
        let body = format!(
            "grant_type={}&subject_token=a.b.c&subject_token_type={}&actor=spiffe%3A%2F%2Fx%2Ftool&scope=read+write&audience=billing&audience=ledger&expires_in=60&task=t-1",
            form_urlencoded::byte_serialize(TOKEN_EXCHANGE_GRANT.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(JWT_TOKEN_TYPE.as_bytes()).collect::<String>(),
        );
        let params = exchange_params(&form_headers(), body.as_bytes()).unwrap();
        assert_eq!(params.subject_token, "a.b.c");
        assert_eq!(params.actor, "spiffe://x/tool");
        assert_eq!(params.scopes, ["read", "write"]);
        assert_eq!(params.audiences, ["billing", "ledger"]);
        assert_eq!((params.ttl_seconds, params.task.as_str()), (60, "t-1"));
    }

    #[test]
    fn a_bad_token_request_is_an_invalid_request_with_its_reason() {
        let grant =
            form_urlencoded::byte_serialize(TOKEN_EXCHANGE_GRANT.as_bytes()).collect::<String>();
        let jwt = form_urlencoded::byte_serialize(JWT_TOKEN_TYPE.as_bytes()).collect::<String>();
        let cases = [
            ("grant_type=password".to_owned(), "not supported"),
            (format!("grant_type={grant}"), "subject_token is required"),
            (
                format!("grant_type={grant}&subject_token=x&subject_token_type=saml"),
                "subject_token_type",
            ),
            (
                format!("grant_type={grant}&subject_token=x&subject_token_type={jwt}"),
                "actor is required",
            ),
            (
                format!("grant_type={grant}&grant_type={grant}"),
                "more than once",
            ),
            (
                format!(
                    "grant_type={grant}&subject_token=x&subject_token_type={jwt}&actor=a&expires_in=soon"
                ),
                "expires_in",
            ),
        ];
        for (body, expected) in cases {
            let error = exchange_params(&form_headers(), body.as_bytes()).unwrap_err();
            assert!(
                matches!(error, BrokerError::Invalid(_)),
                "{body}: {error:?}"
            );
            assert!(error.to_string().contains(expected), "{body}: {error}");
        }
        let error = exchange_params(&HeaderMap::new(), b"grant_type=x").unwrap_err();
        assert!(error.to_string().contains("x-www-form-urlencoded"));
    }
}
