//! Break-glass credentials and fail-open acceptances at the verifier: what
//! it accepts, what it refuses, and that every emergency use is counted
//! and queued for reporting.

use std::time::Duration;

use lapse_credential::break_glass::{MintRequest, key_id_of, mint};
use lapse_credential::{
    Claims, KeyId, SigningKeyPair, StatusClaim, StatusListRef, TenantId, WorkloadId,
};
use lapse_filter::{
    DeltaMessage, KeyAlgorithm, KeySet, Message, PublicKey, RevokedDelta, RevokedSet, RuleSet,
    SecretSet, Snapshot, encode_message,
};
use lapse_verifier::{BreakGlassConfig, Expect, Rejection, UseKind, Verifier, VerifyConfig};
use lapse_wire::feed::feed_event::Kind;
use lapse_wire::feed::{FeedEvent, Heartbeat};
use sha2::Digest;

const NOW_S: u64 = 1_800_000_000;
const TTL_MS: u64 = 86_400_000;
const ONCALL: &str = "spiffe://example.org/oncall";

fn broker_key() -> SigningKeyPair {
    SigningKeyPair::from_seed(KeyId::new("n1-test").unwrap(), [7; 32])
}

/// A break-glass key from `seed`, named as `keygen` names it.
fn glass_key(seed: u8) -> SigningKeyPair {
    let public = SigningKeyPair::from_seed(KeyId::new("probe").unwrap(), [seed; 32]).public_key();
    SigningKeyPair::from_seed(key_id_of(&public), [seed; 32])
}

fn snapshot(epoch: u64) -> Snapshot {
    let mut keys = KeySet::new();
    keys.insert(
        "n1-test",
        PublicKey {
            algorithm: KeyAlgorithm::Ed25519,
            bytes: broker_key().public_key().to_vec(),
            not_before_ms: (NOW_S - 3600) * 1000,
            not_after_ms: (NOW_S + 3600) * 1000,
        },
    )
    .unwrap();
    Snapshot {
        epoch,
        set: RevokedSet::from_sorted(0, 1 << 40, []).unwrap(),
        secrets: SecretSet::new(1000, 1e-6, [1; 32]).unwrap(),
        rules: RuleSet::new(),
        keys,
    }
}

fn envelope(kind: Kind, epoch: u64, from: u64, max_ttl_ms: u64) -> FeedEvent {
    FeedEvent {
        kind: Some(kind),
        epoch,
        from_epoch: from,
        cluster_time_ms: NOW_S * 1000,
        broker_id: 1,
        max_credential_ttl_ms: max_ttl_ms,
    }
}

fn heartbeat(epoch: u64, max_ttl_ms: u64) -> FeedEvent {
    envelope(
        Kind::Heartbeat(Heartbeat {
            interval_ms: 200,
            voucher: None,
        }),
        epoch,
        0,
        max_ttl_ms,
    )
}

fn delta_event(d: DeltaMessage) -> FeedEvent {
    let (from, to) = (d.revoked.from_epoch(), d.revoked.to_epoch());
    let bytes = encode_message(&Message::Delta(d)).unwrap();
    envelope(Kind::Delta(bytes.into()), to, from, TTL_MS)
}

fn delta(from: u64, to: u64) -> DeltaMessage {
    DeltaMessage {
        revoked: RevokedDelta::new(from, to, vec![], Some(0)).unwrap(),
        added_secrets: Default::default(),
        rules: RuleSet::new(),
        keys: KeySet::new(),
        keys_removed: Default::default(),
    }
}

fn config(fail_open: bool) -> VerifyConfig {
    VerifyConfig {
        staleness: Duration::from_secs(2),
        fail_open,
        break_glass: Some(
            BreakGlassConfig::new(
                [glass_key(1).public_key()],
                ["billing".to_owned()],
                Duration::from_secs(30 * 60),
            )
            .unwrap(),
        ),
        ..for_billing()
    }
}

/// A fresh verifier at epoch 10 whose cluster allows credentials of
/// `max_ttl_ms`.
fn ready_with(config: VerifyConfig, max_ttl_ms: u64) -> Verifier {
    let v = Verifier::new(config);
    let bytes = encode_message(&Message::Full(Box::new(snapshot(10)))).unwrap();
    v.apply(&envelope(Kind::Snapshot(bytes.into()), 10, 0, max_ttl_ms))
        .unwrap();
    v.apply(&heartbeat(10, max_ttl_ms)).unwrap();
    v
}

fn ready() -> Verifier {
    ready_with(config(false), TTL_MS)
}

struct Mint {
    key: SigningKeyPair,
    audiences: Vec<&'static str>,
    ttl_seconds: u64,
    issued_at: u64,
    nonce: u8,
}

impl Default for Mint {
    fn default() -> Self {
        Self {
            key: glass_key(1),
            audiences: vec!["billing"],
            ttl_seconds: 15 * 60,
            issued_at: NOW_S - 10,
            nonce: 1,
        }
    }
}

fn glass(m: Mint) -> String {
    mint(
        &m.key,
        &MintRequest {
            subject: WorkloadId::new(ONCALL).unwrap(),
            audiences: m.audiences.iter().map(|a| a.to_string()).collect(),
            tenant: TenantId::new("break-glass").unwrap(),
            scopes: vec![],
            reason: "INC-42: every broker unreachable".into(),
            ttl_seconds: m.ttl_seconds,
            now_seconds: m.issued_at,
            nonce: [m.nonce; 16],
        },
    )
    .unwrap()
}

fn regular(index: u64) -> String {
    broker_key()
        .sign(&Claims {
            iss: lapse_credential::DEFAULT_ISSUER.into(),
            sub: WorkloadId::new("spiffe://example.org/app").unwrap(),
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
            cnf: None,
            chain: None,
            agent: Default::default(),
        })
        .unwrap()
}

fn refusal(v: &Verifier, token: &str) -> Rejection {
    v.verify(token, &Expect::default()).expect_err("a refusal")
}

#[tokio::test(start_paused = true)]
async fn accepted_within_its_limits_and_queued_for_reporting() {
    let v = ready();
    let token = glass(Mint::default());
    let accepted = v.verify(&token, &Expect::default()).unwrap();
    assert_eq!(accepted.subject, ONCALL);
    assert_eq!(accepted.key_id, glass_key(1).key_id().as_str());
    assert_eq!(accepted.status_index, 0);
    assert!(!accepted.stale);
    assert_eq!(
        accepted.break_glass.unwrap().reason,
        "INC-42: every broker unreachable"
    );
    // Used twice: counted twice, one pending entry.
    v.verify(&token, &Expect::default()).unwrap();
    let status = v.status();
    assert_eq!(status.break_glass_accepted, 2);
    assert_eq!(status.accepted_while_stale, 0);
    assert_eq!(status.emergency_uses_pending, 1);
    assert_eq!(
        status.break_glass_keys,
        vec![glass_key(1).key_id().to_string()]
    );
    let uses = v.take_emergency_uses(64);
    assert_eq!(uses.len(), 1);
    let use_ = &uses[0];
    assert_eq!(use_.kind, UseKind::BreakGlass);
    assert_eq!(use_.count, 2);
    assert_eq!(use_.jti, "01".repeat(16));
    assert_eq!(use_.subject, ONCALL);
    assert_eq!(use_.audiences, vec!["billing".to_owned()]);
    assert_eq!(use_.reason, "INC-42: every broker unreachable");
    let status = v.status();
    assert_eq!(
        (
            status.emergency_uses_pending,
            status.emergency_uses_reported
        ),
        (0, 2)
    );
    // What could not be sent comes back.
    v.give_back_emergency_uses(uses);
    assert_eq!(v.status().emergency_uses_pending, 1);
}

#[tokio::test(start_paused = true)]
async fn refused_beyond_its_limits() {
    let v = ready();
    let invalid = |token: &str, words: &str| match refusal(&v, token) {
        Rejection::Invalid { detail } => assert!(detail.contains(words), "{detail}"),
        other => panic!("{other:?}"),
    };
    // An audience break-glass credentials may not be used for here.
    invalid(
        &glass(Mint {
            audiences: vec!["payroll"],
            ..Mint::default()
        }),
        "\"payroll\"",
    );
    invalid(
        &glass(Mint {
            audiences: vec!["billing", "payroll"],
            ..Mint::default()
        }),
        "\"payroll\"",
    );
    // The service asks for another audience than the credential's.
    assert!(matches!(
        v.verify(
            &glass(Mint::default()),
            &Expect {
                audience: Some("ledger"),
                tenant: None,
                ..Expect::default()
            }
        ),
        Err(Rejection::Invalid { .. })
    ));
    // Longer than the verifier allows (30 min).
    invalid(
        &glass(Mint {
            ttl_seconds: 45 * 60,
            ..Mint::default()
        }),
        "longer than the 1800 s",
    );
    // Signed by a key the verifier was not given.
    invalid(
        &glass(Mint {
            key: glass_key(2),
            ..Mint::default()
        }),
        "no published key",
    );
    // Expired (cluster time is NOW_S; leeway 30 s).
    invalid(
        &glass(Mint {
            issued_at: NOW_S - 1000,
            ttl_seconds: 900,
            ..Mint::default()
        }),
        "expired",
    );
    // Issued in the future, which would dodge "issued before" rules.
    invalid(
        &glass(Mint {
            issued_at: NOW_S + 600,
            ..Mint::default()
        }),
        "in the future",
    );
    // For another tenant than the service expects.
    assert!(matches!(
        v.verify(
            &glass(Mint::default()),
            &Expect {
                audience: None,
                tenant: Some("acme"),
                ..Expect::default()
            }
        ),
        Err(Rejection::WrongTenant { .. })
    ));
    let status = v.status();
    assert_eq!(status.break_glass_accepted, 0);
    assert_eq!(status.break_glass_rejected, 8);
    assert_eq!(status.emergency_uses_pending, 0);
}

#[tokio::test(start_paused = true)]
async fn longer_than_the_clusters_maximum_lifetime_is_refused() {
    // Rules age out after the cluster's maximum credential lifetime: a
    // break-glass credential living longer could outlive its revocation.
    let v = ready_with(config(false), 10 * 60 * 1000);
    match refusal(&v, &glass(Mint::default())) {
        Rejection::Invalid { detail } => assert!(detail.contains("600 s"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(
        v.verify(
            &glass(Mint {
                ttl_seconds: 600,
                ..Mint::default()
            }),
            &Expect::default()
        )
        .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn revoked_like_any_other_credential() {
    let v = ready();
    let by_key = glass(Mint {
        nonce: 1,
        ..Mint::default()
    });
    let by_subject = glass(Mint {
        nonce: 2,
        ..Mint::default()
    });
    let by_hash = glass(Mint {
        nonce: 3,
        ..Mint::default()
    });
    for token in [&by_key, &by_subject, &by_hash] {
        assert!(v.verify(token, &Expect::default()).is_ok());
    }
    // Its own hash, as `lapse revoke secret` records it: that one only.
    let mut d = delta(10, 11);
    d.added_secrets
        .insert(sha2::Sha256::digest(by_hash.as_bytes()).into());
    v.apply(&delta_event(d)).unwrap();
    assert!(matches!(refusal(&v, &by_hash), Rejection::Revoked { by } if by.contains("hash")));
    assert!(v.verify(&by_subject, &Expect::default()).is_ok());
    // A subject rule (`lapse revoke subject ONCALL --tenant break-glass`).
    let mut d = delta(11, 12);
    d.rules
        .revoke_subject("break-glass", ONCALL, NOW_S * 1000)
        .unwrap();
    v.apply(&delta_event(d)).unwrap();
    assert!(matches!(refusal(&v, &by_subject), Rejection::Revoked { by } if by.contains(ONCALL)));
    // A key rule on the break-glass key id: everything it signed.
    let v = ready();
    assert!(v.verify(&by_key, &Expect::default()).is_ok());
    let mut d = delta(10, 11);
    d.rules.revoke_key(glass_key(1).key_id().as_str()).unwrap();
    v.apply(&delta_event(d)).unwrap();
    assert!(matches!(refusal(&v, &by_key), Rejection::Revoked { by } if by.contains("key")));
}

#[tokio::test(start_paused = true)]
async fn a_stale_verifier_accepts_break_glass_and_counts_it() {
    let v = ready();
    tokio::time::advance(Duration::from_millis(2500)).await;
    assert!(!v.status().fresh);
    // Fail closed: a regular credential is refused...
    assert!(matches!(refusal(&v, &regular(1)), Rejection::Stale { .. }));
    // ...a break-glass one is accepted, and counted as accepted while stale.
    let accepted = v
        .verify(&glass(Mint::default()), &Expect::default())
        .unwrap();
    assert!(accepted.stale);
    let status = v.status();
    assert_eq!(status.break_glass_accepted, 1);
    assert_eq!(status.accepted_while_stale, 1);
    assert_eq!(status.emergency_uses_pending, 1);
    assert_eq!(v.take_emergency_uses(64)[0].kind, UseKind::BreakGlass);
    // Still checked against the revocation state held: revoked stays revoked.
    let mut d = delta(10, 11);
    d.rules
        .revoke_subject("break-glass", ONCALL, NOW_S * 1000)
        .unwrap();
    v.apply(&delta_event(d)).unwrap();
    assert!(matches!(
        refusal(&v, &glass(Mint::default())),
        Rejection::Revoked { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn without_any_revocation_state_nothing_is_accepted() {
    let v = Verifier::new(config(false));
    assert_eq!(refusal(&v, &glass(Mint::default())), Rejection::NoState);
}

#[tokio::test(start_paused = true)]
async fn a_verifier_without_break_glass_keys_says_so() {
    let v = ready_with(
        VerifyConfig {
            staleness: Duration::from_secs(2),
            ..for_billing()
        },
        TTL_MS,
    );
    match refusal(&v, &glass(Mint::default())) {
        Rejection::Invalid { detail } => {
            assert!(detail.contains("accepts no break-glass"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(v.status().emergency_uses_pending, 0);
}

#[tokio::test(start_paused = true)]
async fn fail_open_acceptances_are_counted_and_queued() {
    let v = ready_with(config(true), TTL_MS);
    // Fresh: an ordinary acceptance, not an emergency.
    assert!(!v.verify(&regular(1), &Expect::default()).unwrap().stale);
    assert_eq!(v.status().emergency_uses_pending, 0);
    tokio::time::advance(Duration::from_millis(2500)).await;
    for _ in 0..3 {
        assert!(v.verify(&regular(1), &Expect::default()).unwrap().stale);
    }
    assert!(v.verify(&regular(2), &Expect::default()).unwrap().stale);
    let status = v.status();
    assert!(status.fail_open);
    assert_eq!(status.accepted_while_stale, 4);
    assert_eq!(status.break_glass_accepted, 0);
    assert_eq!(status.emergency_uses_pending, 2);
    let uses = v.take_emergency_uses(64);
    assert_eq!(uses[0].kind, UseKind::FailOpen);
    assert_eq!(uses[0].jti, "jti-1");
    assert_eq!(uses[0].count, 3);
    assert_eq!(uses[0].key_id, "n1-test");
    assert!(
        uses[0].reason.contains("no confirmed heartbeat"),
        "{}",
        uses[0].reason
    );
    assert_eq!((uses[1].jti.as_str(), uses[1].count), ("jti-2", 1));
}

/// A verifier's configuration for the audience the test credentials are
/// for, from the default issuer.
fn for_billing() -> VerifyConfig {
    VerifyConfig {
        audience: Some("billing".into()),
        ..VerifyConfig::default()
    }
}

/// A broker stand-in that counts subscriptions and the use reports each
/// brings, answering a report only from the second subscription on.
mod reporting {
    use std::sync::{Arc, Mutex};

    use lapse_wire::feed::feed_request::Kind as RequestKind;
    use lapse_wire::feed::feed_server::{Feed, FeedServer};
    use lapse_wire::feed::{FeedEvent, FeedRequest, UseReport, UsesRecorded};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::{Request, Response, Status, Streaming};

    /// What one subscription saw, in order: `Ok(report)` or `Err(acked epoch)`.
    pub type Seen = Vec<Result<UseReport, u64>>;

    #[derive(Clone, Default)]
    pub struct Broker {
        pub subscriptions: Arc<Mutex<Vec<Arc<Mutex<Seen>>>>>,
    }

    #[tonic::async_trait]
    impl Feed for Broker {
        type SubscribeStream = ReceiverStream<Result<FeedEvent, Status>>;

        async fn subscribe(
            &self,
            request: Request<Streaming<FeedRequest>>,
        ) -> Result<Response<Self::SubscribeStream>, Status> {
            let mut inbound = request.into_inner();
            let _hello = inbound.message().await?;
            let seen = Arc::new(Mutex::new(Seen::new()));
            let number = {
                let mut all = self.subscriptions.lock().unwrap();
                all.push(seen.clone());
                all.len()
            };
            let (out, events) = mpsc::channel(16);
            out.send(Ok(super::heartbeat(10, super::TTL_MS)))
                .await
                .unwrap();
            tokio::spawn(async move {
                while let Ok(Some(message)) = inbound.message().await {
                    match message.kind {
                        Some(RequestKind::Ack(ack)) => seen.lock().unwrap().push(Err(ack.epoch)),
                        Some(RequestKind::UseReport(report)) => {
                            let report_id = report.report_id;
                            seen.lock().unwrap().push(Ok(report));
                            match number {
                                // The first subscription breaks before
                                // the report is recorded.
                                1 => return,
                                // The second records it, says so, and
                                // ends; the third sends a revocation.
                                2 => {
                                    let recorded = super::envelope(
                                        lapse_wire::feed::feed_event::Kind::UsesRecorded(
                                            UsesRecorded { report_id },
                                        ),
                                        0,
                                        0,
                                        super::TTL_MS,
                                    );
                                    let _ = out.send(Ok(recorded)).await;
                                    return;
                                }
                                _ => {}
                            }
                        }
                        _ => {}
                    }
                    if number >= 3 && seen.lock().unwrap().contains(&Err(10)) {
                        let _ = out.send(Ok(super::delta_event(super::delta(10, 11)))).await;
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(events)))
        }
    }

    pub fn serve(broker: Broker, listener: tokio::net::TcpListener) {
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(FeedServer::new(broker))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_use_report_lost_with_its_subscription_is_sent_again_and_recorded_once() {
    let v = ready();
    let token = glass(Mint::default());
    v.verify(&token, &Expect::default()).unwrap();
    assert_eq!(v.status().emergency_uses_pending, 1);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let broker = reporting::Broker::default();
    reporting::serve(broker.clone(), listener);
    let mut config = lapse_verifier::FollowConfig::new(vec![address], "edge");
    config.idle_timeout = Duration::from_secs(60);
    config.retry_pause = Duration::from_millis(10);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = tokio::spawn(lapse_verifier::follow(
        v.clone(),
        config,
        Default::default(),
        async {
            let _ = stopped.await;
        },
    ));

    // Wait for the third subscription's ack of epoch 11: everything the
    // verifier would report on it was sent before that ack.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let subscriptions = loop {
        let all: Vec<reporting::Seen> = broker
            .subscriptions
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.lock().unwrap().clone())
            .collect();
        if all.len() >= 3 && all[2].contains(&Err(11)) {
            break all;
        }
        assert!(std::time::Instant::now() < deadline, "{all:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stop.send(()).unwrap();
    follower.await.unwrap();

    let reports = |seen: &reporting::Seen| -> Vec<UseReportView> {
        seen.iter()
            .filter_map(|s| s.as_ref().ok())
            .map(|r| UseReportView {
                report_id: r.report_id,
                jtis: r.uses.iter().map(|u| u.jti.clone()).collect(),
            })
            .collect()
    };
    let first = reports(&subscriptions[0]);
    let second = reports(&subscriptions[1]);
    assert_eq!(first.len(), 1, "{subscriptions:?}");
    assert_eq!(first[0].jtis, vec!["01".repeat(16)]);
    assert_ne!(first[0].report_id, 0);
    // Sent again, as the same report (so a broker records it once).
    assert_eq!(second, first, "{subscriptions:?}");
    // Recorded: not sent a third time, and nothing pending.
    assert!(reports(&subscriptions[2]).is_empty(), "{subscriptions:?}");
    let status = v.status();
    assert_eq!(status.emergency_uses_pending, 0);
    assert_eq!(status.emergency_uses_reported, 1);
}

#[derive(Debug, PartialEq, Eq)]
struct UseReportView {
    report_id: u64,
    jtis: Vec<String>,
}
