//! Delegated and task-bound credentials at the verifier: a revoked
//! ancestor revokes every credential exchanged from it, a task rule every
//! credential of its task, a malformed agent context is refused, and the
//! verify API tells a service who acts, for whom, under which task.

use std::sync::Arc;
use std::time::Duration;

use lapse_credential::{
    Actor, AgentContext, Claims, KeyId, SigningKeyPair, StatusClaim, StatusListRef, TenantId,
    WorkloadId,
};
use lapse_filter::{
    DeltaMessage, KeyAlgorithm, KeySet, Message, PublicKey, RevokedDelta, RevokedSet, RuleSet,
    SecretSet, Snapshot, encode_message,
};
use lapse_verifier::http::{ApiLimits, Served};
use lapse_verifier::{Expect, FollowStats, Rejection, Verifier, VerifyConfig};
use lapse_wire::feed::feed_event::Kind;
use lapse_wire::feed::{FeedEvent, Heartbeat};
use serde_json::{Value, json};

const NOW_S: u64 = 1_800_000_000;
const INTENT: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

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

fn workload(name: &str) -> WorkloadId {
    WorkloadId::new(format!("spiffe://example.org/{name}")).unwrap()
}

/// A credential at `index` delegated through `ancestors` (one actor per
/// ancestor, `agent-1` the first delegate), issued `age_s` seconds ago.
fn delegated(index: u64, ancestors: &[u64], task: Option<&str>, age_s: u64) -> Claims {
    let actors: Vec<WorkloadId> = (1..=ancestors.len())
        .rev()
        .map(|n| workload(&format!("agent-{n}")))
        .collect();
    Claims {
        iss: lapse_credential::DEFAULT_ISSUER.into(),
        sub: workload("planner"),
        aud: vec!["billing".into()],
        iat: NOW_S - age_s,
        nbf: NOW_S - age_s,
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
            task: task.map(str::to_owned),
            on_behalf_of: Some("user:ada@example.org".into()),
            intent: Some(INTENT.into()),
        },
    }
}

fn sign(claims: &Claims) -> String {
    key().sign(claims).unwrap()
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

/// A fresh verifier at epoch 10 holding `revoked` and `rules`.
fn ready(revoked: &[u64], rules: RuleSet) -> Verifier {
    let v = Verifier::new(VerifyConfig {
        staleness: Duration::from_secs(60),
        audience: Some("billing".into()),
        ..VerifyConfig::default()
    });
    let snapshot = Snapshot {
        epoch: 10,
        set: RevokedSet::from_sorted(0, 1 << 40, revoked.iter().copied()).unwrap(),
        secrets: SecretSet::new(1000, 1e-6, [1; 32]).unwrap(),
        rules,
        keys: keys(),
    };
    let bytes = encode_message(&Message::Full(Box::new(snapshot))).unwrap();
    v.apply(&envelope(Kind::Snapshot(bytes.into()), 10, 0))
        .unwrap();
    v.apply(&heartbeat(10)).unwrap();
    v
}

fn verify(v: &Verifier, token: &str) -> Result<lapse_verifier::Accepted, Rejection> {
    v.verify(token, &Expect::default())
}

#[tokio::test]
async fn a_revoked_ancestor_revokes_every_credential_delegated_from_it() {
    let v = ready(&[3], RuleSet::new());
    let accepted = verify(&v, &sign(&delegated(20, &[1, 2], None, 10))).unwrap();
    assert_eq!(accepted.agent.ancestors, [1, 2]);
    for ancestors in [&[3][..], &[3, 4], &[1, 3], &[1, 2, 4, 5, 3]] {
        let refused = verify(&v, &sign(&delegated(20, ancestors, None, 10))).unwrap_err();
        assert_eq!(
            refused,
            Rejection::Revoked {
                by: "an ancestor (index 3) is revoked".into()
            },
            "{ancestors:?}"
        );
    }
    // Its own index first, as before.
    assert_eq!(
        verify(&v, &sign(&delegated(3, &[1], None, 10))).unwrap_err(),
        Rejection::Revoked {
            by: "status index 3".into()
        }
    );
    // An ancestor revoked by a later delta counts at once.
    let v = ready(&[], RuleSet::new());
    let token = sign(&delegated(20, &[7, 8], None, 10));
    assert!(verify(&v, &token).is_ok());
    let delta = DeltaMessage {
        revoked: RevokedDelta::new(10, 11, vec![8], Some(0)).unwrap(),
        added_secrets: Default::default(),
        rules: RuleSet::new(),
        keys: KeySet::new(),
        keys_removed: Default::default(),
    };
    let bytes = encode_message(&Message::Delta(delta)).unwrap();
    v.apply(&envelope(Kind::Delta(bytes.into()), 11, 10))
        .unwrap();
    assert_eq!(
        verify(&v, &token).unwrap_err(),
        Rejection::Revoked {
            by: "an ancestor (index 8) is revoked".into()
        }
    );
}

#[tokio::test]
async fn forged_ancestors_are_refused_by_the_signature() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let v = ready(&[3], RuleSet::new());
    // A holder rewrites its ancestors to drop the revoked one.
    let token = sign(&delegated(20, &[3, 4], None, 10));
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["ancestors"] = json!([5, 4]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    match verify(&v, &forged).unwrap_err() {
        Rejection::Invalid { detail } => assert!(detail.contains("signature"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_malformed_agent_context_is_refused_even_when_signed() {
    let v = ready(&[], RuleSet::new());
    let malformed = |claims: Claims, why: &str| match verify(&v, &sign(&claims)).unwrap_err() {
        Rejection::Invalid { detail } => {
            assert!(detail.starts_with("malformed agent context: "), "{detail}");
            assert!(detail.contains(why), "{detail}");
        }
        other => panic!("{other:?}"),
    };
    // Nine exchanges, one more than any credential may carry.
    let nine: Vec<u64> = (1..=9).collect();
    malformed(
        delegated(20, &nine, None, 10),
        "delegated 9 times, more than 8",
    );
    assert!(verify(&v, &sign(&delegated(20, &nine[..8], None, 10))).is_ok());
    // An actor chain that does not match the ancestors.
    let mut mismatched = delegated(20, &[1, 2], None, 10);
    mismatched.agent.act = Actor::from_chain(&[workload("agent-1")]);
    malformed(mismatched, "1 actors for 2 ancestors");
    let mut actorless = delegated(20, &[1], None, 10);
    actorless.agent.act = None;
    malformed(actorless, "0 actors for 1 ancestors");
    // Out-of-shape task, on_behalf_of and intent.
    malformed(delegated(20, &[], Some("run 1"), 10), "task id");
    malformed(delegated(20, &[], Some(&"t".repeat(129)), 10), "task id");
    let mut obo = delegated(20, &[], None, 10);
    obo.agent.on_behalf_of = Some("two words".into());
    malformed(obo, "on_behalf_of");
    let mut intent = delegated(20, &[], None, 10);
    intent.agent.intent = Some("ABC".into());
    malformed(intent, "intent");
}

#[tokio::test]
async fn a_task_rule_revokes_its_tenants_credentials_of_that_task_issued_before_it() {
    let mut rules = RuleSet::new();
    rules
        .revoke_task("acme", "run:42", (NOW_S - 5) * 1000)
        .unwrap();
    let v = ready(&[], rules);
    let refused = verify(&v, &sign(&delegated(20, &[1], Some("run:42"), 10))).unwrap_err();
    assert_eq!(
        refused,
        Rejection::Revoked {
            by: "task run:42 of tenant acme".into()
        }
    );
    // Issued after the cutoff, another task, no task, another tenant.
    assert!(verify(&v, &sign(&delegated(20, &[1], Some("run:42"), 1))).is_ok());
    assert!(verify(&v, &sign(&delegated(20, &[1], Some("run:43"), 10))).is_ok());
    assert!(verify(&v, &sign(&delegated(20, &[1], None, 10))).is_ok());
    let mut beta = delegated(20, &[1], Some("run:42"), 10);
    beta.tenant = TenantId::new("beta").unwrap();
    assert!(verify(&v, &sign(&beta)).is_ok());
}

/// The verify API's answer names the acting party, the whole actor
/// chain, the ancestors, the depth, the task, the user and the intent;
/// an undelegated credential's says nobody else acts.
#[tokio::test]
async fn the_verify_api_tells_who_acts_for_whom_under_which_task() {
    let v = ready(&[3], RuleSet::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = Served {
        id: "v-0".into(),
        region: "eu".into(),
        verifier: v,
        stats: Arc::new(FollowStats::default()),
        relay: None,
    };
    let server = tokio::spawn(lapse_verifier::http::serve(
        listener,
        vec![served],
        None,
        ApiLimits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let post = move |token: String| {
        let url = format!("http://{address}/v1/verify");
        tokio::task::spawn_blocking(move || {
            match ureq::post(&url).send_json(json!({ "token": token })) {
                Ok(response) => (response.status(), response.into_json::<Value>().unwrap()),
                Err(ureq::Error::Status(code, response)) => {
                    (code, response.into_json::<Value>().unwrap())
                }
                Err(e) => panic!("{e}"),
            }
        })
    };

    let (status, body) = post(sign(&delegated(20, &[1, 2, 4, 5], Some("run:42"), 10)))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["valid"], true);
    assert_eq!(body["subject"], "spiffe://example.org/planner");
    assert_eq!(body["actor"], "spiffe://example.org/agent-4");
    assert_eq!(
        body["actors"],
        json!([
            "spiffe://example.org/agent-4",
            "spiffe://example.org/agent-3",
            "spiffe://example.org/agent-2",
            "spiffe://example.org/agent-1"
        ])
    );
    assert_eq!(body["ancestors"], json!([1, 2, 4, 5]));
    assert_eq!(body["delegation_depth"], 4);
    assert_eq!(body["task"], "run:42");
    assert_eq!(body["on_behalf_of"], "user:ada@example.org");
    assert_eq!(body["intent"], INTENT);

    let mut plain = delegated(21, &[], None, 10);
    plain.agent = AgentContext::default();
    let (status, body) = post(sign(&plain)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["actor"], Value::Null);
    assert_eq!(body["actors"], json!([]));
    assert_eq!(body["ancestors"], json!([]));
    assert_eq!(body["delegation_depth"], 0);
    assert_eq!(body["task"], Value::Null);

    let (status, body) = post(sign(&delegated(22, &[1, 3], None, 10))).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason"], "revoked");
    assert_eq!(body["detail"], "revoked: an ancestor (index 3) is revoked");

    let nine: Vec<u64> = (1..=9).collect();
    let (status, body) = post(sign(&delegated(23, &nine, None, 10))).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["reason"], "invalid");
    assert_eq!(
        body["detail"],
        "invalid credential: malformed agent context: delegated 9 times, more than 8"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
