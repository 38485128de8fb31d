//! `RuleSet`: revocation rules that cover many credentials at once — every
//! credential of a subject, a tenant or a tenant's task issued before a
//! cutoff, and every credential signed by a revoked key id.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::codec::{Reader, put_str, put_varint};
use crate::error::FilterError;

/// Hard cap on the entries of each rule map (subject, tenant, key id, task).
pub const MAX_RULES: u64 = 1 << 20;
/// Hard cap on the byte length of a tenant, subject or key id.
pub const MAX_STRING_BYTES: u64 = 1024;
/// Hard cap on the byte length of a task id: the longest a credential's
/// `task` claim may be, so a longer rule could never match.
pub const MAX_TASK_BYTES: u64 = 128;

/// What revoked a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedBy {
    /// Its status index is in the revoked set.
    StatusIndex,
    /// Its hash is a revoked (leaked) secret.
    SecretHash,
    /// The key that signed it is revoked.
    KeyId,
    /// Its tenant's credentials issued before a cutoff are revoked.
    Tenant,
    /// Its subject's credentials issued before a cutoff are revoked.
    Subject,
    /// Its tenant's credentials carrying its task, issued before a cutoff,
    /// are revoked.
    Task,
    /// The status index of a credential it was exchanged from (an
    /// ancestor in its delegation chain) is in the revoked set.
    Ancestor { index: u64 },
}

/// Subject, tenant, task and key-id revocation rules.
///
/// Cutoffs only move forward: inserting or merging a rule keeps the later of
/// the old and new cutoffs. A credential is revoked if it was issued strictly
/// before its subject's, tenant's or (tenant, task)'s cutoff, or its key id
/// is revoked.
///
/// Wire form (each section sorted, strictly increasing keys):
/// `varint n, n × (str tenant, str subject, varint cutoff_ms)`,
/// `varint n, n × (str tenant, varint cutoff_ms)`, `varint n, n × str key_id`,
/// `varint n, n × (str tenant, str task, varint cutoff_ms)`,
/// where `str` is `varint len, UTF-8 bytes` (a task at most
/// [`MAX_TASK_BYTES`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    subjects: BTreeMap<(String, String), u64>,
    tenants: BTreeMap<String, u64>,
    key_ids: BTreeSet<String>,
    tasks: BTreeMap<(String, String), u64>,
    /// Fingerprints of the subject and task rules' pairs, derived from the
    /// maps (see [`Prints`]).
    prints: Prints,
}

/// Fingerprints of the (tenant, subject) pairs of the subject rules and the
/// (tenant, task) pairs of the task rules: a credential whose pair has no
/// fingerprint here (almost every credential) is covered by no such rule,
/// found with one hash instead of string comparisons down an ordered map
/// of up to [`MAX_RULES`] entries. A fingerprint present only sends the
/// lookup on to the map, so a collision costs time, never an answer; and
/// the fingerprints are ordered, so no choice of rules makes a lookup
/// slower than a search of 64-bit integers.
///
/// Derived from the maps: every insertion adds its pair's fingerprint and
/// removals rebuild the set, so two rule sets with equal maps have equal
/// fingerprints, and equality and `Debug` look at the maps alone.
#[derive(Clone, Default)]
struct Prints(BTreeSet<u64>);

/// Which map a fingerprint is of.
#[derive(Clone, Copy, Hash)]
enum PairKind {
    Subject,
    Task,
}

/// The fingerprint of `(tenant, name)` in the map `kind`: SipHash with
/// fixed keys, so the same everywhere (it is never encoded).
fn fingerprint(kind: PairKind, tenant: &str, name: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (kind, tenant, name).hash(&mut hasher);
    hasher.finish()
}

impl Prints {
    fn add(&mut self, kind: PairKind, tenant: &str, name: &str) {
        self.0.insert(fingerprint(kind, tenant, name));
    }

    fn may_hold(&self, kind: PairKind, tenant: &str, name: &str) -> bool {
        !self.0.is_empty() && self.0.contains(&fingerprint(kind, tenant, name))
    }

    /// The fingerprints of exactly these maps.
    fn of(
        subjects: &BTreeMap<(String, String), u64>,
        tasks: &BTreeMap<(String, String), u64>,
    ) -> Self {
        let mut prints = Prints::default();
        for (t, s) in subjects.keys() {
            prints.add(PairKind::Subject, t, s);
        }
        for (t, task) in tasks.keys() {
            prints.add(PairKind::Task, t, task);
        }
        prints
    }
}

impl PartialEq for Prints {
    /// Derived from the maps, which the rule sets' equality compares.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Prints {}

impl std::fmt::Debug for Prints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} fingerprints", self.0.len())
    }
}

/// A (tenant, name) key looked up by borrowed parts: the rule maps are
/// keyed by owned pairs, and a lookup on every verification should not
/// allocate two strings to ask. `(String, String)` borrows as
/// `dyn PairKey`, which orders exactly as the tuple does.
trait PairKey {
    fn parts(&self) -> (&str, &str);
}

impl PairKey for (String, String) {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl PairKey for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn PairKey + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn PairKey + 'a) {
        self
    }
}

impl PartialEq for dyn PairKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn PairKey + '_ {}

impl PartialOrd for dyn PairKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn PairKey + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// The cutoff `map` holds for (`tenant`, `name`), without allocating.
fn cutoff_of(map: &BTreeMap<(String, String), u64>, tenant: &str, name: &str) -> Option<u64> {
    map.get(&(tenant, name) as &dyn PairKey).copied()
}

fn check_str(s: &str) -> Result<(), FilterError> {
    if s.len() as u64 > MAX_STRING_BYTES {
        return Err(FilterError::TooLarge {
            what: "string",
            len: s.len() as u64,
            max: MAX_STRING_BYTES,
        });
    }
    Ok(())
}

fn check_task(task: &str) -> Result<(), FilterError> {
    if task.len() as u64 > MAX_TASK_BYTES {
        return Err(FilterError::TooLarge {
            what: "task id",
            len: task.len() as u64,
            max: MAX_TASK_BYTES,
        });
    }
    Ok(())
}

fn check_room(what: &'static str, len: usize) -> Result<(), FilterError> {
    if len as u64 >= MAX_RULES {
        return Err(FilterError::TooLarge {
            what,
            len: len as u64 + 1,
            max: MAX_RULES,
        });
    }
    Ok(())
}

impl RuleSet {
    /// No rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Revoke every credential of `(tenant, subject)` issued before
    /// `issued_before_ms`.
    pub fn revoke_subject(
        &mut self,
        tenant: &str,
        subject: &str,
        issued_before_ms: u64,
    ) -> Result<(), FilterError> {
        check_str(tenant)?;
        check_str(subject)?;
        let key = (tenant.to_owned(), subject.to_owned());
        match self.subjects.get_mut(&key) {
            Some(c) => *c = (*c).max(issued_before_ms),
            None => {
                check_room("subject rules", self.subjects.len())?;
                self.prints.add(PairKind::Subject, tenant, subject);
                self.subjects.insert(key, issued_before_ms);
            }
        }
        Ok(())
    }

    /// Revoke every credential of `tenant` issued before `issued_before_ms`.
    pub fn revoke_tenant(
        &mut self,
        tenant: &str,
        issued_before_ms: u64,
    ) -> Result<(), FilterError> {
        check_str(tenant)?;
        match self.tenants.get_mut(tenant) {
            Some(c) => *c = (*c).max(issued_before_ms),
            None => {
                check_room("tenant rules", self.tenants.len())?;
                self.tenants.insert(tenant.to_owned(), issued_before_ms);
            }
        }
        Ok(())
    }

    /// Revoke every credential of `tenant` carrying task `task` issued
    /// before `issued_before_ms`.
    pub fn revoke_task(
        &mut self,
        tenant: &str,
        task: &str,
        issued_before_ms: u64,
    ) -> Result<(), FilterError> {
        check_str(tenant)?;
        check_task(task)?;
        let key = (tenant.to_owned(), task.to_owned());
        match self.tasks.get_mut(&key) {
            Some(c) => *c = (*c).max(issued_before_ms),
            None => {
                check_room("task rules", self.tasks.len())?;
                self.prints.add(PairKind::Task, tenant, task);
                self.tasks.insert(key, issued_before_ms);
            }
        }
        Ok(())
    }

    /// Revoke every credential signed by `key_id`.
    pub fn revoke_key(&mut self, key_id: &str) -> Result<(), FilterError> {
        check_str(key_id)?;
        if !self.key_ids.contains(key_id) {
            check_room("key id rules", self.key_ids.len())?;
            self.key_ids.insert(key_id.to_owned());
        }
        Ok(())
    }

    /// Whether a credential with these claims is revoked by some rule.
    /// `task` is the credential's task claim, if it has one.
    pub fn revokes(
        &self,
        tenant: &str,
        subject: &str,
        task: Option<&str>,
        key_id: &str,
        issued_at_ms: u64,
    ) -> bool {
        self.revoked_by(tenant, subject, task, key_id, issued_at_ms)
            .is_some()
    }

    /// Which rule revokes a credential with these claims, if any (the key,
    /// then the tenant, then the subject, then the task).
    pub fn revoked_by(
        &self,
        tenant: &str,
        subject: &str,
        task: Option<&str>,
        key_id: &str,
        issued_at_ms: u64,
    ) -> Option<RevokedBy> {
        if self.key_ids.contains(key_id) {
            Some(RevokedBy::KeyId)
        } else if self.tenants.get(tenant).is_some_and(|&c| issued_at_ms < c) {
            Some(RevokedBy::Tenant)
        } else if self.prints.may_hold(PairKind::Subject, tenant, subject)
            && cutoff_of(&self.subjects, tenant, subject).is_some_and(|c| issued_at_ms < c)
        {
            Some(RevokedBy::Subject)
        } else if task.is_some_and(|task| {
            self.prints.may_hold(PairKind::Task, tenant, task)
                && cutoff_of(&self.tasks, tenant, task).is_some_and(|c| issued_at_ms < c)
        }) {
            Some(RevokedBy::Task)
        } else {
            None
        }
    }

    /// Merge `other` into `self` (later cutoffs win, key ids union).
    /// Atomic: on error `self` is untouched.
    pub fn merge(&mut self, other: &RuleSet) -> Result<(), FilterError> {
        self.check_merge(other)?;
        for ((t, s), &c) in &other.subjects {
            self.prints.add(PairKind::Subject, t, s);
            let cutoff = self.subjects.entry((t.clone(), s.clone())).or_insert(c);
            *cutoff = (*cutoff).max(c);
        }
        for (t, &c) in &other.tenants {
            let cutoff = self.tenants.entry(t.clone()).or_insert(c);
            *cutoff = (*cutoff).max(c);
        }
        self.key_ids.extend(other.key_ids.iter().cloned());
        for ((t, task), &c) in &other.tasks {
            self.prints.add(PairKind::Task, t, task);
            let cutoff = self.tasks.entry((t.clone(), task.clone())).or_insert(c);
            *cutoff = (*cutoff).max(c);
        }
        Ok(())
    }

    /// Whether [`RuleSet::merge`] of `other` would succeed. Strings in a
    /// `RuleSet` are always within limits, so only the counts can fail.
    pub fn check_merge(&self, other: &RuleSet) -> Result<(), FilterError> {
        let new_subjects = other
            .subjects
            .keys()
            .filter(|k| !self.subjects.contains_key(*k))
            .count();
        let new_tenants = other
            .tenants
            .keys()
            .filter(|k| !self.tenants.contains_key(*k))
            .count();
        let new_keys = other
            .key_ids
            .iter()
            .filter(|k| !self.key_ids.contains(*k))
            .count();
        let new_tasks = other
            .tasks
            .keys()
            .filter(|k| !self.tasks.contains_key(*k))
            .count();
        for (what, len) in [
            ("subject rules", self.subjects.len() + new_subjects),
            ("tenant rules", self.tenants.len() + new_tenants),
            ("key id rules", self.key_ids.len() + new_keys),
            ("task rules", self.tasks.len() + new_tasks),
        ] {
            if len as u64 > MAX_RULES {
                return Err(FilterError::TooLarge {
                    what,
                    len: len as u64,
                    max: MAX_RULES,
                });
            }
        }
        Ok(())
    }

    /// Subject rules.
    pub fn subjects(&self) -> &BTreeMap<(String, String), u64> {
        &self.subjects
    }

    /// Tenant rules.
    pub fn tenants(&self) -> &BTreeMap<String, u64> {
        &self.tenants
    }

    /// Revoked key ids.
    pub fn key_ids(&self) -> &BTreeSet<String> {
        &self.key_ids
    }

    /// Task rules, by (tenant, task).
    pub fn tasks(&self) -> &BTreeMap<(String, String), u64> {
        &self.tasks
    }

    /// Total number of rules.
    pub fn len(&self) -> usize {
        self.subjects.len() + self.tenants.len() + self.key_ids.len() + self.tasks.len()
    }

    /// Keep only the subject, tenant and task rules whose cutoff satisfies
    /// `keep` (a verifier drops rules once every credential they cover
    /// expired).
    pub fn retain_cutoffs(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let pairs = (self.subjects.len(), self.tasks.len());
        self.subjects.retain(|_, cutoff| keep(*cutoff));
        self.tenants.retain(|_, cutoff| keep(*cutoff));
        self.tasks.retain(|_, cutoff| keep(*cutoff));
        if (self.subjects.len(), self.tasks.len()) != pairs {
            self.prints = Prints::of(&self.subjects, &self.tasks);
        }
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.subjects.len() as u64);
        for ((t, s), &c) in &self.subjects {
            put_str(out, t);
            put_str(out, s);
            put_varint(out, c);
        }
        put_varint(out, self.tenants.len() as u64);
        for (t, &c) in &self.tenants {
            put_str(out, t);
            put_varint(out, c);
        }
        put_varint(out, self.key_ids.len() as u64);
        for k in &self.key_ids {
            put_str(out, k);
        }
        put_varint(out, self.tasks.len() as u64);
        for ((t, task), &c) in &self.tasks {
            put_str(out, t);
            put_str(out, task);
            put_varint(out, c);
        }
    }

    /// Decode a complete encoding produced by [`RuleSet::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, FilterError> {
        let mut r = Reader::new(bytes);
        let s = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(s)
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, FilterError> {
        let mut rules = RuleSet::new();
        let n = r.count("subject rules", MAX_RULES, 3)?;
        let mut prev: Option<(String, String)> = None;
        for _ in 0..n {
            let key = (r.str(MAX_STRING_BYTES)?, r.str(MAX_STRING_BYTES)?);
            let c = r.varint()?;
            if prev.as_ref().is_some_and(|p| *p >= key) {
                return Err(FilterError::NotSorted);
            }
            prev = Some(key.clone());
            rules.prints.add(PairKind::Subject, &key.0, &key.1);
            rules.subjects.insert(key, c);
        }
        let n = r.count("tenant rules", MAX_RULES, 2)?;
        let mut prev: Option<String> = None;
        for _ in 0..n {
            let t = r.str(MAX_STRING_BYTES)?;
            let c = r.varint()?;
            if prev.as_ref().is_some_and(|p| *p >= t) {
                return Err(FilterError::NotSorted);
            }
            prev = Some(t.clone());
            rules.tenants.insert(t, c);
        }
        let n = r.count("key id rules", MAX_RULES, 1)?;
        let mut prev: Option<String> = None;
        for _ in 0..n {
            let k = r.str(MAX_STRING_BYTES)?;
            if prev.as_ref().is_some_and(|p| *p >= k) {
                return Err(FilterError::NotSorted);
            }
            prev = Some(k.clone());
            rules.key_ids.insert(k);
        }
        let n = r.count("task rules", MAX_RULES, 3)?;
        let mut prev: Option<(String, String)> = None;
        for _ in 0..n {
            let key = (r.str(MAX_STRING_BYTES)?, r.str(MAX_TASK_BYTES)?);
            let c = r.varint()?;
            if prev.as_ref().is_some_and(|p| *p >= key) {
                return Err(FilterError::NotSorted);
            }
            prev = Some(key.clone());
            rules.prints.add(PairKind::Task, &key.0, &key.1);
            rules.tasks.insert(key, c);
        }
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RuleSet {
        let mut r = RuleSet::new();
        r.revoke_subject("acme", "svc-a", 1000).unwrap();
        r.revoke_subject("acme", "svc-b", 50).unwrap();
        r.revoke_tenant("globex", 2000).unwrap();
        r.revoke_key("k1").unwrap();
        r.revoke_task("acme", "task-7", 3000).unwrap();
        r
    }

    #[test]
    fn revokes_semantics() {
        let r = sample();
        assert!(r.revokes("acme", "svc-a", None, "k0", 999));
        assert!(!r.revokes("acme", "svc-a", None, "k0", 1000));
        assert!(!r.revokes("acme", "svc-c", None, "k0", 0));
        assert!(r.revokes("globex", "anyone", None, "k0", 1999));
        assert!(!r.revokes("globex", "anyone", None, "k0", 2000));
        assert!(r.revokes("initech", "x", None, "k1", u64::MAX));
        assert!(!r.revokes("initech", "x", None, "k2", 0));
    }

    #[test]
    fn task_rules_cover_one_task_of_one_tenant_before_the_cutoff() {
        let r = sample();
        let by = |tenant, task, at| r.revoked_by(tenant, "svc-z", task, "k0", at);
        assert_eq!(by("acme", Some("task-7"), 2999), Some(RevokedBy::Task));
        assert_eq!(by("acme", Some("task-7"), 3000), None);
        assert_eq!(by("acme", Some("task-8"), 0), None);
        assert_eq!(by("acme", None, 0), None);
        assert_eq!(by("globex", Some("task-7"), 1500), Some(RevokedBy::Tenant));
        assert_eq!(by("initech", Some("task-7"), 0), None);
        assert!(
            RuleSet::new()
                .revoke_task("acme", &"t".repeat(129), 1)
                .is_err()
        );
        assert!(
            RuleSet::new()
                .revoke_task("acme", &"t".repeat(128), 1)
                .is_ok()
        );
    }

    #[test]
    fn cutoffs_only_move_forward() {
        let mut r = sample();
        r.revoke_subject("acme", "svc-a", 10).unwrap();
        assert!(r.revokes("acme", "svc-a", None, "k0", 999));
        r.revoke_task("acme", "task-7", 10).unwrap();
        assert!(r.revokes("acme", "s", Some("task-7"), "k0", 2999));
        let mut other = RuleSet::new();
        other.revoke_tenant("globex", 3000).unwrap();
        other.revoke_key("k9").unwrap();
        other.revoke_task("acme", "task-7", 4000).unwrap();
        r.merge(&other).unwrap();
        assert!(r.revokes("globex", "s", None, "k0", 2500));
        assert!(r.revokes("x", "s", None, "k9", 0));
        assert!(r.revokes("acme", "s", Some("task-7"), "k0", 3999));
    }

    #[test]
    fn round_trip_and_rejects() {
        let r = sample();
        assert_eq!(RuleSet::decode(&r.encode()).unwrap(), r);
        assert_eq!(
            RuleSet::decode(&RuleSet::new().encode()).unwrap(),
            RuleSet::new()
        );
        // Two key ids out of order.
        let bad = [0u8, 0, 2, 1, b'b', 1, b'a', 0];
        assert_eq!(RuleSet::decode(&bad), Err(FilterError::NotSorted));
        // Two task rules out of order.
        let bad = [0u8, 0, 0, 2, 1, b'a', 1, b'b', 5, 1, b'a', 1, b'a', 5];
        assert_eq!(RuleSet::decode(&bad), Err(FilterError::NotSorted));
        // A task id longer than any credential carries.
        let bad = [0u8, 0, 0, 1, 1, b'a', 129, 1];
        assert!(matches!(
            RuleSet::decode(&bad),
            Err(FilterError::TooLarge {
                what: "string",
                len: 129,
                max: 128
            })
        ));
        // A hostile count of task rules.
        let bad = [0u8, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            RuleSet::decode(&bad),
            Err(FilterError::TooLarge {
                what: "task rules",
                ..
            })
        ));
        // Invalid UTF-8.
        let bad = [0u8, 0, 1, 1, 0xff];
        assert!(matches!(
            RuleSet::decode(&bad),
            Err(FilterError::Corrupt(_))
        ));
        assert!(RuleSet::new().revoke_key(&"x".repeat(2000)).is_err());
    }
}
