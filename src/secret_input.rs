//! Secrets the command line takes (join tokens): as a value, as `-` for
//! standard input, or from a file, so that a token need not appear in the
//! process list or a shell's history.

use std::io::Read;
use std::path::Path;

use crate::client::{Failure, exit};

/// The longest secret read from a file or standard input (a join token is
/// under 100 bytes).
const MAX_SECRET_BYTES: u64 = 4096;

/// The secret given by `--<flag> VALUE`, `--<flag> -` (standard input) or
/// `--<flag>-file PATH`, if any; surrounding whitespace is dropped. The
/// secret itself never appears in an error.
pub fn read(
    flag: &str,
    value: Option<String>,
    file: Option<&Path>,
) -> Result<Option<String>, Failure> {
    let text = match (value, file) {
        (Some(_), Some(_)) => {
            return Err(Failure::new(
                exit::USAGE,
                format!("give --{flag} or --{flag}-file, not both"),
            ));
        }
        (None, None) => return Ok(None),
        (Some(value), None) if value != "-" => value,
        (Some(_), None) => capped(std::io::stdin().lock())
            .map_err(|e| Failure::new(exit::FAILURE, format!("--{flag} -: standard input: {e}")))?,
        (None, Some(path)) => std::fs::File::open(path).and_then(capped).map_err(|e| {
            Failure::new(
                exit::FAILURE,
                format!("--{flag}-file {}: {e}", path.display()),
            )
        })?,
    };
    let secret = text.trim();
    if secret.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            format!("--{flag}: the {flag} is empty"),
        ));
    }
    Ok(Some(secret.to_owned()))
}

/// At most [`MAX_SECRET_BYTES`] of UTF-8 from `source`; more is an error.
fn capped(source: impl Read) -> std::io::Result<String> {
    let mut text = String::new();
    source
        .take(MAX_SECRET_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_BYTES {
        return Err(std::io::Error::other(format!(
            "longer than {MAX_SECRET_BYTES} bytes"
        )));
    }
    Ok(text)
}
