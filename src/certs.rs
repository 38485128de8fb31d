//! `lapse certs`: the cluster CA and the certificates of brokers,
//! verifiers and operators, the way operators already manage them. Keys
//! are written 0600 and never printed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use lapse_pki::{Authority, CertInfo, LeafRequest, Role};

use crate::client::{Failure, exit};

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Args)]
struct Common {
    /// Directory holding ca.pem and ca.key, where new files are written.
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// How long the certificate is valid.
    #[arg(long, value_parser = crate::client::positive_duration)]
    valid_for: Option<Duration>,
    /// Replace files that exist (to rotate a certificate).
    #[arg(long)]
    overwrite: bool,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create the cluster CA: ca.pem (give it to every broker, verifier and operator) and ca.key (keep it offline).
    Init {
        /// The SPIFFE trust domain, e.g. prod.example.com.
        #[arg(long)]
        trust_domain: String,
        #[command(flatten)]
        common: Common,
    },
    /// Certify a broker: broker-<id>.pem and broker-<id>.key, named spiffe://<trust domain>/broker/<id>.
    Broker {
        /// The broker's node id.
        #[arg(long)]
        id: u64,
        /// Host or host:port clients reach it at (repeatable); put in the certificate for HTTP clients.
        #[arg(long = "address")]
        addresses: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Certify an edge verifier: verifier-<name>.pem and .key, named spiffe://<trust domain>/verifier/<name>.
    Verifier {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Certify an operator (a person or tool that administers the cluster): operator-<name>.pem and .key.
    Operator {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Show who a certificate names and when it expires.
    Show {
        /// A PEM certificate file.
        file: PathBuf,
    },
}

/// Validity of a CA when not given: ten years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Validity of a leaf when not given: 90 days.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 86_400);

fn failure(error: lapse_pki::PkiError) -> Failure {
    let code = match error {
        lapse_pki::PkiError::Name(_) | lapse_pki::PkiError::Exists(_) => exit::REFUSED,
        _ => exit::FAILURE,
    };
    Failure::new(code, error.to_string())
}

pub fn run(args: CertsArgs) -> Result<(), Failure> {
    let now = SystemTime::now();
    match args.command {
        CertsCommand::Init {
            trust_domain,
            common,
        } => {
            let cert = common.dir.join("ca.pem");
            let key = common.dir.join("ca.key");
            if !common.overwrite {
                for path in [&cert, &key] {
                    if path.exists() {
                        return Err(failure(lapse_pki::PkiError::Exists(
                            path.display().to_string(),
                        )));
                    }
                }
            }
            let (_, pair) =
                Authority::generate(&trust_domain, now, common.valid_for.unwrap_or(CA_VALIDITY))
                    .map_err(failure)?;
            create_dir(&common.dir)?;
            lapse_pki::files::write(&key, &pair.key_pem, true, common.overwrite)
                .map_err(failure)?;
            lapse_pki::files::write(&cert, &pair.cert_pem, false, common.overwrite)
                .map_err(failure)?;
            println!("CA for trust domain {trust_domain}");
            println!("  certificate {}", cert.display());
            println!("  key         {} (0600; keep it offline)", key.display());
            Ok(())
        }
        CertsCommand::Broker {
            id,
            addresses,
            common,
        } => {
            let hosts = addresses.iter().map(|a| host_of(a)).collect();
            issue(&common, Role::Broker(id), hosts, now)
        }
        CertsCommand::Verifier { name, common } => {
            issue(&common, Role::Verifier(name), Vec::new(), now)
        }
        CertsCommand::Operator { name, common } => {
            issue(&common, Role::Operator(name), Vec::new(), now)
        }
        CertsCommand::Show { file } => show(&file, now),
    }
}

/// The host part of `host:port`, `[v6]:port`, or a bare host.
fn host_of(address: &str) -> String {
    if let Ok(socket) = address.parse::<std::net::SocketAddr>() {
        return socket.ip().to_string();
    }
    match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() && !host.contains(':') => host.into(),
        _ => address.trim_start_matches('[').trim_end_matches(']').into(),
    }
}

fn create_dir(dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::new(exit::FAILURE, format!("{}: {e}", dir.display())))
}

/// Load the CA in `dir`.
pub fn authority(dir: &Path) -> Result<Authority, Failure> {
    let read = |name: &str| {
        let path = dir.join(name);
        lapse_pki::files::read(&path)
            .map_err(failure)
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| {
                    Failure::new(exit::FAILURE, format!("{}: not text", path.display()))
                })
            })
    };
    let (cert, key) = (read("ca.pem")?, read("ca.key")?);
    Authority::load(&cert, &key).map_err(|e| {
        Failure::new(
            exit::FAILURE,
            format!("{}: {e}", dir.join("ca.pem").display()),
        )
    })
}

/// The file stem of a role's certificate and key.
pub fn stem(role: &Role) -> String {
    format!("{}-{}", role.kind(), role.name())
}

/// Issue and write a leaf for `role` with the CA in `dir`.
pub fn write_leaf(
    authority: &Authority,
    dir: &Path,
    role: Role,
    hosts: Vec<String>,
    valid_for: Duration,
    overwrite: bool,
    now: SystemTime,
) -> Result<(PathBuf, PathBuf), Failure> {
    let stem = stem(&role);
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    if !overwrite {
        for path in [&cert, &key] {
            if path.exists() {
                return Err(failure(lapse_pki::PkiError::Exists(
                    path.display().to_string(),
                )));
            }
        }
    }
    let pair = authority
        .issue(
            &LeafRequest {
                role,
                hosts,
                valid_for,
            },
            now,
        )
        .map_err(failure)?;
    // The key first: a certificate is never on disk without its key.
    lapse_pki::files::write(&key, &pair.key_pem, true, overwrite).map_err(failure)?;
    lapse_pki::files::write(&cert, &pair.cert_pem, false, overwrite).map_err(failure)?;
    Ok((cert, key))
}

fn issue(common: &Common, role: Role, hosts: Vec<String>, now: SystemTime) -> Result<(), Failure> {
    // Check the name before touching the CA, for a precise error.
    lapse_pki::Principal::new("x", role.clone()).map_err(|e| failure(e.into()))?;
    let authority = authority(&common.dir)?;
    let principal = lapse_pki::Principal::new(authority.trust_domain(), role.clone())
        .map_err(|e| failure(e.into()))?;
    let valid_for = common.valid_for.unwrap_or(LEAF_VALIDITY);
    let (cert, key) = write_leaf(
        &authority,
        &common.dir,
        role,
        hosts,
        valid_for,
        common.overwrite,
        now,
    )?;
    println!("{principal}");
    println!("  certificate {}", cert.display());
    println!("  key         {} (0600)", key.display());
    println!(
        "  expires     {}",
        humantime::format_rfc3339_seconds(now + valid_for)
    );
    Ok(())
}

fn show(file: &Path, now: SystemTime) -> Result<(), Failure> {
    let bytes = lapse_pki::files::read(file).map_err(failure)?;
    let certs = lapse_pki::inspect::certs(&bytes)
        .map_err(|e| Failure::new(exit::REFUSED, format!("{}: {e}", file.display())))?;
    for der in certs {
        let info = CertInfo::parse(&der)
            .map_err(|e| Failure::new(exit::REFUSED, format!("{}: {e}", file.display())))?;
        let name = match (&info.principal, &info.trust_domain) {
            (Some(principal), _) => principal.to_string(),
            (None, Some(domain)) => format!("CA of spiffe://{domain}"),
            (None, None) => "no Lapse identity".into(),
        };
        let left = info.seconds_left(now);
        let state = if left < 0 {
            "EXPIRED".to_owned()
        } else {
            format!(
                "{} left",
                humantime::format_duration(Duration::from_secs(left as u64 / 60 * 60))
            )
        };
        println!("{name}");
        println!(
            "  valid       {} to {} ({state})",
            humantime::format_rfc3339_seconds(info.not_before),
            humantime::format_rfc3339_seconds(info.not_after)
        );
        println!("  serial      {}", info.serial);
        println!("  sha256      {}", info.fingerprint);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_come_from_any_address_form() {
        assert_eq!(host_of("127.0.0.1:7401"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7401"), "::1");
        assert_eq!(host_of("broker-1.internal:7401"), "broker-1.internal");
        assert_eq!(host_of("broker-1.internal"), "broker-1.internal");
        assert_eq!(host_of("::1"), "::1");
    }
}
