//! Property test of the feed derivation: a snapshot taken at any epoch,
//! followed by the delta from that epoch, holds the same revocation state as
//! a snapshot taken now; and the encoded messages round-trip.

use lapse_credential::{KeyId, StatusIndex, TenantId, WorkloadId};
use lapse_filter::{Message, Snapshot, decode_message, encode_message};
use lapse_ledger::{Command, LedgerParams, LedgerState, Proposal, RequestId, Revocation, feed};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Lease { count: u64 },
    RevokeIndex { index: u64 },
    RevokeSubject { subject: u8 },
    RevokeTenant { tenant: u8 },
    RevokeTask { tenant: u8, task: u8 },
    RevokeSecret { byte: u8 },
    RegisterKey { key: u8 },
    RetireKey { key: u8 },
    RevokeKey { key: u8 },
    Advance { ms: u64 },
    Capture,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u64..30).prop_map(|count| Step::Lease { count }),
        8 => (0u64..150).prop_map(|index| Step::RevokeIndex { index }),
        1 => (0u8..4).prop_map(|subject| Step::RevokeSubject { subject }),
        1 => (0u8..3).prop_map(|tenant| Step::RevokeTenant { tenant }),
        1 => (0u8..2, 0u8..3).prop_map(|(tenant, task)| Step::RevokeTask { tenant, task }),
        1 => any::<u8>().prop_map(|byte| Step::RevokeSecret { byte }),
        1 => (0u8..4).prop_map(|key| Step::RegisterKey { key }),
        1 => (0u8..4).prop_map(|key| Step::RetireKey { key }),
        1 => (0u8..4).prop_map(|key| Step::RevokeKey { key }),
        3 => (1u64..300).prop_map(|ms| Step::Advance { ms }),
        3 => Just(Step::Capture),
    ]
}

fn params() -> LedgerParams {
    LedgerParams {
        // Long enough that no rule or key ages out inside a run (those are
        // aged out by verifiers themselves); short enough that leases do,
        // so the window base moves.
        max_credential_ttl_ms: 1_000_000,
        max_lease_ms: 500,
        request_dedup_ms: 1_000_000,
        prune_interval_ms: 1,
        audit_retention_ms: 10_000,
    }
}

/// The parts of a snapshot that decide verification (the Bloom filter's
/// seed and sizing are each broker's own).
fn essence(s: &Snapshot) -> impl PartialEq + std::fmt::Debug {
    (
        s.epoch,
        s.set.base(),
        s.set.iter().collect::<Vec<_>>(),
        s.secrets.iter().copied().collect::<Vec<_>>(),
        s.rules.clone(),
        s.keys.clone(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    #[test]
    fn snapshot_plus_delta_is_snapshot(steps in proptest::collection::vec(step(), 1..150)) {
        let mut state = LedgerState::new(params());
        let mut now = 10_000u64;
        let mut log_index = 0u64;
        let mut captured: Vec<Snapshot> = vec![feed::snapshot(&state, [1; 32]).unwrap()];
        for (n, step) in steps.into_iter().enumerate() {
            let command = match step {
                Step::Advance { ms } => { now += ms; continue; }
                Step::Capture => {
                    captured.push(feed::snapshot(&state, [2; 32]).unwrap());
                    continue;
                }
                Step::Lease { count } => Command::LeaseIndices { broker: 1, count, lease_ms: 200 },
                Step::RevokeIndex { index } => Command::Revoke(Revocation::Index(StatusIndex(index))),
                Step::RevokeSubject { subject } => Command::Revoke(Revocation::Subject {
                    tenant: TenantId::new("acme").unwrap(),
                    subject: WorkloadId::new(format!("spiffe://acme/svc-{subject}")).unwrap(),
                    issued_before_ms: None,
                }),
                Step::RevokeTenant { tenant } => Command::Revoke(Revocation::Tenant {
                    tenant: TenantId::new(format!("tenant-{tenant}")).unwrap(),
                    issued_before_ms: None,
                }),
                Step::RevokeTask { tenant, task } => Command::Revoke(Revocation::Task {
                    tenant: TenantId::new(format!("tenant-{tenant}")).unwrap(),
                    task: format!("run:{task}"),
                }),
                Step::RevokeSecret { byte } => Command::Revoke(Revocation::SecretHash([byte; 32])),
                Step::RegisterKey { key } => Command::RegisterKey {
                    key_id: KeyId::new(format!("key-{key}")).unwrap(),
                    broker: 1,
                    public_key: vec![key; 32],
                    not_before_ms: now,
                    not_after_ms: now + 100_000,
                },
                Step::RetireKey { key } => Command::RetireKey { key_id: KeyId::new(format!("key-{key}")).unwrap() },
                Step::RevokeKey { key } => Command::Revoke(Revocation::Key(KeyId::new(format!("key-{key}")).unwrap())),
            };
            log_index += 1;
            state.apply(log_index, &Proposal {
                request_id: RequestId::new(format!("req-{n}")).unwrap(),
                stamped_at_ms: now,
                command,
            });
        }
        let current = feed::snapshot(&state, [3; 32]).unwrap();
        prop_assert_eq!(current.epoch, state.revocation_epoch);
        let restored = LedgerState::from_snapshot(&state.to_snapshot()).unwrap();
        for old in captured {
            // A replica restored from a snapshot derives the same deltas.
            prop_assert_eq!(feed::delta_since(&restored, old.epoch), feed::delta_since(&state, old.epoch));
            let mut followed = old.clone();
            match feed::delta_since(&state, old.epoch).unwrap() {
                None => prop_assert_eq!(old.epoch, current.epoch),
                Some(delta) => {
                    let wire = encode_message(&Message::Delta(delta.clone())).unwrap();
                    prop_assert_eq!(decode_message(&wire).unwrap(), Message::Delta(delta.clone()));
                    followed.apply(&delta).unwrap();
                }
            }
            prop_assert_eq!(essence(&followed), essence(&current));
            let times = feed::revocations_since(&state, old.epoch);
            prop_assert!(times.keys().all(|epoch| *epoch > old.epoch && *epoch <= current.epoch));
        }
        let wire = encode_message(&Message::Full(Box::new(current.clone()))).unwrap();
        prop_assert_eq!(decode_message(&wire).unwrap(), Message::Full(Box::new(current)));
        // A replica cannot serve a delta from an epoch it has not reached.
        prop_assert!(feed::delta_since(&state, state.revocation_epoch + 1).is_err());
    }
}
