//! What clients ask the ledger to do, and what it answers. Every type here is
//! replicated through the Raft log, so changing one changes the log format.

use lapse_credential::{KeyId, StatusIndex, TenantId, WorkloadId};
use serde::{Deserialize, Serialize};

use crate::ssf::{SsfStatus, SsfStreamConfig};

mod policy_text;
mod refusal;
pub use policy_text::{MAX_POLICY_NESTING, policy_nesting, policy_text_refusal};
pub use refusal::Refusal;

/// The id of a broker, equal to its Raft node id.
pub type NodeId = u64;

/// A sha256 digest: of a join token, of a leaked secret, of a state.
pub type Sha256 = [u8; 32];

/// The most revocations one `RevokeMany` command may carry.
pub const MAX_BATCH: usize = 4096;
/// The most indices one lease may grant.
pub const MAX_LEASE_COUNT: u64 = 1 << 22;
/// The longest accepted request id, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// A client-chosen id that makes a request idempotent: a retried request with
/// the same id gets the first answer and is not applied twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestIdError {
    #[error("request id is empty")]
    Empty,
    #[error("request id is {0} bytes long; the limit is {MAX_REQUEST_ID_LEN}")]
    TooLong(usize),
    #[error("request id contains {0:?}; allowed are ASCII letters, digits, '-', '_', '.', ':'")]
    BadCharacter(char),
}

impl RequestId {
    pub fn new(value: impl Into<String>) -> Result<Self, RequestIdError> {
        let value = value.into();
        if value.is_empty() {
            return Err(RequestIdError::Empty);
        }
        if value.len() > MAX_REQUEST_ID_LEN {
            return Err(RequestIdError::TooLong(value.len()));
        }
        if let Some(c) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
        {
            return Err(RequestIdError::BadCharacter(c));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RequestId {
    type Error = RequestIdError;
    fn try_from(value: String) -> Result<Self, RequestIdError> {
        Self::new(value)
    }
}

impl From<RequestId> for String {
    fn from(id: RequestId) -> String {
        id.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of the replicated log as the application sees it: a client
/// request plus the time the leader stamped on it. `apply` reads time only
/// from here, never from a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub request_id: RequestId,
    /// Milliseconds since the Unix epoch on the leader when it proposed this.
    pub stamped_at_ms: u64,
    pub command: Command,
}

/// What can be revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Revocation {
    /// One credential, by its status index.
    Index(StatusIndex),
    /// Every credential of one workload issued before a time. `None` means
    /// the commit time of the revocation.
    Subject {
        tenant: TenantId,
        subject: WorkloadId,
        issued_before_ms: Option<u64>,
    },
    /// Every credential of a tenant issued before a time.
    Tenant {
        tenant: TenantId,
        issued_before_ms: Option<u64>,
    },
    /// Every credential a signing key signed.
    Key(KeyId),
    /// A leaked static secret, by the sha256 of its bytes.
    SecretHash(Sha256),
    /// One credential, presented whole (as RFC 7009 lets a holder revoke
    /// a token): applying it checks its signature against the registered
    /// keys and revokes the status index it names. Its signature proves
    /// its tenant, so a tenant's operator may revoke it before the
    /// issuance record reaches the ledger. At most
    /// [`lapse_credential::presented::MAX_PRESENTED_BYTES`].
    Credential(PresentedToken),
    // Variants are only ever added at the end: the log stores each by its
    // position.
    /// Every credential of a tenant carrying task id `task` (its `task`
    /// claim) issued before the commit time of the revocation, whatever
    /// delegated it. `task` is a task id (`lapse_credential::task_problem`
    /// says why not): anything else is refused when applied.
    Task { tenant: TenantId, task: String },
}

/// A credential presented whole. A bearer secret: debug output (and so
/// every log line that shows a command) names it by its SHA-256 only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PresentedToken(pub String);

impl std::fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        write!(f, "PresentedToken(sha256:{})", hex::encode(&digest[..8]))
    }
}

/// What a join token lets its holder do, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinGrant {
    /// Join the cluster as a broker (first as a learner). When `address` is
    /// set, only a broker advertising that address may use the token.
    Broker { address: Option<String> },
    /// Obtain a credential for this workload of this tenant.
    Workload {
        tenant: TenantId,
        workload: WorkloadId,
    },
}

/// What is presented when a join token is used; checked against its grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinUse {
    Broker { node_id: NodeId, address: String },
    Workload,
}

/// A state change. Everything that changes the ledger is one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Revoke(Revocation),
    /// Up to [`MAX_BATCH`] revocations in one log entry, each answered alone.
    RevokeMany(Vec<Revocation>),
    /// Grant `broker` the next `count` status indices, to issue from for
    /// `lease_ms` after the commit.
    LeaseIndices {
        broker: NodeId,
        count: u64,
        lease_ms: u64,
    },
    RegisterKey {
        key_id: KeyId,
        broker: NodeId,
        public_key: Vec<u8>,
        not_before_ms: u64,
        not_after_ms: u64,
    },
    RetireKey {
        key_id: KeyId,
    },
    CreateJoinToken {
        token_hash: Sha256,
        grant: JoinGrant,
        expires_at_ms: u64,
    },
    ConsumeJoinToken {
        token_hash: Sha256,
        presented: JoinUse,
    },
    /// Replace a tenant's issuance policy (Cedar text, checked by the broker
    /// before it is proposed). With `expected_version`, refused unless the
    /// current version matches, so concurrent edits cannot silently clobber.
    SetPolicy {
        tenant: TenantId,
        text: String,
        expected_version: Option<u64>,
    },
    /// Issuance audit records shipped by a broker from its local audit log.
    RecordIssuances {
        broker: NodeId,
        records: Vec<IssuanceRecord>,
    },
    /// Changes nothing. A leader whose read index is still waiting for a
    /// quorum proposes one: its replication carries the acknowledgements
    /// the read needs when Raft heartbeats cannot (their deadline is the
    /// heartbeat interval, shorter than a cross-region round trip).
    ConfirmLeadership,
    // Variants are only ever added at the end: the log stores each by its
    // position.
    /// A control-plane command an operator asked for, with how it was
    /// authorised. Applying it checks that the command stays within the
    /// tenant it was authorised for, carries it out, and records a
    /// control-plane audit event with the outcome.
    Operate {
        authorization: Authorization,
        command: Box<Command>,
    },
    /// A control-plane audit event for an action carried out outside the
    /// ledger (membership, key rotation) or refused before it reached it.
    RecordControl {
        authorization: Authorization,
        outcome: Result<String, String>,
    },
    /// Grant `principal` a role. Only inside `Operate`.
    BindRole {
        principal: String,
        role: OperatorRole,
    },
    /// Take a role from `principal`. Only inside `Operate`.
    UnbindRole {
        principal: String,
        role: OperatorRole,
    },
    /// Replace the operator access policy (Cedar, checked by the broker
    /// before it is proposed). Only inside `Operate`.
    SetAccessPolicy {
        text: String,
        expected_version: Option<u64>,
    },
    /// Open a break-glass grant: `role` for the operator who asks, until
    /// `expires_at_ms` in cluster time. Only inside `Operate`; its id is
    /// the log index it is applied at.
    OpenGrant {
        role: OperatorRole,
        expires_at_ms: u64,
        reason: String,
        /// Whether a second operator must approve it before it counts.
        needs_approval: bool,
    },
    /// A second operator approves a grant. Only inside `Operate`.
    ApproveGrant {
        id: u64,
    },
    /// Close a grant before it expires. Only inside `Operate`.
    CloseGrant {
        id: u64,
    },
    /// Create an SSF receiver, known by the SHA-256 of its bearer token,
    /// for one tenant or (`None`) every tenant. Only inside `Operate`.
    CreateSsfReceiver {
        name: String,
        token_hash: Sha256,
        tenant: Option<TenantId>,
    },
    /// Remove an SSF receiver and its streams. Only inside `Operate`.
    RemoveSsfReceiver {
        name: String,
    },
    /// Create a stream for `receiver` (`stream_id: None`; its id is then
    /// `s<log index>`) or replace one's configuration. A broker proposes it
    /// for the receiver it authenticated by its token.
    PutSsfStream {
        receiver: String,
        stream_id: Option<String>,
        config: SsfStreamConfig,
    },
    /// Delete one of `receiver`'s streams.
    DeleteSsfStream {
        receiver: String,
        stream_id: String,
    },
    /// Enable, pause or disable a stream: by its receiver, or (`receiver:
    /// None`) by the broker delivering it, which pauses a stream whose
    /// endpoint keeps failing.
    SetSsfStatus {
        receiver: Option<String>,
        stream_id: String,
        status: SsfStatus,
        reason: Option<String>,
    },
    /// Every event of the stream up to sequence number `up_to` was
    /// delivered and acknowledged (by a poll's `ack`, or by a push
    /// endpoint's 202). A position only moves forward.
    AckSsf {
        stream_id: String,
        up_to: u64,
    },
}

/// A break-glass grant: a time-bound role for one operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub principal: String,
    pub role: OperatorRole,
    pub reason: String,
    pub opened_at_ms: u64,
    pub expires_at_ms: u64,
    pub needs_approval: bool,
    pub approved_by: Option<String>,
    pub closed_at_ms: Option<u64>,
}

impl Grant {
    /// Whether the grant gives its role at cluster time `now_ms`.
    pub fn in_force(&self, now_ms: u64) -> bool {
        (!self.needs_approval || self.approved_by.is_some())
            && self.closed_at_ms.is_none()
            && self.opened_at_ms <= now_ms
            && now_ms < self.expires_at_ms
    }
}

/// The longest a break-glass grant lasts.
pub const MAX_GRANT_MS: u64 = 8 * 3600 * 1000;
/// The most grants the ledger keeps (expired ones leave after the audit
/// retention, the oldest first when full).
pub const MAX_GRANTS: usize = 1000;

/// An operator role, granted to a principal by a binding in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OperatorRole {
    /// Everything, cluster-wide.
    ClusterAdmin,
    /// Revocations, issuance policy, join tokens and audit of one tenant.
    TenantAdmin(TenantId),
    /// Revocations of one tenant.
    Revoker(TenantId),
    /// The audit of one tenant, or of every tenant with `None`.
    Auditor(Option<TenantId>),
    /// Reads of the feed's state (propagation).
    Verifier,
}

impl std::fmt::Display for OperatorRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperatorRole::ClusterAdmin => f.write_str("cluster-admin"),
            OperatorRole::TenantAdmin(t) => write!(f, "tenant-admin of {t}"),
            OperatorRole::Revoker(t) => write!(f, "revoker of {t}"),
            OperatorRole::Auditor(Some(t)) => write!(f, "auditor of {t}"),
            OperatorRole::Auditor(None) => f.write_str("auditor of every tenant"),
            OperatorRole::Verifier => f.write_str("verifier"),
        }
    }
}

/// The longest principal name a binding or an audit event holds.
pub const MAX_PRINCIPAL_BYTES: usize = 160;
/// The longest justification an audit event holds.
pub const MAX_JUSTIFICATION_BYTES: usize = 512;
/// The most role bindings the ledger holds.
pub const MAX_BINDINGS: usize = 10_000;

/// How a control-plane action was authorised: who (as the broker that took
/// the call authenticated them), what, for which tenant (`None`:
/// cluster-wide), under which versions of the role bindings and the access
/// policy, and why, if the operator said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    /// `operator:<name>` or `token:<name>`.
    pub principal: String,
    /// The action's name in the access policy (`revoke`, `set_policy`, ...).
    pub action: String,
    pub tenant: Option<TenantId>,
    pub bindings_version: u64,
    /// 0 for the default policy.
    pub policy_version: u64,
    pub justification: Option<String>,
    /// The break-glass grant the decision needed, if it needed one: every
    /// action under a grant is tagged with it.
    pub grant: Option<u64>,
}

/// What became of a control-plane action, in words: `Err` when refused.
pub type ControlOutcome = Result<String, String>;

/// One control-plane audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlEvent {
    pub at_ms: u64,
    pub request_id: RequestId,
    pub authorization: Authorization,
    /// What happened, in words; `Err` when refused.
    pub outcome: Result<String, String>,
}

/// The most audit records one `RecordIssuances` command may carry.
pub const MAX_AUDIT_BATCH: usize = 1024;
/// The most shipped issuance audit records the ledger keeps, whatever the
/// retention (a record takes one to two KiB here; the brokers' local logs
/// keep theirs, and `lapse audit export` takes them out): beyond it the
/// oldest leave first.
pub const MAX_KEPT_AUDIT_RECORDS: usize = 500_000;
/// The longest accepted policy text, in bytes.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// How many keys the cluster never registered (offline break-glass keys)
/// it can hold revoked.
pub const MAX_FOREIGN_KEY_REVOCATIONS: usize = 1024;
/// The key-id prefix of offline break-glass keys, which may be revoked
/// without ever being registered.
pub const BREAK_GLASS_KEY_PREFIX: &str = "bg-";
/// The SHA-256 of the empty string: revoking it would revoke no secret, so
/// it is refused as a target.
pub const EMPTY_SECRET_SHA256: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// How a workload proved who it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AttestationKind {
    JoinToken,
    ExternalJwt {
        issuer: String,
    },
    Refresh {
        previous_index: u64,
    },
    /// RFC 8693 token exchange: a credential delegated from the one at
    /// `parent_index`.
    Exchange {
        parent_index: u64,
    },
}

/// A policy decision as recorded: which policy version decided, over which
/// inputs (by hash), and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub policy_version: u64,
    pub input_sha256: Sha256,
    pub allowed: bool,
    /// Why, when refused.
    pub reason: String,
}

/// Which request a decision answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecisionKind {
    /// A credential on an attestation (join token, external JWT).
    Issue,
    /// A credential renewed from one of its refresh chain.
    Refresh,
    /// A narrower credential for a delegate (RFC 8693 token exchange).
    Exchange,
}

/// Everything a policy decision saw, kept with the decision so that it can
/// be checked and decided again later: with the text of the recorded policy
/// version, [`DecisionInputs`] decides the same way. Never a credential or
/// a secret, only their hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionInputs {
    pub kind: DecisionKind,
    pub tenant: TenantId,
    /// The principal: the attested workload (the chain's root on an exchange).
    pub workload: WorkloadId,
    /// What the new credential would carry.
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub ttl_seconds: u64,
    /// How long ago the refresh chain's attestation was (0 on issue).
    pub chain_age_seconds: u64,
    /// The presented credential's scopes (refresh, exchange), else empty.
    pub parent_scopes: Vec<String>,
    /// The `act` chain the new credential would carry, current actor first
    /// (empty unless delegated).
    pub actors: Vec<WorkloadId>,
    /// Its delegation depth: how many exchanges from the root.
    pub depth: u32,
    pub task: Option<String>,
    pub on_behalf_of: Option<String>,
    pub intent: Option<String>,
    /// SHA-256 of the attestation or credential presented.
    pub presented_sha256: Option<Sha256>,
    /// SHA-256 of the policy text that decided; `None` with no policy.
    pub policy_sha256: Option<Sha256>,
}

/// What makes a record evidence: the hash of the broker's previous record
/// (a chain per broker) and the signature, by the broker's committed key,
/// over the record with its seal's signature left empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub previous_sha256: Sha256,
    /// The signing key; `None` when the broker had no committed key yet
    /// (the record is then only chained).
    pub key_id: Option<KeyId>,
    /// Ed25519 signature, 64 bytes, or empty without a key.
    pub signature: Vec<u8>,
}

/// One issuance attempt, granted or refused, as a broker recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuanceRecord {
    /// The broker's own sequence number for the record, unique per broker.
    pub sequence: u64,
    pub at_ms: u64,
    pub tenant: Option<TenantId>,
    pub workload: Option<WorkloadId>,
    /// Set when a credential was issued.
    pub index: Option<StatusIndex>,
    pub key_id: Option<KeyId>,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub expires_at_ms: Option<u64>,
    pub attestation: Option<AttestationKind>,
    pub decision: Decision,
    /// The decision's complete inputs; `None` when the attempt was refused
    /// before a policy could be asked (no attestation, a bad request).
    pub inputs: Option<Box<DecisionInputs>>,
    /// Set by the broker's audit log as it appends the record.
    pub seal: Option<Seal>,
}

/// The answer to a proposal. Refusals are part of the replicated outcome:
/// every replica refuses the same command for the same reason.
pub type Outcome = Result<Applied, Refusal>;

/// The answer stored for a request id, returned again on a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The log index at which the request was first applied.
    pub log_index: u64,
    /// The cluster time of that apply.
    pub applied_at_ms: u64,
    pub outcome: Outcome,
    /// True when this answer is a replay of an earlier apply.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A revocation took effect; `epoch` is its log index.
    Revoked {
        epoch: u64,
        committed_at_ms: u64,
    },
    /// Each item of a `RevokeMany`, in order.
    RevokedMany {
        epoch: u64,
        committed_at_ms: u64,
        items: Vec<Result<(), Refusal>>,
    },
    Leased {
        /// First index of the block.
        start: u64,
        /// One past the last index of the block.
        end: u64,
        lease_expires_at_ms: u64,
        /// Every credential issued from the block has expired by then.
        credentials_expire_by_ms: u64,
    },
    KeyRegistered,
    KeyRetired,
    PolicySet {
        version: u64,
    },
    IssuancesRecorded {
        count: usize,
    },
    JoinTokenCreated,
    JoinTokenConsumed(JoinGrant),
    LeadershipConfirmed,
    /// A control-plane audit event was recorded (nothing else changed).
    ControlRecorded,
    RoleBound {
        version: u64,
    },
    RoleUnbound {
        version: u64,
    },
    AccessPolicySet {
        version: u64,
    },
    GrantOpened {
        id: u64,
    },
    GrantApproved,
    GrantClosed,
    SsfReceiverCreated,
    SsfReceiverRemoved {
        streams: usize,
    },
    SsfStreamSet {
        stream_id: String,
    },
    SsfStreamDeleted,
    SsfStatusSet,
    /// The stream's position after the ack (never less than before).
    SsfAcked {
        acked: u64,
    },
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {} ms: {:?}",
            self.request_id, self.stamped_at_ms, self.command
        )
    }
}
