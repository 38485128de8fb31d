//! Edge verifiers for end-to-end tests: `lapse verifier` processes, their
//! local HTTP API, and a TCP proxy that can cut them off from brokers.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::{free_port, lapse};

/// One `lapse verifier` process running `count` verifiers.
pub struct VerifierProcess {
    pub http: String,
    pub prefix: String,
    pub count: u32,
    child: Child,
    pub log: std::path::PathBuf,
}

impl VerifierProcess {
    /// Start `count` verifiers named `prefix-N` following `brokers`.
    pub fn start(
        dir: &std::path::Path,
        prefix: &str,
        region: &str,
        count: u32,
        brokers: &[String],
        extra: &[&str],
    ) -> Self {
        Self::start_with(lapse(), dir, prefix, region, count, brokers, extra)
    }

    /// As [`Self::start`], for brokers with TLS: `extra` names the
    /// verifier's `--ca`, `--cert` and `--key`.
    pub fn start_tls(
        dir: &std::path::Path,
        prefix: &str,
        region: &str,
        count: u32,
        brokers: &[String],
        extra: &[&str],
    ) -> Self {
        let mut command = lapse();
        command.env_remove("LAPSE_INSECURE_PLAINTEXT");
        Self::start_with(command, dir, prefix, region, count, brokers, extra)
    }

    fn start_with(
        mut command: std::process::Command,
        dir: &std::path::Path,
        prefix: &str,
        region: &str,
        count: u32,
        brokers: &[String],
        extra: &[&str],
    ) -> Self {
        let http = format!("127.0.0.1:{}", free_port());
        let log = dir.join(format!("verifier-{prefix}.log"));
        let child = command
            .args(["verifier", "--brokers", &brokers.join(",")])
            .args(["--id", prefix, "--region", region])
            .args(["--count", &count.to_string(), "--http", &http])
            .args(audience(extra))
            .args(extra)
            .env("LAPSE_LOG", "info,lapse_verifier=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("verifier log"))
            .spawn()
            .expect("spawn lapse verifier");
        let process = Self {
            http,
            prefix: prefix.to_owned(),
            count,
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_request(&process.http, "GET", "/healthz", "").is_none() {
            assert!(Instant::now() < deadline, "verifier HTTP API did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        process
    }

    /// POST `/v1/verify-all` with `token`: (valid count, answers).
    pub fn verify_all(&self, token: &str) -> (u64, Vec<serde_json::Value>) {
        let body = serde_json::json!({ "token": token }).to_string();
        let (status, text) =
            http_request(&self.http, "POST", "/v1/verify-all", &body).expect("verify-all");
        assert_eq!(status, 200, "{text}");
        let reply: serde_json::Value = serde_json::from_str(&text).expect("json");
        (
            reply["valid"].as_u64().unwrap(),
            reply["answers"].as_array().unwrap().clone(),
        )
    }

    /// GET `/v1/status`: each verifier's status by id.
    pub fn status(&self) -> serde_json::Map<String, serde_json::Value> {
        let (_, text) = http_request(&self.http, "GET", "/v1/status", "").expect("status");
        serde_json::from_str::<serde_json::Value>(&text)
            .expect("json")
            .as_object()
            .unwrap()
            .clone()
    }

    /// Send a signal (`STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// The audience a verifier requires, unless `extra` names one or says any
/// will do: `billing`, the audience the tests issue credentials for.
fn audience(extra: &[&str]) -> &'static [&'static str] {
    if extra
        .iter()
        .any(|flag| *flag == "--audience" || *flag == "--any-audience")
    {
        &[]
    } else {
        &["--audience", "billing"]
    }
}

impl Drop for VerifierProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request (through ureq): `(status, body)`, `None` if unreachable.
pub fn http_request(address: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let request = agent
        .request(method, &format!("http://{address}{path}"))
        .set("Content-Type", "application/json");
    let sent = if body.is_empty() && method == "GET" {
        request.call()
    } else {
        request.send_string(body)
    };
    let response = match sent {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(ureq::Error::Transport(_)) => return None,
    };
    let status = response.status();
    Some((status, response.into_string().ok()?))
}

/// A TCP proxy in front of one broker that can cut every connection and
/// refuse new ones, then heal.
pub struct Proxy {
    pub address: String,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (cut, links) = (cut.clone(), links.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().await.push(link);
                }
            })
        };
        Self {
            address,
            cut,
            links,
            accept,
        }
    }

    /// Drop every open connection and refuse new ones.
    pub async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A feed `Hello` from verifier `id` (region `test`), resuming from
/// `resume`.
pub fn hello(id: &str, resume: Option<u64>) -> lapse_wire::feed::FeedRequest {
    use lapse_wire::feed::feed_request::Kind;
    lapse_wire::feed::FeedRequest {
        kind: Some(Kind::Hello(lapse_wire::feed::Hello {
            verifier_id: id.to_owned(),
            region: "test".into(),
            resume_epoch: resume,
        })),
    }
}

/// Subscribe to a feed (a broker's or a relay's) sending `first` before
/// anything else; the sender keeps the request stream open, and sends
/// more.
pub async fn subscribe(
    client: &mut lapse_wire::feed::feed_client::FeedClient<tonic::transport::Channel>,
    first: impl IntoIterator<Item = lapse_wire::feed::FeedRequest>,
) -> (
    Result<tonic::Streaming<lapse_wire::feed::FeedEvent>, tonic::Status>,
    tokio::sync::mpsc::Sender<lapse_wire::feed::FeedRequest>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for request in first {
        tx.send(request).await.unwrap();
    }
    let reply = client
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner());
    (reply, tx)
}
