//! `lapse revoke`: revoke one credential (by status index or from the
//! credential itself) and everything delegated from it, a workload's, a
//! tenant's, a task's, a key's, or a leaked secret's; optionally wait until
//! the verifiers hold it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use lapse_wire::cluster::{self as pb, revocation::Target};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::client::{Connection, Failure, exit, new_request_id, print_json};
use crate::output::moment;
use crate::parse_time_ms;

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(subcommand)]
    what: RevokeTarget,
    /// Makes the revocation idempotent: a retry with the same id is applied once.
    #[arg(long, global = true)]
    request_id: Option<String>,
    /// Return only once this share of subscribed verifiers has applied the
    /// revocation: `all`, or a percentage such as `99` (exit code 6 on
    /// timeout, or at once when no verifier is subscribed).
    #[arg(long, global = true, value_parser = crate::feed::parse_wait)]
    wait: Option<crate::feed::WaitFor>,
    /// How long --wait waits (at most 10m).
    #[arg(long, global = true, default_value = "30s", value_parser = crate::feed::parse_wait_timeout)]
    wait_timeout: Duration,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Subcommand)]
enum RevokeTarget {
    /// One credential, by its status index, and everything delegated from it.
    ///
    /// A credential exchanged from another (RFC 8693 token exchange, an
    /// agent delegating to a sub-agent) carries the status indices of every
    /// credential above it in its chain, and verifiers refuse it when any of
    /// them is revoked: revoking an index revokes the credential, its
    /// refreshes, and every credential delegated from it, at any depth,
    /// offline. `revoke chain` is the same revocation under another name.
    Index { index: u64 },
    /// Kill switch: a credential and every credential delegated from it.
    ///
    /// The same revocation as `revoke index`: verifiers refuse every
    /// credential whose chain of ancestors (the indices of the credentials
    /// it was exchanged from, carried in the credential itself) holds this
    /// index, so one revocation cuts off a whole tree of agents and
    /// sub-agents, however deep, without naming each of them.
    Chain {
        /// The status index of the root of what to cut off (the
        /// credential's `status.status_list.idx`).
        index: u64,
    },
    /// Every credential of a tenant minted for a task, issued before now.
    ///
    /// Revokes every credential of TENANT whose `task` claim is TASK_ID and
    /// that was issued before the revocation commits, whichever workload
    /// or agent holds it and however it was delegated. Credentials issued
    /// for the task after the commit are accepted again (a task can be
    /// restarted). TASK_ID is 1 to 128 bytes of ASCII letters, digits and
    /// `-_.:/`; anything else is refused here (exit code 3).
    Task {
        /// The tenant whose task it is.
        tenant: String,
        /// The task id, as the credentials' `task` claim carries it.
        task_id: String,
    },
    /// One credential, from the credential itself (a Lapse JWT).
    ///
    /// Revokes the status index in the credential's
    /// `status.status_list.idx` claim, as `revoke index` would. The
    /// credential is sent whole: the cluster checks its signature against
    /// its keys, which proves the credential's tenant (so a tenant's
    /// operator may revoke one issued seconds ago, before its issuance
    /// record reaches the ledger). Without --as-tenant the call names the
    /// credential's `tenant` claim. A break-glass credential is revoked by
    /// its hash instead.
    Credential {
        /// The file holding the credential; `-` reads standard input.
        file: PathBuf,
    },
    /// Every credential of a workload issued before a time.
    Subject {
        /// The workload's SPIFFE id.
        subject: String,
        #[arg(long)]
        tenant: String,
        /// RFC 3339 or milliseconds since the epoch; default: the commit time.
        #[arg(long, value_parser = parse_time_ms)]
        before: Option<u64>,
    },
    /// Every credential of a tenant issued before a time.
    Tenant {
        tenant: String,
        /// RFC 3339 or milliseconds since the epoch; default: the commit time.
        #[arg(long, value_parser = parse_time_ms)]
        before: Option<u64>,
    },
    /// Every credential a signing key signed.
    Key { key_id: String },
    /// A leaked static secret: give its sha256, or pipe the secret on stdin.
    ///
    /// What is revoked is the SHA-256 of the secret's bytes. With --stdin
    /// that is every byte read except one trailing newline (`\n` or
    /// `\r\n`), so `lapse revoke secret --stdin < leaked.txt` matches the
    /// secret whether or not the file ends in a newline; nothing else is
    /// trimmed. Empty or whitespace-only input is refused (exit code 3).
    Secret {
        /// SHA-256 of the secret's bytes, 64 hex digits
        /// (e.g. from `printf %s "$SECRET" | sha256sum`).
        #[arg(long, conflicts_with = "stdin")]
        sha256: Option<String>,
        /// Read the secret from standard input and hash it here (less one
        /// trailing newline).
        #[arg(long)]
        stdin: bool,
    },
}

/// The largest credential file `revoke credential` reads.
const MAX_CREDENTIAL_BYTES: u64 = 64 * 1024;

/// What `revoke` names, read and checked, and the status index and tenant
/// a credential given whole names.
fn target_of(what: RevokeTarget) -> Result<(Target, Option<u64>, Option<String>), Failure> {
    let mut tenant_claim = None;
    let mut index_claim = None;
    let target = match what {
        RevokeTarget::Index { index } | RevokeTarget::Chain { index } => Target::Index(index),
        RevokeTarget::Task { tenant, task_id } => {
            lapse_credential::TenantId::new(&tenant).map_err(|e| {
                Failure::new(exit::REFUSED, format!("tenant {}: {e}", shown(&tenant)))
            })?;
            if let Some(problem) = lapse_credential::task_problem(&task_id) {
                return Err(Failure::new(
                    exit::REFUSED,
                    format!("task id {}: {problem}", shown(&task_id)),
                ));
            }
            Target::Task(pb::TaskTarget {
                tenant,
                task: task_id,
            })
        }
        RevokeTarget::Credential { file } => {
            let (text, source) = read_input(&file, MAX_CREDENTIAL_BYTES)?;
            let text = String::from_utf8(text).map_err(|_| {
                Failure::new(
                    exit::REFUSED,
                    format!("{source} is not text, so it is not a credential (a JWT)"),
                )
            })?;
            if is_break_glass(&text) {
                // No status index: one is revoked by its hash, which
                // verifiers check (as `revoke secret` would).
                Target::SecretSha256(Sha256::digest(text.trim().as_bytes()).to_vec())
            } else {
                let (index, tenant) = credential_status_index(&text).map_err(|problem| {
                    Failure::new(exit::REFUSED, format!("{source}: {problem}"))
                })?;
                tenant_claim = tenant;
                index_claim = Some(index);
                // Sent whole: its signature proves its tenant to the
                // cluster, which checks it and revokes its index.
                Target::Credential(text.trim().to_owned())
            }
        }
        RevokeTarget::Subject {
            subject,
            tenant,
            before,
        } => Target::Subject(pb::SubjectTarget {
            tenant,
            subject,
            issued_before_ms: before,
        }),
        RevokeTarget::Tenant { tenant, before } => Target::Tenant(pb::TenantTarget {
            tenant,
            issued_before_ms: before,
        }),
        RevokeTarget::Key { key_id } => Target::KeyId(key_id),
        RevokeTarget::Secret { sha256, stdin } => {
            let hash = match (sha256, stdin) {
                (Some(hex_digest), false) => hex::decode(hex_digest.trim())
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| Failure::new(exit::REFUSED, "--sha256 needs 64 hex digits"))?,
                (None, true) => {
                    let (read, _) = read_input(Path::new("-"), u64::MAX)?;
                    let secret = secret_from_input(&read).map_err(|problem| {
                        Failure::new(exit::REFUSED, format!("standard input: {problem}"))
                    })?;
                    Sha256::digest(secret).to_vec()
                }
                _ => return Err(Failure::new(exit::USAGE, "give --sha256 HEX or --stdin")),
            };
            Target::SecretSha256(hash)
        }
    };
    Ok((target, index_claim, tenant_claim))
}

/// A value given on the command line, quoted and cut for an error message.
fn shown(value: &str) -> String {
    const MAX: usize = 64;
    let mut cut = value;
    if cut.len() > MAX {
        let mut end = MAX;
        while !cut.is_char_boundary(end) {
            end -= 1;
        }
        cut = &cut[..end];
        return format!("{cut:?}… ({} bytes)", value.len());
    }
    format!("{cut:?}")
}

/// Say what was revoked, and how far it reached when waited for.
fn print_revoked(
    connection: &Connection,
    request_id: &str,
    index: Option<u64>,
    reply: &pb::RevokeResponse,
    reached: Option<crate::feed::Reached>,
) {
    if connection.json {
        print_json(&json!({
            "request_id": request_id,
            "status_index": index,
            "epoch": reply.epoch,
            "committed_at_ms": reply.committed_at_ms,
            "duplicate": reply.duplicate,
            "propagated": reached.as_ref().map(|r| json!({
                "verifiers": r.holding,
                "subscribed": r.subscribed,
                "waited_ms": r.waited.as_millis() as u64,
                "after_commit_ms": r.after_commit.map(|d| d.as_millis() as u64),
            })),
        }));
    } else {
        let what = index
            .map(|i| format!("status index {i} "))
            .unwrap_or_default();
        let again = if reply.duplicate {
            " (duplicate: applied earlier under this request id, and not again)"
        } else {
            ""
        };
        println!(
            "revoked {what}at epoch {} (committed {}){again}",
            reply.epoch,
            moment(reply.committed_at_ms)
        );
        if let Some(r) = reached {
            let when = match r.after_commit {
                Some(after) => format!("{} ms after the commit", after.as_millis()),
                None => format!("after waiting {} ms", r.waited.as_millis()),
            };
            println!(
                "applied by {} of {} subscribed verifiers ({when})",
                r.holding, r.subscribed
            );
        }
    }
}

pub async fn revoke(args: RevokeArgs) -> Result<(), Failure> {
    let (target, index_claim, tenant_claim) = target_of(args.what)?;
    let index = match target {
        Target::Index(index) => Some(index),
        _ => index_claim,
    };
    let mut connection = args.connection;
    if connection.as_tenant.is_none() {
        connection.as_tenant = tenant_claim;
    }
    let request_id = args.request_id.unwrap_or_else(new_request_id);
    let mut client = connection.client().await?;
    let reply = connection
        .admin(client.revoke(connection.request(pb::RevokeRequest {
            request_id: request_id.clone(),
            revocation: Some(pb::Revocation {
                target: Some(target),
            }),
        })))
        .await
        .map_err(|failure| failure.retry_with(&request_id))?;
    let reached = match args.wait {
        Some(wanted) => Some(
            crate::feed::wait_for_epoch(&connection, reply.epoch, wanted, args.wait_timeout)
                .await?,
        ),
        None => None,
    };
    print_revoked(&connection, &request_id, index, &reply, reached);
    Ok(())
}

/// Read at most `limit` bytes from `path`, or from standard input for
/// `-`; the bytes and how to name where they came from.
fn read_input(path: &Path, limit: u64) -> Result<(Vec<u8>, String), Failure> {
    use std::io::Read;
    let (result, source) = if path == Path::new("-") {
        let mut bytes = Vec::new();
        let result = std::io::stdin()
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map(|_| bytes);
        (result, "standard input".to_owned())
    } else {
        let result = std::fs::File::open(path).and_then(|file| {
            let mut bytes = Vec::new();
            file.take(limit.saturating_add(1))
                .read_to_end(&mut bytes)
                .map(|_| bytes)
        });
        (result, path.display().to_string())
    };
    // A file named on the command line that cannot be read is a usage
    // error; standard input that cannot be read is a failure here.
    let code = if path == std::path::Path::new("-") {
        exit::FAILURE
    } else {
        exit::USAGE
    };
    let bytes = result.map_err(|e| Failure::new(code, format!("cannot read {source}: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(Failure::new(
            exit::REFUSED,
            format!("{source} is longer than {limit} bytes"),
        ));
    }
    Ok((bytes, source))
}

/// The secret in what was read from standard input: everything except one
/// trailing newline (`\n` or `\r\n`, as an editor or `echo` leaves it).
/// Nothing, or only whitespace, is refused: revoking the hash of an empty
/// line would revoke nothing anyone holds.
fn secret_from_input(read: &[u8]) -> Result<&[u8], &'static str> {
    let secret = read
        .strip_suffix(b"\r\n")
        .or_else(|| read.strip_suffix(b"\n"))
        .unwrap_or(read);
    if secret.iter().all(u8::is_ascii_whitespace) {
        return Err(
            "the secret is empty or only whitespace; pipe the leaked secret itself, e.g. `lapse revoke secret --stdin < leaked.txt`",
        );
    }
    Ok(secret)
}

/// The status index of a Lapse credential, from the
/// `status.status_list.idx` claim of its payload. The signature is not
/// checked: the index is only a target for an admin's revocation.
/// Whether `text` is a break-glass credential (`lapse break-glass mint`),
/// by its header's `typ`.
fn is_break_glass(text: &str) -> bool {
    use base64::Engine;
    text.trim()
        .split('.')
        .next()
        .and_then(|header| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header.trim_end_matches('='))
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|header| {
            header["typ"].as_str() == Some(lapse_credential::break_glass::BREAK_GLASS_TYPE)
        })
}

fn credential_status_index(text: &str) -> Result<(u64, Option<String>), String> {
    use base64::Engine;
    let token = text.trim();
    if token.is_empty() {
        return Err("empty; expected a Lapse credential (a JWT)".into());
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [_, payload, _] = parts.as_slice() else {
        return Err(format!(
            "not a JWT: expected three dot-separated parts, found {}",
            parts.len()
        ));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "not a JWT: its payload is not base64url".to_owned())?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| "not a JWT: its payload is not JSON".to_owned())?;
    match &claims["status"]["status_list"]["idx"] {
        serde_json::Value::Null => Err(
            "the token has no status.status_list.idx claim, so it is not a Lapse credential; revoke it by its issuer's means, or use `lapse revoke index N`"
                .into(),
        ),
        idx => idx
            .as_u64()
            .map(|idx| {
                // The position in the list its uri names (lists of 2^20).
                let index = claims["status"]["status_list"]["uri"]
                    .as_str()
                    .and_then(|uri| lapse_credential::status_list::index_of(uri, idx))
                    .unwrap_or(idx);
                let tenant = claims["tenant"].as_str().map(str::to_owned);
                (index, tenant)
            })
            .ok_or_else(|| format!("status.status_list.idx is {idx}, not a status index")),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::{credential_status_index, secret_from_input};

    #[test]
    fn one_trailing_newline_is_not_part_of_the_secret() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"hunter2", b"hunter2"),
            (b"hunter2\n", b"hunter2"),
            (b"hunter2\r\n", b"hunter2"),
            (b"hunter2\n\n", b"hunter2\n"),
            (b" hunter2 \n", b" hunter2 "),
            (b"hunter2\r", b"hunter2\r"),
        ];
        for (read, secret) in cases {
            assert_eq!(secret_from_input(read), Ok(secret), "{read:?}");
        }
    }

    #[test]
    fn empty_or_blank_secrets_are_refused() {
        for read in [&b""[..], b"\n", b"\r\n", b"  \t\n", b"\n\n"] {
            assert!(secret_from_input(read).is_err(), "{read:?}");
        }
    }

    fn token(payload: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"n1-a"}"#),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode([0u8; 64])
        )
    }

    #[test]
    fn the_status_index_is_read_from_the_payload_without_a_key() {
        let jwt = token(r#"{"sub":"spiffe://x/y","status":{"status_list":{"idx":42,"uri":"u"}}}"#);
        assert_eq!(credential_status_index(&jwt), Ok((42, None)));
        assert_eq!(credential_status_index(&format!("{jwt}\n")), Ok((42, None)));
        let jwt = token(
            r#"{"sub":"spiffe://x/y","tenant":"acme","status":{"status_list":{"idx":7,"uri":"u"}}}"#,
        );
        assert_eq!(credential_status_index(&jwt), Ok((7, Some("acme".into()))));
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        let cases = [
            (String::new(), "empty"),
            ("not a jwt".to_owned(), "three dot-separated parts, found 1"),
            ("a.b.c.d".to_owned(), "found 4"),
            ("a.!!!.c".to_owned(), "not base64url"),
            (
                format!("a.{}.c", URL_SAFE_NO_PAD.encode("nope")),
                "not JSON",
            ),
            (token(r#"{"sub":"x"}"#), "no status.status_list.idx"),
            (
                token(r#"{"status":{"status_list":{"idx":-1}}}"#),
                "not a status index",
            ),
        ];
        for (text, reason) in cases {
            let error = credential_status_index(&text).unwrap_err();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }
}
