//! `POST /v1/verify` and `POST /v1/verify-all`: the request (a JSON body
//! and headers) read into a token and what is expected of it, each
//! verifier's verdict, and the answer written straight to JSON.

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{AppState, Served, Which, body_of, error, which_of};
use crate::verifier::{Accepted, CheckedSignature, Expect, Rejection};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    dpop: Option<DpopBody>,
}

/// A DPoP proof and the request it came with.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct DpopBody {
    /// The proof; the `DPoP` header's when absent.
    #[serde(default)]
    proof: Option<String>,
    method: String,
    uri: String,
}

/// The token and expectations from a body (JSON) and headers.
fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<(String, VerifyBody), Box<Response>> {
    let parsed: VerifyBody = if body.iter().all(u8::is_ascii_whitespace) {
        VerifyBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body is not a verify request: {e}"),
            ))
        })?
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("DPoP "))
        })
        .map(str::trim)
        .map(str::to_owned);
    let mut parsed = parsed;
    if let Some(dpop) = &mut parsed.dpop
        && dpop.proof.is_none()
    {
        dpop.proof = headers
            .get("dpop")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    let token = parsed.token.clone().or(bearer).ok_or_else(|| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "no token: send {\"token\": ...} or an Authorization: Bearer header",
        ))
    })?;
    Ok((token, parsed))
}

/// One verifier's answer to a credential, written straight to JSON (no
/// intermediate `Value`): the accepted credential's fields beside
/// `valid: true`, or why it was refused. `status`, the HTTP status it
/// would have alone, only in `verify-all`'s list.
#[derive(Serialize)]
#[serde(untagged)]
enum Verdict<'a> {
    Accepted {
        valid: bool,
        #[serde(flatten)]
        accepted: Box<Accepted>,
        verifier: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
    Refused {
        valid: bool,
        reason: &'static str,
        error: String,
        detail: String,
        verifier: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
}

impl Verdict<'_> {
    fn valid(&self) -> bool {
        matches!(self, Verdict::Accepted { .. })
    }

    fn with_status(mut self, code: StatusCode) -> Self {
        match &mut self {
            Verdict::Accepted { status, .. } | Verdict::Refused { status, .. } => {
                *status = Some(code.as_u16());
            }
        }
        self
    }
}

/// `verify-all`'s answer.
#[derive(Serialize)]
struct AllVerdicts<'a> {
    verifiers: usize,
    valid: usize,
    answers: Vec<Verdict<'a>>,
}

/// One verifier's answer; `first` when no other verifier of this process
/// checked this request's DPoP proof before (only the first remembers it);
/// `checked`, the token's signature as another verifier of the process
/// checked it, if one did.
fn verdict<'a>(
    served: &'a Served,
    token: &str,
    request: &VerifyBody,
    first: bool,
    checked: Option<&CheckedSignature>,
) -> (StatusCode, Verdict<'a>) {
    let dpop = request.dpop.as_ref().and_then(|d| {
        Some(crate::verifier::Proof {
            proof: d.proof.as_deref()?,
            method: &d.method,
            uri: &d.uri,
            remember: first,
        })
    });
    let expect = Expect {
        audience: request.audience.as_deref(),
        tenant: request.tenant.as_deref(),
        dpop,
    };
    match served.verifier.verify_checked(token, &expect, checked) {
        Ok(accepted) => (
            StatusCode::OK,
            Verdict::Accepted {
                valid: true,
                accepted: Box::new(accepted),
                verifier: &served.id,
                status: None,
            },
        ),
        Err(rejection) => {
            let status = match rejection {
                Rejection::Stale { .. } | Rejection::NoState => StatusCode::SERVICE_UNAVAILABLE,
                Rejection::Revoked { .. } | Rejection::WrongTenant { .. } => StatusCode::FORBIDDEN,
                Rejection::Invalid { .. }
                | Rejection::KeyOutsideWindow { .. }
                | Rejection::ProofOfPossession { .. } => StatusCode::UNAUTHORIZED,
                // The request's fault: it named no audience to check.
                Rejection::NoAudience => StatusCode::BAD_REQUEST,
            };
            let error = rejection.to_string();
            (
                status,
                Verdict::Refused {
                    valid: false,
                    reason: rejection.code(),
                    detail: error.clone(),
                    error,
                    verifier: &served.id,
                    status: None,
                },
            )
        }
    }
}

pub(super) async fn verify_one(
    State(state): State<AppState>,
    query: Result<Query<Which>, QueryRejection>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    let (which, body) = match (which_of(query), body_of(&headers, body)) {
        (Ok(which), Ok(body)) => (which, body),
        (Err(response), _) | (_, Err(response)) => return *response,
    };
    let (token, request) = match parse_request(&headers, &body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
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
    let (status, body) = verdict(served, &token, &request, true, None);
    (status, axum::Json(body)).into_response()
}

pub(super) async fn verify_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    let body = match body_of(&headers, body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let (token, request) = match parse_request(&headers, &body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    // The signature is checked once, by the first verifier; each verifier
    // takes it only while it holds the same key (`Verifier::verify_checked`).
    let checked = state
        .verifiers
        .values()
        .next()
        .and_then(|first| first.verifier.check_signatures(&[&token]).pop().flatten());
    let answers: Vec<Verdict> = state
        .verifiers
        .values()
        .enumerate()
        .map(|(n, served)| {
            let (status, answer) = verdict(served, &token, &request, n == 0, checked.as_ref());
            answer.with_status(status)
        })
        .collect();
    axum::Json(AllVerdicts {
        verifiers: answers.len(),
        valid: answers.iter().filter(|a| a.valid()).count(),
        answers,
    })
    .into_response()
}
