//! HTTP to the GPU backends: one pooled client per connect timeout. Only
//! I/O: what to send, the deadlines and the caps come from the exchange,
//! and what happened goes back to it as an event.

use crate::sandbox::convert;
use crate::sandbox::guest::{self, Event, Transport};
use bytes::Bytes;
use edgegate_core::exchange::{BodyCollector, BodyLimit};
use futures_util::{FutureExt, Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

/// Stream pieces that had already arrived are passed on together, up to
/// this many bytes: one crossing into the sandbox, not one per HTTP frame.
const MAX_JOINED_BYTES: usize = 64 << 10;

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

    /// Sends the attempt; returns its head (and its body, still upstream)
    /// once the response headers arrived within `head_ms`.
    pub async fn send(&self, send: guest::Send) -> (Option<UpstreamBody>, Event) {
        let mut request = self.client(send.connect_ms).post(&send.url).body(send.body);
        for (name, value) in &send.headers {
            request = request.header(name, value);
        }
        let response =
            match tokio::time::timeout(Duration::from_millis(send.head_ms), request.send()).await {
                Err(_) => return (None, Event::Failed(Transport::Timeout)),
                Ok(Err(e)) if e.is_timeout() => return (None, Event::Failed(Transport::Timeout)),
                Ok(Err(_)) => return (None, Event::Failed(Transport::Connect)),
                Ok(Ok(response)) => response,
            };
        let head = Event::Head(guest::UpstreamHead {
            status: response.status().as_u16(),
            content_type: response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        let body = UpstreamBody {
            pieces: Box::pin(response.bytes_stream()),
            after: None,
        };
        (Some(body), head)
    }
}

/// An attempt's body, still upstream.
pub struct UpstreamBody {
    pieces: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    /// How the stream ended, seen while joining pieces: the next read's event.
    after: Option<Event>,
}

impl UpstreamBody {
    /// The whole body, at most `limit.max_bytes`, within `limit.within_ms`.
    pub async fn read_body(&mut self, limit: BodyLimit) -> Event {
        let mut collected = BodyCollector::new(limit.max_bytes);
        let pieces = &mut self.pieces;
        let read = async move {
            while let Some(piece) = pieces.next().await {
                if let Some(read) = collected.add(Some(piece.as_deref())) {
                    return convert::body_read(read);
                }
            }
            Event::Body(collected.finish())
        };
        tokio::time::timeout(Duration::from_millis(limit.within_ms), read)
            .await
            .unwrap_or(Event::Failed(Transport::Timeout))
    }

    /// The next pieces of a streamed body, within `within_ms`: the first to
    /// arrive and any already behind it.
    pub async fn read_chunk(&mut self, within_ms: u64) -> Event {
        if let Some(after) = self.after.take() {
            return after;
        }
        let first = match tokio::time::timeout(Duration::from_millis(within_ms), self.pieces.next())
            .await
        {
            Err(_) => return Event::Failed(Transport::Timeout),
            Ok(None) => return Event::End,
            Ok(Some(Err(_))) => return Event::Failed(Transport::Broke),
            Ok(Some(Ok(bytes))) => bytes,
        };
        let mut joined = first.to_vec();
        while joined.len() < MAX_JOINED_BYTES {
            match self.pieces.next().now_or_never() {
                None => break,
                Some(Some(Ok(more))) => joined.extend_from_slice(&more),
                Some(None) => {
                    self.after = Some(Event::End);
                    break;
                }
                Some(Some(Err(_))) => {
                    self.after = Some(Event::Failed(Transport::Broke));
                    break;
                }
            }
        }
        Event::Chunk(joined)
    }
}
