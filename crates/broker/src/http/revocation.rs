//! RFC 7009 token revocation at `POST /revoke`: `token=<credential>` as a
//! form. An operator (certificate or admin token) revokes what the access
//! policy lets it revoke for the credential's tenant, audited like `lapse
//! revoke credential`; with no client authentication, the credential
//! itself authorises its own revocation, as RFC 7009 allows a holder to,
//! with a DPoP proof for `POST <issuer>/revoke` when it is key-bound.
//! Either way the ledger checks the credential's signature against the
//! registered keys before revoking its index. As RFC 7009 says, a token
//! that is malformed, unknown, expired or already revoked is answered 200:
//! there is nothing more to revoke.

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lapse_ledger::{Applied, Command, PresentedToken, Refusal, RequestId, Revocation};
use lapse_pki::PeerIdentity;
use serde_json::json;

use super::{HttpState, error_response};
use crate::error::BrokerError;

/// The most bytes of a revocation request (a credential is at most 8 KiB).
pub const MAX_REVOCATION_BYTES: usize = 16 * 1024;

/// `POST /revoke`.
pub(super) async fn revoke(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<PeerIdentity>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(caller) = lapse_pki::limits::caller_key(Some(&peer), None)
        && let Err(refused) = state.guards.callers.check_caller(&caller)
    {
        return error_response(&refused);
    }
    match revoke_token(&state, &peer, &headers, &body).await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(json!({})),
        )
            .into_response(),
        Err(error) => error_response(&error),
    }
}

async fn revoke_token(
    state: &HttpState,
    peer: &PeerIdentity,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), BrokerError> {
    let token = &super::oauth::token_param(headers, body, MAX_REVOCATION_BYTES)?;
    let revocation = Revocation::Credential(PresentedToken(token.clone()));
    let client_authenticated =
        peer.principal.is_some() || headers.contains_key(header::AUTHORIZATION);
    let command = if client_authenticated {
        match crate::api::auth::http_caller(&state.core, peer.principal.as_ref(), headers)? {
            // A broker needs no operator's authority.
            None => Command::Revoke(revocation),
            Some(principal) => {
                let tenant = crate::issuance::issuer::claimed_tenant_of(token);
                let bootstrap = &state.core.config().auth.cluster_admins;
                let now = state.core.cluster_now();
                let authorization = state
                    .core
                    .view()
                    .read(|a| {
                        crate::access::decide(
                            &a.ledger,
                            bootstrap,
                            &principal,
                            crate::access::Action::Revoke,
                            tenant.as_ref(),
                            None,
                            now,
                        )
                    })
                    .map_err(|denied| BrokerError::Forbidden(denied.0))?;
                Command::Operate {
                    authorization,
                    command: Box::new(Command::Revoke(revocation)),
                }
            }
        }
    } else {
        let proof = headers
            .get("dpop")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !state.issuer.holder_may_revoke(token, proof)? {
            return Ok(());
        }
        Command::Revoke(revocation)
    };
    let random: [u8; 12] = state.core.env().random_bytes();
    let request_id = RequestId::new(format!("rfc7009-{}", hex::encode(random)))
        .map_err(|e| BrokerError::Broken(e.to_string()))?;
    let response = state.core.propose(request_id, command).await?;
    match response.outcome {
        Ok(Applied::Revoked { .. }) => Ok(()),
        // Nothing (more) to revoke: RFC 7009 §2.2 answers 200.
        Err(Refusal::AlreadyRevoked { .. } | Refusal::BadCredential(_)) => Ok(()),
        Err(refusal) => Err(BrokerError::Refused(refusal)),
        Ok(other) => Err(BrokerError::Broken(format!("unexpected answer {other:?}"))),
    }
}
