//! Applying the feed: events decoded, checked against the held state and
//! the broker's voucher, and the freshness they give.

use super::*;

impl Verifier {
    /// Apply one feed event. On error the state is unchanged. Returns the
    /// epoch held afterwards.
    pub fn apply(&self, event: &FeedEvent) -> Result<u64, FeedError> {
        let decoded = decode_event(event);
        let result = {
            let mut inner = self.inner.write().expect("verifier lock");
            let result = decoded.and_then(|decoded| self.apply_decoded(&mut inner, decoded));
            match &result {
                Ok(_) => inner.applied_events += 1,
                Err(_) => inner.rejected_events += 1,
            }
            result
        };
        // Published once the state's lock is released: whoever holds the
        // watch's value (a relay's leaf waiting for a first state) may take
        // the state's lock while holding it, and the watch's writer waits
        // for such readers.
        if let Ok(epoch) = &result {
            self.epochs.send_if_modified(|held| {
                let changed = *held != *epoch;
                *held = *epoch;
                changed
            });
        }
        result
    }

    fn apply_decoded(&self, inner: &mut Inner, event: Decoded) -> Result<u64, FeedError> {
        let held = inner.state.as_ref().map(|s| s.epoch);
        match event.body {
            Body::Snapshot(snapshot) => {
                // With signed heartbeats a snapshot may take the state back
                // to any epoch at or after the vouched one: a state received
                // from further ahead was never vouched for.
                let floor = match &self.config.trust {
                    Some(_) => inner.vouched.as_ref().map(|v| v.state.epoch),
                    None => held,
                };
                if let Some(floor) = floor
                    && floor > snapshot.epoch
                {
                    return Err(FeedError::EpochBackwards {
                        held: floor,
                        offered: snapshot.epoch,
                    });
                }
                inner.state = Some(*snapshot);
                inner.snapshots += 1;
                inner.changed();
            }
            Body::Delta(delta) => {
                let state = inner.state.as_mut().ok_or(FeedError::NoSnapshot {
                    from: delta.revoked.from_epoch(),
                })?;
                state.apply(&delta)?;
                inner.deltas += 1;
                inner.changed();
            }
            Body::Heartbeat { voucher, .. } => match &self.config.trust {
                Some(checker) => self.vouched_heartbeat(inner, checker, voucher)?,
                None => {
                    if held != Some(event.epoch) {
                        return Err(FeedError::HeartbeatEpoch {
                            held: held.unwrap_or(0),
                            offered: event.epoch,
                        });
                    }
                    let max_ttl_ms = match event.max_credential_ttl_ms {
                        0 => inner.vouched.as_ref().map_or(0, |v| v.max_ttl_ms),
                        ttl => ttl,
                    };
                    inner.vouch(event.cluster_time_ms, max_ttl_ms);
                    self.refreshed(inner, event.broker_id, event.cluster_time_ms);
                }
            },
            Body::Withheld { reason } => {
                inner.withheld = Some((event.broker_id, reason, Instant::now()));
                return Ok(held.unwrap_or(0));
            }
        }
        inner.broker_id = Some(event.broker_id);
        Ok(inner.state.as_ref().map(|s| s.epoch).unwrap_or(0))
    }

    /// A heartbeat when heartbeats must be signed: check the broker's
    /// signature, then that the statement covers exactly the state held.
    /// Only then is the state vouched for and the verifier fresh.
    fn vouched_heartbeat(
        &self,
        inner: &mut Inner,
        checker: &lapse_pki::SignatureChecker,
        voucher: Option<lapse_wire::feed::Voucher>,
    ) -> Result<(), FeedError> {
        let now = std::time::UNIX_EPOCH + Duration::from_millis(self.clock.now_ms());
        let statement = check_voucher(checker, voucher, now)?;
        let Some(state) = inner.state.as_ref() else {
            return Err(FeedError::HeartbeatEpoch {
                held: 0,
                offered: statement.epoch,
            });
        };
        let epoch_digest = match inner.epoch_digest {
            Some(digest) if state.epoch == statement.epoch => Some(digest),
            _ => None,
        };
        let matches = state.epoch == statement.epoch && {
            let epoch_digest = epoch_digest.unwrap_or_else(|| state.epoch_digest());
            inner.epoch_digest = Some(epoch_digest);
            state.digest_at(
                Some(epoch_digest),
                statement.cluster_time_ms,
                statement.max_ttl_ms,
            ) == statement.digest
        };
        if !matches {
            // A broker vouches for another state than the one received:
            // what was received since the last vouched state is dropped,
            // and the next subscription resumes from the vouched state.
            let held = state.epoch;
            inner.state = inner.vouched.as_ref().map(|v| v.state.clone());
            inner.changed();
            inner.unvouched_changes = false;
            inner.unvouched_drops += 1;
            return Err(FeedError::Unvouched {
                broker_id: statement.broker_id,
                vouched: statement.epoch,
                held,
            });
        }
        // A heartbeat no newer than the last one vouched for refreshes
        // nothing: a replayed heartbeat cannot keep a verifier fresh.
        if inner
            .vouched
            .as_ref()
            .is_some_and(|v| statement.cluster_time_ms <= v.at_ms)
        {
            return Ok(());
        }
        inner.vouch(statement.cluster_time_ms, statement.max_ttl_ms);
        self.refreshed(inner, statement.broker_id, statement.cluster_time_ms);
        Ok(())
    }

    /// A heartbeat made the verifier fresh.
    fn refreshed(&self, inner: &mut Inner, broker_id: u64, cluster_time_ms: u64) {
        inner.last_heartbeat = Some(Instant::now());
        inner.heartbeat_broker = Some(broker_id);
        inner.withheld = None;
        inner.heartbeats += 1;
        inner
            .clock
            .observe(cluster_time_ms, self.clock.monotonic_ms());
    }

    pub(super) fn staleness(&self, inner: &Inner) -> Option<Rejection> {
        let bound_ms = self.config.staleness.as_millis() as u64;
        let stale_ms = match inner.last_heartbeat {
            None => u64::MAX,
            Some(at) => at.elapsed().as_millis() as u64,
        };
        (stale_ms > bound_ms).then_some(Rejection::Stale { stale_ms, bound_ms })
    }
}
