//! The cluster-wide propagation report: this broker's own view merged with
//! every peer's, asked for over the peer `LocalPropagation` call.

use std::time::Duration;

use super::FeedHub;
use super::propagation::{LocalReport, merge_reports};
use crate::link::Peer;

impl FeedHub {
    /// Every broker's report, merged, and the brokers that did not answer.
    pub async fn cluster_report(&self) -> (LocalReport, Vec<u64>) {
        let members = self.core.peers();
        let timeout = Duration::from_millis(self.core.config().raft.rpc_timeout_ms);
        let ids: Vec<u64> = members.iter().map(|(id, _)| *id).collect();
        let asks = members.into_iter().map(|(id, address)| async move {
            let report = self
                .core
                .channels()
                .local_propagation(Peer::member(id, &address), timeout)
                .await
                .ok()?;
            LocalReport::decode(&report)
        });
        let answers = futures::future::join_all(asks).await;
        let mut reports = vec![self.local_report()];
        let mut unreachable = Vec::new();
        for (id, answer) in ids.into_iter().zip(answers) {
            match answer {
                Some(report) => reports.push(report),
                None => unreachable.push(id),
            }
        }
        (merge_reports(&reports), unreachable)
    }
}
