//! `lapse`: run brokers and a local dev cluster, revoke, inspect, administer.

// First, so that its `print!`/`println!`/`eprint!`/`eprintln!`, which
// survive a closed pipe, replace the standard ones in every module below.
#[macro_use]
mod output;

mod admin_token;
mod agents;
mod break_glass;
mod certs;
mod client;
mod commands;
mod credentials;
mod dev;
mod evidence;
mod feed;
mod grants;
mod revoke;
mod roles;
mod secret_input;
#[cfg(feature = "sim")]
mod sim;
mod ssf;
mod status;
mod tls;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The end of `lapse --help`: the exit codes, then where to start.
fn after_help() -> String {
    format!(
        "{}\n\nStart a local three-broker cluster with `lapse dev`, then try `lapse status`.",
        client::exit::HELP
    )
}

/// Lapse: a Raft-replicated cluster that issues short-lived workload
/// credentials, revokes them, and measures how fast a revocation takes effect.
#[derive(Debug, Parser)]
#[command(name = "lapse", version, after_help = after_help())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one broker (a cluster member).
    Broker(commands::BrokerArgs),
    /// Make the cluster CA and certificates for brokers, verifiers and operators.
    Certs(certs::CertsArgs),
    /// Make admin bearer tokens (for operators without a certificate) and the hashed entries brokers keep.
    AdminToken(admin_token::AdminTokenArgs),
    /// Start a local three-broker cluster on loopback, with data under .lapse-dev.
    Dev(dev::DevArgs),
    /// Revoke credentials: one by status index or from the credential itself, a workload's, a tenant's, a key's, or a leaked secret.
    Revoke(revoke::RevokeArgs),
    /// Show the cluster as the brokers see it: leader, term, members, log indexes, state digests.
    Status(status::StatusArgs),
    /// Create single-use join tokens for brokers or workloads.
    JoinToken(commands::JoinTokenArgs),
    /// Change cluster membership: add a learner, promote it to voter, remove a node.
    Cluster(commands::ClusterArgs),
    /// Lease a block of status indices to a broker (brokers do this themselves when issuing).
    Lease(commands::LeaseArgs),
    /// Get a credential: exchange a join token or an external JWT for one.
    Issue(credentials::IssueArgs),
    /// Exchange a current credential for a new one (with a DPoP proof when key-bound).
    Refresh(credentials::RefreshArgs),
    /// Delegate a credential to a sub-agent or executor (RFC 8693 token exchange): narrower scopes, no longer life, an `act` chain.
    Exchange(agents::ExchangeArgs),
    /// Set or show a tenant's Cedar issuance policy.
    Policy(credentials::PolicyArgs),
    /// List published signing keys, or rotate a broker's key.
    Keys(credentials::KeysArgs),
    /// Query the issuance audit log by tenant, workload or status index, or (--control) the control-plane audit; export, verify and explain its evidence.
    Audit(credentials::AuditArgs),
    /// Grant, take and list operator roles (cluster-admin, tenant-admin, revoker, auditor, verifier).
    Role(roles::RoleArgs),
    /// Show or replace the Cedar access policy that decides what each role may do.
    AccessPolicy(roles::AccessPolicyArgs),
    /// Run edge verifiers: follow the revocation feed and verify credentials offline.
    Verifier(feed::VerifierArgs),
    /// Break-glass: a time-bound role for an operator (open, approve, close, list), or emergency credentials signed offline (keygen, mint).
    #[command(long_about = break_glass::ABOUT)]
    BreakGlass(break_glass::BreakGlassArgs),
    /// How far revocations have reached: delays per region and verifier, lagging verifiers.
    Propagation(feed::PropagationArgs),
    /// Shared Signals (SSF / CAEP): create, list and remove receivers of revocation events.
    Ssf(ssf::SsfArgs),
    /// Deterministic simulation: run scenarios of partitions, crashes and clock drift from seeds.
    #[cfg(feature = "sim")]
    Sim(sim::SimArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Simulated brokers log as real ones do; during a simulation that is
    // noise unless asked for.
    #[cfg(feature = "sim")]
    let simulating = matches!(cli.command, Command::Sim(_));
    #[cfg(not(feature = "sim"))]
    let simulating = false;
    let default_filter = if simulating {
        "error"
    } else {
        "warn,lapse=info,lapse_broker=info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LAPSE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Broker(args) => commands::broker(args).await,
        Command::Certs(args) => certs::run(args),
        Command::AdminToken(args) => admin_token::run(args),
        Command::Dev(args) => dev::run(args).await,
        Command::Revoke(args) => revoke::revoke(args).await,
        Command::Status(args) => status::status(args).await,
        Command::JoinToken(args) => commands::join_token(args).await,
        Command::Ssf(args) => ssf::run(args).await,
        Command::Cluster(args) => commands::cluster(args).await,
        Command::Lease(args) => commands::lease(args).await,
        Command::Issue(args) => credentials::issue(args).await,
        Command::Refresh(args) => credentials::refresh(args).await,
        Command::Exchange(args) => agents::exchange(args).await,
        Command::Policy(args) => credentials::policy(args).await,
        Command::Keys(args) => credentials::keys(args).await,
        Command::Role(args) => roles::role(args).await,
        Command::AccessPolicy(args) => roles::access_policy(args).await,
        Command::Audit(args) => credentials::audit(args).await,
        Command::Verifier(args) => feed::verifier(args).await,
        Command::BreakGlass(args) => break_glass::run(args).await,
        Command::Propagation(args) => feed::propagation(args).await,
        #[cfg(feature = "sim")]
        Command::Sim(args) => sim::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.exit(),
    }
}

/// Parse a time given as RFC 3339 or as milliseconds since the Unix epoch.
fn parse_time_ms(text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| {
            format!("{text:?} is neither RFC 3339 (2026-01-31T12:00:00Z) nor milliseconds: {e}")
        })?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| format!("{text:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn times_parse_as_rfc3339_or_milliseconds() {
        assert_eq!(super::parse_time_ms("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(super::parse_time_ms("1970-01-01T00:00:01Z"), Ok(1000));
        assert!(super::parse_time_ms("yesterday").is_err());
    }
}
