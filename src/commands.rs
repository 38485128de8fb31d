//! The subcommands that run a broker or call one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use lapse_broker::{Broker, BrokerConfig, Env};
use lapse_wire::cluster::{self as pb, revocation::Target};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::client::{Connection, Failure, exit, new_request_id, print_json};
use crate::output::moment;
use crate::parse_time_ms;

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Configuration file (TOML). Flags below override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// This broker's node id.
    #[arg(long)]
    node_id: Option<u64>,
    /// Address to serve gRPC on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address other brokers and clients reach this one at.
    #[arg(long)]
    advertise: Option<String>,
    /// Directory for the Raft log, snapshots and cluster secret.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Join the running cluster that a broker at this address belongs to.
    #[arg(long, requires = "join_token")]
    join: Option<String>,
    /// Single-use join token from `lapse join-token create --broker`.
    #[arg(long, env = "LAPSE_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
}

pub async fn broker(args: BrokerArgs) -> Result<(), Failure> {
    let mut config = match &args.config {
        Some(path) => {
            BrokerConfig::from_file(path).map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?
        }
        None => {
            let (Some(node_id), Some(listen), Some(data_dir)) =
                (args.node_id, args.listen, args.data_dir.clone())
            else {
                return Err(Failure::new(
                    exit::USAGE,
                    "without --config, --node-id, --listen and --data-dir are required",
                ));
            };
            BrokerConfig::new(node_id, listen, data_dir)
        }
    };
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(advertise) = args.advertise {
        config.advertise = Some(advertise);
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if args.join.is_some() {
        config.cluster.join = args.join;
        config.cluster.join_token = args.join_token;
    }
    let broker = Broker::start(config, Env::default())
        .await
        .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    tracing::info!(address = %broker.local_address(), node = broker.core().id(), "broker serving");
    wait_for_stop().await;
    tracing::info!("stopping");
    broker.shutdown().await;
    Ok(())
}

/// Wait for Ctrl-C or SIGTERM.
pub async fn wait_for_stop() {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(subcommand)]
    what: RevokeTarget,
    /// Makes the revocation idempotent: a retry with the same id is applied once.
    #[arg(long, global = true)]
    request_id: Option<String>,
    /// Return only once this share of subscribed verifiers has applied the
    /// revocation: `all`, or a percentage such as `99` (exit code 6 on
    /// timeout, or at once when no verifier is subscribed).
    #[arg(long, global = true, value_parser = crate::feed::parse_wait)]
    wait: Option<crate::feed::WaitFor>,
    /// How long --wait waits (at most 10m).
    #[arg(long, global = true, default_value = "30s", value_parser = crate::feed::parse_wait_timeout)]
    wait_timeout: Duration,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Subcommand)]
enum RevokeTarget {
    /// One credential, by its status index.
    Index { index: u64 },
    /// One credential, from the credential itself (a Lapse JWT).
    ///
    /// Revokes the status index in the credential's
    /// `status.status_list.idx` claim, exactly as `revoke index` would. The
    /// signature is not checked here, so any copy of the credential will
    /// do; revoking is an admin action, which the cluster checks.
    Credential {
        /// The file holding the credential; `-` reads standard input.
        file: PathBuf,
    },
    /// Every credential of a workload issued before a time.
    Subject {
        /// The workload's SPIFFE id.
        subject: String,
        #[arg(long)]
        tenant: String,
        /// RFC 3339 or milliseconds since the epoch; default: the commit time.
        #[arg(long, value_parser = parse_time_ms)]
        before: Option<u64>,
    },
    /// Every credential of a tenant issued before a time.
    Tenant {
        tenant: String,
        /// RFC 3339 or milliseconds since the epoch; default: the commit time.
        #[arg(long, value_parser = parse_time_ms)]
        before: Option<u64>,
    },
    /// Every credential a signing key signed.
    Key { key_id: String },
    /// A leaked static secret: give its sha256, or pipe the secret on stdin.
    ///
    /// What is revoked is the SHA-256 of the secret's bytes. With --stdin
    /// that is every byte read except one trailing newline (`\n` or
    /// `\r\n`), so `lapse revoke secret --stdin < leaked.txt` matches the
    /// secret whether or not the file ends in a newline; nothing else is
    /// trimmed. Empty or whitespace-only input is refused (exit code 3).
    Secret {
        /// SHA-256 of the secret's bytes, 64 hex digits
        /// (e.g. from `printf %s "$SECRET" | sha256sum`).
        #[arg(long, conflicts_with = "stdin")]
        sha256: Option<String>,
        /// Read the secret from standard input and hash it here (less one
        /// trailing newline).
        #[arg(long)]
        stdin: bool,
    },
}

/// The largest credential file `revoke credential` reads.
const MAX_CREDENTIAL_BYTES: u64 = 64 * 1024;

pub async fn revoke(args: RevokeArgs) -> Result<(), Failure> {
    let target = match args.what {
        RevokeTarget::Index { index } => Target::Index(index),
        RevokeTarget::Credential { file } => {
            let (text, source) = read_input(&file, MAX_CREDENTIAL_BYTES)?;
            let text = String::from_utf8(text).map_err(|_| {
                Failure::new(
                    exit::REFUSED,
                    format!("{source} is not text, so it is not a credential (a JWT)"),
                )
            })?;
            let index = credential_status_index(&text)
                .map_err(|problem| Failure::new(exit::REFUSED, format!("{source}: {problem}")))?;
            Target::Index(index)
        }
        RevokeTarget::Subject {
            subject,
            tenant,
            before,
        } => Target::Subject(pb::SubjectTarget {
            tenant,
            subject,
            issued_before_ms: before,
        }),
        RevokeTarget::Tenant { tenant, before } => Target::Tenant(pb::TenantTarget {
            tenant,
            issued_before_ms: before,
        }),
        RevokeTarget::Key { key_id } => Target::KeyId(key_id),
        RevokeTarget::Secret { sha256, stdin } => {
            let hash = match (sha256, stdin) {
                (Some(hex_digest), false) => hex::decode(hex_digest.trim())
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| Failure::new(exit::REFUSED, "--sha256 needs 64 hex digits"))?,
                (None, true) => {
                    let (read, _) = read_input(Path::new("-"), u64::MAX)?;
                    let secret = secret_from_input(&read).map_err(|problem| {
                        Failure::new(exit::REFUSED, format!("standard input: {problem}"))
                    })?;
                    Sha256::digest(secret).to_vec()
                }
                _ => return Err(Failure::new(exit::USAGE, "give --sha256 HEX or --stdin")),
            };
            Target::SecretSha256(hash)
        }
    };
    let index = match target {
        Target::Index(index) => Some(index),
        _ => None,
    };
    let connection = args.connection;
    let request_id = args.request_id.unwrap_or_else(new_request_id);
    let mut client = connection.client().await?;
    let reply = connection
        .admin(client.revoke(connection.request(pb::RevokeRequest {
            request_id: request_id.clone(),
            revocation: Some(pb::Revocation {
                target: Some(target),
            }),
        })))
        .await
        .map_err(|failure| failure.retry_with(&request_id))?;
    let reached = match args.wait {
        Some(wanted) => Some(
            crate::feed::wait_for_epoch(&connection, reply.epoch, wanted, args.wait_timeout)
                .await?,
        ),
        None => None,
    };
    if connection.json {
        print_json(&json!({
            "request_id": request_id,
            "status_index": index,
            "epoch": reply.epoch,
            "committed_at_ms": reply.committed_at_ms,
            "duplicate": reply.duplicate,
            "propagated": reached.as_ref().map(|r| json!({
                "verifiers": r.holding,
                "subscribed": r.subscribed,
                "waited_ms": r.waited.as_millis() as u64,
            })),
        }));
    } else {
        let what = index
            .map(|i| format!("status index {i} "))
            .unwrap_or_default();
        let again = if reply.duplicate {
            " (duplicate: applied earlier under this request id, and not again)"
        } else {
            ""
        };
        println!(
            "revoked {what}at epoch {} (committed {}){again}",
            reply.epoch,
            moment(reply.committed_at_ms)
        );
        if let Some(r) = reached {
            println!(
                "applied by {} of {} subscribed verifiers ({} ms after the commit was acknowledged)",
                r.holding,
                r.subscribed,
                r.waited.as_millis()
            );
        }
    }
    Ok(())
}

/// Read at most `limit` bytes from `path`, or from standard input for
/// `-`; the bytes and how to name where they came from.
fn read_input(path: &Path, limit: u64) -> Result<(Vec<u8>, String), Failure> {
    use std::io::Read;
    let (result, source) = if path == Path::new("-") {
        let mut bytes = Vec::new();
        let result = std::io::stdin()
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map(|_| bytes);
        (result, "standard input".to_owned())
    } else {
        let result = std::fs::File::open(path).and_then(|file| {
            let mut bytes = Vec::new();
            file.take(limit.saturating_add(1))
                .read_to_end(&mut bytes)
                .map(|_| bytes)
        });
        (result, path.display().to_string())
    };
    let bytes =
        result.map_err(|e| Failure::new(exit::FAILURE, format!("cannot read {source}: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(Failure::new(
            exit::REFUSED,
            format!("{source} is longer than {limit} bytes"),
        ));
    }
    Ok((bytes, source))
}

/// The secret in what was read from standard input: everything except one
/// trailing newline (`\n` or `\r\n`, as an editor or `echo` leaves it).
/// Nothing, or only whitespace, is refused: revoking the hash of an empty
/// line would revoke nothing anyone holds.
fn secret_from_input(read: &[u8]) -> Result<&[u8], &'static str> {
    let secret = read
        .strip_suffix(b"\r\n")
        .or_else(|| read.strip_suffix(b"\n"))
        .unwrap_or(read);
    if secret.iter().all(u8::is_ascii_whitespace) {
        return Err(
            "the secret is empty or only whitespace; pipe the leaked secret itself, e.g. `lapse revoke secret --stdin < leaked.txt`",
        );
    }
    Ok(secret)
}

/// The status index of a Lapse credential, from the
/// `status.status_list.idx` claim of its payload. The signature is not
/// checked: the index is only a target for an admin's revocation.
fn credential_status_index(text: &str) -> Result<u64, String> {
    use base64::Engine;
    let token = text.trim();
    if token.is_empty() {
        return Err("empty; expected a Lapse credential (a JWT)".into());
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [_, payload, _] = parts.as_slice() else {
        return Err(format!(
            "not a JWT: expected three dot-separated parts, found {}",
            parts.len()
        ));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "not a JWT: its payload is not base64url".to_owned())?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| "not a JWT: its payload is not JSON".to_owned())?;
    match &claims["status"]["status_list"]["idx"] {
        serde_json::Value::Null => Err(
            "the token has no status.status_list.idx claim, so it is not a Lapse credential; revoke it by its issuer's means, or use `lapse revoke index N`"
                .into(),
        ),
        idx => idx
            .as_u64()
            .ok_or_else(|| format!("status.status_list.idx is {idx}, not a status index")),
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only ask the one broker given by --broker, not every member.
    #[arg(long)]
    only: bool,
    #[command(flatten)]
    connection: Connection,
}

fn status_json(status: &pb::StatusResponse) -> serde_json::Value {
    let members = |list: &[pb::Member]| {
        list.iter()
            .map(|m| json!({"node_id": m.node_id, "address": m.address}))
            .collect::<Vec<_>>()
    };
    json!({
        "node_id": status.node_id,
        "address": status.address,
        "role": status.role,
        "term": status.term,
        "leader_id": status.leader_id,
        "leader_address": status.leader_address,
        "voters": members(&status.voters),
        "learners": members(&status.learners),
        "last_log_index": status.last_log_index,
        "committed_index": status.committed_index,
        "applied_index": status.applied_index,
        "snapshot_index": status.snapshot_index,
        "state_digest": status.state_digest,
        "cluster_time_ms": status.cluster_time_ms,
        "revocation_epoch": status.revocation_epoch,
        "divergences": status.divergences.iter().map(|d| json!({
            "peer_id": d.peer_id,
            "index": d.index,
            "own_digest": d.own_digest,
            "peer_digest": d.peer_digest,
            "detected_at_ms": d.detected_at_ms,
        })).collect::<Vec<_>>(),
        "freshness": status.freshness.as_ref().map(|f| json!({
            "problem": (!f.problem.is_empty()).then_some(&f.problem),
            "withheld_reason": (!f.withheld_reason.is_empty()).then_some(&f.withheld_reason),
            "withheld_for_ms": f.withheld_for_ms,
            "withheld_total": f.withheld_total,
            "slowest_confirmation_ms": f.slowest_confirmation_ms,
            "heartbeat_ms": f.heartbeat_ms,
            "verifier_staleness_ms": f.verifier_staleness_ms,
        })),
    })
}

pub async fn status(args: StatusArgs) -> Result<(), Failure> {
    let connection = args.connection;
    let mut client = connection.client().await?;
    let first = client.status(pb::StatusRequest {}).await?.into_inner();
    let mut all = vec![Ok(first.clone())];
    if !args.only {
        for member in first.voters.iter().chain(&first.learners) {
            if member.node_id == first.node_id {
                continue;
            }
            let answer = match connection.client_to(&member.address).await {
                Ok(mut other) => other
                    .status(pb::StatusRequest {})
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| {
                        format!(
                            "node {} at {}: {}",
                            member.node_id,
                            member.address,
                            s.message()
                        )
                    }),
                Err(failure) => Err(format!("node {}: {}", member.node_id, failure.message)),
            };
            all.push(answer);
        }
    }
    if connection.json {
        let nodes: Vec<_> = all
            .iter()
            .map(|a| match a {
                Ok(status) => status_json(status),
                Err(error) => json!({"error": error}),
            })
            .collect();
        print_json(&json!({"nodes": nodes}));
        return Ok(());
    }
    let leader = match first.leader_id {
        Some(id) => format!("node {id} at {}", first.leader_address),
        None => "none known".into(),
    };
    println!("leader: {leader}   term: {}", first.term);
    println!(
        "voters: {}   learners: {}",
        first
            .voters
            .iter()
            .map(|m| m.node_id.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        if first.learners.is_empty() {
            "none".into()
        } else {
            first
                .learners
                .iter()
                .map(|m| m.node_id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "{:>5}  {:<22} {:<10} {:>10} {:>10} {:>10}  {:<16}",
        "node", "address", "role", "last log", "committed", "applied", "state digest"
    );
    for answer in &all {
        match answer {
            Ok(s) => println!(
                "{:>5}  {:<22} {:<10} {:>10} {:>10} {:>10}  {:<16}",
                s.node_id,
                s.address,
                s.role,
                s.last_log_index,
                s.committed_index,
                s.applied_index,
                &s.state_digest[..16.min(s.state_digest.len())]
            ),
            Err(error) => println!("    -  unreachable: {error}"),
        }
    }
    let divergences: Vec<String> = all
        .iter()
        .flatten()
        .flat_map(|s| {
            s.divergences.iter().map(|d| {
                format!(
                    "DIVERGED: node {} and node {} hold different states at log index {} ({} vs {})",
                    s.node_id,
                    d.peer_id,
                    d.index,
                    &d.own_digest[..16.min(d.own_digest.len())],
                    &d.peer_digest[..16.min(d.peer_digest.len())]
                )
            })
        })
        .collect();
    for line in &divergences {
        println!("{line}");
    }
    for s in all.iter().flatten() {
        let Some(f) = &s.freshness else { continue };
        // One missed heartbeat is not news (a broker just started, a
        // leader just changed): report what lasts longer than the interval.
        if !f.withheld_reason.is_empty() && f.withheld_for_ms >= f.heartbeat_ms {
            println!(
                "WITHHELD: node {} has sent its verifiers no heartbeat for {} ms: {}",
                s.node_id, f.withheld_for_ms, f.withheld_reason
            );
        }
        if !f.problem.is_empty() {
            println!("STALE RISK: node {}: {}", s.node_id, f.problem);
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    #[command(subcommand)]
    action: JoinTokenAction,
}

#[derive(Debug, Subcommand)]
enum JoinTokenAction {
    /// Create a single-use join token.
    Create {
        /// A token for a new broker to join the cluster.
        #[arg(long, conflicts_with_all = ["tenant", "workload"])]
        for_broker: bool,
        /// With --for-broker: only a broker advertising this address may use it.
        #[arg(long, requires = "for_broker")]
        address: Option<String>,
        /// A token for a workload of this tenant to obtain a credential.
        #[arg(long, requires = "workload")]
        tenant: Option<String>,
        /// The workload's SPIFFE id.
        #[arg(long, requires = "tenant")]
        workload: Option<String>,
        /// How long the token stays valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

pub async fn join_token(args: JoinTokenArgs) -> Result<(), Failure> {
    let JoinTokenAction::Create {
        for_broker,
        address,
        tenant,
        workload,
        ttl,
        request_id,
        connection,
    } = args.action;
    use pb::create_join_token_request::Grant;
    let grant = match (for_broker, tenant, workload) {
        (true, _, _) => Grant::Broker(pb::BrokerGrant {
            address: address.unwrap_or_default(),
        }),
        (false, Some(tenant), Some(workload)) => {
            Grant::Workload(pb::WorkloadGrant { tenant, workload })
        }
        _ => {
            return Err(Failure::new(
                exit::USAGE,
                "say --for-broker, or --tenant T --workload SPIFFE_ID",
            ));
        }
    };
    let request_id = request_id.unwrap_or_else(new_request_id);
    let mut client = connection.client().await?;
    let reply = connection
        .admin(
            client.create_join_token(connection.request(pb::CreateJoinTokenRequest {
                request_id: request_id.clone(),
                ttl_seconds: ttl.as_secs().max(1),
                grant: Some(grant),
            })),
        )
        .await
        .map_err(|failure| failure.retry_with(&request_id))?;
    if connection.json {
        print_json(&json!({"token": reply.token, "expires_at_ms": reply.expires_at_ms}));
    } else {
        println!("{}", reply.token);
        eprintln!("valid until {}; it works once", moment(reply.expires_at_ms));
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    action: ClusterAction,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Add a running broker as a learner (joining with a token does this too).
    AddLearner { node_id: u64, address: String },
    /// Make a learner a voter.
    Promote { node_id: u64 },
    /// Remove a voter or learner from the cluster.
    Remove { node_id: u64 },
}

pub async fn cluster(args: ClusterArgs) -> Result<(), Failure> {
    let connection = args.connection;
    let mut client = connection.client().await?;
    let reply = match args.action {
        ClusterAction::AddLearner { node_id, address } => {
            connection
                .admin(
                    client.add_learner(
                        connection.request(pb::AddLearnerRequest { node_id, address }),
                    ),
                )
                .await?
        }
        ClusterAction::Promote { node_id } => {
            connection
                .admin(client.promote(connection.request(pb::PromoteRequest { node_id })))
                .await?
        }
        ClusterAction::Remove { node_id } => {
            connection
                .admin(client.remove_node(connection.request(pb::RemoveNodeRequest { node_id })))
                .await?
        }
    };
    let ids = |list: &[pb::Member]| list.iter().map(|m| m.node_id).collect::<Vec<_>>();
    if connection.json {
        print_json(
            &json!({"log_index": reply.log_index, "voters": ids(&reply.voters), "learners": ids(&reply.learners)}),
        );
    } else {
        println!(
            "membership at log index {}: voters {:?}, learners {:?}",
            reply.log_index,
            ids(&reply.voters),
            ids(&reply.learners)
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// The broker the block is for.
    #[arg(long)]
    broker_id: u64,
    /// How many indices.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// How long the broker may issue from the block.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    lease: Duration,
    #[arg(long)]
    request_id: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

pub async fn lease(args: LeaseArgs) -> Result<(), Failure> {
    let connection = args.connection;
    let request_id = args.request_id.unwrap_or_else(new_request_id);
    let mut client = connection.client().await?;
    let reply = connection
        .admin(client.lease_indices(connection.request(pb::LeaseRequest {
            request_id: request_id.clone(),
            broker_id: args.broker_id,
            count: args.count,
            lease_ms: args.lease.as_millis() as u64,
        })))
        .await
        .map_err(|failure| failure.retry_with(&request_id))?;
    if connection.json {
        print_json(&json!({
            "start": reply.start, "end": reply.end,
            "lease_expires_at_ms": reply.lease_expires_at_ms,
            "credentials_expire_by_ms": reply.credentials_expire_by_ms,
            "epoch": reply.epoch,
        }));
    } else {
        println!(
            "leased indices {}..{} to broker {} until {}",
            reply.start,
            reply.end,
            args.broker_id,
            moment(reply.lease_expires_at_ms)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::{credential_status_index, secret_from_input};

    #[test]
    fn one_trailing_newline_is_not_part_of_the_secret() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"hunter2", b"hunter2"),
            (b"hunter2\n", b"hunter2"),
            (b"hunter2\r\n", b"hunter2"),
            (b"hunter2\n\n", b"hunter2\n"),
            (b" hunter2 \n", b" hunter2 "),
            (b"hunter2\r", b"hunter2\r"),
        ];
        for (read, secret) in cases {
            assert_eq!(secret_from_input(read), Ok(secret), "{read:?}");
        }
    }

    #[test]
    fn empty_or_blank_secrets_are_refused() {
        for read in [&b""[..], b"\n", b"\r\n", b"  \t\n", b"\n\n"] {
            assert!(secret_from_input(read).is_err(), "{read:?}");
        }
    }

    fn token(payload: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"n1-a"}"#),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode([0u8; 64])
        )
    }

    #[test]
    fn the_status_index_is_read_from_the_payload_without_a_key() {
        let jwt = token(r#"{"sub":"spiffe://x/y","status":{"status_list":{"idx":42,"uri":"u"}}}"#);
        assert_eq!(credential_status_index(&jwt), Ok(42));
        assert_eq!(credential_status_index(&format!("{jwt}\n")), Ok(42));
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        let cases = [
            (String::new(), "empty"),
            ("not a jwt".to_owned(), "three dot-separated parts, found 1"),
            ("a.b.c.d".to_owned(), "found 4"),
            ("a.!!!.c".to_owned(), "not base64url"),
            (
                format!("a.{}.c", URL_SAFE_NO_PAD.encode("nope")),
                "not JSON",
            ),
            (token(r#"{"sub":"x"}"#), "no status.status_list.idx"),
            (
                token(r#"{"status":{"status_list":{"idx":-1}}}"#),
                "not a status index",
            ),
        ];
        for (text, reason) in cases {
            let error = credential_status_index(&text).unwrap_err();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }
}
