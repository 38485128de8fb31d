//! What every gRPC call passes before its service sees it: the caller's
//! rate limit (`limits.caller_requests_per_second`, Cluster and Issuer
//! only) and a server-side deadline (`limits.request_timeout_ms`) on every
//! unary call.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use lapse_pki::{PeerIdentity, RateLimiter};
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;

use crate::core::SharedCore;

/// Calls that have no server-side deadline: they stream, or wait within a
/// bound of their own (`WaitPropagated`, at most `feed::wait::MAX_WAIT`).
const WITHOUT_DEADLINE: [&str; 3] = [
    "/lapse.feed.v1.Feed/Subscribe",
    "/lapse.peer.v1.RaftPeer/InstallSnapshot",
    "/lapse.cluster.v1.Cluster/WaitPropagated",
];

/// The broker's rate limits per caller, shared by the services it guards.
pub struct CallerLimits {
    core: SharedCore,
    limiter: Mutex<RateLimiter>,
    refused: AtomicU64,
}

impl CallerLimits {
    pub fn new(core: &SharedCore) -> Arc<Self> {
        Arc::new(Self {
            core: core.clone(),
            limiter: Mutex::new(RateLimiter::new(core.config().limits.caller_rate())),
            refused: AtomicU64::new(0),
        })
    }

    /// Calls refused for their caller's rate.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// `Err` with a message saying so when `caller` (a certificate's
    /// principal, else a remote IP) is over its rate: the HTTP endpoints'
    /// share of the same allowance.
    pub fn check_caller(&self, caller: &str) -> Result<(), crate::error::BrokerError> {
        let now_ms = self.core.env().monotonic_ms();
        let allowed = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(caller, now_ms);
        if allowed {
            return Ok(());
        }
        self.refused.fetch_add(1, Relaxed);
        let rate = self.core.config().limits.caller_rate();
        Err(crate::error::BrokerError::Exhausted(format!(
            "{caller} made more than {} requests a second (burst {}): limits.caller_requests_per_second; slow down and retry",
            rate.per_second, rate.burst
        )))
    }

    /// `Err` with the status to answer when the caller of `request` is
    /// over its rate. A caller known by neither certificate nor address
    /// (the simulation's network) is not limited.
    fn check<B>(&self, request: &http::Request<B>) -> Result<(), tonic::Status> {
        let extensions = request.extensions();
        let remote = extensions
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        let Some(caller) = lapse_pki::limits::caller_key(extensions.get::<PeerIdentity>(), remote)
        else {
            return Ok(());
        };
        let now_ms = self.core.env().monotonic_ms();
        let allowed = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(&caller, now_ms);
        if allowed {
            return Ok(());
        }
        self.refused.fetch_add(1, Relaxed);
        let rate = self.core.config().limits.caller_rate();
        Err(tonic::Status::resource_exhausted(format!(
            "{caller} made more than {} requests a second (burst {}): limits.caller_requests_per_second; slow down and retry",
            rate.per_second, rate.burst
        )))
    }
}

/// A gRPC service behind the caller's rate limit (if `limits` is given)
/// and the server-side deadline.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    limits: Option<Arc<CallerLimits>>,
    deadline: Duration,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, limits: Option<Arc<CallerLimits>>, deadline: Duration) -> Self {
        Self {
            inner,
            limits,
            deadline,
        }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Guarded<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(limits) = &self.limits
            && let Err(status) = limits.check(&request)
        {
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let path = request.uri().path();
        let deadline = (!WITHOUT_DEADLINE.contains(&path)).then_some(self.deadline);
        let method = path.to_owned();
        // The clone is the one that was not polled ready (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let call = inner.call(request);
        Box::pin(async move {
            let Some(deadline) = deadline else {
                return call.await;
            };
            match tokio::time::timeout(deadline, call).await {
                Ok(answer) => answer,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "{method} took longer than the server's {} ms (limits.request_timeout_ms)",
                    deadline.as_millis()
                ))
                .into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service whose calls never finish.
    #[derive(Clone)]
    struct Stuck;

    impl Service<http::Request<()>> for Stuck {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            Box::pin(std::future::pending())
        }
    }

    fn call(path: &str) -> BoxFuture<'static, Result<http::Response<Body>, Infallible>> {
        let mut guarded = Guarded::new(Stuck, None, Duration::from_secs(30));
        let request = http::Request::builder().uri(path).body(()).unwrap();
        Service::call(&mut guarded, request)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_request_hits_the_server_side_timeout() {
        let answer = call("/lapse.v1.Cluster/Status").await.unwrap();
        let status = tonic::Status::from_header_map(answer.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(
            status.message().contains("limits.request_timeout_ms"),
            "{status:?}"
        );
    }

    #[test]
    fn the_calls_without_a_deadline_are_paths_the_services_serve() {
        // Each path is `/<package>.<Service>/<Method>`; a path of another
        // package (as these once were) matches no call and exempts nothing.
        let services = [
            lapse_wire::feed::feed_server::SERVICE_NAME,
            lapse_wire::peer::raft_peer_server::SERVICE_NAME,
            lapse_wire::cluster::cluster_server::SERVICE_NAME,
        ];
        for (path, service) in WITHOUT_DEADLINE.iter().zip(services) {
            let (named, _method) = path[1..].rsplit_once('/').unwrap();
            assert_eq!(named, service, "{path}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_streaming_or_waiting_call_has_no_server_side_deadline() {
        for path in WITHOUT_DEADLINE {
            let waited = tokio::time::timeout(Duration::from_secs(3600), call(path)).await;
            assert!(waited.is_err(), "{path} was cut off");
        }
    }
}
