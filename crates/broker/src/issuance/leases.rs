//! The broker's leased blocks of status indices. Credentials take their
//! index from the local block with no Raft round trip; a background task
//! leases the next block through the ledger before the current one runs
//! out. Blocks live only in memory: after a restart the broker leases a new
//! block and abandons the rest of the old one, so an index is never reused.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapse_ledger::{Applied, Command, RequestId};
use tokio::sync::Notify;

use crate::core::SharedCore;
use crate::error::{BrokerError, answer};

#[derive(Debug, Clone, Copy)]
struct Block {
    next: u64,
    end: u64,
    /// The broker may issue from the block until then.
    lease_expires_at_ms: u64,
}

/// Why no index could be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "this broker has no leased status indices left (its lease is spent or expired) and cannot reach the leader to lease more"
    )]
    Spent,
}

pub struct IndexLeases {
    blocks: Mutex<VecDeque<Block>>,
    refill: Notify,
    /// Woken each time a block is leased.
    leased: Notify,
    block_size: u64,
    lease: Duration,
}

impl IndexLeases {
    pub fn new(block_size: u64, lease: Duration) -> Self {
        Self {
            blocks: Mutex::new(VecDeque::new()),
            refill: Notify::new(),
            leased: Notify::new(),
            block_size: block_size.max(1),
            lease,
        }
    }

    /// Take the next index, valid at `now_ms`.
    pub fn take(&self, now_ms: u64) -> Result<u64, LeaseError> {
        let mut blocks = self.blocks.lock().expect("lease lock");
        while let Some(front) = blocks.front() {
            if front.next < front.end && front.lease_expires_at_ms > now_ms {
                break;
            }
            blocks.pop_front();
        }
        let Some(front) = blocks.front_mut() else {
            self.refill.notify_one();
            return Err(LeaseError::Spent);
        };
        let index = front.next;
        front.next += 1;
        if self.needs_refill(&blocks, now_ms) {
            self.refill.notify_one();
        }
        Ok(index)
    }

    /// Take the next index; when none is leased, wait up to `patience`
    /// for the refill task to lease a block (right after start-up the first
    /// one is usually on its way). `now_ms` reads the time at each try.
    pub async fn take_or_wait(
        &self,
        now_ms: impl Fn() -> u64,
        patience: Duration,
    ) -> Result<u64, LeaseError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let leased = self.leased.notified();
            tokio::pin!(leased);
            leased.as_mut().enable();
            match self.take(now_ms()) {
                Ok(index) => return Ok(index),
                Err(spent) if tokio::time::Instant::now() >= deadline => return Err(spent),
                Err(_) => {
                    let _ = tokio::time::timeout_at(deadline, leased).await;
                }
            }
        }
    }

    /// Indices left in live blocks at `now_ms`.
    pub fn remaining(&self, now_ms: u64) -> u64 {
        let blocks = self.blocks.lock().expect("lease lock");
        live(&blocks, now_ms)
    }

    fn needs_refill(&self, blocks: &VecDeque<Block>, now_ms: u64) -> bool {
        let soon = now_ms + self.lease.as_millis() as u64 / 4;
        let lasting = blocks
            .iter()
            .filter(|b| b.lease_expires_at_ms > soon)
            .map(|b| b.end - b.next)
            .sum::<u64>();
        lasting < self.block_size / 4 + 1
    }

    async fn lease_block(&self, core: &SharedCore, sequence: u64) -> Result<(), BrokerError> {
        let nonce: [u8; 4] = core.env().random_bytes();
        let request_id = RequestId::new(format!(
            "lease-{}-{sequence}-{}",
            core.id(),
            hex::encode(nonce)
        ))
        .map_err(|e| BrokerError::Broken(e.to_string()))?;
        let command = Command::LeaseIndices {
            broker: core.id(),
            count: self.block_size,
            lease_ms: self.lease.as_millis() as u64,
        };
        let (start, end, lease_expires_at_ms) = answer(
            core.propose(request_id, command).await?.outcome,
            |applied| match applied {
                Applied::Leased {
                    start,
                    end,
                    lease_expires_at_ms,
                    ..
                } => Ok((start, end, lease_expires_at_ms)),
                other => Err(other),
            },
        )?;
        self.blocks.lock().expect("lease lock").push_back(Block {
            next: start,
            end,
            lease_expires_at_ms,
        });
        self.leased.notify_waiters();
        tracing::info!(start, end, "leased status indices");
        Ok(())
    }

    /// Keep enough indices leased: lease when low, retry while the leader is
    /// out of reach.
    pub fn spawn_refill(self: &Arc<Self>, core: SharedCore) -> tokio::task::JoinHandle<()> {
        let leases = self.clone();
        tokio::spawn(async move {
            let mut sequence = 0u64;
            loop {
                let low = {
                    let blocks = leases.blocks.lock().expect("lease lock");
                    leases.needs_refill(&blocks, core.cluster_now())
                };
                if low {
                    sequence += 1;
                    if let Err(error) = leases.lease_block(&core, sequence).await {
                        tracing::warn!(%error, "could not lease status indices; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    continue;
                }
                tokio::select! {
                    _ = leases.refill.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    }
}

fn live(blocks: &VecDeque<Block>, now_ms: u64) -> u64 {
    blocks
        .iter()
        .filter(|b| b.lease_expires_at_ms > now_ms)
        .map(|b| b.end - b.next)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_in_order_skips_expired_blocks_and_reports_spent() {
        let leases = IndexLeases::new(4, Duration::from_secs(100));
        assert_eq!(leases.take(0), Err(LeaseError::Spent));
        {
            let mut blocks = leases.blocks.lock().unwrap();
            blocks.push_back(Block {
                next: 10,
                end: 12,
                lease_expires_at_ms: 50,
            });
            blocks.push_back(Block {
                next: 20,
                end: 22,
                lease_expires_at_ms: 500,
            });
        }
        assert_eq!(leases.take(0), Ok(10));
        assert_eq!(leases.remaining(0), 3);
        // The first block's lease has expired: its last index is abandoned.
        assert_eq!(leases.take(60), Ok(20));
        assert_eq!(leases.take(60), Ok(21));
        assert_eq!(leases.take(60), Err(LeaseError::Spent));
    }

    #[tokio::test(start_paused = true)]
    async fn a_taker_waits_for_a_block_being_leased_and_gives_up_after_its_patience() {
        let leases = Arc::new(IndexLeases::new(4, Duration::from_secs(100)));
        let waiting = {
            let leases = leases.clone();
            tokio::spawn(async move { leases.take_or_wait(|| 0, Duration::from_secs(2)).await })
        };
        tokio::task::yield_now().await;
        leases.blocks.lock().unwrap().push_back(Block {
            next: 7,
            end: 9,
            lease_expires_at_ms: 500,
        });
        leases.leased.notify_waiters();
        assert_eq!(waiting.await.unwrap(), Ok(7));
        // Nothing leased: refused once the patience is spent.
        let empty = IndexLeases::new(4, Duration::from_secs(100));
        let started = tokio::time::Instant::now();
        assert_eq!(
            empty.take_or_wait(|| 0, Duration::from_secs(2)).await,
            Err(LeaseError::Spent)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
