//! How the command line talks to a broker: address and token defaults,
//! bearer authentication, and turning gRPC failures into exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use lapse_wire::cluster::cluster_client::ClusterClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Where the dev cluster keeps its files, and where the CLI looks for a token.
pub const DEV_DIR: &str = ".lapse-dev";

/// Exit codes, documented in `lapse --help`.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const REFUSED: u8 = 3;
    pub const UNAUTHORISED: u8 = 4;
    pub const UNAVAILABLE: u8 = 5;
    pub const NOT_PROPAGATED: u8 = 6;
}

#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Address of any broker of the cluster.
    #[arg(
        long,
        env = "LAPSE_BROKER",
        default_value = "127.0.0.1:7401",
        global = true
    )]
    pub broker: String,
    /// Admin bearer token. Defaults to the dev cluster's token in .lapse-dev/admin-token.
    #[arg(long, env = "LAPSE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Give up on a call after this long.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
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
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        let code = match status.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::ResourceExhausted => exit::REFUSED,
            Code::Unauthenticated | Code::PermissionDenied => exit::UNAUTHORISED,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => exit::UNAVAILABLE,
            _ => exit::FAILURE,
        };
        let refusal = status
            .metadata()
            .get(lapse_broker::REFUSAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|r| format!(" [{r}]"))
            .unwrap_or_default();
        Failure::new(
            code,
            format!("{} ({:?}){refusal}", status.message(), status.code()),
        )
    }
}

impl Connection {
    pub fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            std::fs::read_to_string(PathBuf::from(DEV_DIR).join("admin-token"))
                .ok()
                .map(|t| t.trim().to_owned())
        })
    }

    pub async fn client(&self) -> Result<ClusterClient<Channel>, Failure> {
        self.client_to(&self.broker).await
    }

    pub async fn client_to(&self, address: &str) -> Result<ClusterClient<Channel>, Failure> {
        Ok(ClusterClient::new(self.channel_to(address).await?))
    }

    /// A connected channel to `address`.
    pub async fn channel_to(&self, address: &str) -> Result<Channel, Failure> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| {
                Failure::new(
                    exit::FAILURE,
                    format!("bad broker address {address:?}: {e}"),
                )
            })?
            .connect_timeout(Duration::from_secs(3))
            .timeout(self.timeout);
        let channel = endpoint.connect().await.map_err(|e| {
            Failure::new(
                exit::UNAVAILABLE,
                format!("cannot reach a broker at {address}: {e}"),
            )
        })?;
        Ok(channel)
    }

    /// A request carrying the admin token, if there is one.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = self.token() {
            if let Ok(value) = format!("Bearer {token}").parse() {
                request.metadata_mut().insert("authorization", value);
            }
        }
        request
    }
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
