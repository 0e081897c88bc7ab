//! HTTP to the GPU backends: one pooled client per connect timeout, the
//! first-byte timeout around sending, and failures classified the way the
//! core's failover policy asks (`AttemptFailure`).

use edgegate_core::gateway::Attempt;
use edgegate_core::health::AttemptFailure;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct Upstream {
    clients: Mutex<HashMap<u64, reqwest::Client>>,
}

impl Upstream {
    fn client(&self, connect_ms: u64) -> reqwest::Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(connect_ms)
            .or_insert_with(|| {
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_millis(connect_ms))
                    .tcp_nodelay(true)
                    .no_proxy()
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build()
                    .expect("an HTTP client with only timeouts set builds")
            })
            .clone()
    }

    /// Sends the attempt's body; returns once response headers arrive.
    pub async fn send(
        &self,
        attempt: &Attempt,
        body: String,
        request_id: &str,
        connect_ms: u64,
        first_byte_ms: u64,
    ) -> Result<reqwest::Response, AttemptFailure> {
        let request = self
            .client(connect_ms)
            .post(&attempt.url)
            .header("content-type", "application/json")
            .header("x-request-id", request_id)
            .body(body)
            .send();
        match tokio::time::timeout(Duration::from_millis(first_byte_ms), request).await {
            Err(_) => Err(AttemptFailure::Timeout),
            Ok(Err(e)) if e.is_timeout() => Err(AttemptFailure::Timeout),
            Ok(Err(_)) => Err(AttemptFailure::Connect),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// Reads a whole (non-streamed) body within `limit`, at most `max_bytes`.
pub async fn read_body(
    response: reqwest::Response,
    limit: Duration,
    max_bytes: usize,
) -> Result<bytes::Bytes, AttemptFailure> {
    use futures_util::StreamExt;
    let read = async move {
        let mut stream = response.bytes_stream();
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| AttemptFailure::Connect)?;
            if buf.len() + chunk.len() > max_bytes {
                return Err(AttemptFailure::Connect);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Err(AttemptFailure::Timeout))
}
