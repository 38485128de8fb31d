//! `lapse ssf receiver create|list|remove`: Shared Signals receivers, whose
//! bearer token reaches the SSF endpoints of every broker's HTTP listener
//! (`/.well-known/ssf-configuration` says where).

use clap::{Args, Subcommand};
use lapse_wire::cluster as pb;
use serde_json::json;

use crate::client::{Connection, Failure, new_request_id, print_json};
use crate::output::moment;

#[derive(Debug, Args)]
pub struct SsfArgs {
    #[command(subcommand)]
    what: SsfWhat,
}

#[derive(Debug, Subcommand)]
enum SsfWhat {
    /// Receivers: who may manage SSF streams and read revocation events.
    Receiver {
        #[command(subcommand)]
        action: ReceiverAction,
    },
}

#[derive(Debug, Subcommand)]
enum ReceiverAction {
    /// Create a receiver and print its bearer token (shown only now).
    Create {
        /// The receiver's name: letters, digits, '.', '_', '-' (at most 64).
        #[arg(long)]
        name: String,
        /// The tenant whose revocations it receives; leave out for every
        /// tenant (a cluster-wide permission).
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// List receivers and their streams.
    List {
        /// Only this tenant's receivers.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Remove a receiver and its streams.
    Remove {
        #[arg(long)]
        name: String,
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

pub async fn run(args: SsfArgs) -> Result<(), Failure> {
    let SsfWhat::Receiver { action } = args.what;
    match action {
        ReceiverAction::Create {
            name,
            tenant,
            request_id,
            connection,
        } => {
            let request_id = request_id.unwrap_or_else(new_request_id);
            let mut client = connection.client().await?;
            let reply = connection
                .admin(client.create_ssf_receiver(connection.request(
                    pb::CreateSsfReceiverRequest {
                        request_id: request_id.clone(),
                        name,
                        tenant: tenant.unwrap_or_default(),
                    },
                )))
                .await
                .map_err(|failure| failure.retry_with(&request_id))?;
            if connection.json {
                print_json(&json!({"token": reply.token}));
            } else {
                println!("{}", reply.token);
                eprintln!("shown only now: the cluster keeps its SHA-256");
            }
            Ok(())
        }
        ReceiverAction::List { tenant, connection } => {
            let mut client = connection.client().await?;
            let reply = connection
                .admin(
                    client.list_ssf_receivers(connection.request(pb::ListSsfReceiversRequest {
                        tenant: tenant.unwrap_or_default(),
                    })),
                )
                .await?;
            show(&connection, &reply);
            Ok(())
        }
        ReceiverAction::Remove {
            name,
            request_id,
            connection,
        } => {
            let request_id = request_id.unwrap_or_else(new_request_id);
            let mut client = connection.client().await?;
            let reply = connection
                .admin(client.remove_ssf_receiver(connection.request(
                    pb::RemoveSsfReceiverRequest {
                        request_id: request_id.clone(),
                        name,
                    },
                )))
                .await
                .map_err(|failure| failure.retry_with(&request_id))?;
            show(&connection, &reply);
            Ok(())
        }
    }
}

fn show(connection: &Connection, reply: &pb::SsfReceiversResponse) {
    if connection.json {
        let receivers: Vec<_> = reply
            .receivers
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "tenant": (!r.tenant.is_empty()).then_some(&r.tenant),
                    "created_at_ms": r.created_at_ms,
                    "streams": r.streams.iter().map(|s| json!({
                        "stream_id": s.stream_id,
                        "delivery": s.delivery,
                        "status": s.status,
                        "reason": (!s.reason.is_empty()).then_some(&s.reason),
                        "acked": s.acked,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&json!({"receivers": receivers, "last_event": reply.last_event}));
        return;
    }
    println!("last event: {}", reply.last_event);
    for r in &reply.receivers {
        let scope = if r.tenant.is_empty() {
            "every tenant"
        } else {
            &r.tenant
        };
        println!("{}  ({scope}, created {})", r.name, moment(r.created_at_ms));
        for s in &r.streams {
            let reason = if s.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", s.reason)
            };
            println!(
                "  {}  {} {}{reason}, acknowledged up to {}",
                s.stream_id, s.delivery, s.status, s.acked
            );
        }
    }
}
