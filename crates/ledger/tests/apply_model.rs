//! Property tests: `LedgerState::apply` against a simple model, with
//! duplicate request ids and snapshot/restore round-trips mixed in.

use std::collections::{BTreeMap, BTreeSet};

use lapse_credential::{KeyId, StatusIndex, TenantId, WorkloadId};
use lapse_ledger::{
    Applied, Command, LedgerParams, LedgerState, Proposal, Refusal, RequestId, Revocation,
};
use proptest::prelude::*;

const TTL_MS: u64 = 1_000;
const LEASE_MS: u64 = 500;

#[derive(Debug, Clone)]
enum Step {
    Lease { count: u64 },
    RevokeIndex { index: u64 },
    RevokeTenant { tenant: u8, back_ms: u64 },
    RegisterKey { key: u8 },
    RevokeKey { key: u8 },
    Advance { ms: u64 },
    Retry { back: usize },
    SnapshotRoundTrip,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u64..20).prop_map(|count| Step::Lease { count }),
        6 => (0u64..80).prop_map(|index| Step::RevokeIndex { index }),
        2 => (0u8..3, 0u64..300).prop_map(|(tenant, back_ms)| Step::RevokeTenant { tenant, back_ms }),
        1 => (0u8..4).prop_map(|key| Step::RegisterKey { key }),
        1 => (0u8..4).prop_map(|key| Step::RevokeKey { key }),
        3 => (1u64..400).prop_map(|ms| Step::Advance { ms }),
        2 => (1usize..10).prop_map(|back| Step::Retry { back }),
        1 => Just(Step::SnapshotRoundTrip),
    ]
}

/// The model: the same rules, written as plainly as possible.
#[derive(Default)]
struct Model {
    next_index: u64,
    /// (start, end, credentials expire by)
    leases: Vec<(u64, u64, u64)>,
    revoked: BTreeSet<u64>,
    tenant_before: BTreeMap<u8, u64>,
    keys: BTreeMap<u8, bool>,
}

impl Model {
    fn revoke_index(&mut self, index: u64, now: u64) -> Result<(), &'static str> {
        if index >= self.next_index {
            return Err("not issued");
        }
        let lease = self
            .leases
            .iter()
            .find(|(s, e, _)| *s <= index && index < *e);
        match lease {
            Some((_, _, by)) if *by > now => {}
            _ => return Err("expired"),
        }
        if !self.revoked.insert(index) {
            return Err("already");
        }
        Ok(())
    }

    fn live_revoked(&self, now: u64) -> BTreeSet<u64> {
        self.revoked
            .iter()
            .copied()
            .filter(|i| {
                self.leases
                    .iter()
                    .any(|(s, e, by)| s <= i && i < e && *by > now)
            })
            .collect()
    }
}

fn tenant(n: u8) -> TenantId {
    TenantId::new(format!("tenant-{n}")).unwrap()
}

fn key_id(n: u8) -> KeyId {
    KeyId::new(format!("key-{n}")).unwrap()
}

fn params() -> LedgerParams {
    LedgerParams {
        max_credential_ttl_ms: TTL_MS,
        max_lease_ms: LEASE_MS,
        request_dedup_ms: 1_000_000,
        prune_interval_ms: 1,
        audit_retention_ms: 10_000,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn apply_matches_model(steps in proptest::collection::vec(step(), 1..120)) {
        let mut state = LedgerState::new(params());
        let mut model = Model::default();
        let mut now = 1_000u64;
        let mut log_index = 0u64;
        let mut history: Vec<(Proposal, lapse_ledger::Response)> = Vec::new();

        for (n, step) in steps.into_iter().enumerate() {
            let command = match step {
                Step::Advance { ms } => { now += ms; continue; }
                Step::SnapshotRoundTrip => {
                    let restored = LedgerState::from_snapshot(&state.to_snapshot()).unwrap();
                    prop_assert_eq!(restored.digest(), state.digest());
                    prop_assert_eq!(&restored, &state);
                    state = restored;
                    continue;
                }
                Step::Retry { back } => {
                    if history.is_empty() { continue; }
                    let (proposal, first) = history[history.len().saturating_sub(back).min(history.len() - 1)].clone();
                    let before = (state.next_index, state.leases.clone(), state.revoked_indices.clone(), state.tenant_rules.clone(), state.keys.clone());
                    log_index += 1;
                    let again = state.apply(log_index, &Proposal { stamped_at_ms: now, ..proposal });
                    prop_assert!(again.duplicate);
                    prop_assert_eq!(again.outcome, first.outcome);
                    prop_assert_eq!(again.log_index, first.log_index);
                    // A duplicate changes nothing it would have changed the first time.
                    let after = (state.next_index, state.leases.clone(), state.revoked_indices.clone(), state.tenant_rules.clone(), state.keys.clone());
                    if now == first.applied_at_ms {
                        prop_assert_eq!(before, after);
                    } else {
                        prop_assert_eq!(before.0, after.0);
                    }
                    continue;
                }
                Step::Lease { count } => Command::LeaseIndices { broker: 1, count, lease_ms: LEASE_MS },
                Step::RevokeIndex { index } => Command::Revoke(Revocation::Index(StatusIndex(index))),
                Step::RevokeTenant { tenant: t, back_ms } => Command::Revoke(Revocation::Tenant {
                    tenant: tenant(t), issued_before_ms: Some(now - back_ms) }),
                Step::RegisterKey { key } => Command::RegisterKey {
                    key_id: key_id(key), broker: 1, public_key: vec![key; 32],
                    not_before_ms: now, not_after_ms: now + 100_000 },
                Step::RevokeKey { key } => Command::Revoke(Revocation::Key(key_id(key))),
            };
            let proposal = Proposal {
                request_id: RequestId::new(format!("req-{n}")).unwrap(),
                stamped_at_ms: now,
                command: command.clone(),
            };
            log_index += 1;
            let response = state.apply(log_index, &proposal);
            prop_assert!(!response.duplicate);
            prop_assert_eq!(response.log_index, log_index);

            match command {
                Command::LeaseIndices { count, .. } => {
                    let start = model.next_index;
                    model.next_index += count;
                    model.leases.push((start, start + count, now + LEASE_MS + TTL_MS));
                    prop_assert_eq!(&response.outcome, &Ok(Applied::Leased {
                        start, end: start + count,
                        lease_expires_at_ms: now + LEASE_MS,
                        credentials_expire_by_ms: now + LEASE_MS + TTL_MS }));
                }
                Command::Revoke(Revocation::Index(StatusIndex(index))) => {
                    match (model.revoke_index(index, now), &response.outcome) {
                        (Ok(()), Ok(Applied::Revoked { epoch, committed_at_ms })) => {
                            prop_assert_eq!(*epoch, log_index);
                            prop_assert_eq!(*committed_at_ms, now);
                            prop_assert_eq!(state.revocation_epoch, log_index);
                        }
                        (Err("not issued"), Err(Refusal::IndexNotIssued { .. })) => {}
                        (Err("expired"), Err(Refusal::IndexExpired { .. })) => {}
                        (Err("already"), Err(Refusal::AlreadyRevoked { .. })) => {}
                        (m, r) => prop_assert!(false, "model {:?} but ledger {:?}", m, r),
                    }
                }
                Command::Revoke(Revocation::Tenant { tenant: t, issued_before_ms: Some(before) }) => {
                    let number: u8 = t.as_str()["tenant-".len()..].parse().unwrap();
                    let current = model.tenant_before.get(&number).copied().unwrap_or(0);
                    // Rules expire once every credential they cover has.
                    let current = if current + TTL_MS > now { current } else { 0 };
                    if before > current {
                        model.tenant_before.insert(number, before);
                        prop_assert!(response.outcome.is_ok(), "{:?}", response.outcome);
                    } else {
                        let refused = matches!(response.outcome, Err(Refusal::AlreadyRevoked { .. }));
                        prop_assert!(refused, "{:?}", response.outcome);
                    }
                }
                Command::RegisterKey { key_id: ref id, .. } => {
                    let number: u8 = id.as_str()["key-".len()..].parse().unwrap();
                    if let std::collections::btree_map::Entry::Vacant(e) = model.keys.entry(number) {
                        e.insert(false);
                        prop_assert_eq!(&response.outcome, &Ok(Applied::KeyRegistered));
                    } else {
                        prop_assert!(matches!(response.outcome, Err(Refusal::KeyExists { .. })), "{:?}", response.outcome);
                    }
                }
                Command::Revoke(Revocation::Key(ref id)) => {
                    let number: u8 = id.as_str()["key-".len()..].parse().unwrap();
                    match model.keys.get_mut(&number) {
                        None => prop_assert!(matches!(response.outcome, Err(Refusal::UnknownKey { .. })), "{:?}", response.outcome),
                        Some(true) => prop_assert!(matches!(response.outcome, Err(Refusal::AlreadyRevoked { .. })), "{:?}", response.outcome),
                        Some(revoked) => { *revoked = true; prop_assert!(response.outcome.is_ok()); }
                    }
                }
                _ => unreachable!(),
            }
            history.push((proposal, response));

            // The live revoked set matches the model once pruning has run.
            let live: BTreeSet<u64> = state.revoked_indices.keys().copied()
                .filter(|i| state.lease_of(*i).is_some_and(|l| l.credentials_expire_by_ms > now))
                .collect();
            prop_assert_eq!(live, model.live_revoked(now));
            for (t, before) in &model.tenant_before {
                if before + TTL_MS > now {
                    prop_assert_eq!(state.tenant_rules.get(&tenant(*t)).map(|r| r.issued_before_ms), Some(*before));
                }
            }
        }
    }

    #[test]
    fn two_replicas_reach_the_same_digest(counts in proptest::collection::vec(1u64..50, 1..30)) {
        let mut a = LedgerState::new(params());
        let mut b = LedgerState::new(params());
        for (n, count) in counts.iter().enumerate() {
            let proposal = Proposal {
                request_id: RequestId::new(format!("r{n}")).unwrap(),
                stamped_at_ms: 1_000 + n as u64,
                command: if n % 2 == 0 {
                    Command::LeaseIndices { broker: 2, count: *count, lease_ms: 10 }
                } else {
                    Command::Revoke(Revocation::Index(StatusIndex(*count)))
                },
            };
            let index = n as u64 + 1;
            prop_assert_eq!(a.apply(index, &proposal), b.apply(index, &proposal));
            prop_assert_eq!(a.digest(), b.digest());
        }
    }
}

#[test]
fn expired_credentials_are_pruned() {
    let mut state = LedgerState::new(params());
    let propose = |n: u64, at: u64, command| Proposal {
        request_id: RequestId::new(format!("p{n}")).unwrap(),
        stamped_at_ms: at,
        command,
    };
    state.apply(
        1,
        &propose(
            1,
            0,
            Command::LeaseIndices {
                broker: 1,
                count: 10,
                lease_ms: 100,
            },
        ),
    );
    let revoked = state.apply(
        2,
        &propose(2, 10, Command::Revoke(Revocation::Index(StatusIndex(3)))),
    );
    assert!(revoked.outcome.is_ok());
    let subject = WorkloadId::new("spiffe://example.org/payments").unwrap();
    state.apply(
        3,
        &propose(
            3,
            20,
            Command::Revoke(Revocation::Subject {
                tenant: tenant(1),
                subject: subject.clone(),
                issued_before_ms: None,
            }),
        ),
    );
    assert!(state.is_revoked(
        StatusIndex(3),
        &tenant(9),
        &subject,
        &key_id(0),
        0,
        None,
        &[]
    ));
    assert!(state.is_revoked(
        StatusIndex(5),
        &tenant(1),
        &subject,
        &key_id(0),
        19,
        None,
        &[]
    ));
    assert!(!state.is_revoked(
        StatusIndex(5),
        &tenant(1),
        &subject,
        &key_id(0),
        20,
        None,
        &[]
    ));
    // Delegated from a revoked credential: revoked by its ancestor's index.
    assert!(state.is_revoked(
        StatusIndex(4),
        &tenant(9),
        &subject,
        &key_id(0),
        0,
        None,
        &[1, 3]
    ));
    assert!(!state.is_revoked(
        StatusIndex(4),
        &tenant(9),
        &subject,
        &key_id(0),
        0,
        None,
        &[1, 2]
    ));
    let task = state.apply(
        4,
        &propose(
            4,
            30,
            Command::Revoke(Revocation::Task {
                tenant: tenant(2),
                task: "run-7".into(),
            }),
        ),
    );
    assert!(task.outcome.is_ok(), "{task:?}");
    let other = WorkloadId::new("spiffe://example.org/agent").unwrap();
    assert!(state.is_revoked(
        StatusIndex(4),
        &tenant(2),
        &other,
        &key_id(0),
        29,
        Some("run-7"),
        &[]
    ));
    assert!(!state.is_revoked(
        StatusIndex(4),
        &tenant(2),
        &other,
        &key_id(0),
        30,
        Some("run-7"),
        &[]
    ));
    assert!(!state.is_revoked(
        StatusIndex(4),
        &tenant(2),
        &other,
        &key_id(0),
        29,
        Some("run-8"),
        &[]
    ));
    assert!(!state.is_revoked(
        StatusIndex(4),
        &tenant(3),
        &other,
        &key_id(0),
        29,
        Some("run-7"),
        &[]
    ));
    assert!(!state.is_revoked(
        StatusIndex(4),
        &tenant(2),
        &other,
        &key_id(0),
        29,
        None,
        &[]
    ));

    // Lease ends at 100, credentials at 100 + TTL; the subject rule at 20 + TTL,
    // the task rule at 30 + TTL.
    state.apply(
        5,
        &propose(
            5,
            100 + TTL_MS,
            Command::LeaseIndices {
                broker: 1,
                count: 1,
                lease_ms: 1,
            },
        ),
    );
    assert!(state.revoked_indices.is_empty());
    assert!(state.subject_rules.is_empty());
    assert!(state.task_rules.is_empty());
    let late = state.apply(
        6,
        &propose(
            6,
            100 + TTL_MS,
            Command::Revoke(Revocation::Index(StatusIndex(4))),
        ),
    );
    assert_eq!(late.outcome, Err(Refusal::IndexExpired { index: 4 }));
}

#[test]
fn request_id_reused_for_another_command_is_refused() {
    let mut state = LedgerState::new(params());
    let id = RequestId::new("same").unwrap();
    let first = state.apply(
        1,
        &Proposal {
            request_id: id.clone(),
            stamped_at_ms: 5,
            command: Command::LeaseIndices {
                broker: 1,
                count: 1,
                lease_ms: 1,
            },
        },
    );
    assert!(first.outcome.is_ok());
    let second = state.apply(
        2,
        &Proposal {
            request_id: id,
            stamped_at_ms: 6,
            command: Command::Revoke(Revocation::Index(StatusIndex(0))),
        },
    );
    assert_eq!(second.outcome, Err(Refusal::RequestIdReused));
    assert!(second.duplicate);
    assert!(state.revoked_indices.is_empty());
}

#[test]
fn corrupted_snapshots_are_refused() {
    let mut state = LedgerState::new(params());
    state.apply(
        1,
        &Proposal {
            request_id: RequestId::new("x").unwrap(),
            stamped_at_ms: 1,
            command: Command::LeaseIndices {
                broker: 1,
                count: 3,
                lease_ms: 1,
            },
        },
    );
    let bytes = state.to_snapshot();
    assert!(LedgerState::from_snapshot(&bytes[..bytes.len() - 1]).is_err());
    let mut flipped = bytes.clone();
    flipped[12] ^= 1;
    assert_eq!(
        LedgerState::from_snapshot(&flipped),
        Err(lapse_ledger::SnapshotError::BadChecksum)
    );
    assert!(LedgerState::from_snapshot(b"short").is_err());
    assert_eq!(LedgerState::from_snapshot(&bytes).unwrap(), state);
}

#[test]
fn policies_are_versioned_and_guarded() {
    use lapse_ledger::Policy;
    let mut state = LedgerState::new(params());
    let set = |state: &mut LedgerState, n: u64, expected: Option<u64>, text: &str| {
        state.apply(
            n,
            &Proposal {
                request_id: RequestId::new(format!("p{n}")).unwrap(),
                stamped_at_ms: n,
                command: Command::SetPolicy {
                    tenant: tenant(1),
                    text: text.into(),
                    expected_version: expected,
                },
            },
        )
    };
    assert_eq!(
        set(&mut state, 1, None, "permit(principal, action, resource);").outcome,
        Ok(Applied::PolicySet { version: 1 })
    );
    assert_eq!(
        set(
            &mut state,
            2,
            Some(1),
            "forbid(principal, action, resource);"
        )
        .outcome,
        Ok(Applied::PolicySet { version: 2 })
    );
    assert_eq!(
        set(&mut state, 3, Some(1), "x").outcome,
        Err(Refusal::PolicyVersionMismatch {
            expected: 1,
            current: 2
        })
    );
    let big = "x".repeat(lapse_ledger::MAX_POLICY_BYTES + 1);
    assert!(matches!(
        set(&mut state, 4, None, &big).outcome,
        Err(Refusal::PolicyTooLarge { .. })
    ));
    let Policy { version, text, .. } = state.policies[&tenant(1)].clone();
    assert_eq!(
        (version, text.as_str()),
        (2, "forbid(principal, action, resource);")
    );
}

#[test]
fn shipped_audit_records_are_kept_for_the_retention_window() {
    use lapse_ledger::{Decision, IssuanceRecord};
    let mut state = LedgerState::new(params());
    let record = |sequence| IssuanceRecord {
        sequence,
        at_ms: 100,
        tenant: Some(tenant(1)),
        workload: None,
        index: Some(StatusIndex(sequence)),
        key_id: None,
        scopes: vec![],
        audiences: vec![],
        expires_at_ms: None,
        attestation: None,
        decision: Decision {
            policy_version: 1,
            input_sha256: [0; 32],
            allowed: true,
            reason: String::new(),
        },
        inputs: None,
        seal: None,
    };
    let shipped = state.apply(
        1,
        &Proposal {
            request_id: RequestId::new("ship-1").unwrap(),
            stamped_at_ms: 100,
            command: Command::RecordIssuances {
                broker: 7,
                records: vec![record(1), record(2)],
            },
        },
    );
    assert_eq!(shipped.outcome, Ok(Applied::IssuancesRecorded { count: 2 }));
    assert_eq!(state.audit.len(), 2);
    let empty = state.apply(
        2,
        &Proposal {
            request_id: RequestId::new("ship-2").unwrap(),
            stamped_at_ms: 200,
            command: Command::RecordIssuances {
                broker: 7,
                records: vec![],
            },
        },
    );
    assert!(matches!(empty.outcome, Err(Refusal::BadAuditBatch { .. })));
    // Past the retention window (10 s here) the records are pruned.
    state.apply(
        3,
        &Proposal {
            request_id: RequestId::new("later").unwrap(),
            stamped_at_ms: 100 + 10_000,
            command: Command::LeaseIndices {
                broker: 1,
                count: 1,
                lease_ms: 1,
            },
        },
    );
    assert!(state.audit.is_empty());
}
