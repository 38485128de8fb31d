//! `lapse status`: the cluster as each broker sees it.

use clap::Args;
use lapse_wire::cluster as pb;
use serde_json::json;

use crate::client::{Connection, Failure, print_json};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only ask the one broker given by --broker, not every member.
    #[arg(long)]
    only: bool,
    #[command(flatten)]
    connection: Connection,
}

fn status_json(status: &pb::StatusResponse) -> serde_json::Value {
    let members = |list: &[pb::Member]| {
        list.iter()
            .map(|m| json!({"node_id": m.node_id, "address": m.address}))
            .collect::<Vec<_>>()
    };
    json!({
        "node_id": status.node_id,
        "address": status.address,
        "role": status.role,
        "term": status.term,
        "leader_id": status.leader_id,
        "leader_address": status.leader_address,
        "voters": members(&status.voters),
        "learners": members(&status.learners),
        "last_log_index": status.last_log_index,
        "committed_index": status.committed_index,
        "applied_index": status.applied_index,
        "snapshot_index": status.snapshot_index,
        "state_digest": status.state_digest,
        "cluster_time_ms": status.cluster_time_ms,
        "revocation_epoch": status.revocation_epoch,
        "certificate_expires_at_ms": (status.certificate_expires_at_ms > 0).then_some(status.certificate_expires_at_ms),
        "break_glass": status.break_glass.iter().map(|g| json!({
            "id": g.id, "principal": g.principal, "role": g.role, "tenant": g.tenant,
            "reason": g.reason, "expires_at_ms": g.expires_at_ms, "approved_by": g.approved_by,
        })).collect::<Vec<_>>(),
        "divergences": status.divergences.iter().map(|d| json!({
            "peer_id": d.peer_id,
            "index": d.index,
            "own_digest": d.own_digest,
            "peer_digest": d.peer_digest,
            "detected_at_ms": d.detected_at_ms,
        })).collect::<Vec<_>>(),
        "freshness": status.freshness.as_ref().map(|f| json!({
            "problem": (!f.problem.is_empty()).then_some(&f.problem),
            "withheld_reason": (!f.withheld_reason.is_empty()).then_some(&f.withheld_reason),
            "withheld_for_ms": f.withheld_for_ms,
            "withheld_total": f.withheld_total,
            "slowest_confirmation_ms": f.slowest_confirmation_ms,
            "heartbeat_ms": f.heartbeat_ms,
            "verifier_staleness_ms": f.verifier_staleness_ms,
        })),
    })
}

pub async fn status(args: StatusArgs) -> Result<(), Failure> {
    let connection = args.connection;
    let mut client = connection.client().await?;
    let first = connection
        .admin(client.status(connection.request(pb::StatusRequest {})))
        .await?;
    let all = gather(&connection, &first, args.only).await;
    if connection.json {
        let nodes: Vec<_> = all
            .iter()
            .map(|a| match a {
                Ok(status) => status_json(status),
                Err(error) => json!({"error": error}),
            })
            .collect();
        print_json(&json!({"nodes": nodes}));
        return Ok(());
    }
    let leader = match first.leader_id {
        Some(id) => format!("node {id} at {}", first.leader_address),
        None => "none known".into(),
    };
    println!("leader: {leader}   term: {}", first.term);
    println!(
        "voters: {}   learners: {}",
        first
            .voters
            .iter()
            .map(|m| m.node_id.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        if first.learners.is_empty() {
            "none".into()
        } else {
            first
                .learners
                .iter()
                .map(|m| m.node_id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "{:>5}  {:<22} {:<10} {:>10} {:>10} {:>10}  {:<16}",
        "node", "address", "role", "last log", "committed", "applied", "state digest"
    );
    for answer in &all {
        match answer {
            Ok(s) => println!(
                "{:>5}  {:<22} {:<10} {:>10} {:>10} {:>10}  {:<16}",
                s.node_id,
                s.address,
                s.role,
                s.last_log_index,
                s.committed_index,
                s.applied_index,
                &s.state_digest[..16.min(s.state_digest.len())]
            ),
            Err(error) => println!("    -  unreachable: {error}"),
        }
    }
    print_warnings(&all);
    Ok(())
}

/// Every broker's status as `first` lists the members (only `first`'s with
/// `only`); an unreachable one is its error.
async fn gather(
    connection: &Connection,
    first: &pb::StatusResponse,
    only: bool,
) -> Vec<Result<pb::StatusResponse, String>> {
    let mut all = vec![Ok(first.clone())];
    if !only {
        for member in first.voters.iter().chain(&first.learners) {
            if member.node_id == first.node_id {
                continue;
            }
            let answer = match connection.client_to(&member.address).await {
                Ok(mut other) => other
                    .status(connection.request(pb::StatusRequest {}))
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| {
                        format!(
                            "node {} at {}: {}",
                            member.node_id,
                            member.address,
                            s.message()
                        )
                    }),
                Err(failure) => Err(format!("node {}: {}", member.node_id, failure.message)),
            };
            all.push(answer);
        }
    }
    all
}

/// A broker certificate that expires within this long is reported.
const CERTIFICATE_WARNING_MS: u64 = 14 * 86_400_000;

/// `CERTIFICATE:` when a broker's certificate expires within two weeks.
fn certificate_warning(node: u64, expires_at_ms: u64, now_ms: u64) -> Option<String> {
    if expires_at_ms == 0 || expires_at_ms > now_ms.saturating_add(CERTIFICATE_WARNING_MS) {
        return None;
    }
    let at = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(expires_at_ms),
    );
    let left =
        std::time::Duration::from_secs(expires_at_ms.saturating_sub(now_ms) / 3_600_000 * 3600);
    Some(format!(
        "CERTIFICATE: node {node}'s TLS certificate expires at {at} (in {}); issue a new one with `lapse certs broker` and replace the files (no restart needed)",
        humantime::format_duration(left)
    ))
}

/// Divergent replicas, withheld heartbeats and freshness risks, loudly.
fn print_warnings(all: &[Result<pb::StatusResponse, String>]) {
    let divergences: Vec<String> = all
        .iter()
        .flatten()
        .flat_map(|s| {
            s.divergences.iter().map(|d| {
                format!(
                    "DIVERGED: node {} and node {} hold different states at log index {} ({} vs {})",
                    s.node_id,
                    d.peer_id,
                    d.index,
                    &d.own_digest[..16.min(d.own_digest.len())],
                    &d.peer_digest[..16.min(d.peer_digest.len())]
                )
            })
        })
        .collect();
    for line in &divergences {
        println!("{line}");
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for s in all.iter().flatten() {
        if let Some(warning) = certificate_warning(s.node_id, s.certificate_expires_at_ms, now_ms) {
            println!("{warning}");
        }
    }
    // Every broker shows the same grants: say them once.
    if let Some(s) = all.iter().flatten().next() {
        for g in &s.break_glass {
            let role = match g.tenant.as_str() {
                "" => g.role.clone(),
                t => format!("{} of {t}", g.role),
            };
            println!(
                "BREAK-GLASS: grant {} gives {} {role} until {} ({}); `lapse break-glass close {}` ends it",
                g.id,
                g.principal,
                crate::output::moment(g.expires_at_ms),
                g.reason,
                g.id
            );
        }
    }
    for s in all.iter().flatten() {
        let Some(f) = &s.freshness else { continue };
        // One missed heartbeat is not news (a broker just started, a
        // leader just changed): report what lasts longer than the interval.
        if !f.withheld_reason.is_empty() && f.withheld_for_ms >= f.heartbeat_ms {
            println!(
                "WITHHELD: node {} has sent its verifiers no heartbeat for {} ms: {}",
                s.node_id, f.withheld_for_ms, f.withheld_reason
            );
        }
        if !f.problem.is_empty() {
            println!("STALE RISK: node {}: {}", s.node_id, f.problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::certificate_warning;

    #[test]
    fn a_certificate_is_reported_only_within_two_weeks_of_expiry() {
        let day = 86_400_000;
        let now = 1_800_000_000_000;
        assert_eq!(certificate_warning(1, 0, now), None, "no TLS");
        assert_eq!(certificate_warning(1, now + 30 * day, now), None);
        let soon = certificate_warning(2, now + 3 * day, now).unwrap();
        assert!(soon.contains("node 2") && soon.contains("3days"), "{soon}");
        let gone = certificate_warning(3, now - day, now).unwrap();
        assert!(
            gone.contains("node 3") && gone.contains("(in 0s)"),
            "{gone}"
        );
    }
}
