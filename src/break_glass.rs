//! `lapse break-glass`: emergency credentials for when no broker can be
//! reached. `keygen` makes a key pair whose private half is kept offline;
//! `mint` signs a short-lived credential with it on a machine with no
//! cluster. Verifiers configured with the public key accept such a
//! credential within their limits and report each use to the brokers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, Subcommand};
use lapse_credential::break_glass::{self, BreakGlassError, MintRequest};
use lapse_credential::{Jwk, SigningKeyPair, TenantId, WorkloadId};
use rand::RngCore as _;
use serde_json::json;
use sha2::Digest as _;

use crate::client::{Failure, exit};

/// `lapse break-glass --help`.
pub const ABOUT: &str = "\
Break-glass, online and offline.

Online, when the operators who could act are out of reach: `open` asks for
a role for a while (yours), which counts once another operator approves it
(`approve ID`; a cluster admin's counts at once); every action under it is
tagged with it in the control-plane audit; `lapse status` shows it; it
ends by itself, or with `close ID`. `list` shows the grants.

Offline, when no broker can be reached: emergency credentials signed on a
machine with no cluster. The procedure:
  1. Once, ahead of time: `lapse break-glass keygen --out DIR` makes
     DIR/break-glass.key (private, mode 0600: keep it offline, e.g. on a
     hardware-backed or air-gapped machine) and DIR/break-glass.pub.jwk.
  2. Start verifiers with `--break-glass-key DIR/break-glass.pub.jwk
     --break-glass-audience AUD [--break-glass-max-ttl 30m]`.
  3. In an emergency: `lapse break-glass mint --key DIR/break-glass.key
     --sub SPIFFE_ID --aud AUD --ttl 15m --reason \"INC-123: ...\"` prints
     a credential (at most 1 h, reason at most 256 bytes).
  4. Verifiers accept it within their limits, even when stale, and log,
     count and report every use to the brokers when they reach them.

To revoke: `lapse revoke secret --stdin < credential.jwt` (one credential,
by its hash), `lapse revoke subject SPIFFE_ID --tenant TENANT` (every one
minted for a workload before now), or `lapse revoke tenant break-glass`
(every one minted without --tenant). To retire a key and everything it
signed: `lapse revoke key bg-...` (its key id, the kid in the .pub.jwk
file), then remove it from the verifiers' --break-glass-key.";

#[derive(Debug, Args)]
pub struct BreakGlassArgs {
    #[command(subcommand)]
    command: BreakGlassCommand,
}

#[derive(Debug, Subcommand)]
enum BreakGlassCommand {
    /// Make a break-glass key pair: NAME.key (private, mode 0600, to keep
    /// offline) and NAME.pub.jwk (for verifiers' --break-glass-key), and
    /// print the public key and its key id.
    Keygen {
        /// The directory to write the two files in (made if missing).
        #[arg(long)]
        out: PathBuf,
        /// The files' name, before .key and .pub.jwk.
        #[arg(long, default_value = "break-glass")]
        name: String,
        /// Replace existing files.
        #[arg(long)]
        overwrite: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign a break-glass credential with a break-glass private key. Needs
    /// no cluster; the credential goes to standard output.
    #[command(flatten)]
    Online(crate::grants::GrantAction),
    Mint {
        /// The private key file `keygen` wrote.
        #[arg(long)]
        key: PathBuf,
        /// Whom it is for: a SPIFFE id.
        #[arg(long)]
        sub: String,
        /// An audience it is for (repeat for several); verifiers accept only
        /// audiences they allow break-glass credentials for.
        #[arg(long = "aud", required = true)]
        audiences: Vec<String>,
        /// How long it lives: at most 1h, and at most what the verifiers
        /// allow (--break-glass-max-ttl).
        #[arg(long, value_parser = crate::client::positive_duration)]
        ttl: Duration,
        /// Why, in one line of at most 256 bytes (an incident id helps):
        /// it is in the credential, the verifiers' logs and the brokers'.
        #[arg(long)]
        reason: String,
        /// The tenant it is for; revoking a subject needs it.
        #[arg(long, default_value = break_glass::DEFAULT_TENANT)]
        tenant: String,
        /// A scope (repeat for several).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Print JSON: the credential, its jti, key id, expiry and SHA-256.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: BreakGlassArgs) -> Result<(), Failure> {
    match args.command {
        BreakGlassCommand::Online(action) => crate::grants::run(action).await,
        BreakGlassCommand::Keygen {
            out,
            name,
            overwrite,
            json,
        } => keygen(&out, &name, overwrite, json),
        BreakGlassCommand::Mint {
            key,
            sub,
            audiences,
            ttl,
            reason,
            tenant,
            scopes,
            json,
        } => {
            let refused = |what: &str, e: &dyn std::fmt::Display| {
                Failure::new(exit::REFUSED, format!("{what}: {e}"))
            };
            let subject = WorkloadId::new(sub).map_err(|e| refused("--sub", &e))?;
            let tenant = TenantId::new(tenant).map_err(|e| refused("--tenant", &e))?;
            let signing = read_private_key(&key)?;
            let now_seconds = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| Failure::new(exit::FAILURE, "this machine's clock is before 1970"))?
                .as_secs();
            let mut nonce = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut nonce);
            let request = MintRequest {
                subject,
                audiences,
                tenant,
                scopes,
                reason,
                ttl_seconds: ttl.as_secs(),
                now_seconds,
                nonce,
            };
            let token = break_glass::mint(&signing, &request).map_err(|e| match e {
                BreakGlassError::LifetimeTooLong { .. } | BreakGlassError::ZeroLifetime => {
                    refused("--ttl", &e)
                }
                BreakGlassError::BadReason(_) => refused("--reason", &e),
                BreakGlassError::BadAudience(_) => refused("--aud", &e),
                other => Failure::new(exit::FAILURE, other.to_string()),
            })?;
            let sha256 = hex::encode(sha2::Sha256::digest(token.as_bytes()));
            let expires_at = now_seconds + request.ttl_seconds;
            let jti = hex::encode(nonce);
            if json {
                println!(
                    "{}",
                    json!({
                        "token": token,
                        "jti": jti,
                        "key_id": signing.key_id().as_str(),
                        "subject": request.subject.as_str(),
                        "tenant": request.tenant.as_str(),
                        "expires_at": expires_at,
                        "sha256": sha256,
                    })
                );
            } else {
                println!("{token}");
                eprintln!(
                    "break-glass credential {jti} for {} (tenant {}), key {}, expires at {} ({} s); every verifier that accepts it logs and reports it. Revoke it alone with `lapse revoke secret --stdin` fed this credential (sha256 {sha256}).",
                    request.subject,
                    request.tenant,
                    signing.key_id(),
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_secs(expires_at)
                    ),
                    request.ttl_seconds,
                );
            }
            Ok(())
        }
    }
}

fn keygen(out: &Path, name: &str, overwrite: bool, json: bool) -> Result<(), Failure> {
    lapse_pki::name::check_name(name)
        .map_err(|e| Failure::new(exit::REFUSED, format!("--name: {e}")))?;
    std::fs::create_dir_all(out)
        .map_err(|e| Failure::new(exit::FAILURE, format!("cannot make {}: {e}", out.display())))?;
    let private_path = out.join(format!("{name}.key"));
    let public_path = out.join(format!("{name}.pub.jwk"));
    if !overwrite
        && let Some(existing) = [&private_path, &public_path]
            .into_iter()
            .find(|p| p.exists())
    {
        return Err(Failure::new(
            exit::REFUSED,
            format!(
                "{} exists; give --overwrite to replace the key pair (verifiers configured with the old public key will no longer accept credentials the new one signs)",
                existing.display()
            ),
        ));
    }
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let probe = SigningKeyPair::from_seed(
        lapse_credential::KeyId::new("probe").expect("a valid key id"),
        seed,
    );
    let key_id = break_glass::key_id_of(&probe.public_key());
    let signing = SigningKeyPair::from_seed(key_id.clone(), seed);
    let public = signing.public_jwk();
    let mut private = public.clone();
    private.d = Some(URL_SAFE_NO_PAD.encode(seed));
    let write = |path: &Path, jwk: &Jwk, private: bool| {
        let text = serde_json::to_string_pretty(jwk).expect("a JWK serialises") + "\n";
        lapse_pki::files::write(path, &text, private, overwrite).map_err(|e| match e {
            lapse_pki::PkiError::Exists(_) => Failure::new(
                exit::REFUSED,
                format!("{} exists; give --overwrite to replace it", path.display()),
            ),
            other => Failure::new(exit::FAILURE, other.to_string()),
        })
    };
    write(&private_path, &private, true)?;
    write(&public_path, &public, false)?;
    if json {
        println!(
            "{}",
            json!({
                "key_id": key_id.as_str(),
                "private_key_file": private_path,
                "public_key_file": public_path,
                "public_jwk": public,
            })
        );
    } else {
        println!(
            "{}",
            serde_json::to_string(&public).expect("a JWK serialises")
        );
        eprintln!(
            "break-glass key {key_id}: private key in {} (mode 0600; move it offline), public key in {} (give it to verifiers with --break-glass-key)",
            private_path.display(),
            public_path.display()
        );
    }
    Ok(())
}

/// Read a break-glass private key (a JWK with `d`) from `path`.
fn read_private_key(path: &Path) -> Result<SigningKeyPair, Failure> {
    let bytes = crate::client::read_named_file("--key", path)?;
    let bad = |why: &str| {
        Failure::new(
            exit::REFUSED,
            format!(
                "--key {}: {why}; give the .key file `lapse break-glass keygen` wrote",
                path.display()
            ),
        )
    };
    let jwk: Jwk = serde_json::from_slice(&bytes).map_err(|_| bad("not a JWK"))?;
    let public = jwk.public_key().map_err(|_| bad("not an Ed25519 key"))?;
    let seed: [u8; 32] = jwk
        .d
        .as_deref()
        .and_then(|d| URL_SAFE_NO_PAD.decode(d).ok())
        .and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok())
        .ok_or_else(|| bad("no private key in it (is it the .pub.jwk file?)"))?;
    let key_id = break_glass::key_id_of(&public);
    let signing = SigningKeyPair::from_seed(key_id.clone(), seed);
    if signing.public_key() != public {
        return Err(bad("its private and public halves do not match"));
    }
    if jwk.kid.as_deref().is_some_and(|kid| kid != key_id.as_str()) {
        return Err(bad("its kid is not the key's id"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: {} can be read by others than its owner (mode {:o}); a break-glass key should be 0600 and offline",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    Ok(signing)
}
