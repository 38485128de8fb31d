//! What this broker's issuer has done since it started, for `/metrics`:
//! latency per kind of request (issue, refresh, exchange), credentials
//! granted per kind, refusals per kind and reason class, and the lifetime
//! of the credentials granted per tenant.
//!
//! Every label set is bounded: kinds and reason classes are fixed here;
//! tenants are the first [`MAX_TENANTS`] seen, the rest counted together
//! as [`OTHER_TENANT`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::BrokerError;
use crate::feed::histogram::Histogram;

/// Tenants with their own lifetime histogram; further tenants share one.
pub const MAX_TENANTS: usize = 32;
/// The label of the tenants beyond [`MAX_TENANTS`].
pub const OTHER_TENANT: &str = "other";

/// A request the issuer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestKind {
    Issue,
    Refresh,
    Exchange,
}

impl RequestKind {
    pub const ALL: [RequestKind; 3] = [Self::Issue, Self::Refresh, Self::Exchange];

    pub fn name(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::Refresh => "refresh",
            Self::Exchange => "exchange",
        }
    }
}

/// Why a request was refused, as a class (never the message, which may
/// name what the caller sent).
pub const REASONS: [&str; 9] = [
    "policy",
    "forbidden",
    "attestation",
    "dpop_nonce",
    "invalid",
    "unavailable",
    "exhausted",
    "ledger",
    "internal",
];

tokio::task_local! {
    /// Set while a request is measured when the tenant's policy said no.
    static DENIED_BY_POLICY: std::cell::Cell<bool>;
}

/// The reason class of a refusal.
fn reason(error: &BrokerError, by_policy: bool) -> &'static str {
    match error {
        BrokerError::Forbidden(_) if by_policy => "policy",
        BrokerError::Forbidden(_) => "forbidden",
        BrokerError::Unauthenticated(_) => "attestation",
        BrokerError::DpopNonce { .. } => "dpop_nonce",
        BrokerError::Invalid(_) => "invalid",
        BrokerError::Unavailable(_) => "unavailable",
        BrokerError::Exhausted(_) => "exhausted",
        BrokerError::Refused(_)
        | BrokerError::NotFound(_)
        | BrokerError::Exists(_)
        | BrokerError::Precondition(_) => "ledger",
        BrokerError::Broken(_) => "internal",
    }
}

#[derive(Debug, Default)]
struct Counts {
    latency: BTreeMap<RequestKind, Histogram>,
    granted: BTreeMap<RequestKind, u64>,
    refused: BTreeMap<(RequestKind, &'static str), u64>,
    lifetimes: BTreeMap<String, Histogram>,
}

/// The issuer's counters, updated as requests are answered.
#[derive(Debug, Default)]
pub struct IssuanceStats {
    counts: Mutex<Counts>,
}

/// What `/metrics` shows of the issuer, copied at scrape time.
#[derive(Debug, Clone, Default)]
pub struct IssuanceReport {
    /// Request received to answer, in microseconds, per kind.
    pub latency: BTreeMap<RequestKind, Histogram>,
    pub granted: BTreeMap<RequestKind, u64>,
    pub refused: BTreeMap<(RequestKind, &'static str), u64>,
    /// Lifetime granted (`exp - iat`), in microseconds, per tenant label.
    pub lifetimes: BTreeMap<String, Histogram>,
}

impl IssuanceStats {
    /// Run one request, then count its answer and how long it took.
    pub async fn measure<T>(
        &self,
        kind: RequestKind,
        request: impl Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        let started = Instant::now();
        let (result, by_policy) = DENIED_BY_POLICY
            .scope(std::cell::Cell::new(false), async {
                let result = request.await;
                (result, DENIED_BY_POLICY.with(|d| d.get()))
            })
            .await;
        let us = started.elapsed().as_micros().min(u64::MAX as u128) as u64;
        let mut counts = self.counts.lock().expect("issuance stats lock");
        counts.latency.entry(kind).or_default().record(us);
        match &result {
            Ok(_) => *counts.granted.entry(kind).or_default() += 1,
            Err(error) => {
                *counts
                    .refused
                    .entry((kind, reason(error, by_policy)))
                    .or_default() += 1
            }
        }
        result
    }

    /// The tenant's policy refused the request being measured.
    pub fn denied_by_policy(&self) {
        let _ = DENIED_BY_POLICY.try_with(|d| d.set(true));
    }

    /// A credential was granted to `tenant` for `seconds`.
    pub fn granted_lifetime(&self, tenant: &str, seconds: u64) {
        let mut counts = self.counts.lock().expect("issuance stats lock");
        // Named tenants take all places but one, kept for the others.
        let named =
            counts.lifetimes.len() - usize::from(counts.lifetimes.contains_key(OTHER_TENANT));
        let label = if counts.lifetimes.contains_key(tenant) || named < MAX_TENANTS - 1 {
            tenant
        } else {
            OTHER_TENANT
        };
        counts
            .lifetimes
            .entry(label.to_owned())
            .or_default()
            .record(seconds.saturating_mul(1_000_000));
    }

    pub fn report(&self) -> IssuanceReport {
        let counts = self.counts.lock().expect("issuance stats lock");
        IssuanceReport {
            latency: counts.latency.clone(),
            granted: counts.granted.clone(),
            refused: counts.refused.clone(),
            lifetimes: counts.lifetimes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_are_counted_by_kind_and_reason_class() {
        let stats = IssuanceStats::default();
        let _ = stats.measure(RequestKind::Issue, async { Ok(()) }).await;
        let _ = stats
            .measure(RequestKind::Issue, async {
                stats.denied_by_policy();
                Err::<(), _>(BrokerError::Forbidden("no".into()))
            })
            .await;
        let _ = stats
            .measure(RequestKind::Exchange, async {
                Err::<(), _>(BrokerError::Forbidden("narrow".into()))
            })
            .await;
        let _ = stats
            .measure(RequestKind::Refresh, async {
                Err::<(), _>(BrokerError::Unauthenticated("bad".into()))
            })
            .await;
        // Outside a measured request, a policy refusal marks nothing.
        stats.denied_by_policy();
        let report = stats.report();
        assert_eq!(report.granted[&RequestKind::Issue], 1);
        assert_eq!(report.refused[&(RequestKind::Issue, "policy")], 1);
        assert_eq!(report.refused[&(RequestKind::Exchange, "forbidden")], 1);
        assert_eq!(report.refused[&(RequestKind::Refresh, "attestation")], 1);
        assert_eq!(report.latency[&RequestKind::Issue].count(), 2);
        assert!(report.refused.keys().all(|(_, r)| REASONS.contains(r)));
    }

    #[test]
    fn tenants_beyond_the_cap_share_one_label() {
        let stats = IssuanceStats::default();
        for n in 0..MAX_TENANTS * 3 {
            stats.granted_lifetime(&format!("t{n}"), 300);
        }
        stats.granted_lifetime("t0", 600);
        let report = stats.report();
        assert_eq!(report.lifetimes.len(), MAX_TENANTS);
        assert_eq!(report.lifetimes["t0"].count(), 2);
        let others = &report.lifetimes[OTHER_TENANT];
        assert_eq!(others.count(), (MAX_TENANTS * 3 - (MAX_TENANTS - 1)) as u64);
        let total: u64 = report.lifetimes.values().map(Histogram::count).sum();
        assert_eq!(total, (MAX_TENANTS * 3 + 1) as u64);
    }
}
