//! `lapse role` and `lapse access-policy`: who may do what on the control
//! plane. Roles are bound to principals (`operator:<name>` for an operator
//! certificate, `token:<name>` for an admin token) in the ledger; the Cedar
//! access policy decides what each role may do.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use lapse_wire::cluster as pb;
use serde_json::json;

use crate::client::{Connection, Failure, new_request_id, print_json};

#[derive(Debug, Args)]
pub struct RoleArgs {
    #[command(subcommand)]
    action: RoleAction,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Subcommand)]
enum RoleAction {
    /// Grant a principal a role (cluster admins only).
    ///
    /// Roles: cluster-admin (everything), tenant-admin --tenant T
    /// (revocations, issuance policy, join tokens and audit of T), revoker
    /// --tenant T (revocations of T), auditor [--tenant T] (the audit of T,
    /// or of every tenant), verifier (propagation reads).
    Bind {
        /// operator:<name> or token:<name>.
        principal: String,
        role: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Take a role from a principal (cluster admins only).
    Unbind {
        principal: String,
        role: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List every binding and the bindings' version.
    List,
}

pub async fn role(args: RoleArgs) -> Result<(), Failure> {
    let connection = args.connection;
    let mut client = connection.client().await?;
    let reply = match args.action {
        RoleAction::Bind {
            principal,
            role,
            tenant,
        } => {
            let request = pb::RoleRequest {
                request_id: new_request_id(),
                principal,
                role,
                tenant: tenant.unwrap_or_default(),
            };
            connection
                .admin(client.bind_role(connection.request(request)))
                .await?
        }
        RoleAction::Unbind {
            principal,
            role,
            tenant,
        } => {
            let request = pb::RoleRequest {
                request_id: new_request_id(),
                principal,
                role,
                tenant: tenant.unwrap_or_default(),
            };
            connection
                .admin(client.unbind_role(connection.request(request)))
                .await?
        }
        RoleAction::List => {
            connection
                .admin(client.list_roles(connection.request(pb::ListRolesRequest {})))
                .await?
        }
    };
    if connection.json {
        let bindings: Vec<_> = reply
            .bindings
            .iter()
            .map(|b| json!({"principal": b.principal, "role": b.role, "tenant": b.tenant}))
            .collect();
        print_json(&json!({"version": reply.version, "bindings": bindings}));
    } else {
        println!("role bindings, version {}", reply.version);
        for b in &reply.bindings {
            match b.tenant.as_str() {
                "" => println!("  {}  {}", b.principal, b.role),
                tenant => println!("  {}  {} of {tenant}", b.principal, b.role),
            }
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct AccessPolicyArgs {
    #[command(subcommand)]
    action: AccessPolicyAction,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Subcommand)]
enum AccessPolicyAction {
    /// Replace the Cedar access policy with the contents of a file
    /// (cluster admins only). `show` prints the one in force, to start from.
    Set {
        file: PathBuf,
        /// Refuse unless the policy in force is at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Print the access policy in force (version 0: the default).
    Show,
}

pub async fn access_policy(args: AccessPolicyArgs) -> Result<(), Failure> {
    let connection = args.connection;
    let reply = match args.action {
        AccessPolicyAction::Set {
            file,
            expected_version,
        } => {
            let text = crate::client::read_named_text("access policy file", &file)?;
            // The file first: a local mistake is reported without a broker.
            let mut client = connection.client().await?;
            let request = pb::SetAccessPolicyRequest {
                request_id: new_request_id(),
                text,
                expected_version,
            };
            connection
                .admin(client.set_access_policy(connection.request(request)))
                .await?
        }
        AccessPolicyAction::Show => {
            let mut client = connection.client().await?;
            connection
                .admin(client.get_access_policy(connection.request(pb::GetAccessPolicyRequest {})))
                .await?
        }
    };
    if connection.json {
        print_json(&json!({"version": reply.version, "text": reply.text}));
    } else {
        println!("// access policy version {}", reply.version);
        print!("{}", reply.text);
    }
    Ok(())
}

/// `lapse audit --control`: the control-plane audit.
pub async fn control_audit(
    connection: &Connection,
    tenant: Option<String>,
    principal: Option<String>,
    action: Option<String>,
    since_ms: Option<u64>,
    limit: u32,
) -> Result<(), Failure> {
    let mut client = connection.client().await?;
    let reply = connection
        .admin(
            client.control_audit(connection.request(pb::ControlAuditRequest {
                tenant: tenant.unwrap_or_default(),
                principal: principal.unwrap_or_default(),
                action: action.unwrap_or_default(),
                since_ms: since_ms.unwrap_or(0),
                limit,
            })),
        )
        .await?;
    if connection.json {
        let events: Vec<_> = reply
            .events
            .iter()
            .map(|e| {
                json!({
                    "epoch": e.epoch, "at_ms": e.at_ms, "request_id": e.request_id,
                    "principal": e.principal, "action": e.action, "tenant": e.tenant,
                    "justification": e.justification, "bindings_version": e.bindings_version,
                    "policy_version": e.policy_version, "allowed": e.allowed, "outcome": e.outcome,
                    "grant": (e.grant > 0).then_some(e.grant),
                })
            })
            .collect();
        print_json(&json!({"events": events}));
    } else {
        for e in reply.events {
            let tenant = match e.tenant.as_str() {
                "" => "cluster".to_owned(),
                t => format!("tenant {t}"),
            };
            let why = match e.justification.as_str() {
                "" => String::new(),
                j => format!(" (reason: {j})"),
            };
            let why = match e.grant {
                0 => why,
                grant => format!("{why} UNDER BREAK-GLASS GRANT {grant}"),
            };
            let outcome = if e.allowed {
                e.outcome
            } else {
                format!("REFUSED: {}", e.outcome)
            };
            println!(
                "{}  {} {} [{tenant}] request {} roles v{} policy v{}{why}: {outcome}",
                crate::output::moment(e.at_ms),
                e.principal,
                e.action,
                e.request_id,
                e.bindings_version,
                e.policy_version,
            );
        }
    }
    Ok(())
}
