//! A streamed answer on its way to the client: upstream chunks pass through
//! the `StreamObserver` (which holds back at most one incomplete event),
//! under the route's inactivity timeout and total deadline. Until the first
//! content arrives the client has seen nothing, not even the response head:
//! content-free opening frames are held back, so a failure then is the next
//! attempt's business, not the client's.

use super::{Action, Transport};
use crate::error::GatewayError;
use crate::gateway::ForwardPlan;
use crate::health::AttemptFailure;
use crate::response::{Metered, StreamObserver};

/// An upstream event larger than this is refused rather than buffered.
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// Content-free opening frames held back before the stream opens anyway.
pub const MAX_HELD_BYTES: usize = 64 << 10;

pub(super) struct Relay {
    observer: StreamObserver,
    /// Opening frames not yet sent (nothing has reached the client).
    held: Vec<u8>,
    /// The client's response has started.
    open: bool,
    idle_ms: u64,
    deadline_us: u64,
    /// The pending read is bounded by the idle timeout, not the total deadline.
    idle_bound: bool,
}

/// What the relay decided about one upstream event.
pub(super) enum RelayStep {
    /// Keep reading; `open` starts the client's response before `write`.
    Continue { open: bool, write: Vec<u8> },
    /// Nothing reached the client: the attempt failed, the next may serve.
    Retry {
        failure: AttemptFailure,
        error: GatewayError,
    },
    /// Nothing reached the client, and no other attempt would do better.
    Refuse(GatewayError),
    /// The stream is over; `error` when it ended badly.
    Finished {
        open: bool,
        write: Vec<u8>,
        error: Option<GatewayError>,
        metered: Metered,
        /// The answer rebuilt from a clean stream, for the cache.
        assembled: Option<Vec<u8>>,
    },
}

impl Relay {
    pub(super) fn new(plan: &ForwardPlan, deadline_us: u64) -> Self {
        Relay {
            observer: StreamObserver::new(plan.response_kind(), plan.strip_usage_chunk),
            held: Vec::new(),
            open: false,
            idle_ms: plan.timeouts.stream_idle_ms,
            deadline_us,
            idle_bound: true,
        }
    }

    /// The next read, bounded by whichever comes first: the idle timeout or
    /// the total deadline.
    pub(super) fn read(&mut self, now_us: u64) -> Action {
        let left_ms = self.deadline_us.saturating_sub(now_us) / 1000;
        self.idle_bound = self.idle_ms <= left_ms;
        Action::ReadChunk {
            within_ms: self.idle_ms.min(left_ms),
        }
    }

    pub(super) fn metered(&self) -> Metered {
        self.observer.metered()
    }

    pub(super) fn chunk(&mut self, bytes: &[u8]) -> RelayStep {
        let out = self.observer.feed(bytes);
        if self.observer.buffered_len() > MAX_EVENT_BYTES {
            let error = GatewayError::UpstreamInvalidResponse {
                message: "an upstream stream event is too large".into(),
            };
            return self.broke(error);
        }
        if self.open {
            return RelayStep::Continue {
                open: false,
                write: out,
            };
        }
        if let Some(retry) = self.upstream_error_before_content() {
            return retry;
        }
        self.held.extend_from_slice(&out);
        if self.observer.has_content() || self.held.len() > MAX_HELD_BYTES {
            self.open = true;
            return RelayStep::Continue {
                open: true,
                write: std::mem::take(&mut self.held),
            };
        }
        RelayStep::Continue {
            open: false,
            write: Vec::new(),
        }
    }

    pub(super) fn end(&mut self) -> RelayStep {
        let tail = self.observer.finish();
        let opens = !self.open;
        if opens && let Some(retry) = self.upstream_error_before_content() {
            return retry;
        }
        let mut write = std::mem::take(&mut self.held);
        write.extend_from_slice(&tail);
        self.open = true;
        // The upstream's own error event reached the client as it came.
        let error = self
            .observer
            .upstream_error()
            .map(|message| GatewayError::UpstreamStatus {
                status: 502,
                message: message.to_owned(),
            });
        RelayStep::Finished {
            open: opens,
            write,
            assembled: match error {
                None => self
                    .observer
                    .assembled()
                    .map(|v| v.to_string().into_bytes()),
                Some(_) => None,
            },
            error,
            metered: self.observer.metered(),
        }
    }

    pub(super) fn failed(&mut self, t: Transport) -> RelayStep {
        let error = match t {
            Transport::Timeout if self.idle_bound => GatewayError::UpstreamTimeout {
                phase: "stream idle".into(),
            },
            Transport::Timeout => GatewayError::UpstreamTimeout {
                phase: "total time".into(),
            },
            _ => GatewayError::UpstreamUnavailable {
                message: "the upstream stream broke".into(),
            },
        };
        if !self.open {
            let failure = match t {
                Transport::Timeout => AttemptFailure::Timeout,
                _ => AttemptFailure::Connect,
            };
            return RelayStep::Retry { failure, error };
        }
        self.broke(error)
    }

    /// Ends an open stream with an error event (an incomplete event held
    /// back is dropped, so the client only ever sees whole events); before
    /// it opened, the request fails with `error`.
    fn broke(&mut self, error: GatewayError) -> RelayStep {
        if !self.open {
            return RelayStep::Refuse(error);
        }
        RelayStep::Finished {
            open: false,
            write: error.to_sse_event(),
            error: Some(error),
            metered: self.observer.metered(),
            assembled: None,
        }
    }

    /// An in-stream error event before any content: the attempt failed.
    fn upstream_error_before_content(&self) -> Option<RelayStep> {
        let message = self.observer.upstream_error()?;
        Some(RelayStep::Retry {
            failure: AttemptFailure::Status { status: 502 },
            error: GatewayError::UpstreamStatus {
                status: 502,
                message: message.to_owned(),
            },
        })
    }
}
