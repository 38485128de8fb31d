//! Attacks on the Shared Signals endpoints of a real broker, each shown to
//! fail and to change nothing: no token or a wrong one, one tenant's
//! receiver reaching for another's stream, push endpoints that would make
//! the broker an open relay, oversized and malformed bodies, more streams
//! than the cap; and the receivers' tokens never reach the broker's log.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const POLL: &str = "urn:ietf:rfc:8936";
const PUSH: &str = "urn:ietf:rfc:8935";

/// `method path` with `authorization` (if any) and a raw `body`.
fn call(
    base: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut request = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(15))
        .build()
        .request(method, &format!("{base}{path}"))
        .set("Content-Type", "application/json");
    if let Some(value) = authorization {
        request = request.set("Authorization", value);
    }
    let sent = if body.is_empty() {
        request.call()
    } else {
        request.send_string(body)
    };
    let response = match sent {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{method} {path}: {error}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn receiver(cluster: &TestCluster, name: &str, tenant: &str) -> String {
    let created = cli_json(
        cluster,
        1,
        &[
            "ssf", "receiver", "create", "--name", name, "--tenant", tenant, "--json",
        ],
    );
    created["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssf_endpoints_refuse_every_attack_and_change_nothing() {
    let http = format!("127.0.0.1:{}", free_port());
    let listen = http.clone();
    let cluster = TestCluster::start_with(1, FAST_RAFT, move |_| {
        format!("[issuance]\nhttp_listen = \"{listen}\"\n")
    });
    cluster.wait_for_leader().await;
    wait_for_keys(&cluster, 1).await;
    let base = format!("http://{http}");
    let acme = format!("Bearer {}", receiver(&cluster, "acme-siem", "acme"));
    let beta = format!("Bearer {}", receiver(&cluster, "beta-siem", "beta"));

    // Discovery is public; everything else needs a receiver's token.
    assert_eq!(
        call(&base, "GET", "/.well-known/ssf-configuration", None, "").0,
        200
    );
    for (method, path) in [
        ("GET", "/ssf/stream"),
        ("POST", "/ssf/stream"),
        ("DELETE", "/ssf/stream?stream_id=x"),
        ("GET", "/ssf/status?stream_id=x"),
        ("POST", "/ssf/poll/x"),
    ] {
        for authorization in [
            None,
            Some("Bearer lapse-ssf-not-a-real-token"),
            Some("Basic eDp5"),
        ] {
            let (status, body) = call(&base, method, path, authorization, "{}");
            assert_eq!(
                status, 401,
                "{method} {path} with {authorization:?}: {body}"
            );
        }
    }

    // acme's poll stream.
    let stream = json!({ "delivery": { "method": POLL } }).to_string();
    let (status, created) = call(&base, "POST", "/ssf/stream", Some(&acme), &stream);
    assert_eq!(status, 201, "{created}");
    let id = created["stream_id"].as_str().unwrap().to_owned();

    // beta's receiver cannot see, poll, change or delete it.
    let query = format!("/ssf/stream?stream_id={id}");
    for (method, path, body) in [
        ("GET", query.as_str(), String::new()),
        (
            "PATCH",
            "/ssf/stream",
            json!({ "stream_id": id, "description": "mine" }).to_string(),
        ),
        ("DELETE", query.as_str(), String::new()),
        (
            "POST",
            &format!("/ssf/poll/{id}"),
            json!({ "returnImmediately": true }).to_string(),
        ),
        ("GET", &format!("/ssf/status?stream_id={id}"), String::new()),
    ] {
        let (status, answer) = call(&base, method, path, Some(&beta), &body);
        assert_eq!(status, 404, "beta {method} {path}: {answer}");
    }
    let (status, listed) = call(&base, "GET", "/ssf/stream", Some(&beta), "");
    assert_eq!(status, 200, "{listed}");
    assert!(
        !listed.to_string().contains(&id),
        "beta sees acme's stream: {listed}"
    );
    let (status, mine) = call(&base, "GET", &query, Some(&acme), "");
    assert_eq!(status, 200, "{mine}");

    // Push endpoints that would turn the broker into a relay, or overflow
    // what it stores, are refused; so are bodies that are not a stream.
    for (endpoint, why) in [
        (
            "http://example.com/events".to_owned(),
            "plain http off loopback",
        ),
        ("ftp://127.0.0.1/events".to_owned(), "not http"),
        (
            format!("https://example.com/{}", "a".repeat(3000)),
            "too long",
        ),
        ("not a url".to_owned(), "not a URL"),
    ] {
        let body = json!({ "delivery": { "method": PUSH, "endpoint_url": endpoint } }).to_string();
        let (status, answer) = call(&base, "POST", "/ssf/stream", Some(&acme), &body);
        assert_eq!(status, 400, "{why}: {answer}");
    }
    for body in [
        "{".to_owned(),
        "[]".to_owned(),
        json!({ "delivery": { "method": "urn:example:carrier-pigeon" } }).to_string(),
        json!({ "delivery": { "method": POLL, "surprise": 1 } }).to_string(),
        json!({ "stream_id": "chosen-by-me", "delivery": { "method": POLL } }).to_string(),
    ] {
        let (status, answer) = call(&base, "POST", "/ssf/stream", Some(&acme), &body);
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let huge = json!({ "delivery": { "method": POLL }, "description": "x".repeat(100_000) });
    let (status, _) = call(&base, "POST", "/ssf/stream", Some(&acme), &huge.to_string());
    assert_eq!(status, 413);

    // The cap on streams holds: 64 in all, the 65th refused.
    for n in 1..64 {
        let (status, answer) = call(&base, "POST", "/ssf/stream", Some(&acme), &stream);
        assert_eq!(status, 201, "stream {}: {answer}", n + 1);
    }
    let (status, answer) = call(&base, "POST", "/ssf/stream", Some(&acme), &stream);
    assert!(
        status == 409 || status == 400 || status == 429,
        "{status}: {answer}"
    );
    let (_, listed) = call(&base, "GET", "/ssf/stream", Some(&acme), "");
    assert_eq!(listed.as_array().map(Vec::len), Some(64), "{listed}");

    // The tokens are in no log.
    let logs = cluster.logs();
    for token in [&acme, &beta] {
        let secret = token.trim_start_matches("Bearer ");
        assert!(!logs.contains(secret), "a receiver token reached the log");
    }
}
