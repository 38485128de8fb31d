//! Credential status for relying parties that do not run a Lapse verifier:
//! the IETF Token Status List at `GET /statuslists/<k>` (public, as the
//! draft intends: a list says nothing of who holds which index) and RFC
//! 7662 introspection at `POST /introspect` (for callers the access policy
//! lets read the status: an operator, a broker, or a verifier's
//! certificate). Both answer from this broker's applied ledger, so a
//! revocation shows as soon as the broker has applied it.
//!
//! A status list holds one bit per status index: the indices revoked by
//! index (`revoke index`, `chain`, `credential`). Revocations by rule
//! (subject, tenant, task, key, a leaked secret, or an ancestor's index)
//! cover credentials the list cannot name by index; introspection, which
//! sees the whole credential, and Lapse's verifiers apply every kind.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use lapse_credential::status_list::{
    STATUS_LIST_SIZE, StatusListBits, StatusListClaims, encode_list, list_uri,
};
use lapse_credential::{AudienceCheck, VerifyOptions};
use lapse_pki::PeerIdentity;
use serde_json::json;

use super::{HttpState, error_response};
use crate::error::BrokerError;

/// How long a relying party may cache a list (the token's `ttl`), seconds.
pub const LIST_TTL_SECONDS: u64 = 60;
/// How long a list token is valid (`exp - iat`), seconds.
pub const LIST_LIFETIME_SECONDS: u64 = 300;
/// The most bytes of an introspection request.
pub const MAX_INTROSPECTION_BYTES: usize = 16 * 1024;

/// The caller's share of the rate limit, by certificate or remote address.
fn rate_limited(state: &HttpState, peer: &PeerIdentity) -> Option<Response> {
    let caller = lapse_pki::limits::caller_key(Some(peer), None)?;
    let refused = state.guards.callers.check_caller(&caller).err()?;
    Some(error_response(&refused))
}

/// `GET /statuslists/<k>`: list `k` as a status list token
/// (`application/statuslist+jwt`), signed by this broker's committed key.
pub(super) async fn status_list(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<PeerIdentity>,
    Path(list): Path<String>,
) -> Response {
    if let Some(refused) = rate_limited(&state, &peer) {
        return refused;
    }
    match status_list_token(&state, &list) {
        Ok(token) => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/statuslist+jwt".to_owned(),
                ),
                (header::CACHE_CONTROL, format!("max-age={LIST_TTL_SECONDS}")),
            ],
            token,
        )
            .into_response(),
        Err(error) => error_response(&error),
    }
}

/// The signed token of list `list` (its number, as the path gave it).
fn status_list_token(state: &HttpState, list: &str) -> Result<String, BrokerError> {
    let number: u64 = list
        .parse()
        .ok()
        .filter(|n| *n >= 1 && list.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            BrokerError::NotFound(format!(
                "no status list {list:?}: lists are numbered from 1"
            ))
        })?;
    let start = (number - 1).saturating_mul(STATUS_LIST_SIZE);
    let end = start.saturating_add(STATUS_LIST_SIZE);
    let revoked = state.core.view().read(|applied| {
        let ledger = &applied.ledger;
        // A list exists once an index of it has been leased.
        (start < ledger.next_index).then(|| {
            ledger
                .revoked_indices
                .range(start..end)
                .map(|(index, _)| index - start)
                .collect::<Vec<u64>>()
        })
    });
    let Some(revoked) = revoked else {
        return Err(BrokerError::NotFound(format!(
            "no status list {number}: no index of it has been issued"
        )));
    };
    let key = state.issuer.keys.signing_key(&state.core).ok_or_else(|| {
        BrokerError::Unavailable(
            "this broker has no committed signing key yet; retry shortly".into(),
        )
    })?;
    let now = state.core.cluster_now() / 1000;
    let issuer = &state.core.config().issuance.issuer;
    let claims = StatusListClaims {
        iss: issuer.clone(),
        sub: list_uri(issuer, number),
        iat: now,
        exp: now + LIST_LIFETIME_SECONDS,
        ttl: LIST_TTL_SECONDS,
        status_list: StatusListBits {
            bits: 1,
            lst: encode_list(revoked),
        },
    };
    key.sign_status_list(&claims)
        .map_err(|e| BrokerError::Broken(format!("signing a status list failed: {e}")))
}

/// `POST /introspect` (RFC 7662): `token=<credential>` as a form; answers
/// `{"active": false}` for a credential that is malformed, badly signed,
/// expired or revoked by anything a verifier honours, else `active: true`
/// with its claims.
pub(super) async fn introspect(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<PeerIdentity>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = rate_limited(&state, &peer) {
        return refused;
    }
    // A verifier's certificate may introspect: a verifier may read the
    // status. Anyone else is decided by the access policy.
    let verifier = peer
        .principal
        .as_ref()
        .is_some_and(|p| matches!(p.role, lapse_pki::Role::Verifier(_)));
    if !verifier {
        let decided = crate::api::auth::http_caller(&state.core, peer.principal.as_ref(), &headers)
            .and_then(|operator| match operator {
                None => Ok(()),
                Some(principal) => super::may_read_status(&state.core, &principal),
            });
        if let Err(error) = decided {
            return error_response(&error);
        }
    }
    let token = match super::oauth::token_param(&headers, &body, MAX_INTROSPECTION_BYTES) {
        Ok(token) => token,
        Err(error) => return error_response(&error),
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(introspection(&state, &token)),
    )
        .into_response()
}

/// What introspection says of `token`.
fn introspection(state: &HttpState, token: &str) -> serde_json::Value {
    let inactive = json!({ "active": false });
    let keys = crate::issuance::issuer::ledger_keys(&state.core);
    let settings = &state.core.config().issuance;
    let Ok(verified) = lapse_credential::verify(
        token,
        &keys,
        &VerifyOptions {
            audience: AudienceCheck::Any,
            issuer: &settings.issuer,
            now_seconds: state.core.cluster_now() / 1000,
            leeway_seconds: settings.leeway_seconds,
        },
    ) else {
        return inactive;
    };
    let claims = verified.claims;
    if claims.agent.problem().is_some() {
        return inactive;
    }
    let token_sha256: [u8; 32] = {
        use sha2::Digest as _;
        sha2::Sha256::digest(token.as_bytes()).into()
    };
    let revoked = state.core.view().read(|applied| {
        let ledger = &applied.ledger;
        ledger.is_revoked(
            claims.status_index(),
            &claims.tenant,
            &claims.sub,
            &verified.key_id,
            claims.iat * 1000,
            claims.agent.task.as_deref(),
            &claims.agent.ancestors,
        ) || ledger.revoked_secrets.contains_key(&token_sha256)
    });
    if revoked {
        return inactive;
    }
    let mut answer = json!({
        "active": true,
        "iss": claims.iss,
        "sub": claims.sub.as_str(),
        "aud": claims.aud,
        "iat": claims.iat,
        "nbf": claims.nbf,
        "exp": claims.exp,
        "jti": claims.jti,
        "scope": claims.scopes.join(" "),
        "token_type": if claims.cnf.is_some() { "DPoP" } else { "Bearer" },
        "tenant": claims.tenant.as_str(),
        "status": { "status_list": {
            "idx": claims.status.status_list.idx,
            "uri": claims.status.status_list.uri,
        }},
    });
    if let Some(cnf) = &claims.cnf {
        answer["cnf"] = json!({ "jkt": cnf.jkt });
    }
    let agent = serde_json::to_value(&claims.agent).unwrap_or_default();
    if let (Some(answer), Some(agent)) = (answer.as_object_mut(), agent.as_object()) {
        answer.extend(agent.clone());
    }
    answer
}
