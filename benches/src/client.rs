//! The benchmarks' side of gRPC: connections, requests with the admin
//! token, and a phase of timed calls from concurrent tasks.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::stats::Latencies;
use crate::transport::{Caller, Dialer};

/// A request with the admin token (`auth`, the whole `authorization`
/// value) and a deadline of 30 s. With TLS the operator certificate
/// authorizes admin calls and the token goes along unused.
pub fn request<T>(auth: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", auth.parse().expect("ascii token"));
    request.set_timeout(Duration::from_secs(30));
    request
}

/// `count` (at least one) connections to `address` as `caller`, with
/// `TCP_NODELAY`.
pub async fn connections(
    dialer: &Dialer,
    address: &str,
    caller: Caller,
    count: usize,
) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..count.max(1) {
        channels.push(dialer.connect(address, caller, true).await?);
    }
    Ok(channels)
}

/// Calls made in one phase and how long each took.
#[derive(Debug)]
pub struct Phase {
    pub name: &'static str,
    /// Calls made.
    pub operations: u64,
    /// Items the calls carried (a batched call carries many).
    pub items: u64,
    pub elapsed: Duration,
    /// Per call, from sending the request to the answer (open loop: from
    /// when it was due).
    pub latencies: Latencies,
    /// Open loop only: per call, from when the client actually sent it to
    /// the answer. The difference from `latencies` is the client's own
    /// lateness (timer granularity, its run queue).
    pub from_sent: Option<Latencies>,
}

/// Run `items` operations in calls of `per_call`, from `concurrency` tasks
/// sharing `channels` in turn. `call` is given the channel, the number of
/// the call and how many items it carries.
pub async fn run_phase<F, Fut>(
    name: &'static str,
    items: u64,
    per_call: u64,
    concurrency: u64,
    channels: &[Channel],
    call: F,
) -> anyhow::Result<Phase>
where
    F: Fn(&Channel, u64, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let calls = items.div_ceil(per_call);
    let next_call = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency.max(1) {
        let channel = channels[task as usize % channels.len()].clone();
        let next_call = next_call.clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::new();
            loop {
                let n = next_call.fetch_add(1, Ordering::Relaxed);
                if n >= calls {
                    return Ok::<_, tonic::Status>(latencies);
                }
                let size = per_call.min(items - n * per_call);
                let sent = Instant::now();
                call(&channel, n, size).await?;
                latencies.record(sent.elapsed());
            }
        }));
    }
    let mut latencies = Latencies::new();
    for task in tasks {
        latencies.add(&task.await??);
    }
    Ok(Phase {
        name,
        operations: calls,
        items,
        elapsed: started.elapsed(),
        latencies,
        from_sent: None,
    })
}

/// Make `calls` calls at `per_second`, open loop: call `n` is due at
/// `n / per_second` after the start and is sent then, whether or not the
/// calls before it have been answered, on `channels` in turn. Each latency
/// runs from when the call was due (not when it was sent), so a client that
/// falls behind counts the delay it caused (no coordinated omission).
pub async fn run_open_loop<F, Fut>(
    name: &'static str,
    calls: u64,
    per_second: f64,
    channels: &[Channel],
    call: F,
) -> anyhow::Result<Phase>
where
    F: Fn(&Channel, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    anyhow::ensure!(per_second > 0.0, "an open-loop rate must be positive");
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(calls as usize);
    let mut n = 0u64;
    while n < calls {
        // Send every call due by now, then sleep until the next is due.
        let due_by_now = (started.elapsed().as_secs_f64() * per_second) as u64 + 1;
        while n < calls.min(due_by_now) {
            let due = started + Duration::from_secs_f64(n as f64 / per_second);
            let channel = channels[n as usize % channels.len()].clone();
            let call = call.clone();
            tasks.push(tokio::spawn(async move {
                let sent = tokio::time::Instant::now();
                call(&channel, n).await?;
                Ok::<_, tonic::Status>((due.elapsed(), sent.elapsed()))
            }));
            n += 1;
        }
        if n < calls {
            let next = started + Duration::from_secs_f64(n as f64 / per_second);
            tokio::time::sleep_until(next).await;
        }
    }
    let mut latencies = Latencies::new();
    let mut from_sent = Latencies::new();
    for task in tasks {
        let (from_due, sent) = task.await??;
        latencies.record(from_due);
        from_sent.record(sent);
    }
    Ok(Phase {
        name,
        operations: calls,
        items: calls,
        elapsed: started.elapsed(),
        latencies,
        from_sent: Some(from_sent),
    })
}
