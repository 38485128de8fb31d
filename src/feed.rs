//! `lapse verifier`, `lapse propagation`, and waiting for a revocation to
//! reach the verifiers (`lapse revoke --wait`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use lapse_verifier::VerifyConfig;
use lapse_verifier::daemon::{self, DaemonConfig};
use lapse_verifier::http::check_loopback;
use lapse_wire::cluster as pb;
use serde_json::json;

use crate::client::{Connection, Failure, exit, print_json};

#[derive(Debug, Args)]
pub struct VerifierArgs {
    /// Brokers to follow, in order of preference (comma-separated or repeated).
    #[arg(long = "brokers", value_delimiter = ',', required = true, num_args = 1..,
          value_parser = crate::client::broker_address)]
    brokers: Vec<String>,
    /// This verifier's name, unique in the deployment (with --count, a prefix).
    #[arg(long, default_value_t = format!("verifier-{}", std::process::id()))]
    id: String,
    /// Where this verifier runs; propagation is reported per region.
    #[arg(long, default_value = "default")]
    region: String,
    /// Run this many verifiers in this process, named ID/0, ID/1, ... (with
    /// --insecure-plaintext, ID-0, ID-1, ...)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    count: u32,
    /// With no confirmed heartbeat for this long, the verifier is stale.
    #[arg(long, default_value = "2s", value_parser = crate::client::positive_duration)]
    staleness: Duration,
    /// When stale, keep accepting credentials (default: reject them all).
    /// Every acceptance while stale is logged, counted
    /// (`accepted_while_stale`) and reported to the brokers.
    #[arg(long)]
    fail_open: bool,
    /// Accept break-glass credentials signed by this key: the public key
    /// file (`.pub.jwk`) of `lapse break-glass keygen` (repeat for several).
    /// Accepted even when stale; every acceptance is logged, counted and
    /// reported to the brokers.
    #[arg(long = "break-glass-key", value_name = "PUBLIC_JWK")]
    break_glass_keys: Vec<std::path::PathBuf>,
    /// An audience break-glass credentials may be used for (repeat for
    /// several; at least one with --break-glass-key).
    #[arg(long = "break-glass-audience", value_name = "AUDIENCE")]
    break_glass_audiences: Vec<String>,
    /// The longest lifetime of a break-glass credential accepted (at most 1h).
    #[arg(long, default_value = "30m", value_parser = crate::client::positive_duration)]
    break_glass_max_ttl: Duration,
    /// Allowed difference between a credential's exp/nbf and cluster time, in seconds.
    #[arg(long, default_value_t = 30)]
    leeway_seconds: u64,
    /// Require this audience of every credential (a verify request may
    /// name another). Required, unless --any-audience.
    #[arg(long, conflicts_with = "any_audience")]
    audience: Option<String>,
    /// Accept credentials for any audience when a verify request names
    /// none: only where every service behind this verifier may take every
    /// credential the cluster issues.
    #[arg(long)]
    any_audience: bool,
    /// Require this issuer of every credential: the brokers' `[issuance]
    /// issuer`; by default the dev cluster's (`.lapse-dev/issuer`) when
    /// there is one, else `lapse`.
    #[arg(long)]
    issuer: Option<String>,
    /// Abandon a broker that sends nothing for this long.
    #[arg(long, default_value = "1s", value_parser = crate::client::positive_duration)]
    idle_timeout: Duration,
    /// How often each verifier drops rules and keys whose credentials have
    /// all expired.
    #[arg(long, default_value = "10s", value_parser = crate::client::positive_duration)]
    age_out_every: Duration,
    /// Accept only heartbeats signed by a broker this CA certifies, over
    /// any link. With TLS that is always so, with --ca; give it with
    /// --insecure-plaintext to follow brokers through a relay or proxy
    /// that is not trusted: anything it changes makes the verifier refuse
    /// credentials or go stale, never accept more.
    #[arg(long, value_name = "CA_PEM")]
    signed_by: Option<std::path::PathBuf>,
    /// Serve the local verify API here (loopback only; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:7600")]
    http: SocketAddr,
    /// Do not serve the local verify API.
    #[arg(long, conflicts_with = "http")]
    no_http: bool,
    /// Relay the feed: serve it on this address to other verifiers, which
    /// name it in their --brokers (before a broker to fall back on). Events
    /// and the brokers' signed heartbeats pass through unchanged; the
    /// leaves' acks go up to the brokers, so `lapse propagation` and
    /// `revoke --wait` count them. With TLS, leaves present verifier
    /// certificates; without, loopback addresses only. Needs --count 1.
    #[arg(long, value_name = "ADDRESS")]
    relay: Option<SocketAddr>,
    /// Verifiers a relay serves at once; more are refused and move on to
    /// the next address in their list.
    #[arg(long, default_value_t = 10_000, requires = "relay")]
    relay_max_leaves: usize,
    /// Credentials whose verified signature each verifier remembers (by
    /// their bytes, each at most 8 KiB), so a credential presented again
    /// costs a lookup instead of an Ed25519 verification. Every other check
    /// (time, audience, every revocation) still runs on every call. 0
    /// remembers none.
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(0..=262_144))]
    signature_memory: u32,
    /// Connections the verify API holds open at once; more are closed at
    /// once (counted in /metrics).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    http_max_connections: u32,
    /// Connections one IP address may hold open on the verify API.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    http_max_connections_per_ip: u32,
    /// How long a new connection to the verify API has to send its first
    /// request before it is closed (a client that opens connections and
    /// sends nothing, or a byte at a time, cannot hold them).
    #[arg(long, default_value = "10s", value_parser = crate::client::positive_duration)]
    http_handshake_timeout: Duration,
    /// How long a verify API request may take before it is answered 503;
    /// below --http-handshake-timeout.
    #[arg(long, default_value = "5s", value_parser = crate::client::positive_duration)]
    http_request_timeout: Duration,
    /// Requests a second one IP address may send to the verify API (0 for
    /// no limit); more are answered 429. The API is on loopback, so every
    /// local client shares it: the default is far above what one core
    /// verifies.
    #[arg(long, default_value_t = 50_000)]
    http_rate_per_ip: u64,
    /// Requests one IP address may send at once after being idle.
    #[arg(long, default_value_t = 100_000)]
    http_burst_per_ip: u64,
    /// The cluster CA and this verifier's certificate, which must name
    /// spiffe://<trust domain>/verifier/<ID>. Next to a `lapse dev` cluster
    /// the dev CA certifies the verifier on first use.
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
}

pub async fn verifier(args: VerifierArgs) -> Result<(), Failure> {
    let issuer = args
        .issuer
        .clone()
        .unwrap_or_else(crate::client::default_issuer);
    let config = DaemonConfig {
        brokers: args.brokers.clone(),
        id: args.id.clone(),
        region: args.region.clone(),
        count: args.count,
        verify: VerifyConfig {
            staleness: args.staleness,
            fail_open: args.fail_open,
            leeway_seconds: args.leeway_seconds,
            audience: args.audience.clone(),
            any_audience: args.any_audience,
            issuer: issuer.clone(),
            // --signed-by, else the TLS CA (see `daemon::run`).
            trust: args
                .signed_by
                .as_deref()
                .map(signature_checker)
                .transpose()?,
            break_glass: break_glass_config(&args)?,
            signature_cache: args.signature_memory as usize,
            ..VerifyConfig::default()
        },
        idle_timeout: args.idle_timeout,
        age_out_every: args.age_out_every,
        tls: None,
        relay: args.relay.map(|address| {
            (
                address,
                lapse_verifier::relay::RelayConfig {
                    max_leaves: args.relay_max_leaves,
                    ..Default::default()
                },
            )
        }),
        api_limits: lapse_verifier::http::ApiLimits {
            connections: lapse_pki::ConnectionLimits {
                max_connections: args.http_max_connections as usize,
                max_per_ip: args.http_max_connections_per_ip as usize,
                handshake_timeout: args.http_handshake_timeout,
            },
            request_timeout: args.http_request_timeout,
            rate: lapse_pki::RateLimits {
                per_second: args.http_rate_per_ip,
                burst: args.http_burst_per_ip,
                max_callers: 4_096,
            },
        },
    };
    if let Some(problem) = config.api_limits.problem() {
        return Err(Failure::new(exit::USAGE, format!("--http-*: {problem}")));
    }
    if args.age_out_every.is_zero() {
        return Err(Failure::new(
            exit::USAGE,
            "--age-out-every: give a positive interval, such as 10s",
        ));
    }
    if args.relay.is_some() && args.count != 1 {
        return Err(Failure::new(
            exit::USAGE,
            "--relay: a relay serves the state of one verifier; leave out --count or give --count 1",
        ));
    }
    if args.relay.is_some() && args.relay_max_leaves == 0 {
        return Err(Failure::new(
            exit::USAGE,
            "--relay-max-leaves: a relay must take at least one leaf",
        ));
    }
    if let Some(problem) = config.problem() {
        return Err(Failure::new(exit::USAGE, format!("--brokers: {problem}")));
    }
    match (&args.audience, args.any_audience) {
        (None, false) => {
            return Err(Failure::new(
                exit::USAGE,
                "give --audience AUDIENCE, the audience credentials must be for, or --any-audience to accept credentials meant for any service",
            ));
        }
        (Some(audience), _) if audience.is_empty() => {
            return Err(Failure::new(
                exit::USAGE,
                "--audience: an empty audience matches no credential",
            ));
        }
        _ => {}
    }
    if issuer.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            "--issuer: name the brokers' [issuance] issuer",
        ));
    }
    // Bind the verify API before subscribing: a verifier that cannot serve
    // must not appear to the cluster, even briefly, as one that came and
    // went (`lapse propagation` would list it as gone).
    if !args.tls.insecure_plaintext {
        // The id names the verifier's certificate.
        lapse_pki::name::check_name(&args.id)
            .map_err(|e| Failure::new(exit::USAGE, format!("--id: {e}")))?;
    }
    let mut config = config;
    config.tls = args
        .tls
        .load(&lapse_pki::Role::Verifier(args.id.clone()), &args.brokers)?;
    let listener = if args.no_http {
        None
    } else {
        Some(bind_verify_api(args.http).await?)
    };
    println!(
        "{} verifier(s) in region {} following {}",
        args.count,
        args.region,
        args.brokers.join(", ")
    );
    if let Some(relay) = args.relay {
        println!("relaying the feed on {relay}");
    }
    daemon::run(config, listener, crate::commands::wait_for_stop())
        .await
        .map_err(|message| Failure::new(exit::FAILURE, message))
}

/// The break-glass keys and limits of `--break-glass-*`, if any key is given.
fn break_glass_config(
    args: &VerifierArgs,
) -> Result<Option<lapse_verifier::BreakGlassConfig>, Failure> {
    if args.break_glass_keys.is_empty() {
        if !args.break_glass_audiences.is_empty() {
            return Err(Failure::new(
                exit::USAGE,
                "--break-glass-audience needs --break-glass-key",
            ));
        }
        return Ok(None);
    }
    let mut keys = Vec::new();
    for path in &args.break_glass_keys {
        let text = lapse_pki::files::read(path)
            .map_err(|e| Failure::new(exit::USAGE, format!("--break-glass-key: {e}")))?;
        let text = String::from_utf8_lossy(&text);
        let key = lapse_verifier::break_glass::parse_public_jwk(&text).map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!("--break-glass-key {}: {e}", path.display()),
            )
        })?;
        keys.push(key);
    }
    lapse_verifier::BreakGlassConfig::new(
        keys,
        args.break_glass_audiences.iter().cloned(),
        args.break_glass_max_ttl,
    )
    .map(Some)
    .map_err(|e| Failure::new(exit::USAGE, format!("--break-glass-*: {e}")))
}

/// What checks heartbeat signatures against the CA bundle at `path`.
fn signature_checker(path: &std::path::Path) -> Result<lapse_pki::SignatureChecker, Failure> {
    let pem = std::fs::read(path).map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!("--signed-by: cannot read {}: {e}", path.display()),
        )
    })?;
    let trust = lapse_pki::Credentials::from_pem(&pem, None, std::time::SystemTime::now())
        .map_err(|e| Failure::new(exit::USAGE, format!("--signed-by {}: {e}", path.display())))?;
    Ok(lapse_pki::SignatureChecker::new(std::sync::Arc::new(trust)))
}

/// Bind the loopback verify API, saying where.
async fn bind_verify_api(address: SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    check_loopback(address).map_err(|m| Failure::new(exit::USAGE, m))?;
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
        Failure::new(
            exit::FAILURE,
            format!(
                "cannot listen on {address} for the verify API: {e} (choose another --http address, port 0 for any free port, or --no-http)"
            ),
        )
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    println!("verify API listening on http://{bound}");
    Ok(listener)
}

#[derive(Debug, Args)]
pub struct PropagationArgs {
    /// Which verifiers hold this epoch (default: the broker's current epoch).
    #[arg(long)]
    epoch: Option<u64>,
    /// List every verifier, not only the lagging ones.
    #[arg(long, conflicts_with = "summary")]
    all: bool,
    /// Ask the brokers for the counts and delay summaries, and at most 100
    /// lagging or gone verifiers by name, instead of every verifier: for
    /// fleets of many thousands.
    #[arg(long)]
    summary: bool,
    #[command(flatten)]
    connection: Connection,
}

fn summary_json(summary: &Option<pb::DelaySummary>) -> serde_json::Value {
    match summary {
        None => json!(null),
        Some(s) => json!({
            "region": s.region, "samples": s.samples, "verifiers": s.verifiers,
            "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms,
        }),
    }
}

pub async fn propagation(args: PropagationArgs) -> Result<(), Failure> {
    let connection = args.connection;
    let mut client = connection.client().await?;
    let report = connection
        .admin(
            client.propagation(connection.request(pb::PropagationRequest {
                epoch: args.epoch.unwrap_or(0),
                summary: args.summary,
            })),
        )
        .await?;
    let lagging: Vec<&pb::VerifierProgress> = report
        .verifiers
        .iter()
        .filter(|v| v.acked_epoch < report.epoch || !v.connected)
        .collect();
    if connection.json {
        print_json(&json!({
            "epoch": report.epoch,
            "current_epoch": report.current_epoch,
            "overall": summary_json(&report.overall),
            "regions": report.regions.iter().map(|r| summary_json(&Some(r.clone()))).collect::<Vec<_>>(),
            "verifiers": report.verifiers.iter().map(|v| json!({
                "verifier": v.verifier_id, "region": v.region, "broker": v.broker_id,
                "acked_epoch": v.acked_epoch, "connected": v.connected,
                "since_ack_ms": v.since_ack_ms, "last_ms": v.last_ms,
                "delay": summary_json(&v.delay),
            })).collect::<Vec<_>>(),
            "lagging": lagging.iter().map(|v| &v.verifier_id).collect::<Vec<_>>(),
            "unreachable_brokers": report.unreachable_brokers,
            "verifier_count": report.verifier_count,
            "holding": report.holding,
            "connected": report.connected,
            "unlisted": report.unlisted,
        }));
        return Ok(());
    }
    println!(
        "epoch {}: held by {} of {} verifiers ({} connected)",
        report.epoch, report.holding, report.verifier_count, report.connected
    );
    println!(
        "{:<16} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "region", "verifiers", "samples", "p50 ms", "p99 ms", "max ms"
    );
    for summary in report.regions.iter().chain(report.overall.iter()) {
        let name = if summary.region.is_empty() {
            "(all)"
        } else {
            &summary.region
        };
        println!(
            "{name:<16} {:>9} {:>10} {:>10.1} {:>10.1} {:>10.1}",
            summary.verifiers, summary.samples, summary.p50_ms, summary.p99_ms, summary.max_ms
        );
    }
    let listed: Vec<&pb::VerifierProgress> = if args.all {
        report.verifiers.iter().collect()
    } else {
        lagging
    };
    if !listed.is_empty() {
        println!(
            "\n{:<28} {:<12} {:>6} {:>10} {:>10} {:>10}",
            "verifier", "region", "broker", "epoch", "p99 ms", "state"
        );
        for v in listed {
            let state = if !v.connected {
                format!("gone {} s", v.since_ack_ms / 1000)
            } else if v.acked_epoch < report.epoch {
                "lagging".to_string()
            } else {
                "current".to_string()
            };
            println!(
                "{:<28} {:<12} {:>6} {:>10} {:>10.1} {:>10}",
                v.verifier_id,
                v.region,
                v.broker_id,
                v.acked_epoch,
                v.delay.as_ref().map_or(0.0, |d| d.p99_ms),
                state
            );
        }
    }
    if report.unlisted > 0 {
        println!(
            "... and {} more lagging or gone, not listed (--summary)",
            report.unlisted
        );
    }
    if !report.unreachable_brokers.is_empty() {
        println!(
            "\nbrokers that did not answer (their verifiers are missing): {:?}",
            report.unreachable_brokers
        );
    }
    Ok(())
}

/// How much of the verifier fleet `--wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaitFor {
    All,
    Percent(f64),
}

pub fn parse_wait(text: &str) -> Result<WaitFor, String> {
    if text == "all" {
        return Ok(WaitFor::All);
    }
    let number = text.strip_suffix('%').unwrap_or(text);
    match number.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(WaitFor::Percent(p)),
        _ => Err(format!(
            "{text:?} is neither \"all\" nor a percentage in (0, 100]"
        )),
    }
}

/// `--wait-timeout`: a duration of at most ten minutes, the longest a
/// broker waits.
pub fn parse_wait_timeout(text: &str) -> Result<Duration, String> {
    let timeout = crate::client::positive_duration(text)?;
    if timeout > Duration::from_secs(600) {
        return Err(format!("{text:?} is longer than the 10m a broker waits"));
    }
    Ok(timeout)
}

/// The outcome of waiting for propagation.
pub struct Reached {
    pub holding: usize,
    pub subscribed: usize,
    pub waited: Duration,
    /// From the commit to when the broker saw the share reached.
    pub after_commit: Option<Duration>,
}

/// Ask the cluster to wait until the wanted share of subscribed verifiers
/// holds `epoch` (the broker decides who counts; see `WaitPropagated`), or
/// fail with who is missing.
pub async fn wait_for_epoch(
    connection: &Connection,
    epoch: u64,
    wanted: WaitFor,
    patience: Duration,
) -> Result<Reached, Failure> {
    // The call lasts as long as the wait, and then some.
    let mut waiting = connection.clone();
    waiting.timeout = waiting.timeout.max(patience + Duration::from_secs(5));
    let mut client = waiting.client().await?;
    let share_percent = match wanted {
        WaitFor::All => 0.0,
        WaitFor::Percent(p) => p,
    };
    let answer = waiting
        .admin(
            client.wait_propagated(waiting.request(pb::WaitPropagatedRequest {
                epoch,
                share_percent,
                timeout_ms: patience.as_millis() as u64,
            })),
        )
        .await?;
    if answer.reached {
        Ok(Reached {
            holding: answer.holding as usize,
            subscribed: answer.subscribed as usize,
            waited: Duration::from_millis(answer.waited_ms),
            after_commit: answer.after_commit_ms.map(Duration::from_millis),
        })
    } else {
        Err(Failure::new(exit::NOT_PROPAGATED, answer.reason))
    }
}
