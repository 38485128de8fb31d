//! The subcommands that run a broker or change the cluster: `broker`,
//! `join-token`, `cluster`, `lease`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use lapse_broker::{Broker, BrokerConfig, Env};
use lapse_wire::cluster as pb;
use serde_json::json;

use crate::client::{Connection, Failure, exit, new_request_id, print_json};
use crate::output::moment;

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
    #[arg(long, value_parser = crate::client::broker_address)]
    advertise: Option<String>,
    /// Directory for the Raft log, snapshots and cluster secret.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Join the running cluster that a broker at this address belongs to
    /// (with --join-token or --join-token-file).
    #[arg(long, value_parser = crate::client::broker_address)]
    join: Option<String>,
    /// Single-use join token from `lapse join-token create --for-broker`;
    /// `-` reads it from standard input, which keeps it out of the process
    /// list.
    #[arg(
        long,
        env = "LAPSE_JOIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        requires = "join"
    )]
    join_token: Option<String>,
    /// Read the join token from this file.
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "join_token",
        requires = "join"
    )]
    join_token_file: Option<PathBuf>,
}

pub async fn broker(args: BrokerArgs) -> Result<(), Failure> {
    let join_token = crate::secret_input::read(
        "join-token",
        args.join_token.clone(),
        args.join_token_file.as_deref(),
    )?;
    if args.join.is_some() && join_token.is_none() {
        return Err(Failure::new(
            exit::USAGE,
            "--join needs the broker's join token: --join-token TOKEN, --join-token - (standard input) or --join-token-file PATH",
        ));
    }
    let mut config = match &args.config {
        Some(path) => {
            BrokerConfig::from_file(path).map_err(|e| Failure::new(exit::USAGE, e.to_string()))?
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
        config.cluster.join_token = join_token;
    }
    // A configuration that does not hold is the command line's to fix.
    let broker = Broker::start(config, Env::default())
        .await
        .map_err(|e| match e {
            lapse_broker::StartError::Config(e) => Failure::new(exit::USAGE, e.to_string()),
            e => Failure::new(exit::FAILURE, e.to_string()),
        })?;
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
        #[arg(long, requires = "for_broker", value_parser = crate::client::broker_address)]
        address: Option<String>,
        /// A token for a workload of this tenant to obtain a credential.
        #[arg(long, requires = "workload")]
        tenant: Option<String>,
        /// The workload's SPIFFE id.
        #[arg(long, requires = "tenant")]
        workload: Option<String>,
        /// How long the token stays valid.
        #[arg(long, default_value = "1h", value_parser = crate::client::positive_duration)]
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
    AddLearner {
        node_id: u64,
        #[arg(value_parser = crate::client::broker_address)]
        address: String,
    },
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
    #[arg(long, default_value = "10m", value_parser = crate::client::positive_duration)]
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
