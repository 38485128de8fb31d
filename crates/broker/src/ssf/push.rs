//! RFC 8935 push delivery. The leader delivers every enabled push stream,
//! one SET at a time per stream and in order: it POSTs the next pending
//! event, and on a 2xx answer commits the stream's new position
//! (`AckSsf`) before it sends the next. A new leader starts from the
//! committed position, so an event whose answer came but whose position
//! did not commit is delivered again, with the same `jti`.
//!
//! A failed delivery is retried after an exponential back-off with jitter
//! (from `Env`'s randomness); after [`MAX_ATTEMPTS`] failures of one event
//! the stream is paused, with the reason in its status, until its receiver
//! enables it again. At most one delivery per stream is in flight, so at
//! most [`lapse_ledger::ssf::MAX_SSF_STREAMS`].

use std::collections::BTreeMap;
use std::time::Duration;

use lapse_ledger::ssf::{SsfDelivery, SsfStatus as Delivering};
use lapse_ledger::{Command, RequestId};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;

use crate::core::SharedCore;
use crate::error::BrokerError;
use crate::issuance::keys::KeyRing;

/// Failed attempts at one event before its stream is paused.
pub const MAX_ATTEMPTS: u32 = 8;
/// The first back-off; each failure doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long one POST may take, connecting included.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of an endpoint's answer read.
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// How often the deliverer looks again without a change applied.
const TICK: Duration = Duration::from_millis(250);

/// What the deliverer remembers of a stream between attempts.
#[derive(Debug, Default)]
struct Backoff {
    /// The event the failures were for.
    seq: u64,
    attempts: u32,
    /// Monotonic milliseconds before which no attempt is made.
    not_before_ms: f64,
}

/// One delivery's end: the stream, the event, and the failure if any.
type Done = (String, u64, Result<(), BrokerError>);

/// Run the deliverer until the task is aborted.
pub fn spawn(core: SharedCore, keys: std::sync::Arc<KeyRing>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { run(core, keys).await })
}

async fn run(core: SharedCore, keys: std::sync::Arc<KeyRing>) {
    let mut changes = core.view().changes();
    let mut backoff: BTreeMap<String, Backoff> = BTreeMap::new();
    let mut inflight: JoinSet<Done> = JoinSet::new();
    let mut busy: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(TICK) => {}
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                if let Ok((stream, seq, outcome)) = done {
                    busy.remove(&stream);
                    settle(&core, &mut backoff, stream, seq, outcome).await;
                }
            }
        }
        if core.leader().0 != Some(core.id()) {
            backoff.clear();
            continue;
        }
        let Some(key) = keys.signing_key(&core) else {
            continue;
        };
        let now_ms = core.cluster_now();
        let issuer = core.config().issuance.issuer.clone();
        let heads = core.view().read(|a| {
            let ledger = &a.ledger;
            ledger
                .ssf_streams
                .iter()
                .filter_map(|(id, stream)| match &stream.config.delivery {
                    SsfDelivery::Push {
                        endpoint_url,
                        authorization_header,
                    } => {
                        let (seq, event) = super::pending(ledger, stream, 1).pop()?;
                        let set = super::sign_set(&key, &issuer, now_ms, id, stream, seq, &event);
                        Some((
                            id.clone(),
                            seq,
                            endpoint_url.clone(),
                            authorization_header.as_ref().map(|h| h.0.clone()),
                            set,
                        ))
                    }
                    SsfDelivery::Poll => None,
                })
                .collect::<Vec<_>>()
        });
        backoff.retain(|id, _| heads.iter().any(|(head, ..)| head == id));
        let monotonic = core.env().monotonic_ms();
        for (id, seq, url, authorization, set) in heads {
            if busy.contains_key(&id) {
                continue;
            }
            if backoff
                .get(&id)
                .is_some_and(|b| b.seq == seq && b.not_before_ms > monotonic)
            {
                continue;
            }
            busy.insert(id.clone(), seq);
            let core = core.clone();
            inflight.spawn(async move {
                let outcome = deliver(&core, &id, seq, &url, authorization.as_deref(), &set).await;
                (id, seq, outcome)
            });
        }
    }
}

/// POST one SET, then commit the stream's position.
async fn deliver(
    core: &SharedCore,
    stream_id: &str,
    seq: u64,
    url: &str,
    authorization: Option<&str>,
    set: &str,
) -> Result<(), BrokerError> {
    let roots = core.tls().map(|tls| tls.credentials().roots.clone());
    post(url, authorization, set, roots.as_deref()).await?;
    let id = RequestId::new(format!("ssf-push-{stream_id}-{seq}"))
        .map_err(|e| BrokerError::Broken(format!("request id: {e}")))?;
    let command = Command::AckSsf {
        stream_id: stream_id.to_owned(),
        up_to: seq,
    };
    let response = core
        .propose(id, command)
        .await
        .map_err(|e| unavailable(format!("delivered, but the position did not commit: {e}")))?;
    match response.outcome {
        Ok(_) => Ok(()),
        Err(refusal) => Err(unavailable(format!(
            "delivered, but the position was refused: {refusal}"
        ))),
    }
}

/// Count a delivery's end: forget the stream's failures on success; on
/// failure wait longer, and pause the stream after [`MAX_ATTEMPTS`].
async fn settle(
    core: &SharedCore,
    backoff: &mut BTreeMap<String, Backoff>,
    stream: String,
    seq: u64,
    outcome: Result<(), BrokerError>,
) {
    let problem = match outcome {
        Ok(()) => {
            backoff.remove(&stream);
            return;
        }
        Err(error) => error.to_string(),
    };
    let entry = backoff.entry(stream.clone()).or_default();
    if entry.seq != seq {
        *entry = Backoff {
            seq,
            ..Backoff::default()
        };
    }
    entry.attempts += 1;
    tracing::warn!(stream, seq, attempts = entry.attempts, %problem, "SSF push failed");
    if entry.attempts >= MAX_ATTEMPTS {
        backoff.remove(&stream);
        let mut reason = format!("push failed {MAX_ATTEMPTS} times: {problem}");
        lapse_ledger_cap(&mut reason);
        let id = format!("ssf-pause-{}", hex::encode(core.env().random_bytes::<8>()));
        let Ok(id) = RequestId::new(id) else {
            return;
        };
        let command = Command::SetSsfStatus {
            receiver: None,
            stream_id: stream.clone(),
            status: Delivering::Paused,
            reason: Some(reason),
        };
        if let Err(error) = core.propose(id, command).await {
            tracing::warn!(stream, %error, "an SSF stream could not be paused");
        }
        return;
    }
    let doubled = FIRST_BACKOFF.saturating_mul(1 << (entry.attempts - 1).min(16));
    let full = doubled.min(MAX_BACKOFF).as_millis() as f64;
    // Jitter: wait between half and all of the back-off.
    let random = u16::from_le_bytes(core.env().random_bytes::<2>()) as f64 / u16::MAX as f64;
    entry.not_before_ms = core.env().monotonic_ms() + full * (0.5 + random / 2.0);
}

fn lapse_ledger_cap(text: &mut String) {
    let max = lapse_ledger::ssf::MAX_SSF_TEXT_BYTES;
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// POST `set` to `url` as `application/secevent+jwt` (RFC 8935 §2); a
/// 2xx answer is delivered, anything else a failure described by the
/// status and the RFC 8935 error (`err`, `description`) when given. An
/// `https://` endpoint's certificate must chain to the public web PKI or
/// to `cluster_roots`; plain `http://` goes only to a loopback host, as the
/// ledger allows.
pub async fn post(
    url: &str,
    authorization: Option<&str>,
    set: &str,
    cluster_roots: Option<&lapse_pki::RootCertStore>,
) -> Result<(), BrokerError> {
    let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => return Err(unavailable(format!("{url:?} is not an http(s) URL"))),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') && port.parse::<u16>().is_ok() => {
            (host, port.parse::<u16>().unwrap_or(0))
        }
        _ => (authority, if tls { 443 } else { 80 }),
    };
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/secevent+jwt\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        set.len()
    );
    if let Some(value) = authorization {
        request.push_str(&format!("Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(set);
    let exchange = async {
        let connect_error =
            |e: std::io::Error| unavailable(format!("cannot connect to {authority}: {e}"));
        let mut stream: Box<dyn Connection> = if tls {
            Box::new(
                lapse_pki::transport::connect_public(host, port, cluster_roots)
                    .await
                    .map_err(connect_error)?,
            )
        } else {
            Box::new(
                tokio::net::TcpStream::connect((
                    host.trim_start_matches('[').trim_end_matches(']'),
                    port,
                ))
                .await
                .map_err(connect_error)?,
            )
        };
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| unavailable(format!("sending to {authority}: {e}")))?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| unavailable(format!("reading {authority}'s answer: {e}")))?;
            if n == 0 || answer.len() + n > MAX_ANSWER_BYTES {
                answer.extend_from_slice(&chunk[..n.min(MAX_ANSWER_BYTES - answer.len())]);
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, BrokerError>(answer)
    };
    let answer = tokio::time::timeout(POST_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            unavailable(format!(
                "{authority} did not answer within {POST_TIMEOUT:?}"
            ))
        })??;
    let text = String::from_utf8_lossy(&answer);
    let status: u16 = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| unavailable(format!("{authority} answered no HTTP status")))?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or("");
    let error = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            Some(format!(
                "{}: {}",
                v.get("err")?.as_str()?,
                v.get("description").and_then(|d| d.as_str()).unwrap_or("")
            ))
        })
        .unwrap_or_default();
    let mut error = error;
    lapse_ledger_cap(&mut error);
    Err(unavailable(format!(
        "{authority} answered HTTP {status} {error}"
    )))
}

/// A connection to a push endpoint, plain or TLS.
trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Connection for T {}

fn unavailable(text: String) -> BrokerError {
    BrokerError::Unavailable(text)
}
