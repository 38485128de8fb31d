//! How the command line talks to a broker: address and token defaults,
//! bearer authentication, and turning gRPC failures into exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Args;
use lapse_wire::cluster::cluster_client::ClusterClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Where the dev cluster keeps its files, and where the CLI looks for a token.
pub const DEV_DIR: &str = ".lapse-dev";
/// The operator `lapse dev` certifies for the command line.
pub const DEV_OPERATOR: &str = "dev";

/// Every exit code the command line returns, in one place. `lapse --help`
/// prints [`exit::HELP`], and a test checks that it names each code.
pub mod exit {
    /// A failure here rather than in the cluster: a file that cannot be
    /// written, a port that cannot be bound, a broker that cannot start,
    /// a broker that failed internally, or anything unexpected.
    pub const FAILURE: u8 = 1;
    /// The command line itself is wrong (clap uses 2 as well): a bad flag
    /// or value (a port outside 1..=65535, a zero timeout, an unknown
    /// scenario), or a file it names that cannot be read, including a
    /// broker's configuration file.
    pub const USAGE: u8 = 2;
    /// The request was refused: invalid input (a malformed id, credential
    /// file, policy file, key file, scenario file or secret; a file that is
    /// not text), an unknown or expired target, already done.
    pub const REFUSED: u8 = 3;
    /// Not authorised: no admin token, a wrong one, a join token not valid
    /// here, or a policy that denies issuance.
    pub const UNAUTHORISED: u8 = 4;
    /// No broker reachable, no leader, or no answer in time. Retrying is
    /// safe, with the same `--request-id` for a write.
    pub const UNAVAILABLE: u8 = 5;
    /// The revocation is committed, but `--wait` could not confirm that
    /// enough verifiers applied it: it timed out, or no verifier is
    /// subscribed at all.
    pub const NOT_PROPAGATED: u8 = 6;
    /// `lapse sim run`: every run ran, and at least one broke an invariant.
    pub const INVARIANT_BROKEN: u8 = 7;
    /// `lapse audit verify`: a record's chain or signature does not check;
    /// `lapse audit explain`: the decision does not come out the same.
    pub const EVIDENCE_BROKEN: u8 = 8;

    /// The exit-code table of `lapse --help` (and of the README).
    pub const HELP: &str = "\
Exit codes:
  0  success
  1  failed here: a file could not be written, a port could not be bound,
     a broker could not start, or something unexpected (including a
     broker's internal error)
  2  bad command-line usage: a bad flag or value (a port outside
     1..=65535, a zero timeout, an unknown scenario), or a file named on
     the command line (or a broker's --config) that cannot be read
  3  refused: invalid input (including a malformed credential, policy,
     key or scenario file, a file that is not text, or an empty secret),
     unknown or expired target, already done
  4  not authorised: missing or wrong admin token, join token not valid
     here, issuance denied by policy
  5  unavailable: no broker reachable, no leader, or timed out (safe to
     retry with the same --request-id)
  6  revoked, but --wait could not confirm enough verifiers applied it: it
     timed out, or no verifier is subscribed
  7  lapse sim run: a simulation run broke an invariant
  8  lapse audit verify: a record's chain or signature does not check;
     lapse audit explain: the decision does not come out the same";
}

/// Largest answer the CLI takes from a broker: a propagation report names
/// every verifier (about 86 bytes each, so 100,000 verifiers behind relays
/// are 8.6 MB), beyond gRPC's default of 4 MiB.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Address of any broker of the cluster.
    #[arg(
        long,
        env = "LAPSE_BROKER",
        default_value = "127.0.0.1:7401",
        value_parser = broker_address,
        global = true
    )]
    pub broker: String,
    /// Admin bearer token. Defaults to the dev cluster's token, read from
    /// .lapse-dev/admin-token in the working directory.
    #[arg(long, env = "LAPSE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Give up on a call after this long.
    #[arg(long, default_value = "15s", value_parser = positive_duration, global = true)]
    pub timeout: Duration,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The tenant this call is for. An operator whose roles are for one
    /// tenant (tenant-admin, revoker, auditor of a tenant) must name it; a
    /// revocation by status index is then checked to be that tenant's.
    #[arg(long, env = "LAPSE_AS_TENANT", global = true, value_name = "TENANT")]
    pub as_tenant: Option<String>,
    /// Why: recorded with the call in the control-plane audit (at most 512
    /// bytes of printable ASCII).
    #[arg(long, env = "LAPSE_REASON", global = true)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// The TLS files, read once for every broker this command calls.
    #[arg(skip)]
    loaded_tls: Arc<OnceLock<Option<Arc<lapse_pki::Tls>>>>,
}

/// A failure the CLI reports: a message and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code,
        }
    }

    pub fn exit(self) -> ExitCode {
        eprintln!("error: {}", self.message);
        ExitCode::from(self.code)
    }

    /// For a write that may or may not have been applied (the cluster was
    /// unavailable or did not answer in time), say how to retry it safely.
    pub fn retry_with(mut self, request_id: &str) -> Self {
        if self.code == exit::UNAVAILABLE {
            self.message.push_str(&format!(
                "; it may or may not have been applied: retry with --request-id {request_id} to apply it at most once"
            ));
        }
        self
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        let (code, hint) = match status.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::ResourceExhausted => (exit::REFUSED, ""),
            Code::Unauthenticated | Code::PermissionDenied => (exit::UNAUTHORISED, ""),
            Code::Unavailable | Code::Cancelled => (
                exit::UNAVAILABLE,
                " (the cluster may be electing a leader, or too few brokers are up; retrying is safe)",
            ),
            Code::DeadlineExceeded => (
                exit::UNAVAILABLE,
                " (no answer in time: retry, or allow longer with --timeout)",
            ),
            _ => (exit::FAILURE, " (the broker's log says more)"),
        };
        let refusal = status
            .metadata()
            .get(lapse_broker::REFUSAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|r| format!(" [{r}]"))
            .unwrap_or_default();
        Failure::new(
            code,
            format!("{} ({:?}){refusal}{hint}", status.message(), status.code()),
        )
    }
}

/// Where the admin token the CLI sends comes from.
#[derive(Debug, Clone, PartialEq)]
enum TokenSource {
    /// `--token` or `LAPSE_TOKEN` (clap reads both into one field).
    CommandLine,
    /// The dev cluster's token file, found in the working directory.
    DevFile(PathBuf),
}

/// The path the CLI reads a token from when none is given.
fn dev_token_path() -> PathBuf {
    PathBuf::from(DEV_DIR).join("admin-token")
}

impl Connection {
    /// The admin token to send, and where it came from: `--token` or
    /// `LAPSE_TOKEN`, else `.lapse-dev/admin-token` in the working
    /// directory (written by `lapse dev`). An empty token counts as none.
    fn admin_token(&self) -> Option<(String, TokenSource)> {
        if let Some(token) = &self.token {
            let token = token.trim();
            return (!token.is_empty()).then(|| (token.to_owned(), TokenSource::CommandLine));
        }
        let path = dev_token_path();
        let token = std::fs::read_to_string(&path).ok()?.trim().to_owned();
        (!token.is_empty()).then_some((token, TokenSource::DevFile(path)))
    }

    pub async fn client(&self) -> Result<ClusterClient<Channel>, Failure> {
        self.client_to(&self.broker).await
    }

    pub async fn client_to(&self, address: &str) -> Result<ClusterClient<Channel>, Failure> {
        Ok(ClusterClient::new(self.channel_to(address).await?)
            .max_decoding_message_size(MAX_ANSWER_BYTES))
    }

    /// A connected channel to `address`.
    pub async fn channel_to(&self, address: &str) -> Result<Channel, Failure> {
        let given = address == self.broker;
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| {
                if given {
                    Failure::new(
                        exit::USAGE,
                        format!(
                            "--broker (or LAPSE_BROKER) {address:?} is not a broker address: give host:port, e.g. 127.0.0.1:7401 ({e})"
                        ),
                    )
                } else {
                    Failure::new(
                        exit::FAILURE,
                        format!("the cluster lists a malformed broker address {address:?}: {e}"),
                    )
                }
            })?
            .connect_timeout(Duration::from_secs(3))
            .timeout(self.timeout);
        // Plaintext is checked per address (loopback only); files are read
        // once.
        let tls = match (self.tls.insecure_plaintext, self.loaded_tls.get()) {
            (false, Some(loaded)) => loaded.clone(),
            _ => {
                let operator = lapse_pki::Role::Operator(DEV_OPERATOR.into());
                let loaded = self.tls.load(&operator, &[address.to_owned()])?;
                let _ = self.loaded_tls.set(loaded.clone());
                loaded
            }
        };
        let connected = match tls {
            Some(tls) => {
                lapse_pki::TlsConnector::new(tls, lapse_pki::Expect::AnyBroker)
                    .connect(endpoint)
                    .await
            }
            None => endpoint.connect().await,
        };
        let channel = connected.map_err(|e| {
            let next = if given {
                " Is the cluster running? `lapse dev` starts one on 127.0.0.1:7401-7403; point --broker (or LAPSE_BROKER) at any broker of yours."
            } else {
                ""
            };
            Failure::new(
                exit::UNAVAILABLE,
                format!("cannot reach a broker at {address}: {}.{next}", error_chain(&e)),
            )
        })?;
        Ok(channel)
    }

    /// A request carrying the admin token, if there is one, and the
    /// tenant and reason given.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some((token, _)) = self.admin_token() {
            if let Ok(value) = format!("Bearer {token}").parse() {
                request.metadata_mut().insert("authorization", value);
            }
        }
        // Values that cannot be sent as metadata are sent as nothing, and
        // the broker's decision says what is missing.
        if let Some(tenant) = &self.as_tenant
            && let Ok(value) = tenant.parse()
        {
            request.metadata_mut().insert("x-lapse-tenant", value);
        }
        if let Some(reason) = &self.reason
            && let Ok(value) = reason.parse()
        {
            request.metadata_mut().insert("x-lapse-reason", value);
        }
        request
    }

    /// Await an admin call (one made with [`Connection::request`]) and take
    /// its answer; a refused token comes back saying where tokens come from.
    pub async fn admin<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Failure> {
        match call.await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) if status.code() == Code::Unauthenticated => Err(Failure::new(
                exit::UNAUTHORISED,
                format!(
                    "{} (Unauthenticated): {}",
                    status.message(),
                    token_advice(self.admin_token().map(|(_, source)| source))
                ),
            )),
            Err(status) => Err(status.into()),
        }
    }
}

/// What to do about an admin token the broker refused (or did not get).
fn token_advice(source: Option<TokenSource>) -> String {
    match source {
        None => {
            let looked = std::env::current_dir()
                .map(|dir| dir.join(dev_token_path()))
                .unwrap_or_else(|_| dev_token_path());
            format!(
                "no admin token was given. Pass one with --token or the LAPSE_TOKEN environment variable, or run lapse from the directory where `lapse dev` keeps its token ({} does not exist or is empty)",
                looked.display()
            )
        }
        Some(TokenSource::CommandLine) => "the token given by --token or LAPSE_TOKEN is not one of this cluster's admin tokens (those whose name and SHA-256 are in the `[auth] admin_tokens` of its brokers' configuration, made with `lapse admin-token`; for `lapse dev`, the contents of .lapse-dev/admin-token)".to_owned(),
        Some(TokenSource::DevFile(path)) => format!(
            "the token read from {} (the dev cluster's) is not one of this cluster's admin tokens; give the right one with --token or LAPSE_TOKEN",
            path.display()
        ),
    }
}

/// An error and its causes, `outer: inner: innermost` (a transport error
/// alone says only "transport error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A broker address given on the command line: `host:port` with a port
/// in 1..=65535 (clap answers anything else with exit 2).
pub fn broker_address(text: &str) -> Result<String, String> {
    lapse_broker::membership::check_address(text)
        .map(|()| text.to_owned())
        .map_err(|e| format!("{text:?} is not a broker address: it {e}"))
}

/// A duration given on the command line that must be above zero: a zero
/// timeout gives up before anything could answer, and a zero lifetime or
/// interval means nothing.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err(format!(
            "{text:?} is zero; give a duration above zero, e.g. 15s"
        )),
        Ok(duration) => Ok(duration),
        Err(e) => Err(format!("{text:?} is not a duration like 15s or 2m: {e}")),
    }
}

/// The bytes of a file named on the command line by `flag`. One that
/// cannot be read (missing, a directory, not permitted) is a usage error,
/// exit 2; a larger one than a certificate, key or policy may be is
/// invalid input, exit 3.
pub fn read_named_file(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    lapse_pki::files::read(path).map_err(|e| match e {
        lapse_pki::PkiError::Io { .. } => Failure::new(exit::USAGE, format!("{flag}: {e}")),
        other => Failure::new(exit::REFUSED, format!("{flag}: {other}")),
    })
}

/// The text of a file named on the command line by `flag` (see
/// [`read_named_file`]); a file that is not UTF-8 text, or holds NUL bytes,
/// is invalid input, exit 3.
pub fn read_named_text(flag: &str, path: &std::path::Path) -> Result<String, Failure> {
    let bytes = read_named_file(flag, path)?;
    match String::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => Ok(text),
        _ => Err(Failure::new(
            exit::REFUSED,
            format!(
                "{flag}: {} is not text (binary or not UTF-8)",
                path.display()
            ),
        )),
    }
}

/// The issuer credentials name by default: the dev cluster's, written to
/// `.lapse-dev/issuer` by `lapse dev`, when run next to one; else
/// `lapse`, the brokers' default.
pub fn default_issuer() -> String {
    std::fs::read_to_string(PathBuf::from(DEV_DIR).join("issuer"))
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|issuer| !issuer.is_empty() && issuer.len() <= 512)
        .unwrap_or_else(|| lapse_credential::DEFAULT_ISSUER.to_owned())
}

/// A fresh random request id.
pub fn new_request_id() -> String {
    format!("cli-{:016x}", rand::random::<u64>())
}

/// Print `value` as JSON.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_lists_every_exit_code() {
        let codes = [
            exit::FAILURE,
            exit::USAGE,
            exit::REFUSED,
            exit::UNAUTHORISED,
            exit::UNAVAILABLE,
            exit::NOT_PROPAGATED,
            exit::INVARIANT_BROKEN,
            exit::EVIDENCE_BROKEN,
        ];
        assert!(exit::HELP.contains("\n  0  success"));
        for code in codes {
            assert!(
                exit::HELP.contains(&format!("\n  {code}  ")),
                "exit code {code} is not in the help"
            );
        }
    }

    #[test]
    fn token_advice_names_every_place_a_token_comes_from() {
        let none = token_advice(None);
        for place in [
            "--token",
            "LAPSE_TOKEN",
            ".lapse-dev/admin-token",
            "lapse dev",
        ] {
            assert!(none.contains(place), "{place} missing from: {none}");
        }
        let given = token_advice(Some(TokenSource::CommandLine));
        assert!(given.contains("--token or LAPSE_TOKEN"), "{given}");
        let file = token_advice(Some(TokenSource::DevFile(dev_token_path())));
        assert!(file.contains(".lapse-dev/admin-token"), "{file}");
    }

    #[test]
    fn only_unavailable_failures_suggest_a_retry() {
        let unavailable = Failure::from(Status::unavailable("no leader")).retry_with("fix-1");
        assert_eq!(unavailable.code, exit::UNAVAILABLE);
        assert!(unavailable.message.contains("--request-id fix-1"));
        let refused = Failure::from(Status::not_found("no such index")).retry_with("fix-1");
        assert_eq!(refused.code, exit::REFUSED);
        assert!(!refused.message.contains("--request-id"));
    }
}
