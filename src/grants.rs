//! `lapse break-glass open|approve|close|list`: time-bound elevation for
//! an operator, recorded with elevated audit.

use std::time::Duration;

use clap::Subcommand;
use lapse_wire::cluster as pb;
use serde_json::json;

use crate::client::{Connection, Failure, new_request_id, print_json};

#[derive(Debug, Subcommand)]
pub enum GrantAction {
    /// Ask for a role for a while (yours, the operator running this). It
    /// counts at once if the access policy lets you open one without
    /// approval (cluster admins), else once another operator approves it.
    /// Every action you take under it is tagged with it in the audit; it
    /// ends by itself when its time is up.
    Open {
        /// cluster-admin, tenant-admin, revoker, auditor or verifier.
        #[arg(long)]
        role: String,
        #[arg(long)]
        tenant: Option<String>,
        /// How long, at most 8h.
        #[arg(long = "for", value_parser = crate::client::positive_duration)]
        duration: Duration,
        /// Why; required, and kept in the audit.
        #[arg(long = "why")]
        why: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Approve another operator's grant.
    Approve {
        id: u64,
        #[command(flatten)]
        connection: Connection,
    },
    /// End a grant before its time (your own, or any with leave).
    Close {
        id: u64,
        #[command(flatten)]
        connection: Connection,
    },
    /// List the grants the ledger holds.
    List {
        #[command(flatten)]
        connection: Connection,
    },
}

pub async fn run(action: GrantAction) -> Result<(), Failure> {
    let connection = match &action {
        GrantAction::Open { connection, .. }
        | GrantAction::Approve { connection, .. }
        | GrantAction::Close { connection, .. }
        | GrantAction::List { connection } => connection,
    };
    let mut client = connection.client().await?;
    let reply = match &action {
        GrantAction::Open {
            role,
            tenant,
            duration,
            why,
            ..
        } => {
            let request = pb::OpenGrantRequest {
                request_id: new_request_id(),
                role: role.clone(),
                tenant: tenant.clone().unwrap_or_default(),
                for_seconds: duration.as_secs(),
                reason: why.clone(),
            };
            connection
                .admin(client.open_grant(connection.request(request)))
                .await?
        }
        GrantAction::Approve { id, .. } => {
            let request = pb::GrantRequest {
                request_id: new_request_id(),
                id: *id,
            };
            connection
                .admin(client.approve_grant(connection.request(request)))
                .await?
        }
        GrantAction::Close { id, .. } => {
            let request = pb::GrantRequest {
                request_id: new_request_id(),
                id: *id,
            };
            connection
                .admin(client.close_grant(connection.request(request)))
                .await?
        }
        GrantAction::List { .. } => {
            connection
                .admin(client.list_grants(connection.request(pb::ListGrantsRequest {})))
                .await?
        }
    };
    if connection.json {
        let grants: Vec<_> = reply
            .grants
            .iter()
            .map(|g| {
                json!({
                    "id": g.id, "principal": g.principal, "role": g.role, "tenant": g.tenant,
                    "reason": g.reason, "opened_at_ms": g.opened_at_ms,
                    "expires_at_ms": g.expires_at_ms, "needs_approval": g.needs_approval,
                    "approved_by": g.approved_by, "closed_at_ms": g.closed_at_ms,
                    "in_force": g.in_force,
                })
            })
            .collect();
        print_json(&json!({"id": reply.id, "grants": grants}));
    } else {
        for g in &reply.grants {
            let state = if g.in_force {
                "IN FORCE".to_owned()
            } else if g.closed_at_ms > 0 {
                "closed".to_owned()
            } else if g.needs_approval && g.approved_by.is_empty() {
                "waiting for approval".to_owned()
            } else {
                "expired".to_owned()
            };
            let role = match g.tenant.as_str() {
                "" => g.role.clone(),
                t => format!("{} of {t}", g.role),
            };
            println!(
                "grant {}: {} {role} until {} [{state}] ({})",
                g.id,
                g.principal,
                crate::output::moment(g.expires_at_ms),
                g.reason
            );
        }
    }
    Ok(())
}
