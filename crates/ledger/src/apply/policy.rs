//! Issuance policy: `SetPolicy` replaces a tenant's policy text, optionally
//! guarded by the version the writer last read.

use lapse_credential::TenantId;

use crate::command::{Applied, Outcome, Refusal, policy_text_refusal};
use crate::state::{LedgerState, MAX_POLICY_HISTORY, Policy};

impl LedgerState {
    /// `SetPolicy`: store `text` as the tenant's next policy version.
    pub(super) fn set_policy(
        &mut self,
        epoch: u64,
        now_ms: u64,
        tenant: &TenantId,
        text: &str,
        expected_version: Option<u64>,
    ) -> Outcome {
        if let Some(refusal) = policy_text_refusal(text) {
            return Err(refusal);
        }
        let current = self.policies.get(tenant).map(|p| p.version).unwrap_or(0);
        if let Some(expected) = expected_version
            && expected != current
        {
            return Err(Refusal::PolicyVersionMismatch { expected, current });
        }
        let version = current + 1;
        let policy = Policy {
            version,
            text: text.to_owned(),
            set_at_ms: now_ms,
            epoch,
        };
        self.policy_history
            .insert((tenant.clone(), version), policy.clone());
        let kept = self
            .policy_history
            .range((tenant.clone(), 0)..=(tenant.clone(), u64::MAX))
            .count();
        if kept > MAX_POLICY_HISTORY {
            let oldest: Vec<(TenantId, u64)> = self
                .policy_history
                .range((tenant.clone(), 0)..=(tenant.clone(), u64::MAX))
                .take(kept - MAX_POLICY_HISTORY)
                .map(|(key, _)| key.clone())
                .collect();
            for key in oldest {
                self.policy_history.remove(&key);
            }
        }
        self.policies.insert(tenant.clone(), policy);
        Ok(Applied::PolicySet { version })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Ledger, tenant};
    use crate::command::{Applied, Command, MAX_POLICY_BYTES, Refusal};
    use crate::state::Policy;

    fn set(name: &str, text: &str, expected_version: Option<u64>) -> Command {
        Command::SetPolicy {
            tenant: tenant(name),
            text: text.into(),
            expected_version,
        }
    }

    #[test]
    fn each_set_is_the_next_version() {
        let mut ledger = Ledger::new();
        assert_eq!(
            ledger
                .run("p1", 1_000, set("acme", "permit-all", None))
                .outcome,
            Ok(Applied::PolicySet { version: 1 })
        );
        let second = ledger.run("p2", 2_000, set("acme", "forbid-all", Some(1)));
        assert_eq!(second.outcome, Ok(Applied::PolicySet { version: 2 }));
        assert_eq!(
            ledger.state.policies.get(&tenant("acme")),
            Some(&Policy {
                version: 2,
                text: "forbid-all".into(),
                set_at_ms: 2_000,
                epoch: second.log_index,
            })
        );
        // Versions are per tenant; a tenant with no policy is at version 0.
        assert_eq!(
            ledger
                .run("other", 2_000, set("globex", "x", Some(0)))
                .outcome,
            Ok(Applied::PolicySet { version: 1 })
        );
        // Policies are not part of what verifiers hold.
        assert_eq!(ledger.state.revocation_epoch, 0);
    }

    #[test]
    fn the_last_versions_are_kept_per_tenant() {
        let mut ledger = Ledger::new();
        let total = super::MAX_POLICY_HISTORY as u64 + 3;
        for version in 1..=total {
            ledger.run(
                &format!("p{version}"),
                1_000 + version,
                set("acme", &format!("v{version}"), None),
            );
        }
        ledger.run("g1", 5_000, set("globex", "g1", None));
        let kept: Vec<u64> = ledger
            .state
            .policy_history
            .keys()
            .filter(|(t, _)| *t == tenant("acme"))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(kept, (4..=total).collect::<Vec<_>>());
        assert_eq!(ledger.state.policy_history[&(tenant("acme"), 7)].text, "v7");
        assert_eq!(
            ledger.state.policy_history[&(tenant("globex"), 1)].text,
            "g1"
        );
    }

    #[test]
    fn set_retried_replays_the_first_answer() {
        let mut ledger = Ledger::new();
        let first = ledger.run("p1", 1_000, set("acme", "permit-all", None));
        let again = ledger.run("p1", 1_100, set("acme", "permit-all", None));
        assert!(again.duplicate);
        assert_eq!(again.outcome, Ok(Applied::PolicySet { version: 1 }));
        assert_eq!(again.log_index, first.log_index);
        assert_eq!(ledger.state.policies[&tenant("acme")].version, 1);
    }

    #[test]
    fn a_stale_expected_version_is_refused() {
        let mut ledger = Ledger::new();
        ledger.run("p1", 1_000, set("acme", "v1", None));
        ledger.run("p2", 1_000, set("acme", "v2", None));
        for (id, expected) in [("stale", 1), ("ahead", 3)] {
            assert_eq!(
                ledger
                    .run(id, 1_100, set("acme", "v3", Some(expected)))
                    .outcome,
                Err(Refusal::PolicyVersionMismatch {
                    expected,
                    current: 2
                })
            );
        }
        assert_eq!(ledger.state.policies[&tenant("acme")].text, "v2");
    }

    #[test]
    fn an_oversized_policy_is_refused() {
        let mut ledger = Ledger::new();
        let largest = "x".repeat(MAX_POLICY_BYTES);
        assert_eq!(
            ledger
                .run("largest", 1_000, set("acme", &largest, None))
                .outcome,
            Ok(Applied::PolicySet { version: 1 })
        );
        let too_large = "x".repeat(MAX_POLICY_BYTES + 1);
        assert_eq!(
            ledger
                .run("too-large", 1_000, set("acme", &too_large, Some(1)))
                .outcome,
            Err(Refusal::PolicyTooLarge {
                length: MAX_POLICY_BYTES + 1,
                max: MAX_POLICY_BYTES
            })
        );
        assert_eq!(ledger.state.policies[&tenant("acme")].version, 1);
    }

    #[test]
    fn a_policy_nested_too_deeply_or_empty_is_refused_and_changes_nothing() {
        use crate::command::{MAX_POLICY_NESTING, policy_nesting};
        let mut ledger = Ledger::new();
        ledger.run("v1", 1_000, set("acme", "v1", None));
        let deep = format!(
            "permit(principal, action, resource) when {{ {}true{} }};",
            "(".repeat(300),
            ")".repeat(300)
        );
        assert_eq!(
            ledger.run("deep", 1_000, set("acme", &deep, None)).outcome,
            Err(Refusal::PolicyTooDeep {
                depth: 301,
                max: MAX_POLICY_NESTING
            })
        );
        for (id, empty) in [("empty", ""), ("blank", " \n\t ")] {
            assert_eq!(
                ledger.run(id, 1_000, set("acme", empty, None)).outcome,
                Err(Refusal::PolicyEmpty)
            );
        }
        assert_eq!(ledger.state.policies[&tenant("acme")].text, "v1");
        // Brackets in strings and comments are not nesting.
        let quoted = format!(
            "// {}\npermit(principal, action, resource) when {{ \"{}\\\"\" == \"\" }};",
            "(".repeat(100),
            "[".repeat(100)
        );
        assert_eq!(policy_nesting(&quoted), 1);
        assert_eq!(policy_nesting("))) ((x))"), 2);
    }
}
