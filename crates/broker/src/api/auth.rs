//! Who is calling. With TLS every caller is the identity its verified
//! client certificate names (brokers by node id, verifiers and operators
//! by name), or anonymous; without TLS (`insecure_plaintext`, loopback
//! only, and simulation) peers prove themselves with the cluster secret.
//! Admin calls take an operator certificate, or one of the configured
//! admin bearer tokens as a fallback.

use lapse_pki::{PeerIdentity, Principal, Role};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::core::SharedCore;
use crate::link::{ClusterSecret, SECRET_HEADER, constant_time_eq};

/// The caller's verified identity, if the connection is TLS and the
/// client presented a certificate of this cluster.
pub fn principal<T>(request: &Request<T>) -> Option<&Principal> {
    request
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|identity| identity.principal.as_ref())
}

/// A broker that proved its node id on this call (TLS only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallingBroker(pub u64);

/// Refuse peer calls from anyone but a broker of this cluster: with TLS,
/// a client certificate naming a broker (its id goes into the request as
/// [`CallingBroker`]); without, the cluster secret.
pub fn check_peer(
    core: &SharedCore,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
    let secret: Option<ClusterSecret> = core.tls().is_none().then(|| core.secret().clone());
    move |mut request: Request<()>| match &secret {
        None => match principal(&request).map(|p| &p.role) {
            Some(Role::Broker(id)) => {
                let id = *id;
                request.extensions_mut().insert(CallingBroker(id));
                Ok(request)
            }
            Some(other) => Err(Status::permission_denied(format!(
                "peer calls are for brokers; the client certificate names {other}"
            ))),
            None => Err(Status::unauthenticated(
                "peer calls need a broker certificate of this cluster",
            )),
        },
        Some(secret) => {
            let presented = request
                .metadata()
                .get(SECRET_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if secret.matches(presented) {
                Ok(request)
            } else {
                Err(Status::unauthenticated(
                    "peer call without the right cluster secret",
                ))
            }
        }
    }
}

/// Whether the caller is a broker of this cluster: with TLS, by its
/// certificate; without, by the cluster secret. A plaintext broker still
/// joining has no secret yet, and nothing of the cluster's to keep: it
/// answers the leader's probe from anyone.
pub fn is_broker<T>(core: &SharedCore, request: &Request<T>) -> bool {
    if core.tls().is_some() {
        return matches!(principal(request).map(|p| &p.role), Some(Role::Broker(_)));
    }
    if core.secret().get().is_none() {
        return true;
    }
    let presented = request
        .metadata()
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    core.secret().matches(presented)
}

/// With TLS, the node id a peer call's certificate proved; a Raft message
/// claiming another sender is refused.
pub fn check_sender<T>(request: &Request<T>, claimed: u64) -> Result<(), Status> {
    match request.extensions().get::<CallingBroker>() {
        Some(CallingBroker(id)) if *id != claimed => Err(Status::permission_denied(format!(
            "the message claims to come from broker {claimed}, but the certificate names broker {id}"
        ))),
        _ => Ok(()),
    }
}

/// Who is administering: an operator by certificate (`operator:<name>`),
/// or the holder of an admin token (`token:<name>`). What they may do is
/// decided by [`crate::access`].
pub fn authorize_admin<T>(core: &SharedCore, request: &Request<T>) -> Result<String, Status> {
    match principal(request).map(|p| &p.role) {
        Some(Role::Operator(name)) => return Ok(format!("operator:{name}")),
        Some(other) => {
            return Err(Status::permission_denied(format!(
                "admin calls are for operators; the client certificate names {other}"
            )));
        }
        None => {}
    }
    let name = authorize_token(
        &core.config().auth,
        request.metadata(),
        core.tls().is_some(),
    )?;
    Ok(format!("token:{name}"))
}

/// Who is calling one of the broker's HTTP endpoints for operators
/// (`/metrics`): `Ok(None)` for a broker of this cluster, `Ok(Some(p))`
/// for an operator (certificate, or admin bearer token), decided then by
/// the access policy like a gRPC call.
pub fn http_caller(
    core: &SharedCore,
    identity: Option<&Principal>,
    headers: &axum::http::HeaderMap,
) -> Result<Option<String>, crate::error::BrokerError> {
    use crate::error::BrokerError;
    match identity.map(|p| &p.role) {
        Some(Role::Broker(_)) => return Ok(None),
        Some(Role::Operator(name)) => return Ok(Some(format!("operator:{name}"))),
        Some(other) => {
            return Err(BrokerError::Forbidden(format!(
                "this endpoint is for operators and brokers; the client certificate names {other}"
            )));
        }
        None => {}
    }
    let metadata = MetadataMap::from_headers(headers.clone());
    match authorize_token(&core.config().auth, &metadata, core.tls().is_some()) {
        Ok(name) => Ok(Some(format!("token:{name}"))),
        Err(status) => Err(BrokerError::Unauthenticated(status.message().to_owned())),
    }
}

/// Require one of the configured admin bearer tokens: the name of the
/// one presented. Tokens are compared by their SHA-256, in constant time.
fn authorize_token(
    auth: &crate::config::AuthConfig,
    metadata: &MetadataMap,
    tls: bool,
) -> Result<String, Status> {
    let what = if tls {
        "this call needs an operator certificate (lapse certs operator) or an admin token"
    } else {
        "this call needs an admin token: send 'authorization: Bearer <token>'"
    };
    let header = metadata
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated(what))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| Status::unauthenticated("authorization header is not 'Bearer <token>'"))?;
    let presented = crate::config::token_hash(token);
    // Every entry is compared, so the time taken says nothing of which
    // (if any) matched.
    let mut known = None;
    for entry in auth.hashed_tokens() {
        if constant_time_eq(entry.sha256.as_bytes(), presented.as_bytes()) {
            known = Some(entry.name.clone());
        }
    }
    known.ok_or_else(|| Status::unauthenticated("admin token not recognised"))
}

/// With TLS, the verifier name a feed subscriber's certificate proves; the
/// id in its `Hello` must be that name or `name/<anything>` (several
/// verifiers in one process). Without TLS any id goes.
pub fn check_verifier<T>(
    core: &SharedCore,
    request: &Request<T>,
) -> Result<Option<String>, Status> {
    if core.tls().is_none() {
        return Ok(None);
    }
    PeerIdentity::certified_verifier(request).map(Some)
}
