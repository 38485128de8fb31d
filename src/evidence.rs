//! `lapse audit export|verify|explain`: issuance records as evidence. Export
//! writes each record whole; verify checks every broker's chain and the
//! signatures against the cluster's keys; explain decides a recorded
//! request again under the policy version that decided it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use lapse_broker::issuance::policy;
use lapse_credential::{Jwk, KeyId};
use lapse_ledger::evidence::{ChainCheck, record_from_evidence};
use lapse_ledger::{DecisionKind, IssuanceRecord, NodeId};
use lapse_wire::cluster as pb;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::client::{Connection, Failure, exit, print_json};

/// Records asked for per call (the broker's most).
const PAGE: u32 = 10_000;
/// The largest export file read.
const MAX_FILE_BYTES: u64 = 1 << 30;

#[derive(Debug, Subcommand)]
pub enum EvidenceAction {
    /// Write issuance records whole, one JSON object a line
    /// (`{"broker_id": N, "record": {...}}`), for `audit verify --file`.
    /// Records hold hashes of attestations and credentials, never them.
    Export {
        #[command(flatten)]
        range: Range,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check the evidence: for each broker, that its records' sequences
    /// follow each other, that each names the hash of the one before, and
    /// that each signature verifies with the broker's key it names (keys
    /// come from the cluster, including retired ones kept for the audit
    /// retention). Names the first broken link and exits 8.
    ///
    /// Without --tenant, every record of a broker in the range must be
    /// present: a missing one is a break. With --tenant, the other
    /// tenants' records are missing by design: each record's signature is
    /// checked, links only between records whose sequences follow each
    /// other, and the links not checked are counted. A range's first
    /// record anchors the chain; only a broker's record 1 is checked
    /// against the chain's start. Records still only in another broker's
    /// local log (not yet shipped) are not seen.
    Verify {
        #[command(flatten)]
        range: Range,
        /// Check every tenant's records (the default; a broker's whole chain).
        #[arg(long, conflicts_with = "tenant")]
        all: bool,
        /// Read the records from a file written by `lapse audit export`
        /// instead of the cluster (keys still come from the cluster).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Decide a recorded request again, with the recorded inputs and the
    /// text of the recorded policy version (checked against the recorded
    /// hash), and show whether the same decision comes out. Never uses a
    /// newer policy: a version the ledger no longer keeps is reported
    /// (exit 3). A decision that comes out differently exits 8.
    Explain {
        /// The record, as BROKER:SEQUENCE (as `lapse audit` shows it).
        #[arg(value_parser = record_name)]
        record: (NodeId, u64),
        /// The record's tenant, for an operator whose roles are for one.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct Range {
    /// Only this tenant's records.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this broker's records.
    #[arg(long = "broker-id", value_name = "N")]
    broker_id: Option<NodeId>,
    /// Only records with at least this sequence.
    #[arg(long, value_name = "A")]
    from_seq: Option<u64>,
    /// Only records with at most this sequence.
    #[arg(long, value_name = "B")]
    to_seq: Option<u64>,
}

impl Range {
    /// Whether a record read from a file is in the range.
    fn holds(&self, broker: NodeId, record: &IssuanceRecord) -> bool {
        self.broker_id.is_none_or(|b| b == broker)
            && self.from_seq.is_none_or(|s| record.sequence >= s)
            && self.to_seq.is_none_or(|s| record.sequence <= s)
            && self
                .tenant
                .as_deref()
                .is_none_or(|t| record.tenant.as_ref().is_some_and(|r| r.as_str() == t))
    }
}

/// `BROKER:SEQUENCE`.
fn record_name(text: &str) -> Result<(NodeId, u64), String> {
    let (broker, sequence) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not BROKER:SEQUENCE (such as 2:17)"))?;
    let number = |part: &str, what: &str| {
        part.parse::<u64>()
            .map_err(|_| format!("{what} {part:?} in {text:?} is not a number"))
    };
    Ok((number(broker, "broker")?, number(sequence, "sequence")?))
}

pub async fn run(action: EvidenceAction, connection: &Connection) -> Result<(), Failure> {
    match action {
        EvidenceAction::Export { range, out } => export(connection, &range, out).await,
        EvidenceAction::Verify { range, file, .. } => verify(connection, &range, file).await,
        EvidenceAction::Explain { record, tenant } => explain(connection, record, tenant).await,
    }
}

/// Every record in `range`, in chain order, decoded from its evidence.
async fn fetch(
    connection: &Connection,
    range: &Range,
) -> Result<Vec<(NodeId, IssuanceRecord)>, Failure> {
    let mut client = connection.client().await?;
    let mut records = Vec::new();
    let mut after = None;
    loop {
        let page = connection
            .admin(
                client.query_audit(connection.request(pb::QueryAuditRequest {
                    tenant: range.tenant.clone().unwrap_or_default(),
                    limit: PAGE,
                    broker_id: range.broker_id,
                    from_sequence: range.from_seq,
                    to_sequence: range.to_seq,
                    chain_order: true,
                    after,
                    ..Default::default()
                })),
            )
            .await?
            .records;
        let full = page.len() >= PAGE as usize;
        for wire in &page {
            let record = record_from_evidence(&wire.evidence).map_err(|e| {
                Failure::new(
                    exit::FAILURE,
                    format!(
                        "broker {}, record {}: the broker sent evidence that does not decode: {e}",
                        wire.broker_id, wire.sequence
                    ),
                )
            })?;
            records.push((wire.broker_id, record));
        }
        match page.last() {
            Some(last) if full => {
                after = Some(pb::AuditCursor {
                    broker_id: last.broker_id,
                    sequence: last.sequence,
                })
            }
            _ => return Ok(records),
        }
    }
}

/// The records of an export file, in the file's order.
fn read_file(path: &std::path::Path) -> Result<Vec<(NodeId, IssuanceRecord)>, Failure> {
    let size = std::fs::metadata(path)
        .map_err(|e| Failure::new(exit::USAGE, format!("--file {}: {e}", path.display())))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(Failure::new(
            exit::REFUSED,
            format!(
                "--file {} is {size} bytes; the most read is {MAX_FILE_BYTES}",
                path.display()
            ),
        ));
    }
    let text = crate::client::read_named_text("--file", path)?;
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |e: String| {
            Failure::new(
                exit::REFUSED,
                format!(
                    "--file {} line {}: not an exported record: {e}",
                    path.display(),
                    n + 1
                ),
            )
        };
        let mut line: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let broker = line["broker_id"]
            .as_u64()
            .ok_or_else(|| bad("no broker_id".into()))?;
        let record: IssuanceRecord = serde_json::from_value(line["record"].take())
            .map_err(|e| bad(format!("record: {e}")))?;
        records.push((broker, record));
    }
    Ok(records)
}

async fn export(
    connection: &Connection,
    range: &Range,
    out: Option<PathBuf>,
) -> Result<(), Failure> {
    let records = fetch(connection, range).await?;
    let mut text = String::new();
    for (broker, record) in &records {
        let line = json!({"broker_id": broker, "record": record});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    match out {
        Some(path) => std::fs::write(&path, text)
            .map_err(|e| Failure::new(exit::FAILURE, format!("writing {}: {e}", path.display())))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(text.as_bytes());
        }
    }
    eprintln!("exported {} records", records.len());
    Ok(())
}

/// Every key the cluster keeps for checking evidence: id to broker and
/// Ed25519 public key.
async fn evidence_keys(
    connection: &Connection,
) -> Result<BTreeMap<KeyId, (NodeId, [u8; 32])>, Failure> {
    let mut client = connection.client().await?;
    let reply = connection
        .admin(client.list_keys(connection.request(pb::ListKeysRequest {})))
        .await?;
    let mut keys = BTreeMap::new();
    for info in reply.keys.iter().chain(&reply.evidence_keys) {
        let public = serde_json::from_str::<Jwk>(&info.jwk)
            .ok()
            .and_then(|jwk| jwk.public_key().ok());
        if let (Ok(id), Some(public)) = (KeyId::new(info.key_id.clone()), public) {
            keys.insert(id, (info.broker_id, public));
        }
    }
    Ok(keys)
}

async fn verify(
    connection: &Connection,
    range: &Range,
    file: Option<PathBuf>,
) -> Result<(), Failure> {
    let records = match &file {
        Some(path) => read_file(path)?
            .into_iter()
            .filter(|(broker, record)| range.holds(*broker, record))
            .collect(),
        None => fetch(connection, range).await?,
    };
    let keys = evidence_keys(connection).await?;
    let lookup = |id: &KeyId| keys.get(id).copied();
    let allow_gaps = range.tenant.is_some();
    let mut walks: BTreeMap<NodeId, ChainCheck> = BTreeMap::new();
    for (broker, record) in &records {
        let walk = walks
            .entry(*broker)
            .or_insert_with(|| ChainCheck::new(*broker, allow_gaps, &lookup));
        if let Err(broken) = walk.next(record) {
            if connection.json {
                print_json(&json!({
                    "ok": false, "broker_id": broken.broker, "sequence": broken.sequence,
                    "broken": broken.broken.to_string(),
                }));
            }
            return Err(Failure::new(exit::EVIDENCE_BROKEN, broken.to_string()));
        }
    }
    let unsigned: u64 = walks.values().map(|w| w.unsigned).sum();
    let unchecked: u64 = walks.values().map(|w| w.unchecked_links).sum();
    if connection.json {
        let brokers: Vec<_> = walks
            .iter()
            .map(|(broker, w)| json!({"broker_id": broker, "records": w.records, "unsigned": w.unsigned, "unchecked_links": w.unchecked_links}))
            .collect();
        print_json(&json!({
            "ok": true, "records": records.len(), "brokers": brokers,
            "unsigned": unsigned, "unchecked_links": unchecked,
        }));
    } else {
        println!(
            "evidence checks: {} records from {} brokers, {unsigned} unsigned (sealed before the broker's first key was committed){}",
            records.len(),
            walks.len(),
            if allow_gaps {
                format!(", {unchecked} links across other tenants' records not checked")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

fn yes_no(allowed: bool) -> &'static str {
    if allowed { "granted" } else { "refused" }
}

async fn explain(
    connection: &Connection,
    (broker, sequence): (NodeId, u64),
    tenant: Option<String>,
) -> Result<(), Failure> {
    let range = Range {
        tenant,
        broker_id: Some(broker),
        from_seq: Some(sequence),
        to_seq: Some(sequence),
    };
    let Some((_, record)) = fetch(connection, &range).await?.pop() else {
        return Err(Failure::new(
            exit::REFUSED,
            format!(
                "broker {broker} has no record {sequence} (not kept, not shipped yet, or not the tenant's)"
            ),
        ));
    };
    // The record's own signature, so the inputs shown are the recorded ones.
    let keys = evidence_keys(connection).await?;
    let lookup = |id: &KeyId| keys.get(id).copied();
    let mut single = ChainCheck::new(broker, true, &lookup);
    let signature = match single.next(&record) {
        Ok(()) if single.unsigned == 1 => {
            "unsigned (sealed before the broker had a key)".to_owned()
        }
        Ok(()) => format!(
            "signed with {}, checks",
            record
                .seal
                .as_ref()
                .and_then(|s| s.key_id.as_ref())
                .map(|k| k.to_string())
                .unwrap_or_default()
        ),
        Err(broken) => return Err(Failure::new(exit::EVIDENCE_BROKEN, broken.to_string())),
    };
    let recorded = &record.decision;
    let Some(inputs) = &record.inputs else {
        if connection.json {
            print_json(&json!({
                "broker_id": broker, "sequence": sequence, "signature": signature,
                "recorded": {"allowed": recorded.allowed, "reason": recorded.reason},
                "inputs": null, "result": "no-decision",
            }));
        } else {
            println!("record {broker}:{sequence}: {signature}");
            println!(
                "refused before any policy was asked (no inputs were recorded): {}",
                recorded.reason
            );
        }
        return Ok(());
    };

    let mut client = connection.client().await?;
    let current = connection
        .admin(client.get_policy(connection.request(pb::GetPolicyRequest {
            tenant: inputs.tenant.to_string(),
            version: None,
        })))
        .await?;
    let version = recorded.policy_version;
    let mut notes = Vec::new();
    if current.version != version {
        notes.push(format!(
            "policy changed since: now version {}; this uses version {version} as recorded",
            current.version
        ));
    }
    let text = if version == 0 {
        None
    } else {
        let asked = client
            .get_policy(connection.request(pb::GetPolicyRequest {
                tenant: inputs.tenant.to_string(),
                version: Some(version),
            }))
            .await;
        match asked {
            Ok(reply) => Some(reply.into_inner().text),
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(Failure::new(
                    exit::REFUSED,
                    format!(
                        "record {broker}:{sequence} was decided by policy version {version}, which the ledger no longer keeps ({}); it is not decided again under another version",
                        status.message()
                    ),
                ));
            }
            Err(status) => return Err(status.into()),
        }
    };
    let text_sha256: Option<[u8; 32]> = text.as_ref().map(|t| Sha256::digest(t.as_bytes()).into());
    if text_sha256 != inputs.policy_sha256 {
        notes.push(format!(
            "the policy text kept as version {version} hashes to {}, not the recorded {}",
            text_sha256
                .map(hex::encode)
                .unwrap_or_else(|| "none".into()),
            inputs
                .policy_sha256
                .map(hex::encode)
                .unwrap_or_else(|| "none".into())
        ));
    }
    let again = policy::decide(text.as_deref().map(|t| (version, t)), inputs);
    let same_text = text_sha256 == inputs.policy_sha256;
    let reproduced = same_text
        && again.allowed == recorded.allowed
        && again.reason == recorded.reason
        && again.input_sha256 == recorded.input_sha256
        && again.policy_version == recorded.policy_version;
    let kind = match inputs.kind {
        DecisionKind::Issue => "issue",
        DecisionKind::Refresh => "refresh",
        DecisionKind::Exchange => "exchange",
    };
    if connection.json {
        print_json(&json!({
            "broker_id": broker, "sequence": sequence, "signature": signature, "kind": kind,
            "tenant": inputs.tenant.to_string(), "workload": inputs.workload.to_string(),
            "policy_version": version, "current_policy_version": current.version,
            "recorded": {"allowed": recorded.allowed, "reason": recorded.reason, "input_sha256": hex::encode(recorded.input_sha256)},
            "reproduced": {"allowed": again.allowed, "reason": again.reason, "input_sha256": hex::encode(again.input_sha256)},
            "notes": notes,
            "result": if reproduced { "reproduced" } else { "differs" },
        }));
    } else {
        println!("record {broker}:{sequence}: {signature}");
        println!(
            "{kind} for {} of tenant {}: scopes {:?}, audiences {:?}, {} s",
            inputs.workload, inputs.tenant, inputs.scopes, inputs.audiences, inputs.ttl_seconds
        );
        println!(
            "policy version {version}{}",
            inputs
                .policy_sha256
                .map(|h| format!(" (sha256 {})", hex::encode(h)))
                .unwrap_or_else(|| " (none: the default denies)".into())
        );
        for note in &notes {
            println!("{note}");
        }
        println!("{:<14} {:<10} reason", "", "decision");
        println!(
            "{:<14} {:<10} {}",
            "recorded",
            yes_no(recorded.allowed),
            recorded.reason
        );
        println!(
            "{:<14} {:<10} {}",
            "reproduced",
            yes_no(again.allowed),
            again.reason
        );
        println!("{}", if reproduced { "reproduced" } else { "differs" });
    }
    if reproduced {
        Ok(())
    } else {
        Err(Failure::new(
            exit::EVIDENCE_BROKEN,
            format!("record {broker}:{sequence}: the decision does not come out the same"),
        ))
    }
}
