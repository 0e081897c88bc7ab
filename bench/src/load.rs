//! A small closed-loop HTTP/1.1 load generator: each worker owns one
//! keep-alive connection and sends the next request when the last answer is
//! read, so concurrency is exact and the client's own cost stays low.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Target {
    pub(crate) fn request(&self, body: Bytes) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::post(self.path.as_str())
            .header("host", self.addr.to_string())
            .header("content-type", "application/json");
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        Ok(b.body(Full::new(body))?)
    }
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

#[derive(Debug, Default)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Sorted.
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i]
    }
}

/// Sends requests from `concurrency` connections for `duration`; `body(n)`
/// makes the n-th body (unique bodies defeat the cache).
pub async fn run(
    target: &Target,
    concurrency: usize,
    duration: Duration,
    body: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
) -> Result<LoadResult> {
    let deadline = Instant::now() + duration;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (target, body, counter) = (target.clone(), body.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(target.addr).await?;
            let mut result = LoadResult::default();
            while Instant::now() < deadline {
                // A server may close a connection between requests (some do
                // after a stream): that is not a failed request.
                if sender.ready().await.is_err() {
                    sender = connect(target.addr).await?;
                }
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let req = target.request(body(n))?;
                let t = Instant::now();
                let ok = match sender.send_request(req).await {
                    Ok(resp) => {
                        let good = resp.status().is_success();
                        good && resp.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    result.ok += 1;
                    result.latencies.push(t.elapsed());
                } else {
                    result.errors += 1;
                    sender = connect(target.addr).await?;
                }
            }
            anyhow::Ok(result)
        }));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        let r = t.await??;
        total.ok += r.ok;
        total.errors += r.errors;
        total.latencies.extend(r.latencies);
    }
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    Ok(total)
}

/// Time to the first token of `n` sequential streamed requests (sorted):
/// the first SSE data carrying non-empty `content`, the moment a user sees
/// text. (A gateway that holds back the content-free role chunk, to fail
/// over invisibly, sends its first byte then too.)
pub async fn time_to_first_token(target: &Target, n: usize, body: Bytes) -> Result<Vec<Duration>> {
    let mut sender = connect(target.addr).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        // A server may close the connection after a stream; reconnect before timing.
        if sender.ready().await.is_err() {
            sender = connect(target.addr).await?;
        }
        let t = Instant::now();
        let resp = sender
            .send_request(target.request(body.clone())?)
            .await
            .context("streamed request")?;
        if !resp.status().is_success() {
            bail!("status {}", resp.status());
        }
        let mut body = resp.into_body();
        let mut first = None;
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            if let Some(data) = frame.data_ref()
                && first.is_none()
            {
                seen.extend_from_slice(data);
                if carries_content(&seen) {
                    first = Some(t.elapsed());
                }
            }
        }
        out.push(first.context("a stream without content")?);
    }
    out.sort_unstable();
    Ok(out)
}

/// Whether compact SSE JSON holds a non-empty `"content"` string.
pub(crate) fn carries_content(sse: &[u8]) -> bool {
    const KEY: &[u8] = b"\"content\":\"";
    sse.windows(KEY.len() + 1)
        .any(|w| w.starts_with(KEY) && w[KEY.len()] != b'"')
}

/// Opens `n` streams at once and holds them until each sent its first chunk;
/// returns the held bodies (drop them to close the streams).
pub async fn open_streams(
    target: &Target,
    n: usize,
    body: Bytes,
) -> Result<Vec<hyper::body::Incoming>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (target, body) = (target.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(target.addr).await?;
            let resp = sender.send_request(target.request(body)?).await?;
            if !resp.status().is_success() {
                bail!("status {}", resp.status());
            }
            let mut body = resp.into_body();
            // Wait for the first frame, then keep the stream open.
            body.frame().await.context("stream ended")??;
            anyhow::Ok(body)
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.push(t.await??);
    }
    Ok(held)
}

/// Open loop: requests are sent at `rate` per second on a fixed schedule,
/// whatever the answers do, from as many connections as that needs (idle
/// ones are reused). Each latency is measured from the request's scheduled
/// send time, so a slow server cannot hide its queueing (no coordinated
/// omission). Requests unanswered after `timeout` count as errors.
pub async fn open_loop(
    target: &Target,
    rate: f64,
    duration: Duration,
    timeout: Duration,
    body: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
) -> Result<LoadResult> {
    let idle: Arc<std::sync::Mutex<Vec<SendRequest<Full<Bytes>>>>> = Arc::default();
    let count = (rate * duration.as_secs_f64()).max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count as usize);
    for n in 0..count {
        let scheduled = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled).await;
        let (target, body, idle) = (target.clone(), body.clone(), idle.clone());
        tasks.push(tokio::spawn(async move {
            let pooled = idle.lock().ok().and_then(|mut v| v.pop());
            let attempt = async {
                let mut sender = match pooled {
                    Some(s) => s,
                    None => connect(target.addr).await?,
                };
                sender.ready().await?;
                let resp = sender.send_request(target.request(body(n))?).await?;
                let good = resp.status().is_success();
                resp.into_body().collect().await?;
                anyhow::Ok((good, sender))
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok((good, sender))) => {
                    let latency = scheduled.elapsed();
                    if let Ok(mut v) = idle.lock() {
                        v.push(sender);
                    }
                    good.then_some(latency)
                }
                _ => None,
            }
        }));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        match t.await? {
            Some(latency) => {
                total.ok += 1;
                total.latencies.push(latency);
            }
            None => total.errors += 1,
        }
    }
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    Ok(total)
}
