//! The subcommands for credentials: issue, refresh, policy, keys, audit
//! (its evidence subcommands are in `evidence.rs`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use lapse_credential::{KeyId, SigningKeyPair};
use lapse_wire::cluster as pb;
use lapse_wire::issuer::issuer_client::IssuerClient;
use lapse_wire::issuer::{IssueRequest, IssueResponse, RefreshRequest, issue_request::Attestation};
use serde_json::json;

use crate::client::{Connection, Failure, exit, new_request_id, print_json};
use crate::output::moment;

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// A single-use join token made with `lapse join-token create --tenant
    /// T --workload ID`; `-` reads it from standard input, which keeps it
    /// out of the process list.
    #[arg(long, value_name = "TOKEN", conflicts_with_all = ["external_jwt_file", "join_token_file"])]
    join_token: Option<String>,
    /// Read the join token from this file.
    #[arg(long, value_name = "PATH", conflicts_with = "external_jwt_file")]
    join_token_file: Option<PathBuf>,
    /// A file holding a JWT from a configured external issuer.
    #[arg(long)]
    external_jwt_file: Option<PathBuf>,
    /// An audience the credential is for (repeat for more).
    #[arg(long = "audience", required = true)]
    audiences: Vec<String>,
    /// A scope to ask for (repeat for more).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Lifetime; the broker's default when not given.
    #[arg(long, value_parser = crate::client::positive_duration)]
    ttl: Option<Duration>,
    /// Bind the credential to the key in this file (DPoP), proving to the
    /// broker that you hold it. Created if missing.
    #[arg(long)]
    dpop_key_file: Option<PathBuf>,
    /// The cluster's issuer, whose URI proofs name (the brokers' `[issuance] issuer`); by default
    /// the dev cluster's (`.lapse-dev/issuer`) when there is one, else `lapse`.
    #[arg(long)]
    issuer: Option<String>,
    /// The tenant you expect; refused if the attestation says otherwise.
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    task: crate::agents::TaskArgs,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// The current credential.
    #[arg(long, env = "LAPSE_CREDENTIAL", hide_env_values = true)]
    credential: String,
    /// The key the credential is bound to, for the DPoP proof.
    #[arg(long)]
    dpop_key_file: Option<PathBuf>,
    /// The cluster's issuer, whose URI proofs name (the brokers' `[issuance] issuer`); by default
    /// the dev cluster's (`.lapse-dev/issuer`) when there is one, else `lapse`.
    #[arg(long)]
    issuer: Option<String>,
    /// Lifetime; the broker's default when not given, and never past the
    /// refresh chain's end (`issuance.max_chain_age_seconds` after the
    /// attestation that began it).
    #[arg(long, value_parser = crate::client::positive_duration)]
    ttl: Option<Duration>,
    /// Keep only these audiences (repeat for more); a refresh may narrow
    /// what the credential holds, never widen it. All of them when not given.
    #[arg(long = "audience")]
    audiences: Vec<String>,
    /// Keep only these scopes (repeat for more); all of them when not given.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    #[command(flatten)]
    connection: Connection,
}

/// A DPoP proof by `key` (none without a key) for `POST uri`, for
/// `access_token` when refreshing, carrying the broker's `nonce` if given.
pub(crate) fn prove(
    key: Option<&SigningKeyPair>,
    uri: &str,
    access_token: Option<&str>,
    nonce: Option<&str>,
) -> Result<String, Failure> {
    let Some(key) = key else {
        return Ok(String::new());
    };
    lapse_credential::make_proof_with_nonce(
        key,
        "POST",
        uri,
        access_token,
        unix_now(),
        &new_jti(),
        nonce,
    )
    .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))
}

/// Send a request carrying the proof `prove` makes; when the broker
/// answers with the nonce it wants in proofs (RFC 9449 §8), make the proof
/// again with it and send once more.
pub(crate) async fn with_dpop_nonce<T, F, Fut>(
    prove: impl Fn(Option<&str>) -> Result<String, Failure>,
    mut send: F,
) -> Result<T, Failure>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match send(prove(None)?).await {
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            let nonce = status
                .metadata()
                .get("dpop-nonce")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match nonce {
                Some(nonce) => Ok(send(prove(Some(&nonce))?).await?.into_inner()),
                None => Err(status.into()),
            }
        }
        answer => Ok(answer?.into_inner()),
    }
}

/// Seconds since the Unix epoch, by this machine's clock (DPoP `iat`).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh DPoP proof id.
fn new_jti() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Read a DPoP key seed from `path`, or create one there.
pub(crate) fn dpop_key(path: &std::path::Path) -> Result<SigningKeyPair, Failure> {
    let io = |e: std::io::Error| Failure::new(exit::FAILURE, format!("{}: {e}", path.display()));
    let seed = match std::fs::read_to_string(path) {
        Ok(text) => hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| {
                Failure::new(
                    exit::REFUSED,
                    format!("{}: not a 64-hex-digit key seed", path.display()),
                )
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            // Created 0600: the key is never readable by others, even
            // while it is being written.
            lapse_pki::files::write(path, &hex::encode(seed), true, false)
                .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
            seed
        }
        Err(e) => return Err(io(e)),
    };
    Ok(SigningKeyPair::from_seed(
        KeyId::new("dpop").expect("valid id"),
        seed,
    ))
}

pub(crate) fn print_issued(reply: &IssueResponse, json_output: bool) {
    if json_output {
        print_json(&json!({
            "credential": reply.credential, "status_index": reply.status_index, "key_id": reply.key_id,
            "expires_at": reply.expires_at, "tenant": reply.tenant, "workload": reply.workload,
            "policy_version": reply.policy_version,
        }));
    } else {
        println!("{}", reply.credential);
        eprintln!(
            "issued to {} ({}), status index {}, key {}, expires {}",
            reply.workload,
            reply.tenant,
            reply.status_index,
            reply.key_id,
            moment(reply.expires_at.saturating_mul(1000))
        );
    }
}

pub(crate) async fn issuer_client(
    connection: &Connection,
) -> Result<IssuerClient<tonic::transport::Channel>, Failure> {
    Ok(IssuerClient::new(
        connection.channel_to(&connection.broker).await?,
    ))
}

pub async fn issue(args: IssueArgs) -> Result<(), Failure> {
    let join_token = crate::secret_input::read(
        "join-token",
        args.join_token,
        args.join_token_file.as_deref(),
    )?;
    let attestation = match (join_token, args.external_jwt_file) {
        (Some(token), None) => Attestation::JoinToken(token),
        (None, Some(path)) => Attestation::ExternalJwt(
            crate::client::read_named_text("--external-jwt-file", &path)?
                .trim()
                .to_owned(),
        ),
        _ => {
            return Err(Failure::new(
                exit::USAGE,
                "give --join-token, --join-token-file or --external-jwt-file",
            ));
        }
    };
    // A key-bound credential: the key's thumbprint, and a proof that this
    // caller holds the key.
    let key = args.dpop_key_file.as_deref().map(dpop_key).transpose()?;
    let dpop_jkt = key
        .as_ref()
        .map(|k| k.public_jwk().thumbprint())
        .unwrap_or_default();
    let issuer = args
        .issuer
        .clone()
        .unwrap_or_else(crate::client::default_issuer);
    let uri = format!("{}/issue", issuer.trim_end_matches('/'));
    let prove = |nonce: Option<&str>| prove(key.as_ref(), &uri, None, nonce);
    let client = issuer_client(&args.connection).await?;
    let request = IssueRequest {
        attestation: Some(attestation),
        audiences: args.audiences,
        scopes: args.scopes,
        ttl_seconds: args.ttl.map(|t| t.as_secs().max(1)).unwrap_or(0),
        dpop_jkt,
        dpop_proof: String::new(),
        tenant: args.tenant.unwrap_or_default(),
        request_id: String::new(),
        task: args.task.task.clone().unwrap_or_default(),
        on_behalf_of: args.task.on_behalf_of.clone().unwrap_or_default(),
        intent: args.task.intent()?,
    };
    let reply = with_dpop_nonce(prove, |dpop_proof| {
        let mut client = client.clone();
        let request = IssueRequest {
            dpop_proof,
            ..request.clone()
        };
        async move { client.issue(request).await }
    })
    .await?;
    print_issued(&reply, args.connection.json);
    Ok(())
}

pub async fn refresh(args: RefreshArgs) -> Result<(), Failure> {
    let key = args.dpop_key_file.as_deref().map(dpop_key).transpose()?;
    let issuer = args
        .issuer
        .clone()
        .unwrap_or_else(crate::client::default_issuer);
    let uri = format!("{}/refresh", issuer.trim_end_matches('/'));
    let credential = args.credential.clone();
    let prove = |nonce: Option<&str>| prove(key.as_ref(), &uri, Some(&credential), nonce);
    let client = issuer_client(&args.connection).await?;
    let request = RefreshRequest {
        credential: args.credential,
        dpop_proof: String::new(),
        ttl_seconds: args.ttl.map(|t| t.as_secs().max(1)).unwrap_or(0),
        audiences: args.audiences,
        scopes: args.scopes,
    };
    let reply = with_dpop_nonce(prove, |dpop_proof| {
        let mut client = client.clone();
        let request = RefreshRequest {
            dpop_proof,
            ..request.clone()
        };
        async move { client.refresh(request).await }
    })
    .await?;
    print_issued(&reply, args.connection.json);
    Ok(())
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    action: PolicyAction,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Subcommand)]
enum PolicyAction {
    /// Replace a tenant's Cedar issuance policy with the contents of a file.
    Set {
        #[arg(long)]
        tenant: String,
        /// The Cedar policy file.
        #[arg(long)]
        file: PathBuf,
        /// Refuse unless the current version is this one.
        #[arg(long)]
        expected_version: Option<u64>,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Print a tenant's current policy and its version.
    Show {
        #[arg(long)]
        tenant: String,
        /// A past version instead (the ledger keeps a tenant's last 32).
        #[arg(long)]
        version: Option<u64>,
    },
}

pub async fn policy(args: PolicyArgs) -> Result<(), Failure> {
    let connection = args.connection;
    let reply = match args.action {
        PolicyAction::Set {
            tenant,
            file,
            expected_version,
            request_id,
        } => {
            let text = crate::client::read_named_text("--file", &file)?;
            // The file first: a local mistake is reported without a broker.
            let mut client = connection.client().await?;
            let request_id = request_id.unwrap_or_else(new_request_id);
            connection
                .admin(client.set_policy(connection.request(pb::SetPolicyRequest {
                    request_id: request_id.clone(),
                    tenant,
                    text,
                    expected_version,
                })))
                .await
                .map_err(|failure| failure.retry_with(&request_id))?
        }
        PolicyAction::Show { tenant, version } => {
            let mut client = connection.client().await?;
            connection
                .admin(
                    client.get_policy(connection.request(pb::GetPolicyRequest { tenant, version })),
                )
                .await?
        }
    };
    if connection.json {
        print_json(
            &json!({"tenant": reply.tenant, "version": reply.version, "text": reply.text, "set_at_ms": reply.set_at_ms,
                    "sha256": reply.sha256, "current_version": reply.current_version}),
        );
    } else if reply.version == 0 {
        println!("tenant {} has no policy: issuance is denied", reply.tenant);
    } else {
        let current = if reply.current_version == reply.version {
            String::new()
        } else {
            format!(" (the current is version {})", reply.current_version)
        };
        println!(
            "# tenant {}, policy version {}{current}, set {}, sha256 {}",
            reply.tenant,
            reply.version,
            moment(reply.set_at_ms),
            reply.sha256
        );
        println!("{}", reply.text);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    action: Option<KeysAction>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// List every published signing key (the default).
    List,
    /// Rotate the signing key of the broker given by --broker.
    Rotate,
}

pub async fn keys(args: KeysArgs) -> Result<(), Failure> {
    let connection = args.connection;
    let mut client = connection.client().await?;
    if let Some(KeysAction::Rotate) = args.action {
        let reply = connection
            .admin(client.rotate_key(connection.request(pb::RotateKeyRequest {})))
            .await?;
        if connection.json {
            print_json(&json!({"key_id": reply.key_id, "retired_key_id": reply.retired_key_id}));
        } else {
            println!(
                "now signing with {} (retired {})",
                reply.key_id, reply.retired_key_id
            );
        }
        return Ok(());
    }
    let reply = connection
        .admin(client.list_keys(connection.request(pb::ListKeysRequest {})))
        .await?;
    if connection.json {
        let keys: Vec<_> = reply
            .keys
            .iter()
            .map(|k| {
                json!({
                    "key_id": k.key_id, "broker_id": k.broker_id, "not_before_ms": k.not_before_ms,
                    "not_after_ms": k.not_after_ms, "retired_at_ms": k.retired_at_ms, "revoked": k.revoked,
                })
            })
            .collect();
        print_json(&json!({"keys": keys}));
    } else {
        println!(
            "{:<24} {:>6}  {:<7}  valid until",
            "key id", "broker", "revoked"
        );
        for k in reply.keys {
            let retired = k
                .retired_at_ms
                .map(|ms| format!(" (retired {})", moment(ms)))
                .unwrap_or_default();
            println!(
                "{:<24} {:>6}  {:<7}  {}{retired}",
                k.key_id,
                k.broker_id,
                if k.revoked { "yes" } else { "no" },
                moment(k.not_after_ms)
            );
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    evidence: Option<crate::evidence::EvidenceAction>,
    #[arg(long)]
    tenant: Option<String>,
    /// A workload's SPIFFE id.
    #[arg(long)]
    workload: Option<String>,
    /// A status index.
    #[arg(long)]
    index: Option<u64>,
    /// At most this many records, newest last.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Show the control-plane audit instead: every operator action
    /// (revocations, policy and role changes, join tokens, membership, key
    /// rotation) and every refusal of one.
    #[arg(long, conflicts_with_all = ["workload", "index"])]
    control: bool,
    /// With --control: only this principal's (operator:<name>, token:<name>).
    #[arg(long, requires = "control")]
    operator: Option<String>,
    /// With --control: only this action (revoke, set_policy, bind_role, ...).
    #[arg(long, requires = "control")]
    action: Option<String>,
    /// With --control: only events at or after this time (RFC 3339 or ms since the epoch).
    #[arg(long, requires = "control", value_parser = crate::parse_time_ms)]
    since: Option<u64>,
    #[command(flatten)]
    connection: Connection,
}

pub async fn audit(args: AuditArgs) -> Result<(), Failure> {
    let connection = args.connection;
    if let Some(action) = args.evidence {
        return crate::evidence::run(action, &connection).await;
    }
    if args.control {
        return crate::roles::control_audit(
            &connection,
            args.tenant,
            args.operator,
            args.action,
            args.since,
            args.limit,
        )
        .await;
    }
    let mut client = connection.client().await?;
    let reply = connection
        .admin(
            client.query_audit(connection.request(pb::QueryAuditRequest {
                tenant: args.tenant.unwrap_or_default(),
                workload: args.workload.unwrap_or_default(),
                index: args.index,
                limit: args.limit,
                ..Default::default()
            })),
        )
        .await?;
    if connection.json {
        let records: Vec<_> = reply
            .records
            .iter()
            .map(|r| {
                json!({
                    "broker_id": r.broker_id, "sequence": r.sequence, "at_ms": r.at_ms, "tenant": r.tenant,
                    "workload": r.workload, "index": r.index, "key_id": r.key_id, "scopes": r.scopes,
                    "audiences": r.audiences, "expires_at_ms": r.expires_at_ms, "attestation": r.attestation,
                    "allowed": r.allowed, "policy_version": r.policy_version, "input_sha256": r.input_sha256,
                    "reason": r.reason, "shipped": r.shipped, "evidence": hex::encode(&r.evidence),
                    "actors": r.actors, "delegation_depth": r.delegation_depth, "task": r.task,
                    "on_behalf_of": r.on_behalf_of, "intent": r.intent,
                })
            })
            .collect();
        print_json(&json!({"records": records}));
    } else {
        for r in reply.records {
            let outcome = if r.allowed {
                format!(
                    "issued index {}",
                    r.index.map(|i| i.to_string()).unwrap_or_default()
                )
            } else {
                format!("refused: {}", r.reason)
            };
            // Who acts, for whom and in which task, when the decision
            // was about an agent.
            let mut agent = String::new();
            if let Some(actor) = r.actors.first() {
                agent.push_str(&format!(" acting: {actor} (depth {})", r.delegation_depth));
            }
            if !r.on_behalf_of.is_empty() {
                agent.push_str(&format!(" for {}", r.on_behalf_of));
            }
            if !r.task.is_empty() {
                agent.push_str(&format!(" task {}", r.task));
            }
            println!(
                "{}  broker {} #{} {} {}{agent} [{}] policy v{}: {outcome}",
                moment(r.at_ms),
                r.broker_id,
                r.sequence,
                r.tenant,
                r.workload,
                r.attestation,
                r.policy_version
            );
        }
    }
    Ok(())
}
