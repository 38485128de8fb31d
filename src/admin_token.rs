//! `lapse admin-token`: admin bearer tokens, the fallback for operators
//! without a certificate. Brokers keep only each token's name and SHA-256
//! (`[auth] admin_tokens`); the value lives in a file readable by its
//! owner alone, and is never printed.

use std::io::Read as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use lapse_broker::config::AdminToken;
use rand::RngCore as _;

use crate::client::{Failure, exit};

/// Shortest token `hash` accepts.
const MIN_TOKEN_BYTES: usize = 16;
/// Longest token `hash` reads.
const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Debug, Args)]
pub struct AdminTokenArgs {
    #[command(subcommand)]
    command: AdminTokenCommand,
}

#[derive(Debug, Subcommand)]
enum AdminTokenCommand {
    /// Make a new random token, write it to --out (mode 0600), and print
    /// the `[auth] admin_tokens` entry that lets brokers accept it.
    Create {
        /// Who the token is for; brokers log admin calls under this name.
        #[arg(long)]
        name: String,
        /// Where to write the token.
        #[arg(long)]
        out: PathBuf,
        /// Replace --out if it exists.
        #[arg(long)]
        overwrite: bool,
    },
    /// Read a token from standard input and print its `[auth]
    /// admin_tokens` entry (the token itself is not printed).
    Hash {
        /// Who the token is for.
        #[arg(long)]
        name: String,
    },
}

pub fn run(args: AdminTokenArgs) -> Result<(), Failure> {
    match args.command {
        AdminTokenCommand::Create {
            name,
            out,
            overwrite,
        } => {
            check_name(&name)?;
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            lapse_pki::files::write(&out, &format!("{token}\n"), true, overwrite).map_err(|e| {
                match e {
                    lapse_pki::PkiError::Exists(_) => Failure::new(
                        exit::REFUSED,
                        format!("{} exists; give --overwrite to replace it", out.display()),
                    ),
                    other => Failure::new(exit::FAILURE, other.to_string()),
                }
            })?;
            eprintln!(
                "wrote a new admin token to {} (mode 0600); add this entry to [auth] admin_tokens of every broker:",
                out.display()
            );
            print_entry(&AdminToken::for_secret(&name, &token));
            Ok(())
        }
        AdminTokenCommand::Hash { name } => {
            check_name(&name)?;
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_TOKEN_BYTES as u64 + 1)
                .read_to_string(&mut text)
                .map_err(|e| {
                    Failure::new(
                        exit::REFUSED,
                        format!("cannot read a token from stdin: {e}"),
                    )
                })?;
            let token = text.trim();
            if token.len() > MAX_TOKEN_BYTES {
                return Err(Failure::new(
                    exit::REFUSED,
                    format!("the token is longer than {MAX_TOKEN_BYTES} bytes"),
                ));
            }
            if token.len() < MIN_TOKEN_BYTES {
                return Err(Failure::new(
                    exit::REFUSED,
                    format!(
                        "a token must be at least {MIN_TOKEN_BYTES} characters (`lapse admin-token create` makes one of 64)"
                    ),
                ));
            }
            print_entry(&AdminToken::for_secret(&name, token));
            Ok(())
        }
    }
}

fn check_name(name: &str) -> Result<(), Failure> {
    lapse_pki::name::check_name(name)
        .map_err(|e| Failure::new(exit::REFUSED, format!("--name: {e}")))
}

fn print_entry(token: &AdminToken) {
    println!(
        "{{ name = \"{}\", sha256 = \"{}\" }}",
        token.name, token.sha256
    );
}
