//! A streamed answer on its way to the client. Upstream chunks pass through
//! the core's `StreamObserver` as they arrive (it holds back at most one
//! incomplete SSE event), under the route's inactivity timeout and total
//! deadline. When the stream ends, fails or the client goes away, what was
//! seen is reported to whoever settles the quota.

use crate::clock::{now_ms, sleep_ms};
use edgegate_core::GatewayError;
use edgegate_core::response::{Metered, StreamObserver};
use futures_channel::oneshot;
use futures_util::future::{Either, select};
use futures_util::{Stream, StreamExt, stream};
use serde_json::Value;
use worker::ByteStream;

/// An upstream event larger than this is refused rather than buffered.
const MAX_PENDING_EVENT_BYTES: usize = 1 << 20;

/// How a relayed stream ended.
#[derive(Default)]
pub struct StreamEnd {
    /// What the stream used: its usage chunk, or what was relayed.
    pub metered: Metered,
    /// Why the gateway cut the stream short, if it did.
    pub error: Option<GatewayError>,
    /// The answer rebuilt from the stream, when it completed cleanly (for the cache).
    pub assembled: Option<Value>,
}

pub struct Limits {
    pub idle_ms: u64,
    /// Unix ms after which the stream is cut.
    pub deadline_ms: u64,
}

/// The client's body stream, and the report sent once it is over.
pub fn relay(
    upstream: ByteStream,
    observer: StreamObserver,
    limits: Limits,
) -> (
    impl Stream<Item = worker::Result<Vec<u8>>>,
    oneshot::Receiver<StreamEnd>,
) {
    let (report, ended) = oneshot::channel();
    let relay = Relay {
        upstream,
        observer,
        limits,
        finished: false,
        error: None,
        report: Some(report),
    };
    let body = stream::unfold(relay, |mut relay| async move {
        let chunk = relay.next_chunk().await?;
        Some((Ok(chunk), relay))
    });
    (body, ended)
}

struct Relay {
    upstream: ByteStream,
    observer: StreamObserver,
    limits: Limits,
    finished: bool,
    error: Option<GatewayError>,
    report: Option<oneshot::Sender<StreamEnd>>,
}

impl Relay {
    /// The next bytes for the client, as soon as there are any.
    async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        while !self.finished {
            let left = self.limits.deadline_ms.saturating_sub(now_ms());
            let (wait, phase) = if self.limits.idle_ms <= left {
                (self.limits.idle_ms, "stream idle")
            } else {
                (left, "total time")
            };
            match select(self.upstream.next(), sleep_ms(wait)).await {
                Either::Left((Some(Ok(bytes)), _)) => {
                    let out = self.observer.feed(&bytes);
                    if self.observer.buffered_len() > MAX_PENDING_EVENT_BYTES {
                        return Some(self.fail(GatewayError::UpstreamInvalidResponse {
                            message: "an upstream stream event is too large".into(),
                        }));
                    }
                    if !out.is_empty() {
                        return Some(out);
                    }
                }
                Either::Left((Some(Err(_)), _)) => {
                    return Some(self.fail(GatewayError::UpstreamUnavailable {
                        message: "the upstream stream broke".into(),
                    }));
                }
                Either::Left((None, _)) => {
                    self.finished = true;
                    let tail = self.observer.finish();
                    return (!tail.is_empty()).then_some(tail);
                }
                Either::Right(_) => {
                    return Some(self.fail(GatewayError::UpstreamTimeout {
                        phase: phase.into(),
                    }));
                }
            }
        }
        None
    }

    /// Ends the stream with an error event. An incomplete event held back
    /// is dropped, so the client only ever sees whole events.
    fn fail(&mut self, error: GatewayError) -> Vec<u8> {
        self.finished = true;
        let event = error.to_sse_event();
        self.error = Some(error);
        event
    }
}

impl Drop for Relay {
    /// Runs when the stream ended or the client went away: either way the
    /// reservation must be settled with what was seen.
    fn drop(&mut self) {
        if let Some(report) = self.report.take() {
            // The settling side may be gone (isolate shutting down): nothing to do then.
            let _ = report.send(StreamEnd {
                metered: self.observer.metered(),
                error: self.error.take(),
                assembled: self.observer.assembled(),
            });
        }
    }
}
