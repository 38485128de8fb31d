//! The ledger's state and its deterministic `apply`. Given the same sequence
//! of `(log_index, Proposal)` every replica reaches byte-identical state.
//!
//! `apply` advances cluster time, prunes and deduplicates request ids here;
//! what each command does to the state is in [`crate::apply`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use lapse_credential::{KeyId, StatusIndex, TenantId, WorkloadId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256 as Hasher};

use crate::command::{
    Command, ControlEvent, Grant, IssuanceRecord, JoinGrant, NodeId, OperatorRole, Proposal,
    Refusal, RequestId, Response, Sha256,
};
use crate::ssf::{SsfEvent, SsfReceiver, SsfStream};

/// The most control-plane audit events kept; the oldest leave first.
pub const MAX_CONTROL_EVENTS: usize = 100_000;
/// The most past policy versions kept per tenant (the current one included).
pub const MAX_POLICY_HISTORY: usize = 32;
/// The most signing keys kept for checking evidence; the oldest leave first.
pub const MAX_EVIDENCE_KEYS: usize = 4096;

/// Settings fixed when the cluster is created; replicated with the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerParams {
    /// No credential lives longer than this; revocations older than their
    /// credentials' lifetime are pruned with this bound.
    pub max_credential_ttl_ms: u64,
    /// The longest a broker may issue from one lease.
    pub max_lease_ms: u64,
    /// How long a request id is remembered for deduplication.
    pub request_dedup_ms: u64,
    /// Pruning runs at most this often, in cluster time.
    pub prune_interval_ms: u64,
    /// How long shipped issuance audit records are kept.
    pub audit_retention_ms: u64,
}

impl Default for LedgerParams {
    fn default() -> Self {
        Self {
            max_credential_ttl_ms: 24 * 3600 * 1000,
            max_lease_ms: 3600 * 1000,
            request_dedup_ms: 5 * 60 * 1000,
            prune_interval_ms: 1000,
            audit_retention_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// A block of status indices granted to one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub broker: NodeId,
    pub start: u64,
    pub end: u64,
    pub granted_at_ms: u64,
    pub lease_expires_at_ms: u64,
    pub credentials_expire_by_ms: u64,
}

/// When and at which epoch something was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedAt {
    pub epoch: u64,
    pub at_ms: u64,
}

/// "Every credential issued before `issued_before_ms` is revoked."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedBeforeRule {
    pub issued_before_ms: u64,
    pub revoked: RevokedAt,
}

/// A broker's public signing key and its validity window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub broker: NodeId,
    pub public_key: Vec<u8>,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
    pub registered_epoch: u64,
    /// The log index that last changed this key (registered, retired or
    /// revoked), so the feed knows which keys a delta must carry.
    pub changed_epoch: u64,
    pub retired_at_ms: Option<u64>,
    pub revoked: Option<RevokedAt>,
}

/// A signing key's public half, kept as long as audit records it may have
/// sealed are kept, so that their evidence can still be checked after the
/// key itself has left [`LedgerState::keys`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceKey {
    pub broker: NodeId,
    pub public_key: Vec<u8>,
    pub not_after_ms: u64,
    pub registered_epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub grant: JoinGrant,
    pub expires_at_ms: u64,
    pub consumed_epoch: Option<u64>,
}

/// A tenant's issuance policy at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub version: u64,
    pub text: String,
    pub set_at_ms: u64,
    pub epoch: u64,
}

/// Revocations that took effect, by kind (a refused one is not counted;
/// each item of a batch counts on its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationCounts {
    pub index: u64,
    pub subject: u64,
    pub tenant: u64,
    pub key: u64,
    pub secret: u64,
    pub credential: u64,
    pub task: u64,
}

impl RevocationCounts {
    /// Each kind with its name, as `lapse revoke` spells it.
    pub fn by_kind(&self) -> [(&'static str, u64); 7] {
        [
            ("index", self.index),
            ("subject", self.subject),
            ("tenant", self.tenant),
            ("key", self.key),
            ("secret", self.secret),
            ("credential", self.credential),
            ("task", self.task),
        ]
    }

    /// Count one revocation that took effect.
    pub(crate) fn count(&mut self, revocation: &crate::command::Revocation) {
        use crate::command::Revocation;
        let counter = match revocation {
            Revocation::Index(_) => &mut self.index,
            Revocation::Subject { .. } => &mut self.subject,
            Revocation::Tenant { .. } => &mut self.tenant,
            Revocation::Key(_) => &mut self.key,
            Revocation::SecretHash(_) => &mut self.secret,
            Revocation::Credential(_) => &mut self.credential,
            Revocation::Task { .. } => &mut self.task,
        };
        *counter = counter.saturating_add(1);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RequestRecord {
    command_hash: Sha256,
    response: Response,
}

/// The replicated state. Every map is ordered so that serialisation, and so
/// the digest, is the same on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    pub params: LedgerParams,
    /// The largest stamped time applied so far; never goes back.
    pub cluster_time_ms: u64,
    /// The log index of the last applied entry; `None` before the first.
    pub last_applied_index: Option<u64>,
    /// The feed epoch: the log index of the last entry that changed what
    /// verifiers hold (revocations, signing keys, or the live window's base).
    pub revocation_epoch: u64,
    pub next_index: u64,
    pub leases: BTreeMap<u64, Lease>,
    pub revoked_indices: BTreeMap<u64, RevokedAt>,
    pub subject_rules: BTreeMap<(TenantId, WorkloadId), IssuedBeforeRule>,
    pub tenant_rules: BTreeMap<TenantId, IssuedBeforeRule>,
    /// Task revocations: every credential of the tenant carrying the task
    /// id, issued before the rule's time. Pruned like the other rules, once
    /// every credential they cover has expired.
    pub task_rules: BTreeMap<(TenantId, String), IssuedBeforeRule>,
    pub keys: BTreeMap<KeyId, SigningKey>,
    pub revoked_secrets: BTreeMap<Sha256, RevokedAt>,
    /// Revoked keys the cluster never registered: offline break-glass keys
    /// (`bg-…`), which only verifiers hold. At most
    /// [`crate::MAX_FOREIGN_KEY_REVOCATIONS`].
    pub revoked_foreign_keys: BTreeMap<KeyId, RevokedAt>,
    pub join_tokens: BTreeMap<Sha256, JoinToken>,
    pub policies: BTreeMap<TenantId, Policy>,
    /// Every tenant's recent policy versions, the current one included (at
    /// most [`MAX_POLICY_HISTORY`] per tenant), so that a recorded decision
    /// can be decided again under the version that made it.
    pub policy_history: BTreeMap<(TenantId, u64), Policy>,
    /// The public keys audit records may be sealed with, kept for the audit
    /// retention past the key's end (at most [`MAX_EVIDENCE_KEYS`]).
    pub evidence_keys: BTreeMap<KeyId, EvidenceKey>,
    /// Shipped issuance audit records, keyed by (broker, sequence).
    pub audit: BTreeMap<(NodeId, u64), IssuanceRecord>,
    /// The tenant each issued status index was issued for, from the
    /// issuance records; kept while the index's lease lives.
    pub issued_tenants: BTreeMap<u64, TenantId>,
    /// Operator role bindings, by principal (`operator:<name>`,
    /// `token:<name>`), and their version (bumped by every change).
    pub roles: BTreeMap<String, BTreeSet<OperatorRole>>,
    pub roles_version: u64,
    /// The operator access policy; `None` means the default.
    pub access_policy: Option<Policy>,
    /// Control-plane audit events by log index.
    pub control_audit: BTreeMap<u64, ControlEvent>,
    /// Break-glass grants by id (the log index that opened them).
    pub grants: BTreeMap<u64, Grant>,
    /// Revocations that took effect, by kind, since the cluster began
    /// (never pruned): the same on every replica at the same log index.
    pub revocations: RevocationCounts,
    /// SSF receivers by name (at most [`crate::ssf::MAX_SSF_RECEIVERS`]).
    pub ssf_receivers: BTreeMap<String, SsfReceiver>,
    /// SSF streams by id (at most [`crate::ssf::MAX_SSF_STREAMS`]).
    pub ssf_streams: BTreeMap<String, SsfStream>,
    /// Revocation events by sequence number, in log order (the last
    /// [`crate::ssf::MAX_SSF_EVENTS`], none older than the audit retention).
    pub ssf_events: BTreeMap<u64, SsfEvent>,
    /// The sequence number the next revocation event gets (from 1).
    pub ssf_next_seq: u64,
    requests: BTreeMap<RequestId, RequestRecord>,
    /// `(epoch, index)` for every revoked index: the feed's deltas read the
    /// indices revoked after an epoch without scanning them all. Derived
    /// from `revoked_indices`, so not serialised; rebuilt on restore.
    #[serde(skip)]
    revoked_by_epoch: BTreeSet<(u64, u64)>,
    /// Request ids in the order they were applied, for expiry.
    request_order: VecDeque<(u64, RequestId)>,
    next_prune_at_ms: u64,
}

impl Default for LedgerState {
    fn default() -> Self {
        Self::new(LedgerParams::default())
    }
}

impl LedgerState {
    pub fn new(params: LedgerParams) -> Self {
        Self {
            params,
            cluster_time_ms: 0,
            last_applied_index: None,
            revocation_epoch: 0,
            next_index: 0,
            leases: BTreeMap::new(),
            revoked_indices: BTreeMap::new(),
            subject_rules: BTreeMap::new(),
            tenant_rules: BTreeMap::new(),
            task_rules: BTreeMap::new(),
            keys: BTreeMap::new(),
            revoked_secrets: BTreeMap::new(),
            revoked_foreign_keys: BTreeMap::new(),
            join_tokens: BTreeMap::new(),
            policies: BTreeMap::new(),
            policy_history: BTreeMap::new(),
            evidence_keys: BTreeMap::new(),
            audit: BTreeMap::new(),
            issued_tenants: BTreeMap::new(),
            roles: BTreeMap::new(),
            roles_version: 0,
            access_policy: None,
            control_audit: BTreeMap::new(),
            grants: BTreeMap::new(),
            revocations: RevocationCounts::default(),
            ssf_receivers: BTreeMap::new(),
            ssf_streams: BTreeMap::new(),
            ssf_events: BTreeMap::new(),
            ssf_next_seq: 1,
            requests: BTreeMap::new(),
            revoked_by_epoch: BTreeSet::new(),
            request_order: VecDeque::new(),
            next_prune_at_ms: 0,
        }
    }

    /// Apply one committed proposal at `log_index`. Deterministic: it reads
    /// no clock and no randomness, only the proposal and the state.
    pub fn apply(&mut self, log_index: u64, proposal: &Proposal) -> Response {
        self.apply_owned(log_index, proposal.clone())
    }

    /// [`LedgerState::apply`] of a proposal the caller gives up: what it
    /// carries to keep (shipped audit records) is moved into the state
    /// rather than copied.
    pub fn apply_owned(&mut self, log_index: u64, mut proposal: Proposal) -> Response {
        self.advance_to(log_index);
        self.cluster_time_ms = self.cluster_time_ms.max(proposal.stamped_at_ms);
        let now_ms = self.cluster_time_ms;
        if now_ms >= self.next_prune_at_ms {
            self.prune(log_index, now_ms);
            self.next_prune_at_ms = now_ms.saturating_add(self.params.prune_interval_ms);
        }

        let command_hash = hash_command(&proposal.command);
        if let Some(record) = self.requests.get(&proposal.request_id) {
            let mut response = record.response.clone();
            if record.command_hash != command_hash {
                response.outcome = Err(Refusal::RequestIdReused);
            }
            response.duplicate = true;
            return response;
        }

        let outcome = match &mut proposal.command {
            Command::RecordIssuances { broker, records } => {
                self.record_issuances(*broker, std::mem::take(records))
            }
            command => self.execute(log_index, now_ms, &proposal.request_id, command),
        };
        let response = Response {
            log_index,
            applied_at_ms: now_ms,
            outcome,
            duplicate: false,
        };
        self.requests.insert(
            proposal.request_id.clone(),
            RequestRecord {
                command_hash,
                response: response.clone(),
            },
        );
        self.request_order
            .push_back((now_ms, proposal.request_id.clone()));
        response
    }

    /// Note a log entry that carries no proposal (a blank or membership
    /// entry), so the applied index stays in step with the log.
    pub fn apply_internal(&mut self, log_index: u64) {
        self.advance_to(log_index);
    }

    fn advance_to(&mut self, log_index: u64) {
        assert!(
            Some(log_index) > self.last_applied_index,
            "log index {log_index} applied after {:?}",
            self.last_applied_index
        );
        self.last_applied_index = Some(log_index);
    }

    /// Record `index` as revoked, keeping the by-epoch view in step.
    pub(crate) fn insert_revoked_index(&mut self, index: u64, revoked: RevokedAt) {
        self.revoked_indices.insert(index, revoked);
        self.revoked_by_epoch.insert((revoked.epoch, index));
    }

    /// First status index of the live window: the start of the oldest lease
    /// still held, or the next index to lease when none is.
    pub fn window_base(&self) -> u64 {
        self.leases
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_index)
    }

    /// The live lease that holds `index`, if any.
    pub fn lease_of(&self, index: u64) -> Option<&Lease> {
        self.leases
            .range(..=index)
            .next_back()
            .map(|(_, lease)| lease)
            .filter(|lease| index < lease.end)
    }

    /// Drop what can no longer matter at `now_ms`: revocations of credentials
    /// that have all expired, expired join tokens, forgotten request ids.
    fn prune(&mut self, log_index: u64, now_ms: u64) {
        let (base_before, keys_before) = (self.window_base(), self.keys.len());
        let ttl = self.params.max_credential_ttl_ms;
        // Leases leave in index order, so everything pruned lies below the
        // first live lease: the feed's window only ever moves its base up.
        let expired: Vec<(u64, u64)> = self
            .leases
            .values()
            .take_while(|lease| lease.credentials_expire_by_ms <= now_ms)
            .map(|lease| (lease.start, lease.end))
            .collect();
        for (start, end) in expired {
            self.leases.remove(&start);
            let doomed: Vec<u64> = self
                .revoked_indices
                .range(start..end)
                .map(|(index, _)| *index)
                .collect();
            for index in doomed {
                if let Some(at) = self.revoked_indices.remove(&index) {
                    self.revoked_by_epoch.remove(&(at.epoch, index));
                }
            }
        }
        self.subject_rules
            .retain(|_, rule| rule.issued_before_ms.saturating_add(ttl) > now_ms);
        self.tenant_rules
            .retain(|_, rule| rule.issued_before_ms.saturating_add(ttl) > now_ms);
        self.task_rules
            .retain(|_, rule| rule.issued_before_ms.saturating_add(ttl) > now_ms);
        self.keys
            .retain(|_, key| key.not_after_ms.saturating_add(ttl) > now_ms);
        if self.window_base() != base_before || self.keys.len() != keys_before {
            self.revocation_epoch = log_index;
        }
        // Expired and spent tokens are kept a while longer, so using one
        // is refused as expired or spent rather than as unknown.
        self.join_tokens
            .retain(|_, token| token.expires_at_ms.saturating_add(ttl) > now_ms);
        let retention = self.params.audit_retention_ms;
        self.audit
            .retain(|_, record| record.at_ms.saturating_add(retention) > now_ms);
        // A key may seal records until it is dropped from `keys`; those
        // records are kept for the retention after that.
        self.evidence_keys.retain(|_, key| {
            key.not_after_ms
                .saturating_add(ttl)
                .saturating_add(retention)
                > now_ms
        });
        self.control_audit
            .retain(|_, event| event.at_ms.saturating_add(retention) > now_ms);
        self.grants
            .retain(|_, grant| grant.expires_at_ms.saturating_add(retention) > now_ms);
        while self
            .ssf_events
            .first_key_value()
            .is_some_and(|(_, event)| event.at_ms.saturating_add(retention) <= now_ms)
        {
            self.ssf_events.pop_first();
        }
        let base = self.window_base();
        self.issued_tenants = self.issued_tenants.split_off(&base);
        let dedup = self.params.request_dedup_ms;
        while let Some((at_ms, _)) = self.request_order.front() {
            if at_ms.saturating_add(dedup) > now_ms {
                break;
            }
            if let Some((_, id)) = self.request_order.pop_front() {
                self.requests.remove(&id);
            }
        }
    }

    /// Whether a credential with these facts is revoked by the current
    /// state: its index or any of its `ancestors`' (the indices of the
    /// credentials it was exchanged from), its tenant's, subject's or
    /// (tenant, `task`)'s rule, or its key.
    #[allow(clippy::too_many_arguments)]
    pub fn is_revoked(
        &self,
        index: StatusIndex,
        tenant: &TenantId,
        subject: &WorkloadId,
        key_id: &KeyId,
        issued_at_ms: u64,
        task: Option<&str>,
        ancestors: &[u64],
    ) -> bool {
        let by_rule = |rule: Option<&IssuedBeforeRule>| {
            rule.is_some_and(|rule| issued_at_ms < rule.issued_before_ms)
        };
        self.revoked_indices.contains_key(&index.0)
            || ancestors
                .iter()
                .any(|ancestor| self.revoked_indices.contains_key(ancestor))
            || by_rule(self.tenant_rules.get(tenant))
            || by_rule(self.subject_rules.get(&(tenant.clone(), subject.clone())))
            || task.is_some_and(|task| {
                by_rule(self.task_rules.get(&(tenant.clone(), task.to_owned())))
            })
            || self
                .keys
                .get(key_id)
                .is_some_and(|key| key.revoked.is_some())
    }

    /// The revoked indices whose revocation committed after `epoch`, in
    /// increasing order of index.
    pub fn indices_revoked_after(&self, epoch: u64) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .revoked_by_epoch
            .range((epoch.saturating_add(1), 0)..)
            .map(|(_, index)| *index)
            .collect();
        out.sort_unstable();
        out
    }

    /// Rebuild what is derived from the serialised fields (after restore).
    pub(crate) fn rebuild_derived(&mut self) {
        self.revoked_by_epoch = self
            .revoked_indices
            .iter()
            .map(|(index, at)| (at.epoch, *index))
            .collect();
    }

    /// The remembered answer for a request id, if it is still remembered.
    pub fn response_for(&self, request_id: &RequestId) -> Option<&Response> {
        self.requests.get(request_id).map(|record| &record.response)
    }

    /// How many request ids are remembered for deduplication.
    pub fn remembered_requests(&self) -> usize {
        self.requests.len()
    }
}

/// The SHA-256 of the command's postcard encoding, fed to the hash as it
/// is encoded: a shipped audit batch is about a megabyte, and each broker
/// hashes each command it applies.
fn hash_command(command: &Command) -> Sha256 {
    postcard::serialize_with_flavor(command, Hashing(Hasher::new()))
        .expect("commands always serialise")
}

/// A postcard output that hashes what it is given instead of keeping it.
struct Hashing(Hasher);

impl postcard::ser_flavors::Flavor for Hashing {
    type Output = Sha256;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.update([data]);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.update(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Sha256> {
        Ok(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Revocation;

    /// Command hashes are kept in snapshots (a reused request id is told
    /// apart by them): hashing while encoding gives what hashing the
    /// encoding gave.
    #[test]
    fn a_command_hash_is_the_hash_of_its_encoding() {
        let commands = [
            Command::ConfirmLeadership,
            Command::RevokeMany(
                (0..5_000)
                    .map(|i| Revocation::Index(StatusIndex(i * 7)))
                    .collect(),
            ),
        ];
        for command in &commands {
            let bytes = postcard::to_stdvec(command).unwrap();
            let expected: Sha256 = Hasher::digest(&bytes).into();
            assert_eq!(hash_command(command), expected);
        }
        assert_ne!(hash_command(&commands[0]), hash_command(&commands[1]));
    }
}
