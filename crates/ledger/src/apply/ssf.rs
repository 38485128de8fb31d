//! Shared Signals: receivers, streams, acknowledgements, and the event
//! each applied revocation adds to the bounded event log.

use lapse_credential::TenantId;

use crate::command::{Applied, Outcome, Refusal, Sha256};
use crate::ssf::{
    MAX_SSF_EVENTS, MAX_SSF_RECEIVERS, MAX_SSF_STREAMS, MAX_SSF_TEXT_BYTES, SsfEvent, SsfReceiver,
    SsfStatus, SsfStream, SsfStreamConfig, SsfTarget, config_problem, name_problem,
};
use crate::state::LedgerState;

impl LedgerState {
    /// Add the event of a revocation applied at `epoch`.
    pub(super) fn record_ssf_event(
        &mut self,
        epoch: u64,
        now_ms: u64,
        tenant: Option<TenantId>,
        target: SsfTarget,
    ) {
        while self.ssf_events.len() >= MAX_SSF_EVENTS {
            self.ssf_events.pop_first();
        }
        let seq = self.ssf_next_seq;
        self.ssf_next_seq += 1;
        self.ssf_events.insert(
            seq,
            SsfEvent {
                epoch,
                at_ms: now_ms,
                tenant,
                target,
            },
        );
    }

    /// The sequence number of the last event recorded (0 before any).
    pub fn ssf_last_seq(&self) -> u64 {
        self.ssf_next_seq - 1
    }

    /// How many events after `stream`'s position were pruned before it
    /// took them (the log keeps the last [`crate::ssf::MAX_SSF_EVENTS`],
    /// none older than the audit retention): at most that many of them
    /// were for it, and it will never get them.
    pub fn ssf_missed(&self, stream: &crate::ssf::SsfStream) -> u64 {
        let first = self
            .ssf_events
            .first_key_value()
            .map_or(self.ssf_next_seq, |(seq, _)| *seq);
        first.saturating_sub(stream.acked.saturating_add(1))
    }

    /// `CreateSsfReceiver`.
    pub(super) fn create_ssf_receiver(
        &mut self,
        epoch: u64,
        now_ms: u64,
        name: &str,
        token_hash: &Sha256,
        tenant: &Option<TenantId>,
    ) -> Outcome {
        if let Some(problem) = name_problem(name) {
            return Err(Refusal::SsfBadRequest(problem));
        }
        if self.ssf_receivers.contains_key(name)
            || self
                .ssf_receivers
                .values()
                .any(|r| r.token_hash == *token_hash)
        {
            return Err(Refusal::SsfReceiverExists(name.to_owned()));
        }
        if self.ssf_receivers.len() >= MAX_SSF_RECEIVERS {
            return Err(Refusal::SsfFull {
                what: "SSF receivers".into(),
                max: MAX_SSF_RECEIVERS,
            });
        }
        self.ssf_receivers.insert(
            name.to_owned(),
            SsfReceiver {
                token_hash: *token_hash,
                tenant: tenant.clone(),
                created_at_ms: now_ms,
                created_epoch: epoch,
            },
        );
        Ok(Applied::SsfReceiverCreated)
    }

    /// `RemoveSsfReceiver`: the receiver and every stream of it.
    pub(super) fn remove_ssf_receiver(&mut self, name: &str) -> Outcome {
        if self.ssf_receivers.remove(name).is_none() {
            return Err(Refusal::SsfUnknownReceiver(name.to_owned()));
        }
        let before = self.ssf_streams.len();
        self.ssf_streams.retain(|_, stream| stream.receiver != name);
        Ok(Applied::SsfReceiverRemoved {
            streams: before - self.ssf_streams.len(),
        })
    }

    /// `PutSsfStream`: a new stream starts after the last event recorded;
    /// a replaced configuration keeps the stream's position and status.
    pub(super) fn put_ssf_stream(
        &mut self,
        epoch: u64,
        now_ms: u64,
        receiver: &str,
        stream_id: Option<&str>,
        config: &SsfStreamConfig,
    ) -> Outcome {
        if !self.ssf_receivers.contains_key(receiver) {
            return Err(Refusal::SsfUnknownReceiver(receiver.to_owned()));
        }
        if let Some(problem) = config_problem(config) {
            return Err(Refusal::SsfBadRequest(problem));
        }
        match stream_id {
            Some(id) => {
                let stream = self.own_stream(receiver, id)?;
                stream.config = config.clone();
                stream.updated_at_ms = now_ms;
                Ok(Applied::SsfStreamSet {
                    stream_id: id.to_owned(),
                })
            }
            None => {
                if self.ssf_streams.len() >= MAX_SSF_STREAMS {
                    return Err(Refusal::SsfFull {
                        what: "SSF streams".into(),
                        max: MAX_SSF_STREAMS,
                    });
                }
                let id = format!("s{epoch}");
                let acked = self.ssf_last_seq();
                self.ssf_streams.insert(
                    id.clone(),
                    SsfStream {
                        receiver: receiver.to_owned(),
                        config: config.clone(),
                        status: SsfStatus::Enabled,
                        reason: None,
                        acked,
                        created_epoch: epoch,
                        updated_at_ms: now_ms,
                    },
                );
                Ok(Applied::SsfStreamSet { stream_id: id })
            }
        }
    }

    /// `DeleteSsfStream`.
    pub(super) fn delete_ssf_stream(&mut self, receiver: &str, stream_id: &str) -> Outcome {
        self.own_stream(receiver, stream_id)?;
        self.ssf_streams.remove(stream_id);
        Ok(Applied::SsfStreamDeleted)
    }

    /// `SetSsfStatus`. A disabled stream keeps no events: enabling it again
    /// starts it after the last event recorded.
    pub(super) fn set_ssf_status(
        &mut self,
        now_ms: u64,
        receiver: Option<&str>,
        stream_id: &str,
        status: SsfStatus,
        reason: Option<&str>,
    ) -> Outcome {
        if let Some(reason) = reason
            && reason.len() > MAX_SSF_TEXT_BYTES
        {
            return Err(Refusal::SsfBadRequest(format!(
                "reason is {} bytes; at most {MAX_SSF_TEXT_BYTES}",
                reason.len()
            )));
        }
        let last = self.ssf_last_seq();
        let stream = match receiver {
            Some(receiver) => self.own_stream(receiver, stream_id)?,
            None => self
                .ssf_streams
                .get_mut(stream_id)
                .ok_or_else(|| Refusal::SsfUnknownStream(stream_id.to_owned()))?,
        };
        if stream.status == SsfStatus::Disabled || status == SsfStatus::Disabled {
            stream.acked = last;
        }
        stream.status = status;
        stream.reason = reason.map(str::to_owned);
        stream.updated_at_ms = now_ms;
        Ok(Applied::SsfStatusSet)
    }

    /// `AckSsf`: the position moves forward only, never past the last event.
    pub(super) fn ack_ssf(&mut self, stream_id: &str, up_to: u64) -> Outcome {
        let last = self.ssf_last_seq();
        let stream = self
            .ssf_streams
            .get_mut(stream_id)
            .ok_or_else(|| Refusal::SsfUnknownStream(stream_id.to_owned()))?;
        if up_to > last {
            return Err(Refusal::SsfAckBeyond { up_to, last });
        }
        stream.acked = stream.acked.max(up_to);
        Ok(Applied::SsfAcked {
            acked: stream.acked,
        })
    }

    fn own_stream(&mut self, receiver: &str, stream_id: &str) -> Result<&mut SsfStream, Refusal> {
        self.ssf_streams
            .get_mut(stream_id)
            .filter(|stream| stream.receiver == receiver)
            .ok_or_else(|| Refusal::SsfUnknownStream(stream_id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use lapse_credential::StatusIndex;

    use super::super::testing::{Ledger, tenant, workload};
    use crate::command::{Applied, Command, Refusal, Revocation};
    use crate::ssf::{
        CREDENTIAL_CHANGE, SESSION_REVOKED, SsfDelivery, SsfSecret, SsfStatus, SsfStreamConfig,
        SsfTarget,
    };

    fn receiver(name: &str, scope: Option<&str>) -> Command {
        Command::CreateSsfReceiver {
            name: name.into(),
            token_hash: [name.len() as u8; 32],
            tenant: scope.map(tenant),
        }
    }

    fn poll_config() -> SsfStreamConfig {
        SsfStreamConfig {
            audiences: vec!["https://rx.example".into()],
            events_requested: vec![SESSION_REVOKED.into(), CREDENTIAL_CHANGE.into()],
            delivery: SsfDelivery::Poll,
            description: None,
        }
    }

    fn new_stream(ledger: &mut Ledger, id: &str, receiver: &str) -> String {
        let response = ledger.run(
            id,
            1_000,
            Command::PutSsfStream {
                receiver: receiver.into(),
                stream_id: None,
                config: poll_config(),
            },
        );
        match response.outcome {
            Ok(Applied::SsfStreamSet { stream_id }) => stream_id,
            other => panic!("stream refused: {other:?}"),
        }
    }

    #[test]
    fn every_kind_of_revocation_adds_one_event_in_log_order() {
        let mut ledger = Ledger::new();
        ledger.lease("lease", 1_000, 4);
        ledger.run(
            "subject",
            1_100,
            Command::Revoke(Revocation::Subject {
                tenant: tenant("acme"),
                subject: workload("api"),
                issued_before_ms: None,
            }),
        );
        ledger.run(
            "many",
            1_200,
            Command::RevokeMany(vec![
                Revocation::Index(StatusIndex(1)),
                Revocation::Index(StatusIndex(99)), // refused: no event
                Revocation::Task {
                    tenant: tenant("acme"),
                    task: "t-1".into(),
                },
                Revocation::Tenant {
                    tenant: tenant("beta"),
                    issued_before_ms: None,
                },
                Revocation::SecretHash([9; 32]),
            ]),
        );
        let events: Vec<_> = ledger.state.ssf_events.iter().collect();
        assert_eq!(events.len(), 5);
        assert_eq!(
            events.iter().map(|(seq, _)| **seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(events[0].1.epoch, 2);
        assert_eq!(events[0].1.tenant, Some(tenant("acme")));
        assert!(matches!(events[0].1.target, SsfTarget::Subject { .. }));
        assert_eq!(events[1].1.target, SsfTarget::Index(1));
        assert_eq!(events[1].1.tenant, None, "no issuance record of index 1");
        assert_eq!(events[2].1.target, SsfTarget::Task("t-1".into()));
        assert_eq!(
            events[3].1.target,
            SsfTarget::Tenant {
                issued_before_ms: 1_200
            }
        );
        assert_eq!(events[4].1.target.event_type(), CREDENTIAL_CHANGE);
        assert!(events[1..].iter().all(|(_, e)| e.epoch == 3));
        assert_eq!(ledger.state.ssf_last_seq(), 5);
    }

    #[test]
    fn a_stream_starts_after_the_last_event_and_acks_only_move_forward() {
        let mut ledger = Ledger::new();
        ledger.run(
            "secret",
            1_000,
            Command::Revoke(Revocation::SecretHash([1; 32])),
        );
        ledger.run("rx", 1_000, receiver("rx", None));
        let stream = new_stream(&mut ledger, "put", "rx");
        assert_eq!(ledger.state.ssf_streams[&stream].acked, 1);
        ledger.run(
            "s2",
            1_100,
            Command::Revoke(Revocation::SecretHash([2; 32])),
        );
        ledger.run(
            "s3",
            1_100,
            Command::Revoke(Revocation::SecretHash([3; 32])),
        );
        let ack = |up_to| Command::AckSsf {
            stream_id: stream.clone(),
            up_to,
        };
        assert_eq!(
            ledger.run("a3", 1_200, ack(3)).outcome,
            Ok(Applied::SsfAcked { acked: 3 })
        );
        assert_eq!(
            ledger.run("a2", 1_200, ack(2)).outcome,
            Ok(Applied::SsfAcked { acked: 3 })
        );
        assert_eq!(
            ledger.run("a9", 1_200, ack(9)).outcome,
            Err(Refusal::SsfAckBeyond { up_to: 9, last: 3 })
        );
        assert_eq!(ledger.state.ssf_streams[&stream].acked, 3);
    }

    #[test]
    fn streams_belong_to_their_receiver_and_leave_with_it() {
        let mut ledger = Ledger::new();
        ledger.run("rx", 1_000, receiver("rx", Some("acme")));
        ledger.run("other", 1_000, receiver("other-rx", None));
        let stream = new_stream(&mut ledger, "put", "rx");
        let delete = |who: &str| Command::DeleteSsfStream {
            receiver: who.into(),
            stream_id: stream.clone(),
        };
        assert_eq!(
            ledger.run("steal", 1_100, delete("other-rx")).outcome,
            Err(Refusal::SsfUnknownStream(stream.clone()))
        );
        let pause = Command::SetSsfStatus {
            receiver: Some("other-rx".into()),
            stream_id: stream.clone(),
            status: SsfStatus::Paused,
            reason: None,
        };
        assert!(ledger.run("pause", 1_100, pause).outcome.is_err());
        assert_eq!(ledger.state.ssf_streams[&stream].status, SsfStatus::Enabled);
        assert_eq!(
            ledger
                .run(
                    "rm",
                    1_200,
                    Command::RemoveSsfReceiver { name: "rx".into() }
                )
                .outcome,
            Ok(Applied::SsfReceiverRemoved { streams: 1 })
        );
        assert!(ledger.state.ssf_streams.is_empty());
    }

    #[test]
    fn bad_receivers_and_streams_are_refused_and_change_nothing() {
        let mut ledger = Ledger::new();
        assert!(matches!(
            ledger.run("bad-name", 1_000, receiver("a b", None)).outcome,
            Err(Refusal::SsfBadRequest(_))
        ));
        ledger.run("rx", 1_000, receiver("rx", None));
        assert_eq!(
            ledger.run("again", 1_000, receiver("rx", None)).outcome,
            Err(Refusal::SsfReceiverExists("rx".into()))
        );
        let mut config = poll_config();
        config.delivery = SsfDelivery::Push {
            endpoint_url: "http://rx.example/events".into(),
            authorization_header: Some(SsfSecret("Bearer x".into())),
        };
        let response = ledger.run(
            "push",
            1_100,
            Command::PutSsfStream {
                receiver: "rx".into(),
                stream_id: None,
                config,
            },
        );
        assert!(
            matches!(&response.outcome, Err(Refusal::SsfBadRequest(why)) if why.contains("https")),
            "{response:?}"
        );
        let unknown = ledger.run(
            "nobody",
            1_100,
            Command::PutSsfStream {
                receiver: "nobody".into(),
                stream_id: None,
                config: poll_config(),
            },
        );
        assert_eq!(
            unknown.outcome,
            Err(Refusal::SsfUnknownReceiver("nobody".into()))
        );
        assert!(ledger.state.ssf_streams.is_empty());
    }

    #[test]
    fn at_most_max_streams() {
        let mut ledger = Ledger::new();
        ledger.run("rx", 1_000, receiver("rx", None));
        for i in 0..crate::ssf::MAX_SSF_STREAMS {
            new_stream(&mut ledger, &format!("put-{i}"), "rx");
        }
        let response = ledger.run(
            "one-more",
            1_000,
            Command::PutSsfStream {
                receiver: "rx".into(),
                stream_id: None,
                config: poll_config(),
            },
        );
        assert!(matches!(response.outcome, Err(Refusal::SsfFull { .. })));
    }

    #[test]
    fn the_event_log_is_bounded_by_count_and_by_age() {
        let mut ledger = Ledger::new();
        ledger.run("rx", 1_000, receiver("rx", None));
        let stream = new_stream(&mut ledger, "slow", "rx");
        for i in 0..(crate::ssf::MAX_SSF_EVENTS as u64 + 5) {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&i.to_le_bytes());
            hash[31] = 1;
            ledger.run(
                &format!("s{i}"),
                1_000,
                Command::Revoke(Revocation::SecretHash(hash)),
            );
        }
        assert_eq!(ledger.state.ssf_events.len(), crate::ssf::MAX_SSF_EVENTS);
        assert_eq!(ledger.state.ssf_events.first_key_value().unwrap().0, &6);
        // A stream that took nothing is told what it can no longer get.
        let slow = ledger.state.ssf_streams[&stream].clone();
        assert_eq!(ledger.state.ssf_missed(&slow), 5);
        // The test ledger's audit retention is 100 s.
        ledger.run("late", 200_000, Command::ConfirmLeadership);
        assert!(ledger.state.ssf_events.is_empty());
        assert_eq!(
            ledger.state.ssf_last_seq(),
            crate::ssf::MAX_SSF_EVENTS as u64 + 5
        );
    }
}
