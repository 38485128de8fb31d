//! Acks coalesced: a subscription acks its latest epoch at most every
//! [`ACK_INTERVAL`], the first after a quiet spell at once.

use super::*;

/// The acks a subscription owes, coalesced over [`ACK_INTERVAL`].
#[derive(Default)]
pub(super) struct Acks {
    /// The latest epoch applied and not yet acked.
    owed: Option<u64>,
    /// Send it at once, whatever the interval (the first of a
    /// subscription).
    now: bool,
    last_sent: Option<tokio::time::Instant>,
}

impl Acks {
    pub(super) fn owe(&mut self, epoch: u64, now: bool) {
        self.owed = Some(epoch);
        self.now |= now;
    }

    /// When the owed ack must go, if one is owed.
    pub(super) fn due(&self) -> Option<tokio::time::Instant> {
        self.owed?;
        Some(match self.last_sent {
            Some(at) if !self.now => at + ACK_INTERVAL,
            _ => tokio::time::Instant::now(),
        })
    }

    pub(super) fn send_if_due(
        &mut self,
        stats: &FollowStats,
        requests: &mpsc::Sender<FeedRequest>,
    ) {
        if self
            .due()
            .is_some_and(|due| due <= tokio::time::Instant::now())
        {
            self.flush(stats, requests);
        }
    }

    pub(super) fn flush(&mut self, stats: &FollowStats, requests: &mpsc::Sender<FeedRequest>) {
        let Some(epoch) = self.owed.take() else {
            return;
        };
        self.now = false;
        self.last_sent = Some(tokio::time::Instant::now());
        let ack = FeedRequest {
            kind: Some(RequestKind::Ack(Ack { epoch })),
        };
        if requests.try_send(ack).is_ok() {
            stats.acks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(outbound: &mut mpsc::Receiver<FeedRequest>) -> Vec<u64> {
        let mut epochs = Vec::new();
        while let Ok(FeedRequest {
            kind: Some(RequestKind::Ack(Ack { epoch })),
        }) = outbound.try_recv()
        {
            epochs.push(epoch);
        }
        epochs
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_acked_once_by_its_latest_epoch_and_a_quiet_ack_at_once() {
        let stats = FollowStats::default();
        let (requests, mut outbound) = mpsc::channel(64);
        let mut acks = Acks::default();
        // The first ack of a subscription goes at once.
        acks.owe(5, true);
        acks.send_if_due(&stats, &requests);
        assert_eq!(acked(&mut outbound), [5]);
        // A burst within the interval waits, then goes as one ack.
        for epoch in 6..=9 {
            acks.owe(epoch, false);
            acks.send_if_due(&stats, &requests);
        }
        assert_eq!(acked(&mut outbound), Vec::<u64>::new());
        let due = acks.due().expect("an ack is owed");
        tokio::time::sleep_until(due).await;
        acks.send_if_due(&stats, &requests);
        assert_eq!(acked(&mut outbound), [9]);
        assert_eq!(acks.due(), None);
        // After a quiet spell the next ack goes at once.
        tokio::time::sleep(ACK_INTERVAL * 10).await;
        acks.owe(10, false);
        acks.send_if_due(&stats, &requests);
        assert_eq!(acked(&mut outbound), [10]);
        assert_eq!(stats.acks.load(Ordering::Relaxed), 3);
    }
}
