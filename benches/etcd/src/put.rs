//! The etcd client side that is not watching: connecting (in plaintext or
//! with TLS), finding the leader, and the putter thread that times each put
//! on a runtime of its own.

use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::args::TlsFiles;

/// The client's TLS configuration from its files: the CA the members'
/// certificates must chain to (checked against the IP address or name
/// dialled), and the client certificate presented.
pub fn tls_options(files: &TlsFiles) -> Result<TlsOptions, String> {
    let read = |path: &str| std::fs::read(path).map_err(|e| format!("{path}: {e}"));
    let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&files.ca)?));
    if let Some((cert, key)) = &files.identity {
        options = options.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(options)
}

/// One client of `endpoint`, with `tls` if given (then `endpoint` is an
/// https:// URL).
pub async fn connect(endpoint: &str, tls: Option<&TlsOptions>) -> Result<Client, String> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if let Some(tls) = tls {
        opts = opts.with_tls(tls.clone());
    }
    timeout(
        Duration::from_secs(10),
        Client::connect([endpoint], Some(opts)),
    )
    .await
    .map_err(|_| format!("{endpoint}: connect timed out"))?
    .map_err(|e| format!("{endpoint}: {e}"))
}

/// Returns the endpoint of the current leader, if a member names one that
/// is among `endpoints`.
pub async fn find_leader(
    endpoints: &[String],
    tls: Option<&TlsOptions>,
) -> Result<Option<String>, String> {
    let mut ids = Vec::new();
    let mut leader = None;
    for ep in endpoints {
        let mut c = connect(ep, tls).await?;
        let s = timeout(Duration::from_secs(5), c.status())
            .await
            .map_err(|_| format!("{ep}: status timed out"))?
            .map_err(|e| format!("{ep}: status: {e}"))?;
        let me = s.header().map(|h| h.member_id()).unwrap_or(0);
        ids.push((me, ep.clone()));
        if s.leader() != 0 {
            leader = Some(s.leader());
        }
    }
    Ok(leader.and_then(|l| ids.into_iter().find(|(id, _)| *id == l).map(|(_, ep)| ep)))
}

async fn put(client: &mut Client, key: &str, value: String) -> Result<i64, String> {
    let resp = timeout(Duration::from_secs(10), client.put(key, value, None))
        .await
        .map_err(|_| "put timed out after 10 s".to_string())?
        .map_err(|e| format!("put: {e}"))?;
    resp.header()
        .map(|h| h.revision())
        .ok_or_else(|| "put response has no header".to_string())
}

/// What the putter answers per put: the revision, when the RPC was sent and
/// when it returned.
pub type PutReply = Result<(i64, Instant, Instant), String>;

/// Handle to the putter thread.
pub struct Putter {
    requests: mpsc::UnboundedSender<(String, oneshot::Sender<PutReply>)>,
}

impl Putter {
    /// Starts a thread with its own single-threaded runtime and connection
    /// to `endpoint`, so that the instant a put returns is taken as soon as
    /// its response arrives, not after the watchers' work queued on the
    /// main runtime.
    pub async fn start(
        endpoint: String,
        key: String,
        tls: Option<TlsOptions>,
    ) -> Result<Self, String> {
        let (requests, mut rx) = mpsc::unbounded_channel::<(String, oneshot::Sender<PutReply>)>();
        let (ready_tx, ready_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("putter".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("putter runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut client = match connect(&endpoint, tls.as_ref()).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    while let Some((value, reply)) = rx.recv().await {
                        let sent = Instant::now();
                        let r = put(&mut client, &key, value).await;
                        let returned = Instant::now();
                        let _ = reply.send(r.map(|rev| (rev, sent, returned)));
                    }
                });
            })
            .map_err(|e| format!("putter thread: {e}"))?;
        match timeout(Duration::from_secs(15), ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(Self { requests }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err("putter thread ended".into()),
            Err(_) => Err("putter did not connect in 15 s".into()),
        }
    }

    /// Puts `value`; returns the revision, send and return instants.
    pub async fn put(&self, value: String) -> PutReply {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((value, tx))
            .map_err(|_| "putter thread is gone".to_string())?;
        rx.await
            .map_err(|_| "putter thread dropped the put".to_string())?
    }
}
