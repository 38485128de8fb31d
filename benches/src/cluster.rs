//! A three-broker cluster in the benchmark's own process, on loopback, with
//! sled storage under a given directory, in plaintext or with mutual TLS:
//! the configurations, the start, and finding the leader.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use lapse_broker::{Broker, BrokerConfig, Env, LocalTransport};
use tokio::net::TcpListener;

use crate::transport::{Dialer, Transport, make_certificates};

/// The admin token of benchmark clusters.
pub const BENCH_TOKEN: &str = "bench-admin-token-0123456789";

/// The cluster secret of benchmark clusters.
const BENCH_SECRET: &str = "bench-cluster-secret-0123456789";

/// The `authorization` value that carries [`BENCH_TOKEN`].
pub fn bench_auth() -> String {
    format!("Bearer {BENCH_TOKEN}")
}

/// Start every configured broker on its listener and wait (at most 30 s)
/// for a leader.
pub async fn start_local_cluster(
    configs: Vec<BrokerConfig>,
    listeners: Vec<TcpListener>,
) -> anyhow::Result<Vec<Broker>> {
    let mut brokers = Vec::new();
    for (config, listener) in configs.into_iter().zip(listeners) {
        let broker = Broker::start_on(config, Env::default(), listener)
            .await
            .map_err(|e| anyhow::anyhow!("starting a broker: {e}"))?;
        brokers.push(broker);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if brokers.iter().any(|b| b.core().leader().0.is_some()) {
            return Ok(brokers);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no leader was elected within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three brokers in this process on loopback, with their data under `dir`,
/// talking `transport` (with TLS, certificates made afresh under
/// `dir/certs`), each configuration adjusted by `adjust`: the brokers, their
/// addresses, and how the benchmark's clients reach them.
pub async fn start_bench_cluster(
    dir: &Path,
    transport: Transport,
    adjust: impl Fn(&mut BrokerConfig),
) -> anyhow::Result<(Vec<Broker>, Vec<SocketAddr>, Dialer)> {
    let mut listeners = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a loopback port")?;
        addresses.push(listener.local_addr()?);
        listeners.push(listener);
    }
    let (links, dialer) = match transport {
        Transport::Plaintext => (
            LocalTransport::Plaintext {
                secret: BENCH_SECRET.into(),
            },
            Dialer::plaintext(),
        ),
        Transport::Tls => {
            let certs = dir.join("certs");
            make_certificates(&certs, addresses.len() as u64)?;
            let dialer = Dialer::tls(&certs)?;
            (LocalTransport::Tls { certs }, dialer)
        }
    };
    let mut configs = BrokerConfig::local_cluster(dir, &addresses, &links, BENCH_TOKEN);
    for config in &mut configs {
        // The benchmark's operator administers the cluster.
        config
            .auth
            .cluster_admins
            .push(format!("operator:{}", crate::transport::OPERATOR));
        // Every benchmark client is one caller (one operator, or loopback)
        // asking for far more than a caller's default rate: the benchmarks
        // measure the broker, not its rate limit.
        config.limits.caller_requests_per_second = 0;
    }
    configs.iter_mut().for_each(adjust);
    let brokers = start_local_cluster(configs, listeners).await?;
    if brokers
        .iter()
        .any(|b| b.core().tls().is_some() != (transport == Transport::Tls))
    {
        bail!("a broker does not run the {} transport", transport.name());
    }
    Ok((brokers, addresses, dialer))
}

/// The leader's address as the brokers know it.
pub fn leader_address(brokers: &[Broker]) -> anyhow::Result<String> {
    brokers
        .iter()
        .find_map(|b| b.core().leader().1)
        .context("no leader")
}

/// The address of the broker that leads now, or `fallback` if none says so.
pub fn leading_broker(brokers: &[Broker], fallback: SocketAddr) -> SocketAddr {
    brokers
        .iter()
        .find(|b| b.core().leader().0 == Some(b.core().id()))
        .map(|b| b.local_address())
        .unwrap_or(fallback)
}

/// Stop every broker.
pub async fn shutdown(brokers: Vec<Broker>) {
    for broker in brokers {
        broker.shutdown().await;
    }
}
