//! What must be true of a run. The facts the invariants judge (the
//! credentials issued and when, each revocation's outcome, when a broker
//! first applied each revocation, the leases seen, each verifier's final
//! state) sit behind one lock taken only in this module; the
//! checks here call the pure invariants in [`crate::invariants`] at the
//! moment the run shows the fact each judges, and record what they find.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use lapse_ledger::LedgerState;
use lapse_verifier::{Accepted, Rejection};
use rand::Rng;
use rand::rngs::StdRng;

use super::World;
use crate::invariants::acked_revocations::{self, Outcome};
use crate::invariants::convergence::{self, VerifierEnd};
use crate::invariants::disjoint_leases::LeaseBook;
use crate::invariants::replicas_agree::ReplicaDigests;
use crate::invariants::valid_acceptance::{self, Life};
use crate::invariants::{
    Violation, committed_keys, delegated_acceptance, epochs_grow, expired_acceptance,
    freshness_liveness, revoked_acceptance,
};

/// A credential a client received.
pub(super) struct Issued {
    pub region: String,
    pub index: u64,
    pub token: String,
    /// True ms when the request left and when the answer came: the
    /// credential was signed in between.
    pub sent_ms: f64,
    pub issued_ms: f64,
    pub ttl_ms: u64,
    /// The status indices it was delegated from (token exchange), root
    /// first; empty for a refreshed credential.
    pub ancestors: Vec<u64>,
}

/// A credential picked for verifiers to check.
pub(super) struct Pick {
    pub index: u64,
    pub token: String,
    pub life: Life,
    pub ancestors: Vec<u64>,
}

impl Issued {
    fn life(&self) -> Life {
        Life {
            sent_ms: self.sent_ms,
            issued_ms: self.issued_ms,
            ttl_ms: self.ttl_ms,
        }
    }
}

#[derive(Default)]
struct Facts {
    issued: Vec<Issued>,
    outcomes: BTreeMap<u64, Outcome>,
    /// Indices whose revocation a client attempted (noted before the
    /// request leaves, so an answer still in flight counts).
    revoke_attempted: BTreeSet<u64>,
    /// index -> (true ms of first apply on any broker, feed epoch)
    first_applied: BTreeMap<u64, (f64, u64)>,
    /// feed epoch -> true ms of first apply, for propagation.
    applied_by_epoch: BTreeMap<u64, f64>,
    leases: LeaseBook,
    /// Each verifier's state just before the end, reported from its host
    /// (its staleness is measured on that host's clock).
    verifier_ends: Vec<VerifierEnd>,
}

#[derive(Default)]
pub(super) struct Oracle {
    facts: Mutex<Facts>,
}

impl Oracle {
    fn facts(&self) -> MutexGuard<'_, Facts> {
        self.facts.lock().expect("facts lock")
    }

    /// A broker applied these revocations (index, epoch) at `now_ms`; the
    /// first broker to apply one fixes its commit time.
    pub fn first_applied(&self, revoked: &[(u64, u64)], now_ms: f64) {
        let mut facts = self.facts();
        for &(index, epoch) in revoked {
            facts.first_applied.entry(index).or_insert((now_ms, epoch));
            facts.applied_by_epoch.entry(epoch).or_insert(now_ms);
        }
    }

    /// When the revocations a verifier took in by moving from `previous`
    /// to `epoch` were first applied, leaving out those applied before it
    /// started.
    pub fn committed_between(&self, previous: u64, epoch: u64, started_ms: f64) -> Vec<f64> {
        self.facts()
            .applied_by_epoch
            .range(previous + 1..=epoch)
            .map(|(_, first)| *first)
            .filter(|first| *first >= started_ms)
            .collect()
    }

    /// A few credentials to verify: two of any issued, one whose
    /// revocation a client saw answered, and one delegated from a
    /// credential whose revocation a client saw answered.
    pub fn pick_credentials(&self, rng: &mut StdRng) -> Vec<Pick> {
        let facts = self.facts();
        let issued = &facts.issued;
        let pick = |c: &Issued| Pick {
            index: c.index,
            token: c.token.clone(),
            life: c.life(),
            ancestors: c.ancestors.clone(),
        };
        let mut picks = Vec::new();
        if !issued.is_empty() {
            for _ in 0..2 {
                picks.push(pick(&issued[rng.gen_range(0..issued.len())]));
            }
            let revoked: Vec<&Issued> = issued
                .iter()
                .filter(|c| facts.outcomes.contains_key(&c.index))
                .collect();
            if !revoked.is_empty() {
                picks.push(pick(revoked[rng.gen_range(0..revoked.len())]));
            }
            let cut_off: Vec<&Issued> = issued
                .iter()
                .filter(|c| c.ancestors.iter().any(|a| facts.outcomes.contains_key(a)))
                .collect();
            if !cut_off.is_empty() {
                picks.push(pick(cut_off[rng.gen_range(0..cut_off.len())]));
            }
        }
        picks
    }

    /// One of `region`'s credentials not yet revoked, noted as attempted.
    pub fn choose_revocation(&self, region: &str, rng: &mut StdRng) -> Option<u64> {
        let mut facts = self.facts();
        let mine: Vec<u64> = facts
            .issued
            .iter()
            .filter(|c| c.region == region && !facts.outcomes.contains_key(&c.index))
            .map(|c| c.index)
            .collect();
        let index = (!mine.is_empty()).then(|| mine[rng.gen_range(0..mine.len())])?;
        facts.revoke_attempted.insert(index);
        Some(index)
    }

    pub fn revocation_answered(&self, index: u64, outcome: Outcome) {
        self.facts().outcomes.insert(index, outcome);
    }

    /// A client received `issued` from a refresh (its status index is its
    /// chain's) or an exchange (its index must be new): it joins the
    /// credentials verifiers check.
    pub fn issued(&self, issued: Issued) -> Option<Violation> {
        let mut facts = self.facts();
        let violation = if issued.ancestors.is_empty() {
            facts.leases.refreshed(issued.index, issued.issued_ms)
        } else {
            facts.leases.issued(issued.index, issued.issued_ms)
        };
        facts.issued.push(issued);
        violation
    }

    /// A client received a seed credential (issued on an attestation),
    /// whose index must be new; its refreshes keep it.
    pub fn seeded(&self, index: u64, at_ms: f64) -> Option<Violation> {
        self.facts().leases.issued(index, at_ms)
    }

    /// Whether a revocation of `index` was attempted: its chain is over
    /// for the client that holds it.
    pub fn revocation_attempted(&self, index: u64) -> bool {
        self.facts().revoke_attempted.contains(&index)
    }

    pub fn verifiers_ended(&self, ends: Vec<VerifierEnd>) {
        self.facts().verifier_ends.extend(ends);
    }
}

/// Check a verifier moving from `previous` to `epoch` at `now_ms`.
pub(super) fn check_epoch(world: &World, id: &str, previous: u64, epoch: u64, now_ms: f64) {
    if let Some(violation) = epochs_grow::check(id, previous, epoch, now_ms) {
        world.violate(violation);
    }
}

/// Check a credential a client just received from the broker at
/// `broker_address`: its key is committed, its index not issued before.
pub(super) fn check_issuance(world: &World, broker_address: &str, key_id: &str, now_ms: f64) {
    let broker_id: u64 = broker_address
        .trim_start_matches('b')
        .split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Committed means applied by the leader that committed it, which may
    // not be the broker that signed: any replica holding the key will do.
    let checks: Vec<Option<Violation>> = world.hosts.with_brokers(|brokers| {
        brokers
            .values()
            .map(|b| {
                b.view
                    .read(|a| committed_keys::check(broker_id, key_id, &a.ledger, now_ms))
            })
            .collect()
    });
    if !checks.iter().any(Option::is_none)
        && let Some(violation) = checks.into_iter().flatten().next()
    {
        world.violate(violation);
    }
}

/// One verification a verifier made.
pub(super) struct Verification<'a> {
    pub verifier: &'a str,
    pub index: u64,
    pub life: Life,
    /// The indices it was delegated from.
    pub ancestors: &'a [u64],
    /// True ms when it was made.
    pub at_ms: f64,
    /// Whether the verifier was fresh just before.
    pub fresh: bool,
    /// Its exp/nbf leeway, ms.
    pub leeway_ms: u64,
}

/// Count and judge one verification's result.
pub(super) fn judge_verification(
    world: &World,
    v: &Verification<'_>,
    result: &Result<Accepted, Rejection>,
) {
    let bound = world.accept_bound_ms();
    let bounds = &world.scenario.bounds;
    let now = v.at_ms;
    let (id, index, life) = (v.verifier, v.index, v.life);
    world.observer.count(|c| c.verifications += 1);
    let refusal = match result {
        Ok(_) => {
            world.observer.count(|c| c.accepted += 1);
            let (revoked_ms, ancestors) = {
                let facts = world.oracle.facts();
                let revoked = |index: &u64| facts.first_applied.get(index).map(|f| f.0);
                let ancestors: Vec<(u64, Option<f64>)> =
                    v.ancestors.iter().map(|a| (*a, revoked(a))).collect();
                (revoked(&index), ancestors)
            };
            if let Some(violation) = revoked_acceptance::check(id, index, now, revoked_ms, bound) {
                world.violate(violation);
            }
            if let Some(violation) = delegated_acceptance::check(id, index, &ancestors, now, bound)
            {
                world.violate(violation);
            }
            let deadline = expired_acceptance::deadline_ms(
                life.issued_ms,
                life.ttl_ms,
                v.leeway_ms,
                bounds.skew_allowance_ms,
            );
            if let Some(violation) = expired_acceptance::check(id, index, now, deadline) {
                world.violate(violation);
            }
            return;
        }
        Err(refusal @ Rejection::Revoked { .. }) => {
            world.observer.count(|c| c.rejected_revoked += 1);
            refusal
        }
        Err(Rejection::Stale { .. }) => {
            world.observer.count(|c| c.rejected_stale += 1);
            let calm = world.faults.calm_since_ms();
            let settle_ms = bounds.fresh_after_s as f64 * 1000.0;
            if let Some(violation) = freshness_liveness::check(id, now, calm, settle_ms) {
                world.violate(violation);
            }
            return;
        }
        Err(_) if now > life.sent_ms + life.ttl_ms as f64 => {
            world.observer.count(|c| c.rejected_expired += 1);
            return;
        }
        Err(refusal) => {
            world.observer.count(|c| c.rejected_other += 1);
            refusal
        }
    };
    // Unrevoked: neither it nor any credential it was delegated from.
    let unrevoked = {
        let facts = world.oracle.facts();
        std::iter::once(&index)
            .chain(v.ancestors)
            .all(|i| !facts.revoke_attempted.contains(i) && !facts.first_applied.contains_key(i))
    };
    if v.fresh && unrevoked {
        let window = valid_acceptance::window(life, bound, bounds.skew_allowance_ms);
        if let Some(violation) =
            valid_acceptance::check(id, index, now, window, &refusal.to_string())
        {
            world.violate(violation);
        }
    }
}

/// One broker sampled: id, applied index, digest, lease violations, and
/// the peers its own replica check found diverged (peer, index).
type Sampled = (u64, Option<u64>, [u8; 32], Vec<Violation>, Vec<(u64, u64)>);

/// Sample every running broker: digests at their applied index, leases.
pub(super) fn sample(world: &World, digests: &mut ReplicaDigests, now_ms: f64) {
    let states: Vec<Sampled> = world.hosts.with_brokers(|brokers| {
        let mut facts = world.oracle.facts();
        brokers
            .iter()
            .map(|(id, b)| {
                let diverged = b
                    .replicas
                    .divergences()
                    .into_iter()
                    .map(|d| (d.peer, d.index))
                    .collect();
                b.view.read(|a| {
                    (
                        *id,
                        a.ledger.last_applied_index,
                        a.ledger.digest(),
                        facts.leases.observe(&a.ledger, now_ms),
                        diverged,
                    )
                })
            })
            .collect()
    });
    for (id, index, digest, lease_violations, diverged) in states {
        for (peer, at) in diverged {
            if digests.first_report(id, peer) {
                world.note(
                    &format!("b{id}"),
                    format_args!("detects divergence from b{peer} at index {at}"),
                );
            }
        }
        if let Some(index) = index
            && let Some(violation) = digests.observe(id, index, digest, now_ms)
        {
            world.violate(violation);
        }
        for violation in lease_violations {
            world.violate(violation);
        }
    }
}

/// After the settle time: durability of acked revocations on every broker,
/// and convergence of every broker and verifier.
pub(super) fn final_checks(world: &World, now_ms: f64) {
    let (outcomes, mut verifiers) = {
        let facts = world.oracle.facts();
        (facts.outcomes.clone(), facts.verifier_ends.clone())
    };
    let states: Vec<(u64, LedgerState)> = world.hosts.with_brokers(|brokers| {
        brokers
            .iter()
            .map(|(id, b)| (*id, b.view.read(|a| a.ledger.clone())))
            .collect()
    });
    for (id, state) in &states {
        world.note(
            "check",
            format_args!(
                "broker {id}: applied {:?}, epoch {}, {} revoked indices",
                state.last_applied_index,
                state.revocation_epoch,
                state.revoked_indices.len()
            ),
        );
    }
    let mut found = Vec::new();
    for (id, state) in &states {
        found.extend(acked_revocations::check(*id, state, &outcomes, now_ms));
    }
    let epochs: Vec<(u64, u64)> = states
        .iter()
        .map(|(id, s)| (*id, s.revocation_epoch))
        .collect();
    let cluster_epoch = epochs.iter().map(|(_, e)| *e).max().unwrap_or(0);
    verifiers.sort_by(|a, b| a.id.cmp(&b.id));
    found.extend(convergence::check(
        cluster_epoch,
        &epochs,
        &verifiers,
        world.scenario.settle_s,
        now_ms,
    ));
    let acked = outcomes
        .values()
        .filter(|o| matches!(o, Outcome::Acked { .. }))
        .count();
    world.note(
        "check",
        format_args!(
            "final: cluster epoch {cluster_epoch}, {} brokers, {} verifiers, {acked} acked revocations",
            states.len(),
            verifiers.len(),
        ),
    );
    for violation in found {
        world.violate(violation);
    }
}
