//! What each command does to the ledger: a dispatcher over one module per
//! command family. A family either changes the state and answers with an
//! [`Applied`](crate::Applied), or changes nothing and answers with a
//! [`Refusal`](crate::Refusal).
//!
//! Request-id deduplication, cluster time and pruning are handled before a
//! command gets here, by [`LedgerState::apply`].

mod access;
mod audit;
mod grants;
mod join;
mod keys;
mod lease;
mod policy;
mod revoke;
mod ssf;
#[cfg(test)]
mod testing;

use crate::command::{Applied, Command, Outcome, Refusal, RequestId};
use crate::state::LedgerState;

impl LedgerState {
    /// Carry out `command` as the entry at log index `epoch`, at cluster
    /// time `now_ms`.
    pub(crate) fn execute(
        &mut self,
        epoch: u64,
        now_ms: u64,
        request_id: &RequestId,
        command: &Command,
    ) -> Outcome {
        match command {
            Command::Operate {
                authorization,
                command,
            } => self.operate(epoch, now_ms, request_id, authorization, command),
            Command::RecordControl {
                authorization,
                outcome,
            } => self.record_control(epoch, now_ms, request_id, authorization, outcome),
            Command::BindRole { .. }
            | Command::UnbindRole { .. }
            | Command::SetAccessPolicy { .. } => Err(Refusal::NotAllowed(
                "role and access policy changes are made by an authorised operator".into(),
            )),
            _ => self.execute_plain(epoch, now_ms, command),
        }
    }

    /// A command that needs no operator: what brokers propose themselves,
    /// and the inside of an authorised `Operate`.
    pub(crate) fn execute_plain(&mut self, epoch: u64, now_ms: u64, command: &Command) -> Outcome {
        match command {
            Command::Revoke(revocation) => self.revoke_one(epoch, now_ms, revocation),
            Command::RevokeMany(revocations) => self.revoke_many(epoch, now_ms, revocations),
            Command::LeaseIndices {
                broker,
                count,
                lease_ms,
            } => self.lease_indices(now_ms, *broker, *count, *lease_ms),
            Command::RegisterKey {
                key_id,
                broker,
                public_key,
                not_before_ms,
                not_after_ms,
            } => self.register_key(
                epoch,
                key_id,
                *broker,
                public_key,
                *not_before_ms,
                *not_after_ms,
            ),
            Command::RetireKey { key_id } => self.retire_key(epoch, now_ms, key_id),
            Command::CreateJoinToken {
                token_hash,
                grant,
                expires_at_ms,
            } => self.create_join_token(now_ms, token_hash, grant, *expires_at_ms),
            Command::ConsumeJoinToken {
                token_hash,
                presented,
            } => self.consume_join_token(epoch, now_ms, token_hash, presented),
            Command::SetPolicy {
                tenant,
                text,
                expected_version,
            } => self.set_policy(epoch, now_ms, tenant, text, *expected_version),
            Command::RecordIssuances { broker, records } => {
                self.record_issuances(*broker, records.clone())
            }
            // Changes nothing: the leader needed only the entry's replication.
            Command::ConfirmLeadership => Ok(Applied::LeadershipConfirmed),
            Command::BindRole { principal, role } => self.bind_role(principal, role),
            Command::UnbindRole { principal, role } => self.unbind_role(principal, role),
            Command::SetAccessPolicy {
                text,
                expected_version,
            } => self.set_access_policy(epoch, now_ms, text, *expected_version),
            // Break-glass commands need the operator; `operate` carries
            // them out.
            Command::OpenGrant { .. }
            | Command::ApproveGrant { .. }
            | Command::CloseGrant { .. } => Err(Refusal::NotAllowed(
                "break-glass grants are opened, approved and closed by an operator".into(),
            )),
            Command::CreateSsfReceiver {
                name,
                token_hash,
                tenant,
            } => self.create_ssf_receiver(epoch, now_ms, name, token_hash, tenant),
            Command::RemoveSsfReceiver { name } => self.remove_ssf_receiver(name),
            Command::PutSsfStream {
                receiver,
                stream_id,
                config,
            } => self.put_ssf_stream(epoch, now_ms, receiver, stream_id.as_deref(), config),
            Command::DeleteSsfStream {
                receiver,
                stream_id,
            } => self.delete_ssf_stream(receiver, stream_id),
            Command::SetSsfStatus {
                receiver,
                stream_id,
                status,
                reason,
            } => self.set_ssf_status(
                now_ms,
                receiver.as_deref(),
                stream_id,
                *status,
                reason.as_deref(),
            ),
            Command::AckSsf { stream_id, up_to } => self.ack_ssf(stream_id, *up_to),
            Command::Operate { .. } | Command::RecordControl { .. } => Err(Refusal::NotAllowed(
                "an operator's command cannot hold another".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Ledger;
    use crate::{Applied, Command, Refusal, Revocation};

    #[test]
    fn confirm_leadership_changes_nothing_but_the_applied_index() {
        let mut ledger = Ledger::new();
        ledger.lease("lease", 1_000, 4);
        let epoch_before = ledger.state.revocation_epoch;
        let next_index_before = ledger.state.next_index;

        let response = ledger.run("confirm", 1_100, Command::ConfirmLeadership);
        assert_eq!(response.outcome, Ok(Applied::LeadershipConfirmed));
        assert!(!response.duplicate);
        assert_eq!(response.applied_at_ms, 1_100);
        assert_eq!(ledger.state.last_applied_index, Some(response.log_index));
        assert_eq!(ledger.state.revocation_epoch, epoch_before);
        assert_eq!(ledger.state.next_index, next_index_before);
    }

    #[test]
    fn confirm_leadership_retried_replays_the_first_answer() {
        let mut ledger = Ledger::new();
        let first = ledger.run("confirm", 1_000, Command::ConfirmLeadership);
        let again = ledger.run("confirm", 1_200, Command::ConfirmLeadership);
        assert!(again.duplicate);
        assert_eq!(again.outcome, Ok(Applied::LeadershipConfirmed));
        assert_eq!(
            (again.log_index, again.applied_at_ms),
            (first.log_index, first.applied_at_ms)
        );
        assert_eq!(ledger.state.remembered_requests(), 1);
    }

    #[test]
    fn a_request_id_reused_for_another_command_is_refused() {
        let mut ledger = Ledger::new();
        let first = ledger.run("same-id", 1_000, Command::ConfirmLeadership);
        let other = ledger.run(
            "same-id",
            1_100,
            Command::Revoke(Revocation::SecretHash([7; 32])),
        );
        assert!(other.duplicate);
        assert_eq!(other.outcome, Err(Refusal::RequestIdReused));
        assert_eq!(other.log_index, first.log_index);
        assert!(ledger.state.revoked_secrets.is_empty());
    }
}
