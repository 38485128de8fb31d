//! How the command line finds its TLS files: flags or environment, else
//! the dev cluster's under `.lapse-dev/certs/` in the working directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use lapse_pki::{Role, Tls, TlsFiles};

use crate::client::{DEV_DIR, Failure, exit};

/// The dev cluster's certificate directory.
pub fn dev_certs() -> PathBuf {
    PathBuf::from(DEV_DIR).join("certs")
}

#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// The cluster's CA bundle. Default: .lapse-dev/certs/ca.pem (written by
    /// `lapse dev`) in the working directory.
    #[arg(long, env = "LAPSE_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// This client's certificate (with --key). Default: the dev cluster's
    /// for this command, under .lapse-dev/certs/.
    #[arg(long, env = "LAPSE_CERT", global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long, env = "LAPSE_KEY", global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Talk to brokers that run `insecure_plaintext`, without TLS (loopback
    /// addresses only).
    #[arg(long, env = "LAPSE_INSECURE_PLAINTEXT", global = true)]
    pub insecure_plaintext: bool,
}

/// A TLS file problem: one that cannot be read is a usage error (the
/// flags or environment name it), one that is malformed is invalid input,
/// an expired certificate is not authorised.
fn problem(error: lapse_pki::PkiError) -> Failure {
    let code = match &error {
        lapse_pki::PkiError::Io { .. } => exit::USAGE,
        lapse_pki::PkiError::Expired { .. } => exit::UNAUTHORISED,
        lapse_pki::PkiError::Exists(_) => exit::FAILURE,
        lapse_pki::PkiError::Name(_) | lapse_pki::PkiError::Invalid(_) => exit::REFUSED,
    };
    Failure::new(code, error.to_string())
}

impl TlsArgs {
    /// The TLS to dial `brokers` with, presenting `role`'s certificate:
    /// the given files, or the dev cluster's. `None` with
    /// `--insecure-plaintext`, which only loopback addresses may use. A
    /// verifier run next to a dev cluster gets a certificate for its name
    /// from the dev CA when it has none.
    pub fn load(&self, role: &Role, brokers: &[String]) -> Result<Option<Arc<Tls>>, Failure> {
        if self.insecure_plaintext {
            if let Some(outside) = brokers.iter().find(|b| !lapse_pki::is_loopback(b)) {
                return Err(Failure::new(
                    exit::USAGE,
                    format!(
                        "--insecure-plaintext is for loopback only, and {outside} is not loopback; give --ca (and --cert/--key) instead"
                    ),
                ));
            }
            return Ok(None);
        }
        let dev = dev_certs();
        let ca = match &self.ca {
            Some(ca) => ca.clone(),
            None if dev.join("ca.pem").exists() => dev.join("ca.pem"),
            None => {
                return Err(Failure::new(
                    exit::USAGE,
                    format!(
                        "no CA bundle to check brokers against: give --ca (or LAPSE_CA), or run from the directory where `lapse dev` keeps {} ({} does not exist); for a broker that runs insecure_plaintext on loopback, give --insecure-plaintext",
                        DEV_DIR,
                        dev.join("ca.pem").display()
                    ),
                ));
            }
        };
        let (cert, key) = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => (Some(cert.clone()), Some(key.clone())),
            _ => dev_identity(&dev, role)?,
        };
        let files = TlsFiles { ca, cert, key };
        let tls = Tls::open(files, SystemTime::now()).map_err(problem)?;
        Ok(Some(tls))
    }
}

/// The dev cluster's certificate for `role`, if the dev CA is here: the
/// operator's is written by `lapse dev`; a verifier's is made on first use.
fn dev_identity(
    dev: &std::path::Path,
    role: &Role,
) -> Result<(Option<PathBuf>, Option<PathBuf>), Failure> {
    let stem = crate::certs::stem(role);
    let (cert, key) = (
        dev.join(format!("{stem}.pem")),
        dev.join(format!("{stem}.key")),
    );
    if cert.exists() && key.exists() {
        return Ok((Some(cert), Some(key)));
    }
    if matches!(role, Role::Verifier(_)) && dev.join("ca.key").exists() {
        let authority = crate::certs::authority(dev)?;
        let (cert, key) = crate::certs::write_leaf(
            &authority,
            dev,
            role.clone(),
            Vec::new(),
            DEV_LEAF_VALIDITY,
            false,
            SystemTime::now(),
        )?;
        return Ok((Some(cert), Some(key)));
    }
    Ok((None, None))
}

/// How long the dev cluster's certificates last.
pub const DEV_LEAF_VALIDITY: Duration = Duration::from_secs(30 * 86_400);
