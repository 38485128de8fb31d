//! A verifier process (`lapse verifier`): some number of verifiers in one
//! region following a list of brokers, each ageing out expired state, and
//! the local verify API over all of them, until told to stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::Served;
use crate::{FollowConfig, FollowStats, Verifier, VerifyConfig, broker_uri, follow};

/// How often each verifier drops state whose credentials have all
/// expired, unless told otherwise.
pub const AGE_OUT_EVERY: Duration = Duration::from_secs(10);

/// What a verifier process runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Brokers to follow, in order of preference.
    pub brokers: Vec<String>,
    /// The verifier's name; with `count` above 1, the prefix of `ID-0`,
    /// `ID-1`, ...
    pub id: String,
    /// Where the verifiers run; propagation is reported per region.
    pub region: String,
    /// Verifiers in this process, at least 1.
    pub count: u32,
    pub verify: VerifyConfig,
    /// Abandon a broker that sends nothing for this long.
    pub idle_timeout: Duration,
    /// How often each verifier drops state whose credentials have all
    /// expired ([`AGE_OUT_EVERY`] unless told otherwise).
    pub age_out_every: Duration,
    /// Mutual TLS with the brokers; `None` for plaintext brokers on
    /// loopback.
    pub tls: Option<Arc<lapse_pki::Tls>>,
    /// What the verify API admits.
    pub api_limits: crate::http::ApiLimits,
    /// Serve the feed on to other verifiers (`--relay`): where, and how.
    pub relay: Option<(std::net::SocketAddr, crate::relay::RelayConfig)>,
}

impl DaemonConfig {
    /// Why the configuration cannot run, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if self.brokers.is_empty() {
            return Some("name at least one broker to follow".into());
        }
        if self.count == 0 {
            return Some("run at least one verifier".into());
        }
        if self.age_out_every.is_zero() {
            return Some("age out at some positive interval".into());
        }
        if let Some(problem) = self.api_limits.problem() {
            return Some(format!("the verify API's limits: {problem}"));
        }
        if self.relay.is_some() && self.count != 1 {
            return Some("a relay serves the state of one verifier: run it with --count 1".into());
        }
        if let Some((_, relay)) = &self.relay
            && relay.max_leaves == 0
        {
            return Some("a relay must take at least one leaf".into());
        }

        self.brokers
            .iter()
            .find(|address| {
                address.is_empty()
                    || tonic::transport::Endpoint::from_shared(broker_uri(address)).is_err()
            })
            .map(|address| format!("{address:?} is not a broker address (host:port)"))
    }

    /// The name of verifier `i`: with TLS, `ID/i` (a verifier's id must
    /// be its certificate's name or under it), otherwise `ID-i`.
    fn name(&self, i: u32) -> String {
        match (self.count, &self.tls) {
            (1, _) => self.id.clone(),
            (_, Some(_)) => format!("{}/{i}", self.id),
            (_, None) => format!("{}-{i}", self.id),
        }
    }
}

/// Run the verifiers, and the verify API on `listener` if given, until
/// `shutdown` resolves; then stop everything and wait for it.
pub async fn run(
    config: DaemonConfig,
    listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    if let Some(problem) = config.problem().or_else(|| config.verify.problem()) {
        return Err(problem);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let mut served = Vec::new();
    let mut tasks = Vec::new();
    // Runs until aborted at shutdown.
    let reload = config
        .tls
        .as_ref()
        .map(|tls| tls.spawn_reload(lapse_pki::transport::RELOAD_EVERY));
    // With a cluster CA, heartbeats must be signed by a broker it
    // certifies: the CA that authenticates the link also vouches for the
    // state, so a relay or proxy between needs no trust. The checker uses
    // the bundle as the TLS files hold it now (a CA rollover needs no
    // restart).
    let mut verify = config.verify.clone();
    if verify.trust.is_none()
        && let Some(tls) = &config.tls
    {
        verify.trust = Some(lapse_pki::SignatureChecker::following(tls.clone()));
    }
    for i in 0..config.count {
        let id = config.name(i);
        let verifier = Verifier::new(verify.clone());
        let stats = Arc::new(FollowStats::default());
        let mut follow_config = FollowConfig::new(config.brokers.clone(), id.clone());
        follow_config.region = config.region.clone();
        follow_config.idle_timeout = config.idle_timeout;
        follow_config.tls = config.tls.clone();
        let mut relayed = None;
        if let Some((address, relay_config)) = &config.relay {
            let mut relay_config = relay_config.clone();
            relay_config.require_verifier_certificate |= config.tls.is_some();
            let relay = crate::relay::Relay::new(verifier.clone(), relay_config);
            let passing = relay.clone();
            follow_config.on_event =
                Some(crate::OnEvent(Arc::new(move |event| passing.passed(event))));
            follow_config.downstream = Some(relay.clone());
            relayed = Some(relay.clone());
            tasks.push(
                serve_relay(
                    relay,
                    *address,
                    config.tls.clone(),
                    stopped(stop_rx.clone()),
                )
                .await?,
            );
        }
        // Spread the verifiers of one process over the brokers.
        follow_config
            .brokers
            .rotate_left(i as usize % config.brokers.len());
        tasks.push(tokio::spawn(follow(
            verifier.clone(),
            follow_config,
            stats.clone(),
            stopped(stop_rx.clone()),
        )));
        tasks.push(tokio::spawn(age_out(
            verifier.clone(),
            config.age_out_every,
            stopped(stop_rx.clone()),
        )));
        served.push(Served {
            id,
            region: config.region.clone(),
            verifier,
            stats,
            relay: relayed,
        });
    }
    let http = listener.map(|listener| {
        tokio::spawn(crate::http::serve(
            listener,
            served,
            config.tls.clone(),
            config.api_limits.clone(),
            stopped(stop_rx.clone()),
        ))
    });
    shutdown.await;
    let _ = stop_tx.send(true);
    if let Some(reload) = reload {
        reload.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    if let Some(http) = http {
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("the verify API failed: {error}")),
            Err(error) => return Err(format!("the verify API task failed: {error}")),
        }
    }
    Ok(())
}

/// Bind the relay's feed on `address` and serve it until `stop`: with
/// `tls`, mutual TLS under this verifier's certificate (leaves present
/// theirs), otherwise plaintext, which only a loopback address may take.
async fn serve_relay(
    relay: Arc<crate::relay::Relay>,
    address: std::net::SocketAddr,
    tls: Option<Arc<lapse_pki::Tls>>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, String> {
    if tls.is_none() && !address.ip().is_loopback() {
        return Err(format!(
            "--relay {address}: a relay without TLS serves loopback only; give the verifier its certificate (--ca, --cert, --key) or a loopback address"
        ));
    }
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("--relay {address}: cannot listen: {e}"))?;
    relay_on(relay, listener, tls, stop)
}

/// Subscriptions one connection to a relay may carry at once (several
/// leaves in one process may share a connection, each with its stream);
/// more wait in the client until one ends. The relay's leaves are capped
/// by `max_leaves` and its connections by the connection gate.
pub const RELAY_STREAMS_PER_CONNECTION: u32 = 1_024;

/// Serve `relay`'s feed on `listener` until `stop` (see [`serve_relay`]).
pub fn relay_on(
    relay: Arc<crate::relay::Relay>,
    listener: TcpListener,
    tls: Option<Arc<lapse_pki::Tls>>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%local, "relaying the feed");
    let service = lapse_wire::frames::FeedFrameServer::new(crate::relay::RelayService(relay))
        .max_decoding_message_size(1 << 20);
    let gate = lapse_pki::ConnectionGate::new(lapse_pki::ConnectionLimits::default());
    let accepted = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(RELAY_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(service);
    Ok(match tls {
        Some(tls) => {
            let incoming =
                lapse_pki::TlsIncoming::stream(tls, lapse_pki::tls::ALPN_H2, accepted, gate);
            tokio::spawn(async move {
                if let Err(error) = server.serve_with_incoming_shutdown(incoming, stop).await {
                    tracing::error!(%error, "the relay stopped");
                }
            })
        }
        None => {
            let incoming = lapse_pki::limits::admit_stream(gate, accepted);
            tokio::spawn(async move {
                if let Err(error) = server.serve_with_incoming_shutdown(incoming, stop).await {
                    tracing::error!(%error, "the relay stopped");
                }
            })
        }
    })
}

/// Drop expired state `every` so often until `stop` resolves.
async fn age_out(verifier: Verifier, every: Duration, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => verifier.age_out(),
            _ = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(brokers: &[&str], count: u32) -> DaemonConfig {
        DaemonConfig {
            brokers: brokers.iter().map(|b| b.to_string()).collect(),
            id: "edge".into(),
            region: "eu".into(),
            count,
            verify: VerifyConfig {
                audience: Some("billing".into()),
                ..VerifyConfig::default()
            },
            idle_timeout: Duration::from_secs(1),
            age_out_every: AGE_OUT_EVERY,
            tls: None,
            api_limits: Default::default(),
            relay: None,
        }
    }

    #[test]
    fn a_configuration_that_cannot_run_says_why() {
        assert_eq!(config(&["127.0.0.1:7401"], 1).problem(), None);
        assert!(config(&[], 1).problem().is_some());
        assert!(config(&["127.0.0.1:7401"], 0).problem().is_some());
        let bad = config(&["127.0.0.1:7401", "not a host"], 1)
            .problem()
            .unwrap();
        assert!(bad.contains("\"not a host\""), "{bad}");
    }

    #[tokio::test]
    async fn a_verifier_without_an_audience_does_not_start_unless_any_will_do() {
        let mut open = config(&["127.0.0.1:7401"], 1);
        open.verify.audience = None;
        let problem = open.verify.problem().unwrap();
        assert!(problem.contains("audience"), "{problem}");
        let refused = run(open.clone(), None, async {}).await;
        assert_eq!(refused, Err(problem));
        open.verify.any_audience = true;
        assert_eq!(open.verify.problem(), None);
        open.verify.audience = Some(String::new());
        assert!(open.verify.problem().is_some());
        let mut anonymous = config(&["127.0.0.1:7401"], 1);
        anonymous.verify.issuer = String::new();
        assert!(anonymous.verify.problem().unwrap().contains("issuer"));
    }

    #[test]
    fn verifiers_of_one_process_are_numbered_only_when_there_are_several() {
        assert_eq!(config(&["b:1"], 1).name(0), "edge");
        assert_eq!(config(&["b:1"], 3).name(2), "edge-2");
    }

    #[tokio::test]
    async fn runs_until_told_to_stop_and_refuses_a_configuration_that_cannot_run() {
        let refused = run(config(&[], 1), None, async {}).await;
        assert!(refused.is_err());
        // A broker that is not there: the verifiers keep trying until stop.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(run(config(&["127.0.0.1:1"], 2), Some(listener), async {
            let _ = stopped.await;
        }));
        let url = format!("http://{address}/healthz");
        let status = tokio::task::spawn_blocking(move || match ureq::get(&url).call() {
            Ok(response) => Some(response.status()),
            Err(ureq::Error::Status(code, _)) => Some(code),
            Err(ureq::Error::Transport(_)) => None,
        })
        .await
        .unwrap();
        // Served, and honest: with no broker reachable, not healthy.
        assert_eq!(status, Some(503));
        stop.send(()).unwrap();
        assert_eq!(daemon.await.unwrap(), Ok(()));
    }

    /// A client cannot open streams without bound on one connection to a
    /// relay: the relay's HTTP/2 settings cap them.
    #[tokio::test]
    async fn a_relay_caps_the_streams_of_one_connection() {
        let relay = crate::relay::Relay::new(
            Verifier::new(VerifyConfig::default()),
            crate::relay::RelayConfig::default(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = relay_on(relay, listener, None, async {
            let _ = stopped.await;
        })
        .unwrap();
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        // The relay's settings precede its first answer: once an answer
        // is in, they are applied.
        let request = tonic::codegen::http::Request::post(format!(
            "http://{address}/lapse.feed.Feed/Subscribe"
        ))
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
        let (answer, _body) = client.send_request(request, true).unwrap();
        answer.await.unwrap();
        assert_eq!(
            client.current_max_send_streams(),
            RELAY_STREAMS_PER_CONNECTION as usize
        );
        drop(client);
        stop.send(()).unwrap();
        served.await.unwrap();
        connection.abort();
    }
}
