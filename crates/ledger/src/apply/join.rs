//! Join tokens: `CreateJoinToken` and `ConsumeJoinToken`, single-use grants
//! to join as a broker or to obtain a workload's first credential.

use crate::command::{Applied, JoinGrant, JoinUse, Outcome, Refusal, Sha256};
use crate::state::{JoinToken, LedgerState};

impl LedgerState {
    /// `CreateJoinToken`: remember a token, by hash, until it expires.
    pub(super) fn create_join_token(
        &mut self,
        now_ms: u64,
        token_hash: &Sha256,
        grant: &JoinGrant,
        expires_at_ms: u64,
    ) -> Outcome {
        if self.join_tokens.contains_key(token_hash) {
            return Err(Refusal::JoinTokenExists);
        }
        if expires_at_ms <= now_ms {
            return Err(Refusal::JoinTokenExpired { expires_at_ms });
        }
        self.join_tokens.insert(
            *token_hash,
            JoinToken {
                grant: grant.clone(),
                expires_at_ms,
                consumed_epoch: None,
            },
        );
        Ok(Applied::JoinTokenCreated)
    }

    /// `ConsumeJoinToken`: use a live, unspent token for what it grants.
    pub(super) fn consume_join_token(
        &mut self,
        epoch: u64,
        now_ms: u64,
        token_hash: &Sha256,
        presented: &JoinUse,
    ) -> Outcome {
        let token = self
            .join_tokens
            .get_mut(token_hash)
            .ok_or(Refusal::JoinTokenUnknown)?;
        if let Some(epoch) = token.consumed_epoch {
            return Err(Refusal::JoinTokenSpent { epoch });
        }
        if token.expires_at_ms <= now_ms {
            return Err(Refusal::JoinTokenExpired {
                expires_at_ms: token.expires_at_ms,
            });
        }
        match (&token.grant, presented) {
            (
                JoinGrant::Broker {
                    address: Some(expected),
                },
                JoinUse::Broker { address, .. },
            ) if expected != address => {
                return Err(Refusal::JoinTokenWrongAddress {
                    expected: expected.clone(),
                    presented: address.clone(),
                });
            }
            (JoinGrant::Broker { .. }, JoinUse::Broker { .. })
            | (JoinGrant::Workload { .. }, JoinUse::Workload) => {}
            _ => return Err(Refusal::JoinTokenWrongUse),
        }
        token.consumed_epoch = Some(epoch);
        Ok(Applied::JoinTokenConsumed(token.grant.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Ledger, tenant, workload};
    use crate::command::{Applied, Command, JoinGrant, JoinUse, Refusal};
    use crate::state::JoinToken;

    const HASH: [u8; 32] = [3; 32];

    fn create(grant: JoinGrant, expires_at_ms: u64) -> Command {
        Command::CreateJoinToken {
            token_hash: HASH,
            grant,
            expires_at_ms,
        }
    }

    fn consume(presented: JoinUse) -> Command {
        Command::ConsumeJoinToken {
            token_hash: HASH,
            presented,
        }
    }

    fn workload_grant() -> JoinGrant {
        JoinGrant::Workload {
            tenant: tenant("acme"),
            workload: workload("api"),
        }
    }

    fn broker_grant(address: Option<&str>) -> JoinGrant {
        JoinGrant::Broker {
            address: address.map(str::to_owned),
        }
    }

    fn broker_at(address: &str) -> JoinUse {
        JoinUse::Broker {
            node_id: 4,
            address: address.into(),
        }
    }

    #[test]
    fn creating_a_token_remembers_it_unspent() {
        let mut ledger = Ledger::new();
        let response = ledger.run("create", 1_000, create(workload_grant(), 5_000));
        assert_eq!(response.outcome, Ok(Applied::JoinTokenCreated));
        assert_eq!(
            ledger.state.join_tokens.get(&HASH),
            Some(&JoinToken {
                grant: workload_grant(),
                expires_at_ms: 5_000,
                consumed_epoch: None,
            })
        );
        // Join tokens are not part of what verifiers hold.
        assert_eq!(ledger.state.revocation_epoch, 0);
    }

    #[test]
    fn create_retried_replays_the_first_answer() {
        let mut ledger = Ledger::new();
        let first = ledger.run("create", 1_000, create(workload_grant(), 5_000));
        let again = ledger.run("create", 1_100, create(workload_grant(), 5_000));
        assert!(again.duplicate);
        // Not refused as JoinTokenExists: the retry gets the first answer.
        assert_eq!(again.outcome, Ok(Applied::JoinTokenCreated));
        assert_eq!(again.log_index, first.log_index);
    }

    #[test]
    fn create_refusals() {
        let mut ledger = Ledger::new();
        for (id, expires_at_ms) in [("now", 1_000), ("past", 999)] {
            assert_eq!(
                ledger
                    .run(id, 1_000, create(workload_grant(), expires_at_ms))
                    .outcome,
                Err(Refusal::JoinTokenExpired { expires_at_ms })
            );
        }
        assert!(ledger.state.join_tokens.is_empty());
        ledger.run("create", 1_000, create(workload_grant(), 5_000));
        assert_eq!(
            ledger
                .run("create-again", 1_000, create(broker_grant(None), 9_000))
                .outcome,
            Err(Refusal::JoinTokenExists)
        );
        assert_eq!(ledger.state.join_tokens[&HASH].grant, workload_grant());
    }

    #[test]
    fn consuming_a_token_answers_its_grant_once() {
        let mut ledger = Ledger::new();
        ledger.run("create", 1_000, create(workload_grant(), 5_000));
        let used = ledger.run("use", 2_000, consume(JoinUse::Workload));
        assert_eq!(
            used.outcome,
            Ok(Applied::JoinTokenConsumed(workload_grant()))
        );
        assert_eq!(
            ledger.state.join_tokens[&HASH].consumed_epoch,
            Some(used.log_index)
        );
        assert_eq!(
            ledger
                .run("use-again", 2_100, consume(JoinUse::Workload))
                .outcome,
            Err(Refusal::JoinTokenSpent {
                epoch: used.log_index
            })
        );
        // Spent is reported ahead of expired.
        assert_eq!(
            ledger
                .run("use-late", 6_000, consume(JoinUse::Workload))
                .outcome,
            Err(Refusal::JoinTokenSpent {
                epoch: used.log_index
            })
        );
    }

    #[test]
    fn consume_retried_replays_the_first_answer() {
        let mut ledger = Ledger::new();
        ledger.run("create", 1_000, create(workload_grant(), 5_000));
        let first = ledger.run("use", 2_000, consume(JoinUse::Workload));
        let again = ledger.run("use", 2_100, consume(JoinUse::Workload));
        assert!(again.duplicate);
        // The retry is answered with the grant, not refused as spent.
        assert_eq!(
            again.outcome,
            Ok(Applied::JoinTokenConsumed(workload_grant()))
        );
        assert_eq!(again.log_index, first.log_index);
        assert_eq!(
            ledger.state.join_tokens[&HASH].consumed_epoch,
            Some(first.log_index)
        );
    }

    #[test]
    fn consuming_an_unknown_or_expired_token_is_refused() {
        let mut ledger = Ledger::new();
        assert_eq!(
            ledger
                .run("unknown", 1_000, consume(JoinUse::Workload))
                .outcome,
            Err(Refusal::JoinTokenUnknown)
        );
        ledger.run("create", 1_000, create(workload_grant(), 5_000));
        assert_eq!(
            ledger
                .run("late", 5_000, consume(JoinUse::Workload))
                .outcome,
            Err(Refusal::JoinTokenExpired {
                expires_at_ms: 5_000
            })
        );
        assert_eq!(ledger.state.join_tokens[&HASH].consumed_epoch, None);
    }

    #[test]
    fn a_token_is_refused_for_another_use() {
        let mut ledger = Ledger::new();
        ledger.run("create", 1_000, create(workload_grant(), 5_000));
        assert_eq!(
            ledger
                .run("as-broker", 1_100, consume(broker_at("b:1")))
                .outcome,
            Err(Refusal::JoinTokenWrongUse)
        );
        assert_eq!(ledger.state.join_tokens[&HASH].consumed_epoch, None);

        let mut ledger = Ledger::new();
        ledger.run("create", 1_000, create(broker_grant(None), 5_000));
        assert_eq!(
            ledger
                .run("as-workload", 1_100, consume(JoinUse::Workload))
                .outcome,
            Err(Refusal::JoinTokenWrongUse)
        );
        assert_eq!(ledger.state.join_tokens[&HASH].consumed_epoch, None);
    }

    #[test]
    fn a_broker_token_bound_to_an_address_accepts_only_that_address() {
        let mut ledger = Ledger::new();
        ledger.run("create", 1_000, create(broker_grant(Some("b:1")), 5_000));
        assert_eq!(
            ledger
                .run("wrong", 1_100, consume(broker_at("b:2")))
                .outcome,
            Err(Refusal::JoinTokenWrongAddress {
                expected: "b:1".into(),
                presented: "b:2".into(),
            })
        );
        assert_eq!(ledger.state.join_tokens[&HASH].consumed_epoch, None);
        assert_eq!(
            ledger
                .run("right", 1_200, consume(broker_at("b:1")))
                .outcome,
            Ok(Applied::JoinTokenConsumed(broker_grant(Some("b:1"))))
        );
    }

    #[test]
    fn an_unbound_broker_token_accepts_any_address() {
        let mut ledger = Ledger::new();
        ledger.run("create", 1_000, create(broker_grant(None), 5_000));
        assert_eq!(
            ledger
                .run("any", 1_100, consume(broker_at("anywhere:9")))
                .outcome,
            Ok(Applied::JoinTokenConsumed(broker_grant(None)))
        );
    }
}
