//! What the verify API admits: connections, request time, and each
//! caller's rate; the middleware that holds every request to them.

use super::*;

/// What the verify API admits: connections, request time, and each
/// caller's rate (by IP: the API is on loopback, so every local client
/// shares one allowance).
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub connections: lapse_pki::ConnectionLimits,
    /// How long a request may take before it is answered 503.
    pub request_timeout: Duration,
    pub rate: lapse_pki::RateLimits,
}

impl Default for ApiLimits {
    /// 1,024 connections, 256 per IP, 10 s to send a request, 5 s to
    /// answer it, 50,000 requests a second per IP (bursts of 100,000).
    fn default() -> Self {
        Self {
            connections: lapse_pki::ConnectionLimits::default(),
            request_timeout: Duration::from_secs(5),
            rate: lapse_pki::RateLimits {
                per_second: 50_000,
                burst: 100_000,
                max_callers: 4_096,
            },
        }
    }
}

impl ApiLimits {
    /// Why these limits cannot work, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if let Some(problem) = self.connections.problem() {
            return Some(problem.into());
        }
        if self.request_timeout.is_zero()
            || self.request_timeout >= self.connections.handshake_timeout
        {
            return Some(
                "the request timeout must be positive and below the handshake timeout (an HTTP/1 connection's handshake ends with its first answer)"
                    .into(),
            );
        }
        self.rate.problem().map(str::to_owned)
    }
}

/// The API's limits at work.
pub(super) struct ApiGuards {
    pub(super) gate: Arc<lapse_pki::ConnectionGate>,
    pub(super) limits: ApiLimits,
    pub(super) limiter: std::sync::Mutex<lapse_pki::RateLimiter>,
    pub(super) started: std::time::Instant,
    pub(super) refused: std::sync::atomic::AtomicU64,
}

/// Refuse a request over its caller's rate (429), and answer one that
/// takes too long (503), in the API's JSON.
pub(super) async fn guard(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let guards = &state.guards;
    let identity = request
        .extensions()
        .get::<axum::extract::ConnectInfo<lapse_pki::PeerIdentity>>()
        .map(|info| &info.0);
    if let Some(caller) = lapse_pki::limits::caller_key(identity, None) {
        let now_ms = guards.started.elapsed().as_secs_f64() * 1000.0;
        let allowed = guards
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(&caller, now_ms);
        if !allowed {
            guards
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let rate = guards.limits.rate;
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "{caller} sent more than {} requests a second (bursts of {}); see --http-rate-per-ip",
                    rate.per_second, rate.burst
                ),
            );
        }
    }
    let deadline = guards.limits.request_timeout;
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {} ms (--http-request-timeout)",
                deadline.as_millis()
            ),
        ),
    }
}
