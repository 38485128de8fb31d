//! The Shared Signals transmitter's HTTP endpoints (OpenID SSF 1.0):
//! `/.well-known/ssf-configuration` (public metadata, like the JWKS), the
//! stream configuration endpoint `/ssf/stream` (POST creates, GET reads
//! one or lists, PATCH updates, PUT replaces, DELETE deletes), the status
//! endpoint `/ssf/status` (GET, POST), and RFC 8936 polling at
//! `POST /ssf/poll/{stream_id}`. Everything but the metadata needs a
//! receiver's bearer token, and a receiver sees only its own streams and
//! its tenant's events. Every change is committed through Raft before it
//! is answered; a poll's acknowledgements too, before its events are read.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lapse_ledger::ssf::{
    SSF_EVENTS_SUPPORTED, SsfDelivery, SsfSecret, SsfStatus as Delivering, SsfStream,
    SsfStreamConfig, config_problem,
};
use lapse_ledger::{Applied, Command, RequestId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{HttpState, error_response};
use crate::error::{BrokerError, answer};
use crate::ssf::{self, POLL_METHOD, PUSH_METHOD, Receiver};

/// The most bytes of a request body read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The most acknowledgements one poll carries.
const MAX_ACKS: usize = 1000;
/// The most SETs one poll answers with, and how many when not said.
const MAX_POLL_EVENTS: usize = 500;
const DEFAULT_POLL_EVENTS: usize = 100;

/// The SSF routes, merged into the broker's HTTP router.
pub(crate) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/.well-known/ssf-configuration", get(configuration))
        .route(
            "/ssf/stream",
            get(read_streams)
                .post(create_stream)
                .patch(update_stream)
                .put(replace_stream)
                .delete(delete_stream),
        )
        .route("/ssf/status", get(read_status).post(set_status))
        .route("/ssf/poll/{stream_id}", post(poll))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn configuration(State(state): State<HttpState>) -> impl IntoResponse {
    let base = &state.base_url;
    axum::Json(json!({
        "spec_version": "1_0",
        "issuer": state.core.config().issuance.issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "delivery_methods_supported": [PUSH_METHOD, POLL_METHOD],
        "configuration_endpoint": format!("{base}/ssf/stream"),
        "status_endpoint": format!("{base}/ssf/status"),
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
        "default_subjects": "ALL",
    }))
}

/// The receiver a request's bearer token names.
fn receiver(state: &HttpState, headers: &HeaderMap) -> Result<Receiver, BrokerError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    ssf::authenticate(&state.core, value)
}

/// The query's `stream_id`, if given.
fn stream_id_of(query: Option<&str>) -> Result<Option<String>, BrokerError> {
    let mut found = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "stream_id" if found.is_none() => found = Some(value.into_owned()),
            "stream_id" => return Err(BrokerError::Invalid("stream_id given twice".into())),
            other => {
                return Err(BrokerError::Invalid(format!(
                    "unknown query parameter {:?}",
                    other.chars().take(64).collect::<String>()
                )));
            }
        }
    }
    Ok(found)
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, BrokerError> {
    serde_json::from_slice(body).map_err(|e| BrokerError::Invalid(format!("the JSON body: {e}")))
}

/// Propose `command` under a fresh request id and wait for its answer.
async fn propose(state: &HttpState, command: Command) -> Result<Applied, BrokerError> {
    let id = format!("ssf-{}", hex::encode(state.core.env().random_bytes::<12>()));
    let id = RequestId::new(id).map_err(|e| BrokerError::Broken(e.to_string()))?;
    let response = state.core.propose(id, command).await?;
    answer(response.outcome, Ok)
}

/// Wait until this broker's state holds everything committed before now.
async fn current(state: &HttpState) -> Result<(), BrokerError> {
    let patience = Duration::from_millis(state.core.config().raft.rpc_timeout_ms);
    state.core.confirm_current(patience).await
}

/// One of `receiver`'s streams, as the ledger holds it.
fn own_stream(state: &HttpState, receiver: &Receiver, id: &str) -> Result<SsfStream, BrokerError> {
    state
        .core
        .view()
        .read(|a| a.ledger.ssf_streams.get(id).cloned())
        .filter(|stream| stream.receiver == receiver.name)
        .ok_or_else(|| BrokerError::NotFound(format!("no stream {id:?} of this receiver")))
}

/// A stream's configuration as SSF §8.1.1 shows it; never the push
/// endpoint's authorization header.
fn stream_json(state: &HttpState, id: &str, stream: &SsfStream) -> Value {
    let delivery = match &stream.config.delivery {
        SsfDelivery::Push { endpoint_url, .. } => {
            json!({"method": PUSH_METHOD, "endpoint_url": endpoint_url})
        }
        SsfDelivery::Poll => json!({
            "method": POLL_METHOD,
            "endpoint_url": format!("{}/ssf/poll/{id}", state.base_url),
        }),
    };
    let delivered: Vec<&str> = SSF_EVENTS_SUPPORTED
        .iter()
        .copied()
        .filter(|e| stream.delivers(e))
        .collect();
    let mut value = json!({
        "stream_id": id,
        "iss": state.core.config().issuance.issuer,
        "aud": match stream.config.audiences.as_slice() {
            [one] => json!(one),
            many => json!(many),
        },
        "events_supported": SSF_EVENTS_SUPPORTED,
        "events_requested": stream.config.events_requested,
        "events_delivered": delivered,
        "delivery": delivery,
    });
    if let Some(text) = &stream.config.description {
        value["description"] = json!(text);
    }
    value
}

/// A stream configuration as a receiver sends it (SSF §8.1.1). Fields the
/// transmitter supplies (`iss`, `events_supported`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct StreamBody {
    stream_id: Option<String>,
    aud: Option<OneOrMany>,
    events_requested: Option<Vec<String>>,
    delivery: Option<DeliveryBody>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryBody {
    method: String,
    endpoint_url: Option<String>,
    authorization_header: Option<String>,
}

/// Apply `body` over `base` (`None`: a new stream): what is given replaces
/// what was there. Checked as the ledger checks it.
fn merged(
    receiver: &Receiver,
    base: Option<&SsfStreamConfig>,
    body: StreamBody,
) -> Result<SsfStreamConfig, BrokerError> {
    let audiences = match body.aud {
        Some(OneOrMany::One(aud)) => vec![aud],
        Some(OneOrMany::Many(list)) => list,
        None => base.map_or_else(
            || vec![format!("lapse-ssf:{}", receiver.name)],
            |b| b.audiences.clone(),
        ),
    };
    let events_requested = match body.events_requested {
        Some(list) => list,
        None => base.map_or_else(
            || {
                SSF_EVENTS_SUPPORTED
                    .iter()
                    .map(|e| (*e).to_owned())
                    .collect()
            },
            |b| b.events_requested.clone(),
        ),
    };
    let delivery = match body.delivery {
        Some(delivery) => match delivery.method.as_str() {
            POLL_METHOD if delivery.endpoint_url.is_none() => SsfDelivery::Poll,
            POLL_METHOD => {
                return Err(BrokerError::Invalid(
                    "poll delivery's endpoint_url is the transmitter's; leave it out".into(),
                ));
            }
            PUSH_METHOD => SsfDelivery::Push {
                endpoint_url: delivery.endpoint_url.ok_or_else(|| {
                    BrokerError::Invalid("push delivery needs an endpoint_url".into())
                })?,
                authorization_header: delivery.authorization_header.map(SsfSecret),
            },
            other => {
                return Err(BrokerError::Invalid(format!(
                    "delivery method {:?} is not supported; use {PUSH_METHOD} or {POLL_METHOD}",
                    other.chars().take(64).collect::<String>()
                )));
            }
        },
        None => base.map_or(SsfDelivery::Poll, |b| b.delivery.clone()),
    };
    let config = SsfStreamConfig {
        audiences,
        events_requested,
        delivery,
        description: body
            .description
            .or_else(|| base.and_then(|b| b.description.clone())),
    };
    if let Some(problem) = config_problem(&config) {
        return Err(BrokerError::Invalid(problem));
    }
    Ok(config)
}

async fn create_stream(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let receiver = receiver(&state, &headers)?;
        let body: StreamBody = json_body(&body)?;
        if body.stream_id.is_some() {
            return Err(BrokerError::Invalid(
                "a new stream's stream_id is the transmitter's; leave it out".into(),
            ));
        }
        let config = merged(&receiver, None, body)?;
        let applied = propose(
            &state,
            Command::PutSsfStream {
                receiver: receiver.name.clone(),
                stream_id: None,
                config,
            },
        )
        .await?;
        let Applied::SsfStreamSet { stream_id } = applied else {
            return Err(BrokerError::Broken(format!(
                "unexpected answer {applied:?}"
            )));
        };
        current(&state).await?;
        let stream = own_stream(&state, &receiver, &stream_id)?;
        Ok((
            StatusCode::CREATED,
            axum::Json(stream_json(&state, &stream_id, &stream)),
        ))
    }
    .await;
    result.map_or_else(|e| error_response(&e), IntoResponse::into_response)
}

async fn read_streams(
    State(state): State<HttpState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        let receiver = receiver(&state, &headers)?;
        let id = stream_id_of(query.as_deref())?;
        current(&state).await?;
        match id {
            Some(id) => {
                let stream = own_stream(&state, &receiver, &id)?;
                Ok(axum::Json(stream_json(&state, &id, &stream)))
            }
            None => {
                let streams: Vec<(String, SsfStream)> = state.core.view().read(|a| {
                    a.ledger
                        .ssf_streams
                        .iter()
                        .filter(|(_, s)| s.receiver == receiver.name)
                        .map(|(id, s)| (id.clone(), s.clone()))
                        .collect()
                });
                Ok(axum::Json(Value::Array(
                    streams
                        .iter()
                        .map(|(id, s)| stream_json(&state, id, s))
                        .collect(),
                )))
            }
        }
    }
    .await;
    result.map_or_else(|e| error_response(&e), IntoResponse::into_response)
}

async fn change_stream(
    state: HttpState,
    headers: HeaderMap,
    body: Bytes,
    replace: bool,
) -> Response {
    let result = async {
        let receiver = receiver(&state, &headers)?;
        let body: StreamBody = json_body(&body)?;
        let id = body
            .stream_id
            .clone()
            .ok_or_else(|| BrokerError::Invalid("stream_id is required".into()))?;
        current(&state).await?;
        let existing = own_stream(&state, &receiver, &id)?;
        let base = (!replace).then_some(&existing.config);
        let config = merged(&receiver, base, body)?;
        propose(
            &state,
            Command::PutSsfStream {
                receiver: receiver.name.clone(),
                stream_id: Some(id.clone()),
                config,
            },
        )
        .await?;
        current(&state).await?;
        let stream = own_stream(&state, &receiver, &id)?;
        Ok(axum::Json(stream_json(&state, &id, &stream)))
    }
    .await;
    result.map_or_else(|e| error_response(&e), IntoResponse::into_response)
}

async fn update_stream(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change_stream(state, headers, body, false).await
}

async fn replace_stream(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change_stream(state, headers, body, true).await
}

async fn delete_stream(
    State(state): State<HttpState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        let receiver = receiver(&state, &headers)?;
        let id = stream_id_of(query.as_deref())?
            .ok_or_else(|| BrokerError::Invalid("stream_id is required".into()))?;
        propose(
            &state,
            Command::DeleteSsfStream {
                receiver: receiver.name,
                stream_id: id,
            },
        )
        .await?;
        Ok(StatusCode::NO_CONTENT)
    }
    .await;
    result.map_or_else(|e| error_response(&e), IntoResponse::into_response)
}

/// A stream's status (SSF §8.1.2). When events were pruned from the log
/// before the stream took them, `reason` says how many at most, and
/// `events_missed` counts them: delivery is at least once only within the
/// log's bound.
fn status_json(state: &HttpState, id: &str, stream: &SsfStream) -> Value {
    let mut value = json!({"stream_id": id, "status": stream.status.as_str()});
    let missed = state.core.view().read(|a| a.ledger.ssf_missed(stream));
    let mut reasons: Vec<String> = stream.reason.iter().cloned().collect();
    if missed > 0 {
        reasons.push(format!(
            "up to {missed} events were pruned from the transmitter's log (the last {} revocations, none older than the audit retention) before this stream took them",
            lapse_ledger::ssf::MAX_SSF_EVENTS
        ));
        value["events_missed"] = json!(missed);
    }
    if !reasons.is_empty() {
        value["reason"] = json!(reasons.join("; "));
    }
    value
}

async fn read_status(
    State(state): State<HttpState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        let receiver = receiver(&state, &headers)?;
        let id = stream_id_of(query.as_deref())?
            .ok_or_else(|| BrokerError::Invalid("stream_id is required".into()))?;
        current(&state).await?;
        let stream = own_stream(&state, &receiver, &id)?;
        Ok(axum::Json(status_json(&state, &id, &stream)))
    }
    .await;
    result.map_or_else(|e| error_response(&e), IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    stream_id: String,
    status: String,
    reason: Option<String>,
}

async fn set_status(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let receiver = receiver(&state, &headers)?;
        let body: StatusBody = json_body(&body)?;
        let status = match body.status.as_str() {
            "enabled" => Delivering::Enabled,
            "paused" => Delivering::Paused,
            "disabled" => Delivering::Disabled,
            _ => {
                return Err(BrokerError::Invalid(
                    "status is one of enabled, paused, disabled".into(),
                ));
            }
        };
        if body
            .reason
            .as_ref()
            .is_some_and(|r| r.len() > lapse_ledger::ssf::MAX_SSF_TEXT_BYTES)
        {
            return Err(BrokerError::Invalid(format!(
                "reason is longer than {} bytes",
                lapse_ledger::ssf::MAX_SSF_TEXT_BYTES
            )));
        }
        propose(
            &state,
            Command::SetSsfStatus {
                receiver: Some(receiver.name.clone()),
                stream_id: body.stream_id.clone(),
                status,
                reason: body.reason,
            },
        )
        .await?;
        current(&state).await?;
        let stream = own_stream(&state, &receiver, &body.stream_id)?;
        Ok(axum::Json(status_json(&state, &body.stream_id, &stream)))
    }
    .await;
    result.map_or_else(|e| error_response(&e), IntoResponse::into_response)
}

/// An RFC 8936 poll request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PollBody {
    #[serde(default)]
    ack: Vec<String>,
    /// Errors the receiver found in SETs it was sent: they were delivered,
    /// so they count as acknowledged.
    #[serde(rename = "setErrs", default)]
    set_errs: serde_json::Map<String, Value>,
    #[serde(rename = "maxEvents")]
    max_events: Option<usize>,
    #[serde(rename = "returnImmediately", default)]
    return_immediately: bool,
}

async fn poll(
    State(state): State<HttpState>,
    Path(stream_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let receiver = receiver(&state, &headers)?;
        let request: PollBody = if body.is_empty() {
            PollBody::default()
        } else {
            json_body(&body)?
        };
        if request.ack.len() + request.set_errs.len() > MAX_ACKS {
            return Err(BrokerError::Invalid(format!(
                "at most {MAX_ACKS} acknowledgements a poll"
            )));
        }
        let max = request.max_events.unwrap_or(DEFAULT_POLL_EVENTS);
        if max > MAX_POLL_EVENTS {
            return Err(BrokerError::Invalid(format!(
                "maxEvents is at most {MAX_POLL_EVENTS}"
            )));
        }
        current(&state).await?;
        let stream = own_stream(&state, &receiver, &stream_id)?;
        if stream.config.delivery != SsfDelivery::Poll {
            return Err(BrokerError::Invalid(format!(
                "stream {stream_id} is delivered by push, not poll"
            )));
        }
        let mut up_to = 0;
        for jti in request.ack.iter().chain(request.set_errs.keys()) {
            let seq = ssf::seq_of(&stream_id, jti).ok_or_else(|| {
                BrokerError::Invalid(format!(
                    "{:?} is no jti of stream {stream_id}",
                    jti.chars().take(64).collect::<String>()
                ))
            })?;
            up_to = up_to.max(seq);
        }
        for (jti, error) in &request.set_errs {
            tracing::info!(stream = %stream_id, jti = %jti.chars().take(64).collect::<String>(),
                error = %error.to_string().chars().take(256).collect::<String>(),
                "an SSF receiver reported an error in a SET");
        }
        if up_to > stream.acked {
            // Acknowledgements count once committed; a retried poll
            // proposes the same command under the same request id.
            let id = RequestId::new(format!("ssf-ack-{stream_id}-{up_to}"))
                .map_err(|e| BrokerError::Invalid(e.to_string()))?;
            let response = state
                .core
                .propose(
                    id,
                    Command::AckSsf {
                        stream_id: stream_id.clone(),
                        up_to,
                    },
                )
                .await?;
            answer(response.outcome, Ok)?;
            current(&state).await?;
        }
        let wait = Duration::from_millis(state.core.config().limits.http_request_timeout_ms / 2)
            .min(Duration::from_secs(10));
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = state.core.view().changes();
        let (events, more) = loop {
            let (events, more) = state.core.view().read(|a| {
                let stream = a.ledger.ssf_streams.get(&stream_id);
                let mut events = stream
                    .map(|s| ssf::pending(&a.ledger, s, max + 1))
                    .unwrap_or_default();
                let more = events.len() > max;
                events.truncate(max);
                (events, more)
            });
            if !events.is_empty()
                || request.return_immediately
                || max == 0
                || tokio::time::Instant::now() >= deadline
            {
                break (events, more);
            }
            let _ = tokio::time::timeout_at(deadline, changes.changed()).await;
        };
        let key = state.issuer.keys.signing_key(&state.core).ok_or_else(|| {
            BrokerError::Unavailable("this broker has no committed signing key yet".into())
        })?;
        let stream = own_stream(&state, &receiver, &stream_id)?;
        let issuer = &state.core.config().issuance.issuer;
        let now_ms = state.core.cluster_now();
        let mut sets = serde_json::Map::new();
        for (seq, event) in &events {
            sets.insert(
                ssf::jti(&stream_id, *seq),
                json!(ssf::sign_set(
                    &key, issuer, now_ms, &stream_id, &stream, *seq, event
                )),
            );
        }
        Ok(axum::Json(json!({"sets": sets, "moreAvailable": more})))
    }
    .await;
    result.map_or_else(|e| error_response(&e), IntoResponse::into_response)
}
