//! Revocation: `Revoke` and `RevokeMany`, over status indices, subjects,
//! tenants, tasks, signing keys and leaked secrets.

use std::collections::BTreeMap;

use lapse_credential::presented::Presented;
use lapse_credential::{KeyId, KeyLookup, StatusIndex, TenantId};

use crate::command::{Applied, EMPTY_SECRET_SHA256, MAX_BATCH, Outcome, Refusal, Revocation};
use crate::ssf::SsfTarget;
use crate::state::{IssuedBeforeRule, LedgerState, RevokedAt};

impl LedgerState {
    /// `Revoke`: one revocation, answered with its epoch or refused whole.
    pub(super) fn revoke_one(
        &mut self,
        epoch: u64,
        now_ms: u64,
        revocation: &Revocation,
    ) -> Outcome {
        self.revoke(epoch, now_ms, revocation)?;
        self.revocation_epoch = epoch;
        Ok(Applied::Revoked {
            epoch,
            committed_at_ms: now_ms,
        })
    }

    /// `RevokeMany`: each revocation is applied or refused on its own; the
    /// feed epoch moves when at least one took effect.
    pub(super) fn revoke_many(
        &mut self,
        epoch: u64,
        now_ms: u64,
        revocations: &[Revocation],
    ) -> Outcome {
        if revocations.is_empty() || revocations.len() > MAX_BATCH {
            return Err(Refusal::BadBatch {
                count: revocations.len(),
                max: MAX_BATCH,
            });
        }
        let items: Vec<_> = revocations
            .iter()
            .map(|revocation| self.revoke(epoch, now_ms, revocation))
            .collect();
        if items.iter().any(Result::is_ok) {
            self.revocation_epoch = epoch;
        }
        Ok(Applied::RevokedMany {
            epoch,
            committed_at_ms: now_ms,
            items,
        })
    }

    /// Record one revocation at `epoch`, count it by kind, and make what it
    /// recorded one SSF event; or refuse it and change nothing.
    fn revoke(&mut self, epoch: u64, now_ms: u64, revocation: &Revocation) -> Result<(), Refusal> {
        let (tenant, target) = self.revoke_target(epoch, now_ms, revocation)?;
        self.revocations.count(revocation);
        self.record_ssf_event(epoch, now_ms, tenant, target);
        Ok(())
    }

    /// Record one revocation; the tenant it concerns and what it revoked.
    fn revoke_target(
        &mut self,
        epoch: u64,
        now_ms: u64,
        revocation: &Revocation,
    ) -> Result<(Option<TenantId>, SsfTarget), Refusal> {
        let revoked = RevokedAt {
            epoch,
            at_ms: now_ms,
        };
        match revocation {
            Revocation::Index(StatusIndex(index)) => {
                self.revoke_index(*index, now_ms, revoked)?;
                let tenant = self.issued_tenants.get(index).cloned();
                Ok((tenant, SsfTarget::Index(*index)))
            }
            Revocation::Subject {
                tenant,
                subject,
                issued_before_ms,
            } => {
                let issued_before_ms = issued_before(*issued_before_ms, now_ms)?;
                let key = (tenant.clone(), subject.clone());
                raise_rule(&mut self.subject_rules, key, issued_before_ms, revoked)?;
                Ok((
                    Some(tenant.clone()),
                    SsfTarget::Subject {
                        subject: subject.clone(),
                        issued_before_ms,
                    },
                ))
            }
            Revocation::Tenant {
                tenant,
                issued_before_ms,
            } => {
                let issued_before_ms = issued_before(*issued_before_ms, now_ms)?;
                raise_rule(
                    &mut self.tenant_rules,
                    tenant.clone(),
                    issued_before_ms,
                    revoked,
                )?;
                Ok((Some(tenant.clone()), SsfTarget::Tenant { issued_before_ms }))
            }
            Revocation::Task { tenant, task } => {
                if let Some(problem) = lapse_credential::task_problem(task) {
                    return Err(Refusal::BadTask(problem));
                }
                let key = (tenant.clone(), task.clone());
                raise_rule(&mut self.task_rules, key, now_ms, revoked)?;
                Ok((Some(tenant.clone()), SsfTarget::Task(task.clone())))
            }
            Revocation::Key(key_id) if self.is_foreign_key(key_id) => {
                if let Some(earlier) = self.revoked_foreign_keys.get(key_id) {
                    return Err(Refusal::AlreadyRevoked {
                        epoch: earlier.epoch,
                    });
                }
                if self.revoked_foreign_keys.len() >= crate::MAX_FOREIGN_KEY_REVOCATIONS {
                    return Err(Refusal::TooManyForeignKeys {
                        max: crate::MAX_FOREIGN_KEY_REVOCATIONS,
                    });
                }
                self.revoked_foreign_keys.insert(key_id.clone(), revoked);
                Ok((None, SsfTarget::Key(key_id.clone())))
            }
            Revocation::Key(key_id) => {
                let key = self.key_mut(key_id)?;
                if let Some(earlier) = key.revoked {
                    return Err(Refusal::AlreadyRevoked {
                        epoch: earlier.epoch,
                    });
                }
                key.revoked = Some(revoked);
                key.changed_epoch = epoch;
                Ok((None, SsfTarget::Key(key_id.clone())))
            }
            Revocation::Credential(token) => {
                let presented = self.presented(&token.0)?;
                self.revoke_index(presented.index.0, now_ms, revoked)?;
                Ok((Some(presented.tenant), SsfTarget::Index(presented.index.0)))
            }
            Revocation::SecretHash(hash) => {
                if *hash == EMPTY_SECRET_SHA256 {
                    return Err(Refusal::EmptySecret);
                }
                if let Some(earlier) = self.revoked_secrets.get(hash) {
                    return Err(Refusal::AlreadyRevoked {
                        epoch: earlier.epoch,
                    });
                }
                self.revoked_secrets.insert(*hash, revoked);
                Ok((None, SsfTarget::Secret(*hash)))
            }
        }
    }

    /// What a presented credential proves, checked against the registered
    /// keys.
    pub(super) fn presented(&self, token: &str) -> Result<Presented, Refusal> {
        lapse_credential::presented::presented(token, &RegisteredKeys(&self.keys))
            .map_err(|e| Refusal::BadCredential(e.to_string()))
    }

    /// An offline break-glass key: never registered, named `bg-…`.
    fn is_foreign_key(&self, key_id: &KeyId) -> bool {
        !self.keys.contains_key(key_id)
            && key_id.as_str().starts_with(crate::BREAK_GLASS_KEY_PREFIX)
    }

    /// Revoke one status index: it must have been leased, its credentials
    /// must not all have expired, and it must not be revoked already.
    fn revoke_index(&mut self, index: u64, now_ms: u64, revoked: RevokedAt) -> Result<(), Refusal> {
        if index >= self.next_index {
            return Err(Refusal::IndexNotIssued { index });
        }
        let live = self
            .lease_of(index)
            .is_some_and(|lease| lease.credentials_expire_by_ms > now_ms);
        if !live {
            return Err(Refusal::IndexExpired { index });
        }
        if let Some(earlier) = self.revoked_indices.get(&index) {
            return Err(Refusal::AlreadyRevoked {
                epoch: earlier.epoch,
            });
        }
        self.insert_revoked_index(index, revoked);
        Ok(())
    }
}

/// The registered signing keys, as a presented credential is checked
/// against them.
struct RegisteredKeys<'a>(&'a BTreeMap<KeyId, crate::state::SigningKey>);

impl KeyLookup for RegisteredKeys<'_> {
    fn public_key(&self, key_id: &str) -> Option<[u8; 32]> {
        let key = self.0.get(&KeyId::new(key_id).ok()?)?;
        key.public_key.as_slice().try_into().ok()
    }
}

/// The issued-before time of a rule: the commit time when none is given,
/// refused when it lies after the commit time.
fn issued_before(requested: Option<u64>, now_ms: u64) -> Result<u64, Refusal> {
    match requested {
        None => Ok(now_ms),
        Some(t) if t > now_ms => Err(Refusal::IssuedBeforeInFuture {
            issued_before_ms: t,
            now_ms,
        }),
        Some(t) => Ok(t),
    }
}

/// Record "issued before T is revoked", refusing a T that revokes nothing new.
fn raise_rule<K: Ord>(
    rules: &mut BTreeMap<K, IssuedBeforeRule>,
    key: K,
    issued_before_ms: u64,
    revoked: RevokedAt,
) -> Result<(), Refusal> {
    if let Some(rule) = rules.get(&key)
        && issued_before_ms <= rule.issued_before_ms
    {
        return Err(Refusal::AlreadyRevoked {
            epoch: rule.revoked.epoch,
        });
    }
    rules.insert(
        key,
        IssuedBeforeRule {
            issued_before_ms,
            revoked,
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use lapse_credential::StatusIndex;

    use super::super::testing::{Ledger, MAX_LEASE_MS, TTL_MS, key_id, tenant, workload};
    use crate::command::{Applied, Command, MAX_BATCH, Refusal, Revocation};
    use crate::state::{IssuedBeforeRule, RevokedAt};

    fn index(i: u64) -> Command {
        Command::Revoke(Revocation::Index(StatusIndex(i)))
    }

    /// A ledger holding one lease of indices 0..4, granted at 1 000 ms.
    fn leased() -> Ledger {
        let mut ledger = Ledger::new();
        assert_eq!(ledger.lease("lease", 1_000, 4), (0, 4));
        ledger
    }

    #[test]
    fn revoking_a_leased_index_answers_its_epoch() {
        let mut ledger = leased();
        let response = ledger.run("r", 1_100, index(2));
        assert_eq!(response.log_index, 2);
        assert!(!response.duplicate);
        assert_eq!(
            response.outcome,
            Ok(Applied::Revoked {
                epoch: 2,
                committed_at_ms: 1_100
            })
        );
        assert_eq!(ledger.state.revocation_epoch, 2);
        assert_eq!(
            ledger.state.revoked_indices.get(&2),
            Some(&RevokedAt {
                epoch: 2,
                at_ms: 1_100
            })
        );
        assert_eq!(ledger.state.indices_revoked_after(1), vec![2]);
        assert!(ledger.state.indices_revoked_after(2).is_empty());
    }

    #[test]
    fn revoke_retried_replays_the_first_answer() {
        let mut ledger = leased();
        let first = ledger.run("r", 1_100, index(2));
        let again = ledger.run("r", 1_200, index(2));
        assert!(again.duplicate);
        assert_eq!(again.outcome, first.outcome);
        assert_eq!(
            (again.log_index, again.applied_at_ms),
            (first.log_index, first.applied_at_ms)
        );
        // Not applied a second time: the feed epoch stays at the first apply.
        assert_eq!(ledger.state.revocation_epoch, first.log_index);
        assert_eq!(ledger.state.revoked_indices.len(), 1);
    }

    #[test]
    fn index_refusals() {
        let mut ledger = leased();
        assert_eq!(
            ledger.run("beyond", 1_100, index(4)).outcome,
            Err(Refusal::IndexNotIssued { index: 4 })
        );
        ledger.run("first", 1_200, index(1));
        let epoch = ledger.state.revocation_epoch;
        assert_eq!(
            ledger.run("again", 1_300, index(1)).outcome,
            Err(Refusal::AlreadyRevoked { epoch })
        );
        // A refusal changes nothing the feed reads.
        assert_eq!(ledger.state.revocation_epoch, epoch);
        assert_eq!(ledger.state.revoked_indices.len(), 1);
    }

    #[test]
    fn revocations_that_took_effect_are_counted_by_kind() {
        let mut ledger = leased();
        ledger.run("one", 1_100, index(1));
        ledger.run("again", 1_200, index(1));
        ledger.run("beyond", 1_300, index(9));
        ledger.run(
            "task",
            1_400,
            Command::Revoke(Revocation::Task {
                tenant: tenant("acme"),
                task: "t-1".into(),
            }),
        );
        let batch = vec![
            Revocation::Index(StatusIndex(2)),
            Revocation::Index(StatusIndex(2)),
            Revocation::SecretHash([7; 32]),
        ];
        ledger.run("batch", 1_500, Command::RevokeMany(batch));
        let counts = ledger.state.revocations;
        assert_eq!((counts.index, counts.task, counts.secret), (2, 1, 1));
        assert_eq!(counts.by_kind().iter().map(|(_, n)| n).sum::<u64>(), 4);
        // Replicas and restarts agree: the counts are in the snapshot.
        let restored = crate::LedgerState::from_snapshot(&ledger.state.to_snapshot()).unwrap();
        assert_eq!(restored.revocations, counts);
    }

    #[test]
    fn an_index_whose_credentials_have_all_expired_is_refused() {
        // Credentials from the lease expire by grant + lease + TTL.
        let expire_by = 1_000 + MAX_LEASE_MS + TTL_MS;
        let mut ledger = leased();
        assert!(matches!(
            ledger.run("just-in-time", expire_by - 1, index(0)).outcome,
            Ok(Applied::Revoked { .. })
        ));
        assert_eq!(
            ledger.run("too-late", expire_by, index(3)).outcome,
            Err(Refusal::IndexExpired { index: 3 })
        );
    }

    #[test]
    fn subject_rules_only_move_forward_and_never_into_the_future() {
        let mut ledger = Ledger::new();
        let subject = |issued_before_ms| {
            Command::Revoke(Revocation::Subject {
                tenant: tenant("acme"),
                subject: workload("api"),
                issued_before_ms,
            })
        };
        let first = ledger.run("s1", 2_000, subject(None));
        assert_eq!(
            first.outcome,
            Ok(Applied::Revoked {
                epoch: 1,
                committed_at_ms: 2_000
            })
        );
        let rule = IssuedBeforeRule {
            issued_before_ms: 2_000,
            revoked: RevokedAt {
                epoch: 1,
                at_ms: 2_000,
            },
        };
        assert_eq!(
            ledger
                .state
                .subject_rules
                .get(&(tenant("acme"), workload("api"))),
            Some(&rule)
        );
        for (id, earlier) in [("s2", 1_500), ("s3", 2_000)] {
            assert_eq!(
                ledger.run(id, 2_500, subject(Some(earlier))).outcome,
                Err(Refusal::AlreadyRevoked { epoch: 1 })
            );
        }
        assert_eq!(
            ledger.run("s4", 2_500, subject(Some(3_000))).outcome,
            Err(Refusal::IssuedBeforeInFuture {
                issued_before_ms: 3_000,
                now_ms: 2_500
            })
        );
        assert_eq!(ledger.state.revocation_epoch, 1);
        let raised = ledger.run("s5", 2_500, subject(Some(2_400)));
        assert!(matches!(raised.outcome, Ok(Applied::Revoked { .. })));
        assert_eq!(
            ledger.state.subject_rules[&(tenant("acme"), workload("api"))].issued_before_ms,
            2_400
        );
        assert_eq!(ledger.state.revocation_epoch, raised.log_index);
    }

    #[test]
    fn tenant_rules_only_move_forward_and_never_into_the_future() {
        let mut ledger = Ledger::new();
        let whole_tenant = |issued_before_ms| {
            Command::Revoke(Revocation::Tenant {
                tenant: tenant("acme"),
                issued_before_ms,
            })
        };
        assert_eq!(
            ledger.run("t1", 2_000, whole_tenant(Some(1_800))).outcome,
            Ok(Applied::Revoked {
                epoch: 1,
                committed_at_ms: 2_000
            })
        );
        assert_eq!(
            ledger.state.tenant_rules[&tenant("acme")].issued_before_ms,
            1_800
        );
        assert_eq!(
            ledger.run("t2", 2_100, whole_tenant(Some(1_800))).outcome,
            Err(Refusal::AlreadyRevoked { epoch: 1 })
        );
        assert_eq!(
            ledger.run("t3", 2_100, whole_tenant(Some(2_101))).outcome,
            Err(Refusal::IssuedBeforeInFuture {
                issued_before_ms: 2_101,
                now_ms: 2_100
            })
        );
        // Without a time, the rule covers everything issued before commit.
        assert!(matches!(
            ledger.run("t4", 2_200, whole_tenant(None)).outcome,
            Ok(Applied::Revoked { .. })
        ));
        assert_eq!(
            ledger.state.tenant_rules[&tenant("acme")].issued_before_ms,
            2_200
        );
    }

    #[test]
    fn task_rules_cover_what_was_issued_before_the_commit_and_refuse_bad_task_ids() {
        let mut ledger = Ledger::new();
        let task = |tenant_name: &str, task: &str| {
            Command::Revoke(Revocation::Task {
                tenant: tenant(tenant_name),
                task: task.into(),
            })
        };
        let first = ledger.run("t1", 2_000, task("acme", "run:42/step-1"));
        assert_eq!(
            first.outcome,
            Ok(Applied::Revoked {
                epoch: 1,
                committed_at_ms: 2_000
            })
        );
        let key = (tenant("acme"), "run:42/step-1".to_owned());
        assert_eq!(
            ledger.state.task_rules.get(&key),
            Some(&IssuedBeforeRule {
                issued_before_ms: 2_000,
                revoked: RevokedAt {
                    epoch: 1,
                    at_ms: 2_000
                },
            })
        );
        // Again at the same time revokes nothing new; later, it moves on.
        assert_eq!(
            ledger
                .run("t2", 2_000, task("acme", "run:42/step-1"))
                .outcome,
            Err(Refusal::AlreadyRevoked { epoch: 1 })
        );
        let raised = ledger.run("t3", 2_500, task("acme", "run:42/step-1"));
        assert!(matches!(raised.outcome, Ok(Applied::Revoked { .. })));
        assert_eq!(ledger.state.task_rules[&key].issued_before_ms, 2_500);
        // Another tenant's task of the same name is its own rule.
        assert!(
            ledger
                .run("t4", 2_600, task("beta", "run:42/step-1"))
                .outcome
                .is_ok()
        );
        assert_eq!(ledger.state.task_rules.len(), 2);

        let before = ledger.state.clone();
        for (id, bad) in [
            ("empty", String::new()),
            ("space", "run 42".to_owned()),
            ("quote", "run\"42".to_owned()),
            ("unicode", "run-é".to_owned()),
            ("long", "t".repeat(129)),
        ] {
            let outcome = ledger.run(id, 2_700, task("acme", &bad)).outcome;
            assert!(
                matches!(&outcome, Err(Refusal::BadTask(why)) if why.contains("1 to 128 bytes")),
                "{bad:?}: {outcome:?}"
            );
        }
        assert_eq!(ledger.state.task_rules, before.task_rules);
        assert_eq!(ledger.state.revocation_epoch, before.revocation_epoch);
        assert!(
            ledger
                .run("longest", 2_700, task("acme", &"t".repeat(128)))
                .outcome
                .is_ok()
        );

        // In the feed: a rule of its own, and a revocation to propagate.
        let snapshot = crate::feed::snapshot(&ledger.state, [0; 32]).unwrap();
        assert_eq!(
            snapshot
                .rules
                .tasks()
                .get(&("acme".into(), "run:42/step-1".into())),
            Some(&2_500)
        );
        let delta = crate::feed::delta_since(&ledger.state, raised.log_index)
            .unwrap()
            .unwrap();
        assert_eq!(delta.rules.tasks().len(), 2);
        assert!(crate::feed::revocations_since(&ledger.state, 0).contains_key(&raised.log_index));

        // Pruned once every credential it covers has expired.
        ledger.run("later", 2_500 + TTL_MS, Command::ConfirmLeadership);
        assert!(!ledger.state.task_rules.contains_key(&key));
    }

    #[test]
    fn key_revocation() {
        let mut ledger = Ledger::new();
        let revoke_key = || Command::Revoke(Revocation::Key(key_id("k1")));
        assert_eq!(
            ledger.run("unknown", 1_000, revoke_key()).outcome,
            Err(Refusal::UnknownKey {
                key_id: "k1".into()
            })
        );
        ledger.run(
            "register",
            1_000,
            Command::RegisterKey {
                key_id: key_id("k1"),
                broker: 1,
                public_key: vec![9; 32],
                not_before_ms: 0,
                not_after_ms: 100_000,
            },
        );
        let revoked = ledger.run("revoke", 1_100, revoke_key());
        assert_eq!(
            revoked.outcome,
            Ok(Applied::Revoked {
                epoch: revoked.log_index,
                committed_at_ms: 1_100
            })
        );
        let key = &ledger.state.keys[&key_id("k1")];
        assert_eq!(
            key.revoked,
            Some(RevokedAt {
                epoch: revoked.log_index,
                at_ms: 1_100
            })
        );
        assert_eq!(key.changed_epoch, revoked.log_index);
        assert_eq!(
            ledger.run("revoke-again", 1_200, revoke_key()).outcome,
            Err(Refusal::AlreadyRevoked {
                epoch: revoked.log_index
            })
        );
    }

    #[test]
    fn an_unregistered_break_glass_key_is_revoked_and_bounded() {
        let mut ledger = Ledger::new();
        let revoke = |id: &str| Command::Revoke(Revocation::Key(key_id(id)));
        let revoked = ledger.run("bg", 1_000, revoke("bg-abc"));
        assert_eq!(
            revoked.outcome,
            Ok(Applied::Revoked {
                epoch: revoked.log_index,
                committed_at_ms: 1_000
            })
        );
        assert!(
            ledger
                .state
                .revoked_foreign_keys
                .contains_key(&key_id("bg-abc"))
        );
        assert!(ledger.state.keys.is_empty());
        // In the feed's rules, and counted as a revocation to propagate.
        let revocations = crate::feed::revocations_since(&ledger.state, 0);
        assert_eq!(revocations.get(&revoked.log_index), Some(&1_000));
        assert_eq!(
            ledger.run("bg-again", 1_100, revoke("bg-abc")).outcome,
            Err(Refusal::AlreadyRevoked {
                epoch: revoked.log_index
            })
        );
        // Any other unknown id is a mistake, refused.
        assert_eq!(
            ledger.run("typo", 1_100, revoke("k-typo")).outcome,
            Err(Refusal::UnknownKey {
                key_id: "k-typo".into()
            })
        );
        for n in 1..crate::MAX_FOREIGN_KEY_REVOCATIONS {
            let outcome = ledger.run(&format!("bg-{n}"), 1_200, revoke(&format!("bg-{n}")));
            assert!(outcome.outcome.is_ok(), "{n}: {:?}", outcome.outcome);
        }
        let before = ledger.state.clone();
        assert_eq!(
            ledger.run("one-too-many", 1_300, revoke("bg-full")).outcome,
            Err(Refusal::TooManyForeignKeys {
                max: crate::MAX_FOREIGN_KEY_REVOCATIONS
            })
        );
        assert_eq!(
            ledger.state.revoked_foreign_keys,
            before.revoked_foreign_keys
        );
    }

    #[test]
    fn revoking_the_hash_of_an_empty_secret_is_refused() {
        use sha2::Digest as _;
        assert_eq!(
            crate::command::EMPTY_SECRET_SHA256,
            <[u8; 32]>::from(sha2::Sha256::digest(b""))
        );
        let mut ledger = Ledger::new();
        let empty = Command::Revoke(Revocation::SecretHash(crate::command::EMPTY_SECRET_SHA256));
        assert_eq!(
            ledger.run("empty", 1_000, empty).outcome,
            Err(Refusal::EmptySecret)
        );
        assert!(ledger.state.revoked_secrets.is_empty());
        assert_eq!(ledger.state.revocation_epoch, 0);
    }

    #[test]
    fn secret_revocation() {
        let mut ledger = Ledger::new();
        let secret = || Command::Revoke(Revocation::SecretHash([5; 32]));
        assert_eq!(
            ledger.run("leak", 1_000, secret()).outcome,
            Ok(Applied::Revoked {
                epoch: 1,
                committed_at_ms: 1_000
            })
        );
        assert_eq!(
            ledger.state.revoked_secrets.get(&[5; 32]),
            Some(&RevokedAt {
                epoch: 1,
                at_ms: 1_000
            })
        );
        assert_eq!(
            ledger.run("leak-again", 1_100, secret()).outcome,
            Err(Refusal::AlreadyRevoked { epoch: 1 })
        );
    }

    #[test]
    fn revoke_many_answers_each_item_alone() {
        let mut ledger = leased();
        let epoch = ledger.next_log_index();
        let batch = Command::RevokeMany(vec![
            Revocation::Index(StatusIndex(0)),
            Revocation::Index(StatusIndex(9)),
            Revocation::SecretHash([1; 32]),
            Revocation::Index(StatusIndex(0)),
        ]);
        let response = ledger.run("batch", 1_100, batch.clone());
        assert_eq!(
            response.outcome,
            Ok(Applied::RevokedMany {
                epoch,
                committed_at_ms: 1_100,
                items: vec![
                    Ok(()),
                    Err(Refusal::IndexNotIssued { index: 9 }),
                    Ok(()),
                    Err(Refusal::AlreadyRevoked { epoch }),
                ],
            })
        );
        assert_eq!(ledger.state.revocation_epoch, epoch);
        assert_eq!(ledger.state.indices_revoked_after(0), vec![0]);

        let again = ledger.run("batch", 1_200, batch);
        assert!(again.duplicate);
        assert_eq!(again.outcome, response.outcome);
        assert_eq!(ledger.state.revocation_epoch, epoch);
    }

    #[test]
    fn revoke_many_with_every_item_refused_leaves_the_feed_epoch() {
        let mut ledger = leased();
        let epoch_before = ledger.state.revocation_epoch;
        let response = ledger.run(
            "nothing-new",
            1_100,
            Command::RevokeMany(vec![Revocation::Index(StatusIndex(7))]),
        );
        assert_eq!(
            response.outcome,
            Ok(Applied::RevokedMany {
                epoch: response.log_index,
                committed_at_ms: 1_100,
                items: vec![Err(Refusal::IndexNotIssued { index: 7 })],
            })
        );
        assert_eq!(ledger.state.revocation_epoch, epoch_before);
    }

    #[test]
    fn revoke_many_refuses_an_empty_or_oversized_batch() {
        let mut ledger = Ledger::new();
        assert_eq!(
            ledger
                .run("empty", 1_000, Command::RevokeMany(vec![]))
                .outcome,
            Err(Refusal::BadBatch {
                count: 0,
                max: MAX_BATCH
            })
        );
        let too_many: Vec<_> = (0..=MAX_BATCH)
            .map(|n| Revocation::SecretHash([(n % 251) as u8; 32]))
            .collect();
        assert_eq!(too_many.len(), MAX_BATCH + 1);
        assert_eq!(
            ledger
                .run("too-many", 1_000, Command::RevokeMany(too_many))
                .outcome,
            Err(Refusal::BadBatch {
                count: MAX_BATCH + 1,
                max: MAX_BATCH
            })
        );
        assert!(ledger.state.revoked_secrets.is_empty());
        assert_eq!(ledger.state.revocation_epoch, 0);
    }
}
