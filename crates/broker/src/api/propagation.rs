//! `Propagation`: how long revocations took to reach verifiers, merged
//! from every broker's report.

use std::collections::BTreeMap;

use lapse_wire::cluster as pb;
use tonic::{Request, Response, Status};

use super::ClusterService;
use crate::feed::propagation::Histogram;

fn delay_summary(region: &str, histogram: &Histogram, verifiers: u32) -> pb::DelaySummary {
    let ms = |us: u64| us as f64 / 1000.0;
    pb::DelaySummary {
        region: region.to_owned(),
        samples: histogram.count(),
        p50_ms: ms(histogram.quantile_us(0.5)),
        p99_ms: ms(histogram.quantile_us(0.99)),
        max_ms: ms(histogram.max_us()),
        verifiers,
    }
}

impl ClusterService {
    pub(super) async fn propagation_report(
        &self,
        request: Request<pb::PropagationRequest>,
    ) -> Result<Response<pb::PropagationResponse>, Status> {
        self.authorize(request.metadata())?;
        let epoch = match request.into_inner().epoch {
            0 => self.feed.current_epoch(),
            asked => asked,
        };
        let (report, unreachable_brokers) = self.feed.cluster_report().await;
        let mut per_region: BTreeMap<&str, u32> = BTreeMap::new();
        for record in report.verifiers.values() {
            *per_region.entry(record.region.as_str()).or_default() += 1;
        }
        let mut overall = Histogram::default();
        let regions = report
            .regions
            .iter()
            .map(|(region, histogram)| {
                overall.merge(histogram);
                let verifiers = per_region.get(region.as_str()).copied().unwrap_or(0);
                delay_summary(region, histogram, verifiers)
            })
            .collect();
        let verifiers = report
            .verifiers
            .iter()
            .map(|(id, record)| pb::VerifierProgress {
                verifier_id: id.clone(),
                region: record.region.clone(),
                broker_id: record.broker_id,
                acked_epoch: record.acked_epoch,
                connected: record.connections > 0,
                since_ack_ms: report.now_ms.saturating_sub(record.last_seen_ms),
                delay: Some(delay_summary(&record.region, &record.delays, 1)),
                last_ms: record.last_us as f64 / 1000.0,
            })
            .collect();
        Ok(Response::new(pb::PropagationResponse {
            epoch,
            current_epoch: self.feed.current_epoch(),
            verifiers,
            overall: Some(delay_summary("", &overall, report.verifiers.len() as u32)),
            regions,
            unreachable_brokers,
        }))
    }
}
