//! Emergency access at the edge: the break-glass keys a verifier trusts
//! and the limits it holds them to, and the queue of **emergency uses**
//! (break-glass credentials accepted, and credentials accepted while stale
//! because the verifier fails open) waiting to be reported to a broker.
//!
//! The queue is bounded ([`USE_QUEUE_CAPACITY`] credentials); repeated
//! acceptances of one credential before a report add to one entry's count,
//! and a use that finds the queue full is counted as dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use lapse_credential::Jwk;
use lapse_credential::break_glass::{MAX_TTL_SECONDS, key_id_of};
use lapse_wire::feed as wire;
use serde::Serialize;

/// The longest lifetime a verifier may allow break-glass credentials.
pub const MAX_TTL: Duration = Duration::from_secs(MAX_TTL_SECONDS);
/// Credentials whose emergency uses wait at most for a report.
pub const USE_QUEUE_CAPACITY: usize = 1024;
/// Uses in one `UseReport`.
pub const MAX_USES_PER_REPORT: usize = 64;
/// Longest string in a reported use, in bytes (longer ones are cut).
pub const MAX_REPORTED_FIELD_BYTES: usize = 512;
/// Most audiences in a reported use.
pub const MAX_REPORTED_AUDIENCES: usize = 16;

/// Break-glass keys and the limits a verifier accepts their credentials
/// within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassConfig {
    /// Public keys by key id ([`key_id_of`] each key).
    keys: BTreeMap<String, [u8; 32]>,
    /// A break-glass credential may name only these audiences.
    audiences: BTreeSet<String>,
    /// The longest lifetime (`exp - iat`) accepted, at most [`MAX_TTL`].
    max_ttl: Duration,
}

/// Why a break-glass configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakGlassConfigError {
    #[error("give at least one break-glass public key")]
    NoKey,
    #[error("give at least one audience break-glass credentials may be used for")]
    NoAudience,
    #[error("maximum lifetime of {0:?}: give a positive one of at most 1 h")]
    BadMaxTtl(Duration),
    #[error("not a break-glass public key: {0}")]
    BadKey(String),
}

impl BreakGlassConfig {
    pub fn new(
        public_keys: impl IntoIterator<Item = [u8; 32]>,
        audiences: impl IntoIterator<Item = String>,
        max_ttl: Duration,
    ) -> Result<Self, BreakGlassConfigError> {
        let keys: BTreeMap<String, [u8; 32]> = public_keys
            .into_iter()
            .map(|key| (key_id_of(&key).to_string(), key))
            .collect();
        if keys.is_empty() {
            return Err(BreakGlassConfigError::NoKey);
        }
        let audiences: BTreeSet<String> = audiences.into_iter().collect();
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            return Err(BreakGlassConfigError::NoAudience);
        }
        if max_ttl < Duration::from_secs(1) || max_ttl > MAX_TTL {
            return Err(BreakGlassConfigError::BadMaxTtl(max_ttl));
        }
        Ok(Self {
            keys,
            audiences,
            max_ttl,
        })
    }

    /// The key ids of the break-glass keys, as credentials name them.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub(crate) fn keys(&self) -> &BTreeMap<String, [u8; 32]> {
        &self.keys
    }

    pub fn audiences(&self) -> &BTreeSet<String> {
        &self.audiences
    }

    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }
}

/// Read a break-glass public key from the JWK `lapse break-glass keygen`
/// wrote. A JWK holding a private key (`d`) is refused: verifiers are
/// given the public key only.
pub fn parse_public_jwk(text: &str) -> Result<[u8; 32], BreakGlassConfigError> {
    let bad = |why: String| BreakGlassConfigError::BadKey(why);
    let jwk: Jwk = serde_json::from_str(text).map_err(|e| bad(format!("not a JWK: {e}")))?;
    if jwk.d.is_some() {
        return Err(bad(
            "this is the private key; give verifiers the public one (the .pub.jwk file)".into(),
        ));
    }
    let key = jwk.public_key().map_err(|e| bad(e.to_string()))?;
    let key_id = key_id_of(&key);
    if let Some(kid) = &jwk.kid
        && kid != key_id.as_str()
    {
        return Err(bad(format!(
            "its kid {kid:?} is not the key's id {key_id:?}: the file was edited"
        )));
    }
    Ok(key)
}

/// What kind of emergency a use was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UseKind {
    /// A break-glass credential accepted.
    BreakGlass,
    /// A regular credential accepted while stale (fail-open).
    FailOpen,
}

/// One credential's emergency use at this verifier, waiting to be
/// reported to a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmergencyUse {
    pub kind: UseKind,
    /// Cluster time (as this verifier estimates it) of the first
    /// acceptance, ms.
    pub at_ms: u64,
    /// And of the last one.
    pub last_at_ms: u64,
    /// Acceptances of this credential since it was last reported.
    pub count: u32,
    pub jti: String,
    pub subject: String,
    pub tenant: String,
    pub audiences: Vec<String>,
    /// Break-glass: the credential's reason. Fail-open: why the verifier
    /// was stale.
    pub reason: String,
    pub key_id: String,
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn capped(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl EmergencyUse {
    /// The use as a feed `EmergencyUse`, from verifier `verifier_id`.
    pub fn to_wire(&self, verifier_id: &str) -> wire::EmergencyUse {
        let cap = |text: &str| capped(text, MAX_REPORTED_FIELD_BYTES);
        wire::EmergencyUse {
            kind: match self.kind {
                UseKind::BreakGlass => wire::EmergencyUseKind::BreakGlass,
                UseKind::FailOpen => wire::EmergencyUseKind::FailOpen,
            } as i32,
            at_ms: self.at_ms,
            last_at_ms: self.last_at_ms,
            count: self.count,
            jti: cap(&self.jti),
            subject: cap(&self.subject),
            tenant: cap(&self.tenant),
            audiences: self
                .audiences
                .iter()
                .take(MAX_REPORTED_AUDIENCES)
                .map(|a| cap(a))
                .collect(),
            reason: cap(&self.reason),
            key_id: cap(&self.key_id),
            verifier_id: cap(verifier_id),
        }
    }
}

/// Emergency uses not yet handed over for reporting, oldest first.
#[derive(Debug, Default)]
pub(crate) struct UseQueue {
    /// By arrival order.
    pending: BTreeMap<u64, EmergencyUse>,
    /// Arrival number of the pending entry of each credential.
    by_credential: HashMap<(UseKind, String), u64>,
    next: u64,
    /// Uses lost because the queue was full.
    pub(crate) dropped: u64,
    /// Uses handed over for reporting (each entry counts its `count`).
    pub(crate) handed_over: u64,
    /// Entries handed over whose recording no broker has confirmed yet:
    /// they come back (with [`UseQueue::give_back`]) if the subscription
    /// ends first.
    pub(crate) unconfirmed: usize,
}

/// What recording a use did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// The first pending use of this credential.
    New,
    /// Added to the pending entry of this credential.
    Counted,
    /// The queue is full.
    Dropped,
}

impl UseQueue {
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Record one use (or `use_.count` uses).
    pub(crate) fn record(&mut self, use_: EmergencyUse) -> Recorded {
        let key = (use_.kind, use_.jti.clone());
        if let Some(entry) = self
            .by_credential
            .get(&key)
            .and_then(|seq| self.pending.get_mut(seq))
        {
            entry.count = entry.count.saturating_add(use_.count);
            entry.at_ms = entry.at_ms.min(use_.at_ms);
            entry.last_at_ms = entry.last_at_ms.max(use_.last_at_ms);
            return Recorded::Counted;
        }
        if self.pending.len() >= USE_QUEUE_CAPACITY {
            self.dropped += u64::from(use_.count);
            return Recorded::Dropped;
        }
        let seq = self.next;
        self.next += 1;
        self.by_credential.insert(key, seq);
        self.pending.insert(seq, use_);
        Recorded::New
    }

    /// Hand over at most `max` entries, oldest first.
    pub(crate) fn take(&mut self, max: usize) -> Vec<EmergencyUse> {
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some((_, use_)) = self.pending.pop_first() else {
                break;
            };
            self.by_credential.remove(&(use_.kind, use_.jti.clone()));
            self.handed_over += u64::from(use_.count);
            taken.push(use_);
        }
        self.unconfirmed += taken.len();
        taken
    }

    /// A broker confirmed it recorded `entries` handed-over entries.
    pub(crate) fn confirmed(&mut self, entries: usize) {
        self.unconfirmed = self.unconfirmed.saturating_sub(entries);
    }

    /// Take back entries that could not be delivered.
    pub(crate) fn give_back(&mut self, uses: Vec<EmergencyUse>) {
        self.unconfirmed = self.unconfirmed.saturating_sub(uses.len());
        for use_ in uses {
            self.handed_over = self.handed_over.saturating_sub(u64::from(use_.count));
            self.record(use_);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn use_of(jti: &str, at_ms: u64) -> EmergencyUse {
        EmergencyUse {
            kind: UseKind::BreakGlass,
            at_ms,
            last_at_ms: at_ms,
            count: 1,
            jti: jti.into(),
            subject: "spiffe://example.org/a".into(),
            tenant: "break-glass".into(),
            audiences: vec!["billing".into()],
            reason: "INC-1".into(),
            key_id: "bg-x".into(),
        }
    }

    #[test]
    fn the_queue_counts_repeats_and_drops_beyond_its_capacity() {
        let mut queue = UseQueue::default();
        assert_eq!(queue.record(use_of("a", 5)), Recorded::New);
        assert_eq!(queue.record(use_of("a", 9)), Recorded::Counted);
        let mut fail_open = use_of("a", 6);
        fail_open.kind = UseKind::FailOpen;
        assert_eq!(queue.record(fail_open), Recorded::New);
        for i in 0..USE_QUEUE_CAPACITY {
            queue.record(use_of(&format!("n{i}"), 10));
        }
        assert_eq!(queue.len(), USE_QUEUE_CAPACITY);
        assert_eq!(queue.dropped, 2);
        let first = queue.take(1);
        assert_eq!(
            (first[0].count, first[0].at_ms, first[0].last_at_ms),
            (2, 5, 9)
        );
        assert_eq!((queue.handed_over, queue.unconfirmed), (2, 1));
        queue.give_back(first);
        assert_eq!((queue.handed_over, queue.len()), (0, USE_QUEUE_CAPACITY));
        assert_eq!(queue.unconfirmed, 0);
        let all = queue.take(usize::MAX);
        assert_eq!(all.len(), USE_QUEUE_CAPACITY);
        assert_eq!((queue.len(), queue.unconfirmed), (0, USE_QUEUE_CAPACITY));
        queue.confirmed(USE_QUEUE_CAPACITY - 1);
        assert_eq!(queue.unconfirmed, 1);
    }

    #[test]
    fn reported_fields_are_capped() {
        let mut long = use_of("a", 1);
        long.subject = "é".repeat(400);
        long.audiences = vec!["x".into(); 40];
        let wire = long.to_wire("edge-1");
        assert!(wire.subject.len() <= MAX_REPORTED_FIELD_BYTES);
        assert_eq!(wire.audiences.len(), MAX_REPORTED_AUDIENCES);
        assert_eq!(wire.kind, wire::EmergencyUseKind::BreakGlass as i32);
        assert_eq!(wire.verifier_id, "edge-1");
    }

    #[test]
    fn a_configuration_holds_to_its_limits() {
        let key = [9; 32];
        let ok = BreakGlassConfig::new([key], ["billing".to_owned()], MAX_TTL).unwrap();
        assert_eq!(ok.key_ids().count(), 1);
        assert_eq!(
            BreakGlassConfig::new([key], ["billing".to_owned()], MAX_TTL * 2),
            Err(BreakGlassConfigError::BadMaxTtl(MAX_TTL * 2))
        );
        assert_eq!(
            BreakGlassConfig::new([key], Vec::new(), MAX_TTL),
            Err(BreakGlassConfigError::NoAudience)
        );
        assert_eq!(
            BreakGlassConfig::new([], ["billing".to_owned()], MAX_TTL),
            Err(BreakGlassConfigError::NoKey)
        );
    }

    #[test]
    fn a_private_jwk_is_refused_and_a_public_one_read() {
        let public = lapse_credential::Jwk::from_public_key(Some(&key_id_of(&[3; 32])), &[3; 32]);
        let text = serde_json::to_string(&public).unwrap();
        assert_eq!(parse_public_jwk(&text).unwrap(), [3; 32]);
        let mut private = public.clone();
        private.d = Some("AAAA".into());
        let text = serde_json::to_string(&private).unwrap();
        assert!(matches!(
            parse_public_jwk(&text),
            Err(BreakGlassConfigError::BadKey(why)) if why.contains("private")
        ));
        let mut renamed = public;
        renamed.kid = Some("bg-other".into());
        assert!(parse_public_jwk(&serde_json::to_string(&renamed).unwrap()).is_err());
    }
}
