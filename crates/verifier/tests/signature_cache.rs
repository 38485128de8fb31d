//! The verifier's memory of verified signatures and its batch
//! verification: a remembered signature spares only the Ed25519 check,
//! never a check of time, key set, revocation or proof, and a batch gives
//! each credential the answer it gets alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use lapse_credential::{
    Actor, AgentContext, Claims, KeyId, SigningKeyPair, StatusClaim, StatusListRef, TenantId,
    WorkloadId, make_proof,
};
use lapse_filter::{
    DeltaMessage, KeyAlgorithm, KeySet, Message, PublicKey, RevokedDelta, RevokedSet, RuleSet,
    SecretSet, Snapshot, encode_message,
};
use lapse_verifier::{Expect, Proof, Rejection, Verifier, VerifyConfig};
use lapse_wire::feed::feed_event::Kind;
use lapse_wire::feed::{FeedEvent, Heartbeat};

const NOW_S: u64 = 1_800_000_000;

fn key() -> SigningKeyPair {
    SigningKeyPair::from_seed(KeyId::new("n1-test").unwrap(), [7; 32])
}

fn key_set(public_key: [u8; 32]) -> KeySet {
    let mut keys = KeySet::new();
    keys.insert(
        "n1-test",
        PublicKey {
            algorithm: KeyAlgorithm::Ed25519,
            bytes: public_key.to_vec(),
            not_before_ms: (NOW_S - 3600) * 1000,
            not_after_ms: (NOW_S + 3600) * 1000,
        },
    )
    .unwrap();
    keys
}

fn claims(index: u64, ancestors: &[u64]) -> Claims {
    let actors: Vec<WorkloadId> = (0..ancestors.len())
        .map(|n| WorkloadId::new(format!("spiffe://acme/agent-{n}")).unwrap())
        .collect();
    Claims {
        iss: lapse_credential::DEFAULT_ISSUER.into(),
        sub: WorkloadId::new("spiffe://acme/a").unwrap(),
        aud: vec!["billing".into()],
        iat: NOW_S - 10,
        nbf: NOW_S - 10,
        exp: NOW_S + 600,
        jti: format!("jti-{index}"),
        tenant: TenantId::new("acme").unwrap(),
        scopes: vec!["read".into()],
        status: StatusClaim {
            status_list: StatusListRef {
                idx: index,
                uri: "https://lapse.test/status".into(),
            },
        },
        cnf: None,
        chain: None,
        agent: AgentContext {
            act: Actor::from_chain(&actors),
            ancestors: ancestors.to_vec(),
            ..AgentContext::default()
        },
    }
}

fn credential(index: u64) -> String {
    key().sign(&claims(index, &[])).unwrap()
}

fn envelope(kind: Kind, epoch: u64, from: u64) -> FeedEvent {
    FeedEvent {
        kind: Some(kind),
        epoch,
        from_epoch: from,
        cluster_time_ms: NOW_S * 1000,
        broker_id: 1,
        max_credential_ttl_ms: 86_400_000,
    }
}

fn snapshot_event(epoch: u64, keys: KeySet) -> FeedEvent {
    let snapshot = Snapshot {
        epoch,
        set: RevokedSet::from_sorted(0, 1 << 40, [3]).unwrap(),
        secrets: SecretSet::new(1000, 1e-6, [1; 32]).unwrap(),
        rules: RuleSet::new(),
        keys,
    };
    let bytes = encode_message(&Message::Full(Box::new(snapshot))).unwrap();
    envelope(Kind::Snapshot(bytes.into()), epoch, 0)
}

fn delta_event(from: u64, change: impl FnOnce(&mut DeltaMessage)) -> FeedEvent {
    let mut delta = DeltaMessage {
        revoked: RevokedDelta::new(from, from + 1, vec![], Some(0)).unwrap(),
        added_secrets: Default::default(),
        rules: RuleSet::new(),
        keys: KeySet::new(),
        keys_removed: Default::default(),
    };
    change(&mut delta);
    let bytes = encode_message(&Message::Delta(delta)).unwrap();
    envelope(Kind::Delta(bytes.into()), from + 1, from)
}

fn heartbeat(epoch: u64) -> FeedEvent {
    envelope(
        Kind::Heartbeat(Heartbeat {
            interval_ms: 200,
            voucher: None,
        }),
        epoch,
        0,
    )
}

/// A verifier clock moved by hand.
struct HandClock {
    mono_ms: AtomicU64,
}

impl lapse_verifier::Clock for HandClock {
    fn now_ms(&self) -> u64 {
        NOW_S * 1000
    }
    fn monotonic_ms(&self) -> f64 {
        self.mono_ms.load(SeqCst) as f64
    }
}

fn config(signature_cache: usize) -> VerifyConfig {
    VerifyConfig {
        staleness: Duration::from_secs(3600),
        leeway_seconds: 0,
        audience: Some("billing".into()),
        signature_cache,
        ..VerifyConfig::default()
    }
}

/// A fresh verifier at epoch 10 (index 3 revoked), remembering at most
/// `signature_cache` signatures, on a clock moved by hand.
fn ready(signature_cache: usize) -> (Verifier, Arc<HandClock>) {
    let clock = Arc::new(HandClock {
        mono_ms: 5_000.into(),
    });
    let v = Verifier::with_clock(config(signature_cache), clock.clone());
    v.apply(&snapshot_event(10, key_set(key().public_key())))
        .unwrap();
    v.apply(&heartbeat(10)).unwrap();
    (v, clock)
}

fn verify(v: &Verifier, token: &str) -> Result<u64, Rejection> {
    v.verify(token, &Expect::default()).map(|a| a.status_index)
}

fn recalled(v: &Verifier) -> u64 {
    v.status().signatures_recalled
}

#[test]
fn a_repeated_credential_is_accepted_from_memory() {
    let (v, _) = ready(64);
    let token = credential(1);
    assert_eq!(verify(&v, &token), Ok(1));
    assert_eq!((v.remembered_signatures(), recalled(&v)), (1, 0));
    for n in 1..=3 {
        assert_eq!(verify(&v, &token), Ok(1));
        assert_eq!(recalled(&v), n);
    }
    assert_eq!(v.remembered_signatures(), 1);
    // A verifier that remembers nothing judges the same.
    let (none, _) = ready(0);
    assert_eq!(verify(&none, &token), Ok(1));
    assert_eq!(verify(&none, &token), Ok(1));
    assert_eq!((none.remembered_signatures(), recalled(&none)), (0, 0));
}

#[test]
fn a_remembered_credential_is_refused_once_revoked_by_index_ancestor_or_key() {
    let (v, _) = ready(64);
    let plain = credential(1);
    let delegated = key().sign(&claims(20, &[5, 6])).unwrap();
    let other = credential(8);
    for token in [&plain, &delegated, &other] {
        assert!(verify(&v, token).is_ok());
        assert!(verify(&v, token).is_ok());
    }
    let before = recalled(&v);
    // By its own index.
    v.apply(&delta_event(10, |d| {
        d.revoked = RevokedDelta::new(10, 11, vec![1], Some(0)).unwrap();
    }))
    .unwrap();
    assert!(matches!(verify(&v, &plain), Err(Rejection::Revoked { by }) if by.contains("index 1")));
    // By an ancestor's.
    assert!(verify(&v, &delegated).is_ok());
    v.apply(&delta_event(11, |d| {
        d.revoked = RevokedDelta::new(11, 12, vec![6], Some(0)).unwrap();
    }))
    .unwrap();
    assert!(
        matches!(verify(&v, &delegated), Err(Rejection::Revoked { by }) if by.contains("ancestor"))
    );
    // By a rule on its signing key.
    assert!(verify(&v, &other).is_ok());
    v.apply(&delta_event(12, |d| d.rules.revoke_key("n1-test").unwrap()))
        .unwrap();
    assert!(matches!(verify(&v, &other), Err(Rejection::Revoked { by }) if by.contains("key")));
    // All of it judged with the signature from memory.
    assert!(recalled(&v) >= before + 4, "{}", recalled(&v));
    // As a leaked secret, by its own hash.
    let (v, _) = ready(64);
    let leaked = credential(9);
    assert!(verify(&v, &leaked).is_ok());
    v.apply(&delta_event(10, |d| {
        use sha2::Digest;
        d.added_secrets
            .insert(sha2::Sha256::digest(leaked.as_bytes()).into());
    }))
    .unwrap();
    assert!(matches!(
        verify(&v, &leaked),
        Err(Rejection::Revoked { .. })
    ));
}

#[test]
fn a_remembered_credential_is_refused_once_expired() {
    let (v, clock) = ready(64);
    let token = credential(1);
    assert_eq!(verify(&v, &token), Ok(1));
    assert_eq!(verify(&v, &token), Ok(1));
    // 600 s to live: a second past it, cluster time says expired.
    clock.mono_ms.fetch_add(601_000, SeqCst);
    assert!(
        matches!(verify(&v, &token), Err(Rejection::Invalid { detail }) if detail.contains("expired")),
        "{:?}",
        verify(&v, &token)
    );
    assert_eq!(v.remembered_signatures(), 1);
}

#[test]
fn a_key_that_left_the_key_set_or_changed_makes_its_memory_count_for_nothing() {
    let (v, _) = ready(64);
    let token = credential(1);
    assert_eq!(verify(&v, &token), Ok(1));
    assert_eq!(verify(&v, &token), Ok(1));
    v.apply(&delta_event(10, |d| {
        d.keys_removed.insert("n1-test".into());
    }))
    .unwrap();
    assert!(
        matches!(verify(&v, &token), Err(Rejection::Invalid { detail }) if detail.contains("no key")),
        "{:?}",
        verify(&v, &token)
    );
    // The same id, now another key's: the signature is checked anew, and
    // fails.
    let (v, _) = ready(64);
    assert_eq!(verify(&v, &token), Ok(1));
    let other = SigningKeyPair::from_seed(KeyId::new("n1-test").unwrap(), [8; 32]);
    v.apply(&snapshot_event(11, key_set(other.public_key())))
        .unwrap();
    v.apply(&heartbeat(11)).unwrap();
    assert!(
        matches!(verify(&v, &token), Err(Rejection::Invalid { detail }) if detail.contains("signature")),
        "{:?}",
        verify(&v, &token)
    );
}

#[test]
fn a_forgery_one_byte_off_a_remembered_credential_is_not_served_from_memory() {
    let (v, _) = ready(64);
    let token = credential(1);
    assert_eq!(verify(&v, &token), Ok(1));
    let recalled_before = recalled(&v);
    let (header, rest) = token.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    // One character of the payload, and one of the signature, changed to
    // another base64url character.
    let flip = |text: &str, at: usize| -> String {
        let mut bytes = text.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    for forged in [
        format!("{header}.{}.{signature}", flip(payload, payload.len() / 2)),
        format!("{header}.{payload}.{}", flip(signature, 10)),
    ] {
        assert!(
            matches!(verify(&v, &forged), Err(Rejection::Invalid { .. })),
            "{:?}",
            verify(&v, &forged)
        );
    }
    assert_eq!(recalled(&v), recalled_before);
    assert_eq!(v.remembered_signatures(), 1);
    assert_eq!(verify(&v, &token), Ok(1));
}

#[test]
fn the_memory_stays_within_its_bound_under_many_distinct_credentials() {
    let (v, _) = ready(100);
    for index in 10..1_010 {
        assert_eq!(verify(&v, &credential(index)), Ok(index));
        assert!(v.remembered_signatures() <= 100);
    }
    let status = v.status();
    assert!(status.signature_memory_capacity <= 100);
    assert!(status.signatures_remembered >= 80, "{status:?}");
    // The default is bounded too.
    assert_eq!(VerifyConfig::default().signature_cache, 16_384);
}

#[test]
fn a_key_bound_credential_needs_a_fresh_proof_every_time() {
    let (v, _) = ready(64);
    let holder = SigningKeyPair::from_seed(KeyId::new("holder").unwrap(), [21; 32]);
    let mut bound = claims(7, &[]);
    bound.cnf = Some(lapse_credential::Confirmation {
        jkt: holder.public_jwk().thumbprint(),
    });
    let token = key().sign(&bound).unwrap();
    let uri = "https://api.example/payments";
    let with = |jti: Option<&str>| {
        let proof =
            jti.map(|jti| make_proof(&holder, "GET", uri, Some(&token), NOW_S, jti).unwrap());
        let expect = Expect {
            dpop: proof.as_deref().map(|proof| Proof {
                proof,
                method: "GET",
                uri,
                remember: true,
            }),
            ..Expect::default()
        };
        v.verify(&token, &expect).map(|a| a.status_index)
    };
    assert_eq!(with(Some("p1")), Ok(7));
    assert!(matches!(
        with(None),
        Err(Rejection::ProofOfPossession { .. })
    ));
    assert!(matches!(
        with(Some("p1")),
        Err(Rejection::ProofOfPossession { .. })
    ));
    assert_eq!(with(Some("p2")), Ok(7));
    assert!(recalled(&v) >= 3);
}

#[test]
fn a_batch_gives_each_credential_its_own_answer() {
    let (batched, _) = ready(64);
    let (alone, _) = ready(0);
    let good = credential(1);
    let revoked = credential(3);
    let (header, rest) = good.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut bytes = signature.as_bytes().to_vec();
    bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
    let forged = format!("{header}.{payload}.{}", String::from_utf8(bytes).unwrap());
    let stranger = SigningKeyPair::from_seed(KeyId::new("n1-test").unwrap(), [9; 32])
        .sign(&claims(4, &[]))
        .unwrap();
    let unknown_key = SigningKeyPair::from_seed(KeyId::new("n9-x").unwrap(), [9; 32])
        .sign(&claims(5, &[]))
        .unwrap();
    let mut late = claims(6, &[]);
    late.exp = NOW_S - 100;
    let expired = key().sign(&late).unwrap();
    let others: Vec<String> = (10..40).map(credential).collect();
    let new = credential(50);
    let mixes: Vec<Vec<&str>> = vec![
        // All valid: one batch.
        others.iter().map(String::as_str).collect(),
        // Valid and invalid mixed: the batch fails and each is checked alone.
        vec![
            &good,
            &forged,
            &revoked,
            &stranger,
            &others[0],
            "garbage",
            &unknown_key,
            &expired,
        ],
        vec![&forged],
        vec![&stranger, &good],
        vec![],
        // Remembered and new together.
        vec![&good, &others[1], &new, &forged],
    ];
    for mix in mixes {
        let requests: Vec<(&str, Expect)> = mix.iter().map(|t| (*t, Expect::default())).collect();
        let answers = batched.verify_batch(&requests);
        assert_eq!(answers.len(), mix.len());
        for (token, answer) in mix.iter().zip(answers) {
            let expected = alone.verify(token, &Expect::default());
            assert_eq!(
                answer.as_ref().map(|a| a.status_index),
                expected.as_ref().map(|a| a.status_index),
                "{token}"
            );
            if let (Err(got), Err(want)) = (&answer, &expected) {
                assert_eq!(got.code(), want.code(), "{token}");
            }
        }
    }
    // Only what verified is remembered.
    let checked = batched.check_signatures(&[&forged, &stranger, &good]);
    assert!(checked[0].is_none() && checked[1].is_none() && checked[2].is_some());
}

#[test]
fn a_signature_checked_by_one_verifier_counts_for_another_only_for_that_credential_and_key() {
    let (first, _) = ready(64);
    let (second, _) = ready(0);
    let good = credential(1);
    let checked = first.check_signatures(&[&good]).pop().flatten().unwrap();
    let expect = Expect::default();
    assert_eq!(
        second
            .verify_checked(&good, &expect, Some(&checked))
            .map(|a| a.status_index),
        Ok(1)
    );
    assert_eq!(recalled(&second), 1);
    // Not for another credential.
    assert_eq!(
        second
            .verify_checked(&credential(2), &expect, Some(&checked))
            .map(|a| a.status_index),
        Ok(2)
    );
    assert_eq!(recalled(&second), 1);
    // Not for a verifier whose key of that id is another.
    let other = SigningKeyPair::from_seed(KeyId::new("n1-test").unwrap(), [8; 32]);
    let third = Verifier::new(config(0));
    third
        .apply(&snapshot_event(10, key_set(other.public_key())))
        .unwrap();
    third.apply(&heartbeat(10)).unwrap();
    assert!(matches!(
        third.verify_checked(&good, &expect, Some(&checked)),
        Err(Rejection::Invalid { .. })
    ));
}
