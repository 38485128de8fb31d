//! What Lapse's benchmarks share: an in-process three-broker cluster
//! ([`cluster`]) in plaintext or with mutual TLS ([`transport`]), gRPC
//! client helpers and timed phases of calls ([`client`]), the CPU time of
//! the brokers beside the clients ([`cpu`]), the verifiers of
//! the propagation benchmark ([`fleet`]), what signed heartbeats cost on
//! one thread ([`heartbeat`]), one latency histogram for every
//! percentile reported ([`stats`]), and heap bytes live by side, brokers or
//! clients ([`alloc`]).
//!
//! The benchmarks themselves are the `[[bench]]` targets in `benches/`:
//! `revoke`, `issue`, `verify`, `propagation` and `revoked_set`, each run as
//! `cargo bench -p lapse-benches --bench <name> -- <options>`. BENCHMARKS.md
//! records their figures.

pub mod alloc;
pub mod client;
pub mod cluster;
pub mod cpu;
pub mod fleet;
pub mod heartbeat;
pub mod stats;
pub mod transport;

/// The option `cargo bench` adds to a benchmark's command line: accepted
/// and ignored.
#[derive(Debug, clap::Args)]
pub struct CargoBench {
    #[arg(long = "bench", hide = true)]
    bench: bool,
}

/// Which transports a benchmark measures: each on a cluster of its own,
/// one after the other in the same process, in the order given.
#[derive(Debug, clap::Args)]
pub struct Transports {
    /// Transports to measure, in this order (comma-separated): plaintext,
    /// tls. With both, the TLS figures are also given as a ratio to the
    /// plaintext ones of the same run.
    #[arg(
        long,
        value_delimiter = ',',
        default_values = ["plaintext", "tls"],
        value_name = "LIST"
    )]
    pub transports: Vec<transport::Transport>,
}

/// `a / b`, or NaN when `b` is zero.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

/// Log to standard error as `lapse` does: warnings, and the brokers' own
/// information lines; `LAPSE_LOG` overrides the filter.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LAPSE_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,lapse=info,lapse_broker=info")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Print `value` as pretty JSON on standard output.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}
