//! `lapse dev`: a local three-broker cluster in one process, on loopback,
//! with its data, configuration, admin token and certificates (a dev CA,
//! the brokers', and an operator's for the command line) under
//! `.lapse-dev/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use lapse_broker::{Broker, BrokerConfig, Env, LocalTransport};
use rand::RngCore;
use tokio::net::TcpListener;

use crate::client::{DEV_DIR, Failure, exit};
use crate::commands::wait_for_stop;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the brokers keep their data, configuration and the admin token.
    #[arg(long, default_value = DEV_DIR)]
    data_dir: PathBuf,
    /// Port of broker 1; brokers 2 and 3 take the next two, and each serves
    /// its JWKS over HTTP 100 ports above its own (so at most 65433).
    #[arg(long, default_value_t = 7401, value_parser = clap::value_parser!(u16).range(1..=65433))]
    base_port: u16,
}

/// Read a secret from `path`, or make one and keep it there.
pub fn secret_file(path: &Path) -> std::io::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let text = text.trim().to_owned();
        if text.len() >= 16 {
            // A file from an older Lapse may be readable by others.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(text);
        }
    }
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    // Readable by its owner alone.
    lapse_pki::files::write(path, &secret, true, true).map_err(std::io::Error::other)?;
    Ok(secret)
}

/// The dev cluster's CA (made once, kept) and certificates for brokers
/// 1 to 3 and the command line's operator, made afresh when missing or
/// within a day of expiring.
fn dev_certificates(certs: &Path) -> Result<(), Failure> {
    use lapse_pki::Role;
    let now = std::time::SystemTime::now();
    if !certs.join("ca.pem").exists() {
        std::fs::create_dir_all(certs)
            .map_err(|e| Failure::new(exit::FAILURE, format!("{}: {e}", certs.display())))?;
        let (_, pair) = lapse_pki::Authority::generate("lapse.dev", now, crate::certs::CA_VALIDITY)
            .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
        let write = |name: &str, text: &str, private: bool| {
            lapse_pki::files::write(&certs.join(name), text, private, true)
                .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))
        };
        write("ca.key", &pair.key_pem, true)?;
        write("ca.pem", &pair.cert_pem, false)?;
    }
    let authority = crate::certs::authority(certs)?;
    let roles = (1..=3)
        .map(Role::Broker)
        .chain([Role::Operator(crate::client::DEV_OPERATOR.into())]);
    for role in roles {
        let cert = certs.join(format!("{}.pem", crate::certs::stem(&role)));
        let fresh = lapse_pki::files::read(&cert)
            .ok()
            .and_then(|pem| lapse_pki::inspect::first_cert(&pem).ok())
            .and_then(|der| lapse_pki::CertInfo::parse(&der).ok())
            .is_some_and(|info| info.seconds_left(now) > 86_400);
        if !fresh {
            let hosts = match role {
                Role::Broker(_) => vec!["127.0.0.1".into(), "localhost".into()],
                _ => Vec::new(),
            };
            crate::certs::write_leaf(
                &authority,
                certs,
                role,
                hosts,
                crate::tls::DEV_LEAF_VALIDITY,
                true,
                now,
            )?;
        }
    }
    Ok(())
}

/// Start every configured broker on its listener and wait for a leader.
pub async fn start_local_cluster(
    configs: Vec<BrokerConfig>,
    listeners: Vec<TcpListener>,
) -> Result<Vec<Broker>, Failure> {
    let mut brokers = Vec::new();
    for (config, listener) in configs.into_iter().zip(listeners) {
        let broker = Broker::start_on(config, Env::default(), listener)
            .await
            .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
        brokers.push(broker);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if brokers.iter().any(|b| b.core().leader().0.is_some()) {
            return Ok(brokers);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Failure::new(
                exit::UNAVAILABLE,
                "no leader was elected within 30 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(args: DevArgs) -> Result<(), Failure> {
    let io = |e: std::io::Error| {
        Failure::new(exit::FAILURE, format!("{}: {e}", args.data_dir.display()))
    };
    std::fs::create_dir_all(&args.data_dir).map_err(io)?;
    let admin_token = secret_file(&args.data_dir.join("admin-token")).map_err(io)?;
    let certs = args.data_dir.join("certs");
    dev_certificates(&certs)?;

    let mut listeners = Vec::new();
    let mut addresses = Vec::new();
    for n in 0..3u16 {
        let address: std::net::SocketAddr = ([127, 0, 0, 1], args.base_port + n).into();
        let listener = TcpListener::bind(address).await.map_err(|e| {
            Failure::new(
                exit::FAILURE,
                format!("cannot listen on {address}: {e} (is another dev cluster running? try --base-port)"),
            )
        })?;
        listeners.push(listener);
        addresses.push(address);
    }
    let mut configs = BrokerConfig::local_cluster(
        &args.data_dir,
        &addresses,
        &LocalTransport::Tls {
            certs: certs.clone(),
        },
        &admin_token,
    );
    // The issuer is broker 1's HTTPS address: credentials' status list
    // URIs resolve there, and the OpenID metadata is found under it.
    let issuer = format!("https://127.0.0.1:{}", args.base_port + 100);
    for (n, config) in configs.iter_mut().enumerate() {
        // The JWKS and issuer metadata, 100 ports above each broker.
        config.issuance.http_listen =
            Some(([127, 0, 0, 1], args.base_port + 100 + n as u16).into());
        config.issuance.issuer = issuer.clone();
    }
    // Public: the command line and verifiers read it as their default.
    lapse_pki::files::write(&args.data_dir.join("issuer"), &issuer, false, true)
        .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    for config in &configs {
        let text = toml::to_string_pretty(config).unwrap_or_default();
        // 0600: a broker's configuration may hold secrets (admin token
        // hashes here; a cluster secret or join token in others).
        lapse_pki::files::write(
            &args.data_dir.join(format!("node-{}.toml", config.node_id)),
            &text,
            true,
            true,
        )
        .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    }
    let brokers = start_local_cluster(configs, listeners).await?;
    let leader = brokers[0].core().leader().0.unwrap_or(0);

    println!(
        "Lapse dev cluster: three brokers on loopback, data under {}",
        args.data_dir.display()
    );
    for broker in &brokers {
        let marker = if broker.core().id() == leader {
            "  (leader)"
        } else {
            ""
        };
        let jwks = broker
            .http_address()
            .map(|a| format!("  JWKS https://{a}/.well-known/jwks.json"))
            .unwrap_or_default();
        println!(
            "  broker {}  {}{jwks}{marker}",
            broker.core().id(),
            broker.local_address()
        );
    }
    println!();
    println!(
        "Every link is mutual TLS. The CA and certificates are in {}; lapse finds the operator's there.",
        certs.display()
    );
    println!(
        "A fallback admin token is in {}/admin-token.",
        args.data_dir.display()
    );
    println!(
        "Each broker's configuration is in {}/node-N.toml.",
        args.data_dir.display()
    );
    println!();
    println!("Try, in another terminal:");
    println!("  cargo run -- status");
    println!("  cargo run -- lease --broker-id 1 --count 1000");
    println!("  cargo run -- revoke index 42");
    println!("  cargo run -- revoke tenant acme");
    println!("  (and the issuing tour in README.md)");
    println!();
    println!(
        "Ctrl-C stops the cluster; the data stays (delete {} to start afresh).",
        args.data_dir.display()
    );

    wait_for_stop().await;
    println!("stopping...");
    for broker in brokers {
        broker.shutdown().await;
    }
    println!("stopped");
    Ok(())
}
