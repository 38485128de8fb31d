//! The verifier against hand-built feed events: what it accepts and
//! rejects, staleness, and hostile feed messages that must leave its state
//! unchanged.

use std::time::Duration;

use lapse_credential::{
    Claims, KeyId, SigningKeyPair, StatusClaim, StatusListRef, TenantId, WorkloadId,
};
use lapse_filter::{
    DeltaMessage, KeyAlgorithm, KeySet, Message, PublicKey, RevokedDelta, RevokedSet, RuleSet,
    SecretSet, Snapshot, encode_message,
};
use lapse_verifier::{Expect, FeedError, Rejection, Verifier, VerifyConfig, decode_event_bytes};
use lapse_wire::feed::feed_event::Kind;
use lapse_wire::feed::{FeedEvent, Heartbeat, Withheld};
use prost::Message as _;
use sha2::Digest;

const NOW_S: u64 = 1_800_000_000;
const TTL_MS: u64 = 86_400_000;

fn key() -> SigningKeyPair {
    SigningKeyPair::from_seed(KeyId::new("n1-test").unwrap(), [7; 32])
}

fn keys() -> KeySet {
    let mut keys = KeySet::new();
    keys.insert(
        "n1-test",
        PublicKey {
            algorithm: KeyAlgorithm::Ed25519,
            bytes: key().public_key().to_vec(),
            not_before_ms: (NOW_S - 3600) * 1000,
            not_after_ms: (NOW_S + 3600) * 1000,
        },
    )
    .unwrap();
    keys
}

fn credential(index: u64, subject: &str, tenant: &str) -> String {
    key()
        .sign(&Claims {
            iss: lapse_credential::DEFAULT_ISSUER.into(),
            sub: WorkloadId::new(subject).unwrap(),
            aud: vec!["billing".into()],
            iat: NOW_S - 10,
            nbf: NOW_S - 10,
            exp: NOW_S + 600,
            jti: format!("jti-{index}"),
            tenant: TenantId::new(tenant).unwrap(),
            scopes: vec!["read".into()],
            status: StatusClaim {
                status_list: StatusListRef {
                    idx: index,
                    uri: "https://lapse.test/status".into(),
                },
            },
            cnf: None,
            chain: None,
            agent: Default::default(),
        })
        .unwrap()
}

/// A credential at `index` bound to `holder`'s key (`cnf.jkt`).
fn bound_credential(index: u64, holder: &SigningKeyPair) -> String {
    key()
        .sign(&Claims {
            iss: lapse_credential::DEFAULT_ISSUER.into(),
            sub: WorkloadId::new("spiffe://example.org/agent").unwrap(),
            aud: vec!["billing".into()],
            iat: NOW_S - 10,
            nbf: NOW_S - 10,
            exp: NOW_S + 600,
            jti: format!("jti-{index}"),
            tenant: TenantId::new("acme").unwrap(),
            scopes: vec![],
            status: StatusClaim {
                status_list: StatusListRef {
                    idx: index,
                    uri: "https://lapse.test/status".into(),
                },
            },
            cnf: Some(lapse_credential::Confirmation {
                jkt: holder.public_jwk().thumbprint(),
            }),
            chain: None,
            agent: Default::default(),
        })
        .unwrap()
}

fn snapshot(epoch: u64, revoked: &[u64]) -> Snapshot {
    Snapshot {
        epoch,
        set: RevokedSet::from_sorted(0, 1 << 40, revoked.iter().copied()).unwrap(),
        secrets: SecretSet::new(1000, 1e-6, [1; 32]).unwrap(),
        rules: RuleSet::new(),
        keys: keys(),
    }
}

fn envelope(kind: Kind, epoch: u64, from: u64) -> FeedEvent {
    FeedEvent {
        kind: Some(kind),
        epoch,
        from_epoch: from,
        cluster_time_ms: NOW_S * 1000,
        broker_id: 1,
        max_credential_ttl_ms: TTL_MS,
    }
}

fn snapshot_event(s: Snapshot) -> FeedEvent {
    let epoch = s.epoch;
    let bytes = encode_message(&Message::Full(Box::new(s))).unwrap();
    envelope(Kind::Snapshot(bytes.into()), epoch, 0)
}

fn delta_event(d: DeltaMessage) -> FeedEvent {
    let (from, to) = (d.revoked.from_epoch(), d.revoked.to_epoch());
    let bytes = encode_message(&Message::Delta(d)).unwrap();
    envelope(Kind::Delta(bytes.into()), to, from)
}

fn delta(from: u64, to: u64, added: Vec<u64>) -> DeltaMessage {
    DeltaMessage {
        revoked: RevokedDelta::new(from, to, added, Some(0)).unwrap(),
        added_secrets: Default::default(),
        rules: RuleSet::new(),
        keys: KeySet::new(),
        keys_removed: Default::default(),
    }
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

fn verifier() -> Verifier {
    Verifier::new(VerifyConfig {
        staleness: Duration::from_secs(2),
        ..for_billing()
    })
}

/// A verifier at epoch 10 with index 3 revoked, fresh.
fn ready() -> Verifier {
    let v = verifier();
    v.apply(&snapshot_event(snapshot(10, &[3]))).unwrap();
    v.apply(&heartbeat(10)).unwrap();
    v
}

fn verdict(v: &Verifier, token: &str) -> Result<u64, Rejection> {
    v.verify(token, &Expect::default()).map(|a| a.epoch)
}

/// `config`, with state at epoch 10 and fresh.
fn ready_as(config: VerifyConfig) -> Verifier {
    let v = Verifier::new(config);
    v.apply(&snapshot_event(snapshot(10, &[]))).unwrap();
    v.apply(&heartbeat(10)).unwrap();
    v
}

#[tokio::test(start_paused = true)]
async fn a_credential_for_one_service_is_refused_by_another_services_verifier() {
    let billing = credential(1, "spiffe://acme/a", "acme");
    // Configured with no audience, a verifier refuses every call that names
    // none, rather than accepting any audience by omission.
    let unset = ready_as(VerifyConfig::default());
    assert_eq!(verdict(&unset, &billing), Err(Rejection::NoAudience));
    let shipping = Expect {
        audience: Some("shipping"),
        tenant: None,
        ..Expect::default()
    };
    assert!(matches!(
        unset.verify(&billing, &shipping),
        Err(Rejection::Invalid { detail }) if detail.contains("audience")
    ));
    // The shipping service's verifier refuses billing's credential.
    let shipping_verifier = ready_as(VerifyConfig {
        audience: Some("shipping".into()),
        ..VerifyConfig::default()
    });
    assert!(matches!(
        verdict(&shipping_verifier, &billing),
        Err(Rejection::Invalid { detail }) if detail.contains("audience")
    ));
    // Only a verifier told that any audience will do takes it unasked.
    let any = ready_as(VerifyConfig {
        any_audience: true,
        ..VerifyConfig::default()
    });
    assert_eq!(verdict(&any, &billing), Ok(10));
    assert!(any.verify(&billing, &shipping).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_credential_from_another_cluster_is_refused() {
    // Signed by a key the feed carries, but naming another issuer.
    let other_cluster = ready_as(VerifyConfig {
        issuer: "https://other.example".into(),
        ..for_billing()
    });
    assert!(matches!(
        verdict(&other_cluster, &credential(1, "spiffe://acme/a", "acme")),
        Err(Rejection::Invalid { detail }) if detail.contains("issuer")
    ));
}

#[tokio::test(start_paused = true)]
async fn accepts_and_rejects_by_index_rules_keys_and_secrets() {
    let v = ready();
    let good = credential(1, "spiffe://acme/a", "acme");
    assert_eq!(verdict(&v, &good), Ok(10));
    assert!(matches!(
        verdict(&v, &credential(3, "spiffe://acme/a", "acme")),
        Err(Rejection::Revoked { .. })
    ));
    // Revoking index 1 by delta takes effect at once.
    assert_eq!(v.apply(&delta_event(delta(10, 11, vec![1]))), Ok(11));
    assert!(matches!(verdict(&v, &good), Err(Rejection::Revoked { .. })));

    // Rules: a workload's, a tenant's and a key's credentials.
    let other = credential(5, "spiffe://acme/b", "acme");
    assert_eq!(v.apply(&heartbeat(11)), Ok(11));
    assert!(verdict(&v, &other).is_ok());
    let mut d = delta(11, 12, vec![]);
    d.rules
        .revoke_subject("acme", "spiffe://acme/b", NOW_S * 1000)
        .unwrap();
    v.apply(&delta_event(d)).unwrap();
    assert!(
        matches!(verdict(&v, &other), Err(Rejection::Revoked { by }) if by.contains("spiffe://acme/b"))
    );
    let globex = credential(6, "spiffe://globex/c", "globex");
    assert!(verdict(&v, &globex).is_ok());
    let mut d = delta(12, 13, vec![]);
    d.rules.revoke_tenant("globex", NOW_S * 1000).unwrap();
    v.apply(&delta_event(d)).unwrap();
    assert!(
        matches!(verdict(&v, &globex), Err(Rejection::Revoked { by }) if by.contains("tenant"))
    );
    // The credential's own hash, as a leaked secret.
    let leaked = credential(7, "spiffe://acme/d", "acme");
    assert!(verdict(&v, &leaked).is_ok());
    let mut d = delta(13, 14, vec![]);
    d.added_secrets
        .insert(sha2::Sha256::digest(leaked.as_bytes()).into());
    v.apply(&delta_event(d)).unwrap();
    assert!(matches!(
        verdict(&v, &leaked),
        Err(Rejection::Revoked { .. })
    ));
    // Wrong tenant and wrong audience.
    let fine = credential(8, "spiffe://acme/e", "acme");
    assert!(matches!(
        v.verify(
            &fine,
            &Expect {
                tenant: Some("globex"),
                audience: None,
                ..Expect::default()
            }
        ),
        Err(Rejection::WrongTenant { .. })
    ));
    assert!(matches!(
        v.verify(
            &fine,
            &Expect {
                tenant: None,
                audience: Some("other"),
                ..Expect::default()
            }
        ),
        Err(Rejection::Invalid { .. })
    ));
    // The signing key revoked: everything it signed.
    let mut d = delta(14, 15, vec![]);
    d.rules.revoke_key("n1-test").unwrap();
    v.apply(&delta_event(d)).unwrap();
    assert!(matches!(verdict(&v, &fine), Err(Rejection::Revoked { by }) if by.contains("key")));
    // A key the feed never carried.
    let stranger = SigningKeyPair::from_seed(KeyId::new("n9-x").unwrap(), [9; 32]);
    let token = {
        let claims: Claims = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                fine.split('.').nth(1).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        stranger.sign(&claims).unwrap()
    };
    assert!(
        matches!(verdict(&v, &token), Err(Rejection::Invalid { detail }) if detail.contains("n9-x"))
    );
    let status = v.status();
    assert_eq!((status.snapshots, status.deltas), (1, 5));
}

#[tokio::test(start_paused = true)]
async fn stale_verifier_fails_closed_or_open_as_configured() {
    let v = verifier();
    let token = credential(1, "spiffe://acme/a", "acme");
    assert_eq!(
        verdict(&v, &token),
        Err(Rejection::Stale {
            stale_ms: u64::MAX,
            bound_ms: 2000
        })
    );
    v.apply(&snapshot_event(snapshot(1, &[]))).unwrap();
    // A snapshot alone does not make the verifier fresh: only a heartbeat,
    // which the broker confirmed with the leader, does.
    assert!(matches!(verdict(&v, &token), Err(Rejection::Stale { .. })));
    v.apply(&heartbeat(1)).unwrap();
    assert_eq!(verdict(&v, &token), Ok(1));
    tokio::time::advance(Duration::from_millis(1900)).await;
    assert_eq!(verdict(&v, &token), Ok(1));
    tokio::time::advance(Duration::from_millis(200)).await;
    assert!(matches!(verdict(&v, &token), Err(Rejection::Stale { .. })));
    assert!(!v.status().fresh);
    assert_eq!(v.status().stale_rejections, 3);
    v.apply(&heartbeat(1)).unwrap();
    assert_eq!(verdict(&v, &token), Ok(1));

    let open = Verifier::new(VerifyConfig {
        staleness: Duration::from_secs(1),
        fail_open: true,
        ..for_billing()
    });
    open.apply(&snapshot_event(snapshot(1, &[]))).unwrap();
    open.apply(&heartbeat(1)).unwrap();
    tokio::time::advance(Duration::from_millis(1500)).await;
    assert!(!open.status().fresh);
    let accepted = open.verify(&token, &Expect::default()).unwrap();
    assert!(accepted.stale);
}

fn withheld(broker_id: u64, reason: &str) -> FeedEvent {
    let mut event = envelope(
        Kind::Withheld(Withheld {
            reason: reason.into(),
        }),
        10,
        0,
    );
    event.broker_id = broker_id;
    event
}

#[tokio::test(start_paused = true)]
async fn a_stale_verifier_says_why_and_a_withheld_notice_does_not_make_it_fresh() {
    let v = ready();
    assert_eq!(v.status().stale_reason, None);
    assert_eq!(v.status().heartbeat_broker_id, Some(1));
    tokio::time::advance(Duration::from_millis(2500)).await;
    let status = v.status();
    let reason = status.stale_reason.unwrap();
    assert!(
        reason.starts_with(
            "no confirmed heartbeat for 2500 ms (bound 2000 ms); the last came from broker 1"
        ),
        "{reason}"
    );
    // The broker says why it sends none; that changes nothing held and
    // does not refresh the verifier. Control characters and length are cut.
    let long = format!("leader b3:7000: read index timed out\n{}", "x".repeat(400));
    assert_eq!(v.apply(&withheld(2, &long)), Ok(10));
    let status = v.status();
    assert!(!status.fresh);
    let notice = status.withheld.unwrap();
    assert_eq!(notice.broker_id, 2);
    assert!(
        notice
            .reason
            .starts_with("leader b3:7000: read index timed out x")
    );
    assert!(
        notice.reason.len() <= 256 + '…'.len_utf8(),
        "{}",
        notice.reason.len()
    );
    assert!(
        status
            .stale_reason
            .unwrap()
            .contains("; broker 2 withholds heartbeats (0 ms ago): leader b3:7000"),
    );
    assert!(matches!(
        verdict(&v, &credential(1, "spiffe://acme/a", "acme")),
        Err(Rejection::Stale { .. })
    ));
    // The next heartbeat clears both.
    v.apply(&heartbeat(10)).unwrap();
    let status = v.status();
    assert!(status.fresh);
    assert_eq!(status.withheld, None);
}

/// A verifier clock moved by hand: a wall clock that can step and a
/// monotonic one that cannot.
struct HandClock {
    wall_ms: std::sync::atomic::AtomicU64,
    mono_ms: std::sync::atomic::AtomicU64,
}

impl lapse_verifier::Clock for HandClock {
    fn now_ms(&self) -> u64 {
        self.wall_ms.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn monotonic_ms(&self) -> f64 {
        self.mono_ms.load(std::sync::atomic::Ordering::SeqCst) as f64
    }
}

#[tokio::test(start_paused = true)]
async fn a_step_of_the_verifiers_wall_clock_changes_nothing_it_decides() {
    use std::sync::atomic::Ordering::SeqCst;
    let clock = std::sync::Arc::new(HandClock {
        wall_ms: (NOW_S * 1000).into(),
        mono_ms: 5_000.into(),
    });
    let v = Verifier::with_clock(
        VerifyConfig {
            staleness: Duration::from_secs(2),
            leeway_seconds: 0,
            ..for_billing()
        },
        clock.clone(),
    );
    v.apply(&snapshot_event(snapshot(10, &[]))).unwrap();
    v.apply(&heartbeat(10)).unwrap();
    let token = credential(1, "spiffe://acme/a", "acme");
    assert_eq!(verdict(&v, &token), Ok(10));
    let cluster = v.cluster_now_ms();
    for step in [120_000i64, -240_000] {
        clock
            .wall_ms
            .store((clock.wall_ms.load(SeqCst) as i64 + step) as u64, SeqCst);
        assert_eq!(v.cluster_now_ms(), cluster, "a step of {step} ms");
        assert_eq!(verdict(&v, &token), Ok(10), "a step of {step} ms");
        // The status still reports the offset from the (stepped) wall clock.
        assert_eq!(
            v.status().clock_offset_ms,
            Some(cluster as i64 - clock.wall_ms.load(SeqCst) as i64)
        );
    }
    // Time passing on the monotonic clock moves cluster time: the
    // credential (600 s left) expires on time, whatever the wall clock says.
    clock.mono_ms.fetch_add(601_000, SeqCst);
    v.apply(&heartbeat(10)).unwrap_or_default();
    assert!(
        matches!(verdict(&v, &token), Err(Rejection::Invalid { .. })),
        "{:?}",
        verdict(&v, &token)
    );
}

#[tokio::test(start_paused = true)]
async fn hostile_feed_events_change_nothing() {
    let v = ready();
    let token = credential(1, "spiffe://acme/a", "acme");
    let before = v.status();
    let good = delta_event(delta(10, 11, vec![1]));
    let Some(Kind::Delta(good_bytes)) = good.kind.clone() else {
        unreachable!()
    };
    let mut attempts: Vec<(String, FeedEvent)> = Vec::new();
    attempts.push(("empty".into(), FeedEvent::default()));
    for cut in [0, 4, 11, good_bytes.len() / 2, good_bytes.len() - 1] {
        attempts.push((
            format!("truncated at {cut}"),
            envelope(Kind::Delta(good_bytes.slice(..cut)), 11, 10),
        ));
    }
    for at in [12, good_bytes.len() / 2, good_bytes.len() - 5] {
        let mut flipped = good_bytes.to_vec();
        flipped[at] ^= 0x40;
        attempts.push((
            format!("bit flipped at {at}"),
            envelope(Kind::Delta(flipped.into()), 11, 10),
        ));
    }
    let mut long = good_bytes.to_vec();
    long.extend_from_slice(&[0; 16]);
    attempts.push((
        "trailing bytes".into(),
        envelope(Kind::Delta(long.into()), 11, 10),
    ));
    let mut huge = good_bytes.to_vec();
    huge[7..11].copy_from_slice(&u32::MAX.to_le_bytes());
    attempts.push((
        "oversized length".into(),
        envelope(Kind::Delta(huge.into()), 11, 10),
    ));
    attempts.push((
        "envelope disagrees".into(),
        envelope(Kind::Delta(good_bytes.clone()), 12, 10),
    ));
    attempts.push((
        "snapshot bytes as a delta".into(),
        envelope(
            Kind::Delta(
                encode_message(&Message::Full(Box::new(snapshot(11, &[1]))))
                    .unwrap()
                    .into(),
            ),
            11,
            10,
        ),
    ));
    attempts.push(("gap".into(), delta_event(delta(9, 11, vec![1]))));
    attempts.push(("older snapshot".into(), snapshot_event(snapshot(9, &[]))));
    attempts.push(("heartbeat for another epoch".into(), heartbeat(12)));
    attempts.push((
        "zero heartbeat interval".into(),
        envelope(
            Kind::Heartbeat(Heartbeat {
                interval_ms: 0,
                voucher: None,
            }),
            10,
            0,
        ),
    ));
    attempts.push((
        "index already revoked".into(),
        delta_event(delta(10, 11, vec![3])),
    ));
    for (name, event) in &attempts {
        let result = v.apply(event);
        assert!(result.is_err(), "{name} was applied");
        assert_eq!(v.epoch(), Some(10), "{name}");
        assert_eq!(verdict(&v, &token), Ok(10), "{name}");
    }
    let after = v.status();
    assert_eq!(
        after.rejected_events,
        before.rejected_events + attempts.len() as u64
    );
    assert_eq!(
        (after.snapshots, after.deltas, after.revoked_indices),
        (1, 0, 1)
    );
    // And the genuine event still applies.
    assert_eq!(v.apply(&good), Ok(11));
}

#[test]
fn wire_bytes_are_checked_before_decoding() {
    let event = snapshot_event(snapshot(4, &[1, 2]));
    let bytes = event.encode_to_vec();
    assert!(decode_event_bytes(&bytes).is_ok());
    assert!(matches!(
        decode_event_bytes(&bytes[..bytes.len() - 3]),
        Err(FeedError::Malformed(_) | FeedError::Filter(_))
    ));
    assert!(matches!(
        decode_event_bytes(&vec![0u8; lapse_verifier::MAX_EVENT_BYTES + 1]),
        Err(FeedError::TooLarge { .. })
    ));
    assert!(matches!(
        decode_event_bytes(&[0xff; 7]),
        Err(FeedError::Malformed(_))
    ));
}

// ---- Signed heartbeats: a verifier that trusts a cluster CA ----

mod signed {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use lapse_filter::{Snapshot, Statement};
    use lapse_pki::{Authority, Credentials, LeafRequest, Role, SignatureChecker};
    use lapse_verifier::clock::Clock;
    use lapse_wire::feed::Voucher;

    use super::*;

    /// The wall clock at `NOW_S`; monotonic time is tokio's (paused).
    struct Fixed;

    impl Clock for Fixed {
        fn now_ms(&self) -> u64 {
            NOW_S * 1000
        }
    }

    struct Pki {
        ca: Authority,
        trust: SignatureChecker,
    }

    fn at_now() -> std::time::SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW_S)
    }

    impl Pki {
        fn new() -> Self {
            let (ca, _) =
                Authority::generate("lapse.test", at_now(), Duration::from_secs(86400)).unwrap();
            let trust = Credentials::from_pem(ca.cert_pem().as_bytes(), None, at_now()).unwrap();
            Self {
                ca,
                trust: SignatureChecker::new(Arc::new(trust)),
            }
        }

        fn identity(&self, role: Role) -> Credentials {
            let pair = self
                .ca
                .issue(
                    &LeafRequest {
                        role,
                        hosts: Vec::new(),
                        valid_for: Duration::from_secs(3600),
                    },
                    at_now(),
                )
                .unwrap();
            Credentials::from_pem(
                self.ca.cert_pem().as_bytes(),
                Some((pair.cert_pem.as_bytes(), pair.key_pem.as_bytes())),
                at_now(),
            )
            .unwrap()
        }

        fn verifier(&self) -> Verifier {
            Verifier::with_clock(
                VerifyConfig {
                    staleness: Duration::from_secs(2),
                    trust: Some(self.trust.clone()),
                    ..for_billing()
                },
                Arc::new(Fixed),
            )
        }
    }

    /// A heartbeat from broker `claimed`, signed by `by`, vouching for
    /// `state` at cluster time `at_ms`.
    fn signed(by: &Credentials, claimed: u64, state: &Snapshot, at_ms: u64, ttl: u64) -> FeedEvent {
        let statement = Statement {
            broker_id: claimed,
            epoch: state.epoch,
            cluster_time_ms: at_ms,
            max_ttl_ms: ttl,
            interval_ms: 200,
            digest: state.digest_at(None, at_ms, ttl),
        }
        .encode();
        let signature = by.sign(&statement).unwrap();
        let mut event = envelope(
            Kind::Heartbeat(Heartbeat {
                interval_ms: 200,
                voucher: Some(Voucher {
                    statement,
                    signature: signature.signature,
                    scheme: u32::from(signature.scheme),
                    chain: signature.chain,
                }),
            }),
            state.epoch,
            0,
        );
        event.cluster_time_ms = at_ms;
        event
    }

    const T: u64 = NOW_S * 1000;

    #[tokio::test(start_paused = true)]
    async fn only_a_heartbeat_signed_by_a_broker_of_the_ca_over_the_state_held_makes_it_fresh() {
        let pki = Pki::new();
        let broker = pki.identity(Role::Broker(1));
        let state = snapshot(10, &[3]);
        let good = credential(5, "spiffe://acme/a", "acme");

        // Unsigned, another CA's broker, a verifier, a broker speaking
        // for another: all refused, and the verifier holds nothing vouched.
        let v = pki.verifier();
        v.apply(&snapshot_event(state.clone())).unwrap();
        assert_eq!(v.apply(&heartbeat(10)), Err(FeedError::Unsigned));
        let stranger = Pki::new().identity(Role::Broker(1));
        let as_verifier = pki.identity(Role::Verifier("v".into()));
        for forged in [
            signed(&stranger, 1, &state, T, TTL_MS),
            signed(&as_verifier, 1, &state, T, TTL_MS),
            signed(&pki.identity(Role::Broker(2)), 1, &state, T, TTL_MS),
        ] {
            assert!(
                matches!(v.apply(&forged), Err(FeedError::Signature(_))),
                "{:?}",
                v.apply(&forged)
            );
        }
        assert!(matches!(verdict(&v, &good), Err(Rejection::Stale { .. })));
        assert!(!v.status().fresh);
        assert_eq!(v.status().vouched_epoch, None);

        // A signature that checks, over the state held: fresh.
        v.apply(&signed(&broker, 1, &state, T, TTL_MS)).unwrap();
        assert!(v.status().fresh);
        assert_eq!(v.status().vouched_epoch, Some(10));
        assert_eq!(verdict(&v, &good), Ok(10));
        assert!(matches!(
            verdict(&v, &credential(3, "spiffe://acme/a", "acme")),
            Err(Rejection::Revoked { .. })
        ));
    }

    /// A verifier vouched for at epoch 10 (index 3 revoked).
    fn vouched(pki: &Pki, broker: &Credentials) -> Verifier {
        let v = pki.verifier();
        v.apply(&snapshot_event(snapshot(10, &[3]))).unwrap();
        v.apply(&signed(broker, 1, &snapshot(10, &[3]), T, TTL_MS))
            .unwrap();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn a_rewritten_delta_that_drops_a_revocation_is_caught_by_the_digest() {
        let pki = Pki::new();
        let broker = pki.identity(Role::Broker(1));
        let v = vouched(&pki, &broker);
        let four = credential(4, "spiffe://acme/a", "acme");
        // The broker's state at 11 revokes 4; the feed said it added nothing.
        v.apply(&delta_event(delta(10, 11, vec![]))).unwrap();
        let real = snapshot(11, &[3, 4]);
        let refused = v.apply(&signed(&broker, 1, &real, T + 200, TTL_MS));
        assert!(
            matches!(refused, Err(FeedError::Unvouched { .. })),
            "{refused:?}"
        );
        // Back to the vouched state, to resume from it.
        assert_eq!(v.epoch(), Some(10));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(matches!(verdict(&v, &four), Err(Rejection::Stale { .. })));
        // The true delta, then the same heartbeat: fresh, and 4 is revoked.
        v.apply(&delta_event(delta(10, 11, vec![4]))).unwrap();
        v.apply(&signed(&broker, 1, &real, T + 400, TTL_MS))
            .unwrap();
        assert!(matches!(verdict(&v, &four), Err(Rejection::Revoked { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn a_forged_key_counts_for_nothing_until_a_signature_covers_it() {
        let pki = Pki::new();
        let broker = pki.identity(Role::Broker(1));
        let v = vouched(&pki, &broker);
        let attacker = SigningKeyPair::from_seed(KeyId::new("evil").unwrap(), [9; 32]);
        let mut injected = delta(10, 11, vec![]);
        injected
            .keys
            .insert(
                "evil",
                PublicKey {
                    algorithm: KeyAlgorithm::Ed25519,
                    bytes: attacker.public_key().to_vec(),
                    not_before_ms: 0,
                    not_after_ms: u64::MAX / 2,
                },
            )
            .unwrap();
        v.apply(&delta_event(injected)).unwrap();
        let forged = attacker
            .sign(&Claims {
                iss: lapse_credential::DEFAULT_ISSUER.into(),
                sub: WorkloadId::new("spiffe://acme/a").unwrap(),
                aud: vec!["billing".into()],
                iat: NOW_S - 10,
                nbf: NOW_S - 10,
                exp: NOW_S + 600,
                jti: "forged".into(),
                tenant: TenantId::new("acme").unwrap(),
                scopes: vec!["admin".into()],
                status: StatusClaim {
                    status_list: StatusListRef {
                        idx: 77,
                        uri: "https://lapse.test/status".into(),
                    },
                },
                cnf: None,
                chain: None,
                agent: Default::default(),
            })
            .unwrap();
        // The verifier is fresh (on its vouched state), yet the key is not
        // in the vouched state: refused.
        assert!(v.status().fresh);
        assert!(matches!(
            verdict(&v, &forged),
            Err(Rejection::Invalid { .. })
        ));
        // A heartbeat signed by a rogue CA over the forged state changes nothing.
        let mut forged_state = snapshot(11, &[3]);
        forged_state.keys.insert("evil", v_key(&attacker)).unwrap();
        let rogue = Pki::new().identity(Role::Broker(1));
        assert!(
            v.apply(&signed(&rogue, 1, &forged_state, T + 200, TTL_MS))
                .is_err()
        );
        assert!(matches!(
            verdict(&v, &forged),
            Err(Rejection::Invalid { .. })
        ));
    }

    fn v_key(k: &SigningKeyPair) -> PublicKey {
        PublicKey {
            algorithm: KeyAlgorithm::Ed25519,
            bytes: k.public_key().to_vec(),
            not_before_ms: 0,
            not_after_ms: u64::MAX / 2,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hostile_maximum_lifetime_of_1_ms_ages_out_nothing() {
        let pki = Pki::new();
        let broker = pki.identity(Role::Broker(1));
        let v = pki.verifier();
        let mut state = snapshot(10, &[]);
        state
            .rules
            .revoke_subject("acme", "spiffe://acme/a", (NOW_S + 1) * 1000)
            .unwrap();
        let mut event = snapshot_event(state.clone());
        event.max_credential_ttl_ms = 1;
        v.apply(&event).unwrap();
        v.apply(&signed(&broker, 1, &state, T, TTL_MS)).unwrap();
        // Every event from now on claims a 1 ms lifetime.
        let mut hb = signed(&broker, 1, &state, T + 200, TTL_MS);
        hb.max_credential_ttl_ms = 1;
        v.apply(&hb).unwrap();
        v.age_out();
        assert_eq!(v.status().rules, 1);
        assert!(matches!(
            verdict(&v, &credential(1, "spiffe://acme/a", "acme")),
            Err(Rejection::Revoked { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_replayed_heartbeat_does_not_keep_the_verifier_fresh() {
        let pki = Pki::new();
        let broker = pki.identity(Role::Broker(1));
        let v = vouched(&pki, &broker);
        let replay = signed(&broker, 1, &snapshot(10, &[3]), T, TTL_MS);
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(900)).await;
            v.apply(&replay).unwrap();
        }
        assert!(!v.status().fresh, "{:?}", v.status());
        assert!(matches!(
            verdict(&v, &credential(5, "spiffe://acme/a", "acme")),
            Err(Rejection::Stale { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hostile_snapshot_that_forgets_revocations_is_checked_against_the_vouched_state() {
        let pki = Pki::new();
        let broker = pki.identity(Role::Broker(1));
        let v = vouched(&pki, &broker);
        v.apply(&snapshot_event(snapshot(u64::MAX / 2, &[])))
            .unwrap();
        assert!(matches!(
            verdict(&v, &credential(3, "spiffe://acme/a", "acme")),
            Err(Rejection::Revoked { .. })
        ));
        // The broker's next heartbeat drops it; a snapshot at the vouched
        // epoch or later is taken again.
        assert!(
            v.apply(&signed(&broker, 1, &snapshot(10, &[3]), T + 200, TTL_MS))
                .is_err()
        );
        assert_eq!(v.epoch(), Some(10));
        v.apply(&snapshot_event(snapshot(12, &[3, 4]))).unwrap();
        v.apply(&signed(&broker, 1, &snapshot(12, &[3, 4]), T + 400, TTL_MS))
            .unwrap();
        assert_eq!(v.status().vouched_epoch, Some(12));
    }
}

/// A verifier's configuration for the audience the test credentials are
/// for, from the default issuer.
fn for_billing() -> VerifyConfig {
    VerifyConfig {
        audience: Some("billing".into()),
        ..VerifyConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_bound_credential_copied_from_a_log_is_refused_without_its_keys_proof() {
    use lapse_credential::make_proof;
    use lapse_verifier::Proof;
    let v = ready();
    let holder = SigningKeyPair::from_seed(KeyId::new("holder").unwrap(), [21; 32]);
    let thief = SigningKeyPair::from_seed(KeyId::new("thief").unwrap(), [22; 32]);
    let token = bound_credential(7, &holder);
    let uri = "https://api.example/payments";
    let proof = |key: &SigningKeyPair, method: &str, uri: &str, token: &str, jti: &str| {
        make_proof(key, method, uri, Some(token), NOW_S, jti).unwrap()
    };
    let with = |proof: &str, method: &'static str, remember: bool| -> Result<u64, Rejection> {
        let proof = proof.to_owned();
        let expect = Expect {
            dpop: Some(Proof {
                proof: &proof,
                method,
                uri,
                remember,
            }),
            ..Expect::default()
        };
        v.verify(&token, &expect).map(|a| a.status_index)
    };
    let refused = |result: Result<u64, Rejection>, words: &str| match result {
        Err(Rejection::ProofOfPossession { detail }) => {
            assert!(detail.contains(words), "{words:?} not in {detail:?}")
        }
        other => panic!("expected a proof-of-possession refusal, got {other:?}"),
    };
    // As a bearer token: refused.
    refused(verdict(&v, &token).map(|_| 0), "bound to a key");
    // A proof by another key, for another request, or for another token.
    refused(
        with(&proof(&thief, "GET", uri, &token, "t1"), "GET", true),
        "another key",
    );
    refused(
        with(&proof(&holder, "POST", uri, &token, "t2"), "GET", true),
        "method",
    );
    let other_token = bound_credential(8, &holder);
    refused(
        with(&proof(&holder, "GET", uri, &other_token, "t3"), "GET", true),
        "different access token",
    );
    // The holder's proof: accepted once; the same proof again is a replay.
    let good = proof(&holder, "GET", uri, &token, "h1");
    assert_eq!(with(&good, "GET", true), Ok(7));
    refused(with(&good, "GET", true), "already used");
    // A proof too old to be fresh.
    let old = make_proof(&holder, "GET", uri, Some(&token), NOW_S - 3_600, "h2").unwrap();
    refused(with(&old, "GET", true), "window");
    // Another verifier answering the same request (verify-all) does not
    // count it twice.
    let shared = proof(&holder, "GET", uri, &token, "h3");
    assert_eq!(with(&shared, "GET", true), Ok(7));
    assert_eq!(with(&shared, "GET", false), Ok(7));
    // A bearer credential needs no proof.
    assert!(verdict(&v, &credential(9, "spiffe://example.org/a", "acme")).is_ok());
}

/// A relay's leaf waits on the epoch watch and then reads the verifier's
/// state; the follower applies events and publishes each epoch on the
/// watch. Both at once, many times over: the follower must not hold the
/// state's lock while it waits for the watch's readers, or the two wait on
/// each other for ever (this deadlocked a relay serving 1,000 leaves).
#[test]
fn reading_the_state_while_holding_the_epoch_watch_does_not_deadlock_with_apply() {
    const EVENTS: u64 = 2_000;
    let v = ready();
    let applier = {
        let v = v.clone();
        std::thread::spawn(move || {
            for epoch in 10..10 + EVENTS {
                v.apply(&delta_event(delta(epoch, epoch + 1, vec![epoch + 100])))
                    .unwrap();
            }
        })
    };
    let (done, finished) = std::sync::mpsc::channel();
    let reader = {
        let v = v.clone();
        std::thread::spawn(move || {
            let mut epochs = v.epochs();
            loop {
                let held = epochs.borrow_and_update();
                // As a leaf does after `wait_for`, with the watch held.
                let epoch = v.epoch();
                drop(held);
                if epoch == Some(10 + EVENTS) {
                    break;
                }
            }
            done.send(()).unwrap();
        })
    };
    // A failure bound, not a wait on time: with the deadlock, neither
    // thread ever finishes.
    finished
        .recv_timeout(Duration::from_secs(120))
        .expect("apply and a reader holding the epoch watch deadlocked");
    applier.join().unwrap();
    reader.join().unwrap();
}
