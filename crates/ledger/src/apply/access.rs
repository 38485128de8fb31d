//! Operators: role bindings, the access policy, and the control-plane
//! audit. An operator's command arrives as `Operate`, with how the leader
//! authorised it; applying it checks that the command stays within the
//! tenant it was authorised for, carries it out, and records the outcome.

use lapse_credential::TenantId;

use crate::command::{
    Applied, Authorization, Command, ControlEvent, JoinGrant, MAX_BINDINGS,
    MAX_JUSTIFICATION_BYTES, MAX_PRINCIPAL_BYTES, OperatorRole, Outcome, Refusal, RequestId,
    Revocation, policy_text_refusal,
};
use crate::state::{LedgerState, MAX_CONTROL_EVENTS, Policy};

impl LedgerState {
    /// `Operate`: an authorised operator's command.
    pub(super) fn operate(
        &mut self,
        epoch: u64,
        now_ms: u64,
        request_id: &RequestId,
        authorization: &Authorization,
        command: &Command,
    ) -> Outcome {
        let outcome = match self.check_scope(authorization, command) {
            Err(refusal) => Err(refusal),
            Ok(()) => match command {
                Command::OpenGrant {
                    role,
                    expires_at_ms,
                    reason,
                    needs_approval,
                } => self.open_grant(
                    epoch,
                    now_ms,
                    &authorization.principal,
                    role,
                    *expires_at_ms,
                    reason,
                    *needs_approval,
                ),
                Command::ApproveGrant { id } => {
                    self.approve_grant(now_ms, &authorization.principal, *id)
                }
                Command::CloseGrant { id } => self.close_grant(now_ms, *id),
                _ => self.execute_plain(epoch, now_ms, command),
            },
        };
        let said = match &outcome {
            Ok(applied) => Ok(format!("{applied:?}")),
            Err(refusal) => Err(refusal.to_string()),
        };
        self.push_event(epoch, now_ms, request_id, authorization, said);
        outcome
    }

    /// `RecordControl`: an audit event and nothing else.
    pub(super) fn record_control(
        &mut self,
        epoch: u64,
        now_ms: u64,
        request_id: &RequestId,
        authorization: &Authorization,
        outcome: &Result<String, String>,
    ) -> Outcome {
        self.push_event(epoch, now_ms, request_id, authorization, outcome.clone());
        Ok(Applied::ControlRecorded)
    }

    fn push_event(
        &mut self,
        epoch: u64,
        now_ms: u64,
        request_id: &RequestId,
        authorization: &Authorization,
        outcome: Result<String, String>,
    ) {
        let mut authorization = authorization.clone();
        cap(&mut authorization.principal, MAX_PRINCIPAL_BYTES);
        cap(&mut authorization.action, 64);
        if let Some(why) = &mut authorization.justification {
            cap(why, MAX_JUSTIFICATION_BYTES);
        }
        let outcome = match outcome {
            Ok(mut text) => {
                cap(&mut text, 512);
                Ok(text)
            }
            Err(mut text) => {
                cap(&mut text, 512);
                Err(text)
            }
        };
        while self.control_audit.len() >= MAX_CONTROL_EVENTS {
            self.control_audit.pop_first();
        }
        self.control_audit.insert(
            epoch,
            ControlEvent {
                at_ms: now_ms,
                request_id: request_id.clone(),
                authorization,
                outcome,
            },
        );
    }

    /// A command authorised for one tenant must touch that tenant only;
    /// one authorised cluster-wide may do anything.
    fn check_scope(&self, authorization: &Authorization, command: &Command) -> Result<(), Refusal> {
        let Some(tenant) = &authorization.tenant else {
            return Ok(());
        };
        let outside = |what: String| Refusal::OutsideTenant {
            tenant: tenant.to_string(),
            what,
        };
        match command {
            Command::Revoke(revocation) => self.revocation_in(tenant, revocation).map_err(outside),
            Command::RevokeMany(revocations) => revocations
                .iter()
                .try_for_each(|r| self.revocation_in(tenant, r))
                .map_err(outside),
            Command::SetPolicy { tenant: t, .. } if t == tenant => Ok(()),
            Command::SetPolicy { tenant: t, .. } => Err(outside(format!("tenant {t}'s policy"))),
            Command::CreateJoinToken {
                grant: JoinGrant::Workload { tenant: t, .. },
                ..
            } if t == tenant => Ok(()),
            Command::CreateJoinToken {
                grant: JoinGrant::Workload { tenant: t, .. },
                ..
            } => Err(outside(format!("a join token for tenant {t}"))),
            Command::CreateSsfReceiver {
                tenant: Some(t), ..
            } if t == tenant => Ok(()),
            Command::CreateSsfReceiver {
                tenant: Some(t), ..
            } => Err(outside(format!("an SSF receiver for tenant {t}"))),
            Command::RemoveSsfReceiver { name } => match self.ssf_receivers.get(name) {
                Some(receiver) if receiver.tenant.as_ref() == Some(tenant) => Ok(()),
                // Refused when applied, as unknown.
                None => Ok(()),
                Some(_) => Err(outside(format!("SSF receiver {name} of another scope"))),
            },
            other => Err(outside(format!("{} (a cluster-wide command)", name(other)))),
        }
    }

    /// Whether `revocation` touches only credentials of `tenant`; if not,
    /// what it touches.
    fn revocation_in(&self, tenant: &TenantId, revocation: &Revocation) -> Result<(), String> {
        match revocation {
            Revocation::Index(index) => match self.issued_tenants.get(&index.0) {
                Some(t) if t == tenant => Ok(()),
                Some(t) => Err(format!("status index {} (issued for tenant {t})", index.0)),
                None => Err(format!(
                    "status index {} (the ledger has no issuance record of it yet: brokers ship them within seconds of issuing, so retry shortly, or present the credential itself: `lapse revoke credential FILE`)",
                    index.0
                )),
            },
            Revocation::Subject { tenant: t, .. }
            | Revocation::Tenant { tenant: t, .. }
            | Revocation::Task { tenant: t, .. }
                if t == tenant =>
            {
                Ok(())
            }
            Revocation::Subject { tenant: t, .. }
            | Revocation::Tenant { tenant: t, .. }
            | Revocation::Task { tenant: t, .. } => Err(format!("a rule for tenant {t}")),
            // Whoever holds a leaked secret may have it refused anywhere: it
            // revokes that secret and nothing else.
            Revocation::SecretHash(_) => Ok(()),
            // Its signature proves its tenant.
            Revocation::Credential(token) => match self.presented(&token.0) {
                Ok(presented) if presented.tenant == *tenant => Ok(()),
                Ok(presented) => Err(format!(
                    "status index {} (the credential's tenant is {})",
                    presented.index.0, presented.tenant
                )),
                // Refused when applied, with the reason.
                Err(_) => Ok(()),
            },
            Revocation::Key(key) => Err(format!("signing key {key} (every tenant's credentials)")),
        }
    }

    /// `BindRole`.
    pub(super) fn bind_role(&mut self, principal: &str, role: &OperatorRole) -> Outcome {
        check_principal(principal)?;
        let bindings: usize = self.roles.values().map(|r| r.len()).sum();
        let held = self.roles.get(principal).is_some_and(|r| r.contains(role));
        if !held && bindings >= MAX_BINDINGS {
            return Err(Refusal::TooManyBindings { max: MAX_BINDINGS });
        }
        self.roles
            .entry(principal.to_owned())
            .or_default()
            .insert(role.clone());
        self.roles_version += 1;
        Ok(Applied::RoleBound {
            version: self.roles_version,
        })
    }

    /// `UnbindRole`.
    pub(super) fn unbind_role(&mut self, principal: &str, role: &OperatorRole) -> Outcome {
        let Some(roles) = self.roles.get_mut(principal) else {
            return Err(Refusal::NoSuchBinding(principal.to_owned()));
        };
        if !roles.remove(role) {
            return Err(Refusal::NoSuchBinding(principal.to_owned()));
        }
        if roles.is_empty() {
            self.roles.remove(principal);
        }
        self.roles_version += 1;
        Ok(Applied::RoleUnbound {
            version: self.roles_version,
        })
    }

    /// `SetAccessPolicy`.
    pub(super) fn set_access_policy(
        &mut self,
        epoch: u64,
        now_ms: u64,
        text: &str,
        expected_version: Option<u64>,
    ) -> Outcome {
        if let Some(refusal) = policy_text_refusal(text) {
            return Err(refusal);
        }
        let current = self.access_policy.as_ref().map_or(0, |p| p.version);
        if let Some(expected) = expected_version
            && expected != current
        {
            return Err(Refusal::AccessPolicyVersionMismatch { expected, current });
        }
        let version = current + 1;
        self.access_policy = Some(Policy {
            version,
            text: text.to_owned(),
            set_at_ms: now_ms,
            epoch,
        });
        Ok(Applied::AccessPolicySet { version })
    }

    /// The roles `principal` holds in the ledger.
    pub fn roles_of(&self, principal: &str) -> Vec<OperatorRole> {
        self.roles
            .get(principal)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn check_principal(principal: &str) -> Result<(), Refusal> {
    let ok = principal.len() <= MAX_PRINCIPAL_BYTES
        && matches!(principal.split_once(':'), Some(("operator" | "token", name))
            if !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
    if ok {
        Ok(())
    } else {
        Err(Refusal::NotAllowed(format!(
            "a role is bound to operator:<name> or token:<name> (letters, digits, . _ -; at most {MAX_PRINCIPAL_BYTES} bytes)"
        )))
    }
}

/// Cut `text` to at most `max` bytes, on a character boundary.
pub(super) fn cap(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// A command's name, for messages.
fn name(command: &Command) -> &'static str {
    match command {
        Command::Revoke(_) => "revoke",
        Command::RevokeMany(_) => "revoke many",
        Command::LeaseIndices { .. } => "lease",
        Command::RegisterKey { .. } => "register key",
        Command::RetireKey { .. } => "retire key",
        Command::CreateJoinToken { .. } => "create join token",
        Command::ConsumeJoinToken { .. } => "consume join token",
        Command::SetPolicy { .. } => "set policy",
        Command::RecordIssuances { .. } => "record issuances",
        Command::ConfirmLeadership => "confirm leadership",
        Command::Operate { .. } => "operate",
        Command::RecordControl { .. } => "record control",
        Command::BindRole { .. } => "bind role",
        Command::UnbindRole { .. } => "unbind role",
        Command::SetAccessPolicy { .. } => "set access policy",
        Command::OpenGrant { .. } => "open a break-glass grant",
        Command::ApproveGrant { .. } => "approve a break-glass grant",
        Command::CloseGrant { .. } => "close a break-glass grant",
        Command::CreateSsfReceiver { tenant: None, .. } => "an SSF receiver of every tenant",
        Command::CreateSsfReceiver { .. } => "create an SSF receiver",
        Command::RemoveSsfReceiver { .. } => "remove an SSF receiver",
        Command::PutSsfStream { .. } => "set an SSF stream",
        Command::DeleteSsfStream { .. } => "delete an SSF stream",
        Command::SetSsfStatus { .. } => "set an SSF stream's status",
        Command::AckSsf { .. } => "acknowledge SSF events",
    }
}

#[cfg(test)]
mod tests {
    use lapse_credential::StatusIndex;

    use super::super::testing::{Ledger, tenant};
    use crate::command::{
        Applied, Authorization, Command, Decision, IssuanceRecord, OperatorRole, Refusal,
        Revocation,
    };

    fn as_operator(tenant_scope: Option<&str>, command: Command) -> Command {
        Command::Operate {
            authorization: Authorization {
                principal: "operator:alice".into(),
                action: "revoke".into(),
                tenant: tenant_scope.map(tenant),
                bindings_version: 1,
                policy_version: 0,
                justification: Some("ticket 7".into()),
                grant: None,
            },
            command: Box::new(command),
        }
    }

    fn issued(ledger: &mut Ledger, index: u64, for_tenant: &str) {
        let record = IssuanceRecord {
            sequence: index,
            at_ms: 1_000,
            tenant: Some(tenant(for_tenant)),
            workload: None,
            index: Some(StatusIndex(index)),
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
        let shipped = ledger.run(
            &format!("ship-{index}"),
            1_000,
            Command::RecordIssuances {
                broker: 1,
                records: vec![record],
            },
        );
        assert!(shipped.outcome.is_ok(), "{shipped:?}");
    }

    #[test]
    fn a_tenant_scoped_revocation_reaches_only_its_tenants_indices_and_every_call_is_audited() {
        let mut ledger = Ledger::new();
        ledger.lease("lease", 1_000, 8);
        let base = ledger.state.window_base();
        issued(&mut ledger, base, "acme");
        issued(&mut ledger, base + 1, "beta");

        let own = ledger.run(
            "own",
            1_100,
            as_operator(
                Some("acme"),
                Command::Revoke(Revocation::Index(StatusIndex(base))),
            ),
        );
        assert!(
            matches!(own.outcome, Ok(Applied::Revoked { .. })),
            "{own:?}"
        );
        let other = ledger.run(
            "other",
            1_200,
            as_operator(
                Some("acme"),
                Command::Revoke(Revocation::Index(StatusIndex(base + 1))),
            ),
        );
        match other.outcome {
            Err(Refusal::OutsideTenant { tenant, what }) => {
                assert_eq!(tenant, "acme");
                assert!(what.contains("beta"), "{what}");
            }
            wrong => panic!("{wrong:?}"),
        }
        assert!(!ledger.state.revoked_indices.contains_key(&(base + 1)));
        // An index with no issuance record yet: refused, saying why.
        let unknown = ledger.run(
            "unknown",
            1_300,
            as_operator(
                Some("acme"),
                Command::Revoke(Revocation::Index(StatusIndex(base + 2))),
            ),
        );
        assert!(
            matches!(&unknown.outcome, Err(Refusal::OutsideTenant { what, .. }) if what.contains("no issuance record")),
            "{unknown:?}"
        );
        // A task rule is its tenant's.
        let own_task = ledger.run(
            "own-task",
            1_310,
            as_operator(
                Some("acme"),
                Command::Revoke(Revocation::Task {
                    tenant: tenant("acme"),
                    task: "run-1".into(),
                }),
            ),
        );
        assert!(
            matches!(own_task.outcome, Ok(Applied::Revoked { .. })),
            "{own_task:?}"
        );
        let other_task = ledger.run(
            "other-task",
            1_320,
            as_operator(
                Some("acme"),
                Command::Revoke(Revocation::Task {
                    tenant: tenant("beta"),
                    task: "run-1".into(),
                }),
            ),
        );
        assert!(
            matches!(&other_task.outcome, Err(Refusal::OutsideTenant { what, .. }) if what.contains("beta")),
            "{other_task:?}"
        );
        assert_eq!(ledger.state.task_rules.len(), 1);
        // Cluster-wide commands are outside any tenant.
        let key = ledger.run(
            "key",
            1_400,
            as_operator(
                Some("acme"),
                Command::Revoke(Revocation::Key("k1".parse().unwrap())),
            ),
        );
        assert!(
            matches!(key.outcome, Err(Refusal::OutsideTenant { .. })),
            "{key:?}"
        );
        // Every one of them is one audit event, with its outcome.
        let events: Vec<_> = ledger.state.control_audit.values().collect();
        assert_eq!(events.len(), 6);
        let outcomes: Vec<bool> = events.iter().map(|e| e.outcome.is_ok()).collect();
        assert_eq!(outcomes, [true, false, false, true, false, false]);
        assert!(
            events
                .iter()
                .all(|e| e.authorization.principal == "operator:alice"
                    && e.authorization.justification.as_deref() == Some("ticket 7"))
        );
        assert_eq!(events[1].request_id.to_string(), "other");
    }

    /// A credential of `tenant` at `index`, signed by `key`.
    fn credential(key: &lapse_credential::SigningKeyPair, tenant: &str, index: u64) -> String {
        use lapse_credential::{Claims, StatusClaim, StatusListRef, TenantId, WorkloadId};
        key.sign(&Claims {
            iss: "lapse".into(),
            sub: WorkloadId::new("spiffe://x.example/app").unwrap(),
            aud: vec!["billing".into()],
            iat: 1,
            nbf: 1,
            exp: 2,
            jti: "j".into(),
            tenant: TenantId::new(tenant).unwrap(),
            scopes: vec![],
            status: StatusClaim {
                status_list: StatusListRef {
                    idx: index,
                    uri: "u".into(),
                },
            },
            cnf: None,
            chain: None,
            agent: Default::default(),
        })
        .unwrap()
    }

    #[test]
    fn a_presented_credential_proves_its_tenant_before_any_issuance_record() {
        use crate::command::PresentedToken;
        use lapse_credential::{KeyId, SigningKeyPair};
        let mut ledger = Ledger::new();
        ledger.lease("lease", 1_000, 8);
        let base = ledger.state.window_base();
        let key = SigningKeyPair::from_seed(KeyId::new("n1-a").unwrap(), [3; 32]);
        let registered = ledger.run(
            "register",
            1_000,
            Command::RegisterKey {
                key_id: KeyId::new("n1-a").unwrap(),
                broker: 1,
                public_key: key.public_key().to_vec(),
                not_before_ms: 0,
                not_after_ms: 1_000_000,
            },
        );
        assert!(registered.outcome.is_ok(), "{registered:?}");
        let present =
            |token: String| Command::Revoke(Revocation::Credential(PresentedToken(token)));

        // beta's credential, presented by acme's operator: refused.
        let beta = ledger.run(
            "beta",
            1_100,
            as_operator(Some("acme"), present(credential(&key, "beta", base + 1))),
        );
        assert!(
            matches!(&beta.outcome, Err(Refusal::OutsideTenant { what, .. }) if what.contains("tenant is beta")),
            "{beta:?}"
        );
        // Signed by a key the cluster never registered: refused.
        let stranger = SigningKeyPair::from_seed(KeyId::new("n1-a").unwrap(), [4; 32]);
        let forged = ledger.run(
            "forged",
            1_150,
            as_operator(Some("acme"), present(credential(&stranger, "acme", base))),
        );
        assert!(
            matches!(&forged.outcome, Err(Refusal::BadCredential(why)) if why.contains("signature")),
            "{forged:?}"
        );
        assert!(ledger.state.revoked_indices.is_empty());
        // acme's own, with no issuance record shipped: revoked.
        let own = ledger.run(
            "own",
            1_200,
            as_operator(Some("acme"), present(credential(&key, "acme", base))),
        );
        assert!(
            matches!(own.outcome, Ok(Applied::Revoked { .. })),
            "{own:?}"
        );
        assert!(ledger.state.revoked_indices.contains_key(&base));
        // The token never shows in debug output.
        let token = credential(&key, "acme", base);
        let shown = format!("{:?}", present(token.clone()));
        assert!(!shown.contains(&token[..20]), "{shown}");
        assert!(shown.contains("sha256:"), "{shown}");
    }

    #[test]
    fn roles_change_only_through_an_authorised_operator_and_are_versioned() {
        let mut ledger = Ledger::new();
        let bare = ledger.run(
            "bare",
            1_000,
            Command::BindRole {
                principal: "operator:eve".into(),
                role: OperatorRole::ClusterAdmin,
            },
        );
        assert!(
            matches!(bare.outcome, Err(Refusal::NotAllowed(_))),
            "{bare:?}"
        );
        assert!(ledger.state.roles.is_empty());

        let bind = |principal: &str, role| {
            as_operator(
                None,
                Command::BindRole {
                    principal: principal.into(),
                    role,
                },
            )
        };
        let bound = ledger.run(
            "b1",
            1_000,
            bind("operator:bob", OperatorRole::Revoker(tenant("acme"))),
        );
        assert_eq!(bound.outcome, Ok(Applied::RoleBound { version: 1 }));
        assert_eq!(
            ledger.state.roles_of("operator:bob"),
            vec![OperatorRole::Revoker(tenant("acme"))]
        );
        let bad = ledger.run("b2", 1_000, bind("alice", OperatorRole::ClusterAdmin));
        assert!(
            matches!(bad.outcome, Err(Refusal::NotAllowed(_))),
            "{bad:?}"
        );
        // A tenant-scoped operator cannot grant roles.
        let scoped = ledger.run(
            "b3",
            1_000,
            as_operator(
                Some("acme"),
                Command::BindRole {
                    principal: "operator:bob".into(),
                    role: OperatorRole::ClusterAdmin,
                },
            ),
        );
        assert!(
            matches!(scoped.outcome, Err(Refusal::OutsideTenant { .. })),
            "{scoped:?}"
        );
        let unbound = ledger.run(
            "u1",
            1_000,
            as_operator(
                None,
                Command::UnbindRole {
                    principal: "operator:bob".into(),
                    role: OperatorRole::Revoker(tenant("acme")),
                },
            ),
        );
        assert_eq!(unbound.outcome, Ok(Applied::RoleUnbound { version: 2 }));
        assert!(ledger.state.roles.is_empty());
    }

    #[test]
    fn a_grant_gives_its_role_from_approval_until_it_expires_or_closes() {
        let mut ledger = Ledger::new();
        let open = ledger.run(
            "open",
            1_000,
            as_operator(
                None,
                Command::OpenGrant {
                    role: OperatorRole::ClusterAdmin,
                    expires_at_ms: 61_000,
                    reason: "pager 42: the admins are unreachable".into(),
                    needs_approval: true,
                },
            ),
        );
        let Ok(Applied::GrantOpened { id }) = open.outcome else {
            panic!("{open:?}");
        };
        assert!(ledger.state.grants_of("operator:alice", 2_000).is_empty());
        // The operator it is for cannot approve it; another can.
        let own = ledger.run(
            "own",
            2_000,
            as_operator(None, Command::ApproveGrant { id }),
        );
        assert!(
            matches!(own.outcome, Err(Refusal::BadGrant { .. })),
            "{own:?}"
        );
        let mut by_bob = as_operator(None, Command::ApproveGrant { id });
        if let Command::Operate { authorization, .. } = &mut by_bob {
            authorization.principal = "operator:bob".into();
        }
        let approved = ledger.run("approve", 3_000, by_bob);
        assert_eq!(approved.outcome, Ok(Applied::GrantApproved));
        assert_eq!(
            ledger.state.grants_of("operator:alice", 3_000),
            vec![(id, OperatorRole::ClusterAdmin)]
        );
        assert_eq!(ledger.state.grants_of("operator:alice", 60_999).len(), 1);
        assert!(ledger.state.grants_of("operator:alice", 61_000).is_empty());
        assert!(ledger.state.grants_of("operator:bob", 3_000).is_empty());
        let closed = ledger.run(
            "close",
            4_000,
            as_operator(None, Command::CloseGrant { id }),
        );
        assert_eq!(closed.outcome, Ok(Applied::GrantClosed));
        assert!(ledger.state.grants_of("operator:alice", 4_001).is_empty());
        // Too long, or without a reason: refused.
        for (when, reason) in [
            (1_000 + crate::command::MAX_GRANT_MS + 10_000, "x"),
            (9_000, " "),
        ] {
            let refused = ledger.run(
                &format!("bad-{when}"),
                5_000,
                as_operator(
                    None,
                    Command::OpenGrant {
                        role: OperatorRole::ClusterAdmin,
                        expires_at_ms: when,
                        reason: reason.into(),
                        needs_approval: false,
                    },
                ),
            );
            assert!(
                matches!(refused.outcome, Err(Refusal::BadGrant { .. })),
                "{refused:?}"
            );
        }
    }
}
