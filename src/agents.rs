//! Credentials for agents: the task context an issuance or exchange
//! carries, and `lapse exchange`, RFC 8693 token exchange for delegation.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lapse_wire::issuer::ExchangeRequest;
use sha2::{Digest, Sha256};

use crate::client::{Connection, Failure, exit};
use crate::credentials::{dpop_key, issuer_client, print_issued, prove, with_dpop_nonce};

/// The task context of a new credential; kept in the credential, given to
/// the tenant's policy and recorded in the audit.
#[derive(Debug, Args)]
pub struct TaskArgs {
    /// The task the credential serves: 1 to 128 characters of letters,
    /// digits and -_.:/ . `lapse revoke task TENANT TASK` revokes every
    /// credential of the task, and everything delegated from them.
    #[arg(long)]
    pub task: Option<String>,
    /// The user (or other principal) the agent acts for, as your system
    /// names it: at most 256 bytes, no spaces.
    #[arg(long)]
    pub on_behalf_of: Option<String>,
    /// SHA-256 (64 lowercase hex digits) of what the holder is about to do,
    /// its prompt or plan.
    #[arg(long, value_name = "HEX", conflicts_with = "intent_of")]
    pub intent: Option<String>,
    /// Compute the intent digest from this file (the prompt or plan), at
    /// most 256 KiB.
    #[arg(long, value_name = "PATH")]
    pub intent_of: Option<PathBuf>,
}

impl TaskArgs {
    /// The intent digest given or computed; empty when neither.
    pub fn intent(&self) -> Result<String, Failure> {
        if let Some(hex) = &self.intent {
            if lapse_credential::intent_problem(hex).is_some() {
                return Err(Failure::new(
                    exit::USAGE,
                    "--intent: expected a SHA-256 digest, 64 lowercase hex digits (or use --intent-of FILE)",
                ));
            }
            return Ok(hex.clone());
        }
        let Some(path) = &self.intent_of else {
            return Ok(String::new());
        };
        let bytes = crate::client::read_named_file("--intent-of", path)?;
        Ok(hex::encode(Sha256::digest(&bytes)))
    }
}

#[derive(Debug, Args)]
pub struct ExchangeArgs {
    /// The credential to delegate from (RFC 8693 subject token).
    #[arg(long, env = "LAPSE_CREDENTIAL", hide_env_values = true)]
    credential: String,
    /// The key the credential is bound to, for the DPoP proof.
    #[arg(long)]
    dpop_key_file: Option<PathBuf>,
    /// The cluster's issuer, whose URI proofs name (the brokers' `[issuance] issuer`); by default
    /// the dev cluster's (`.lapse-dev/issuer`) when there is one, else `lapse`.
    #[arg(long)]
    issuer: Option<String>,
    /// The delegate's SPIFFE id: the new credential's acting party (`act`).
    #[arg(long)]
    actor: String,
    /// Bind the new credential to the delegate's key in this file (DPoP);
    /// created if missing. Give the file to the delegate with the credential.
    #[arg(long)]
    actor_key_file: Option<PathBuf>,
    /// Keep only these audiences (repeat for more); all of the credential's
    /// when not given, never one it does not hold.
    #[arg(long = "audience")]
    audiences: Vec<String>,
    /// Keep only these scopes (repeat for more); all of the credential's
    /// when not given, never one it does not hold.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Lifetime; the broker's default cut to the credential's remaining
    /// life when not given. Longer than that remaining life is refused.
    #[arg(long, value_parser = crate::client::positive_duration)]
    ttl: Option<Duration>,
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    connection: Connection,
}

pub async fn exchange(args: ExchangeArgs) -> Result<(), Failure> {
    let intent = args.task.intent()?;
    let key = args.dpop_key_file.as_deref().map(dpop_key).transpose()?;
    let actor_jkt = args
        .actor_key_file
        .as_deref()
        .map(dpop_key)
        .transpose()?
        .map(|k| k.public_jwk().thumbprint())
        .unwrap_or_default();
    let issuer = args
        .issuer
        .clone()
        .unwrap_or_else(crate::client::default_issuer);
    let uri = format!("{}/exchange", issuer.trim_end_matches('/'));
    let credential = args.credential.trim().to_owned();
    let prove = |nonce: Option<&str>| prove(key.as_ref(), &uri, Some(&credential), nonce);
    let client = issuer_client(&args.connection).await?;
    let request = ExchangeRequest {
        subject_token: credential.clone(),
        dpop_proof: String::new(),
        actor: args.actor,
        actor_jkt,
        audiences: args.audiences,
        scopes: args.scopes,
        ttl_seconds: args.ttl.map(|t| t.as_secs().max(1)).unwrap_or(0),
        task: args.task.task.unwrap_or_default(),
        on_behalf_of: args.task.on_behalf_of.unwrap_or_default(),
        intent,
    };
    let reply = with_dpop_nonce(prove, |dpop_proof| {
        let mut client = client.clone();
        let request = ExchangeRequest {
            dpop_proof,
            ..request.clone()
        };
        async move { client.exchange(request).await }
    })
    .await?;
    print_issued(&reply, args.connection.json);
    Ok(())
}
