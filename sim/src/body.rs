//! Response bodies and the response shapes every endpoint shares.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A whole body at once, or a stream fed chunk by chunk by a generator task.
/// Each streamed chunk becomes its own HTTP body frame, so pacing reaches the client.
#[derive(Debug)]
pub(crate) enum SimBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Result<Bytes, Broken>>),
}

/// A stream cut off mid-way: hyper drops the connection without ending the
/// body, as a crashed backend would.
#[derive(Debug)]
pub(crate) struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the simulated stream broke off")
    }
}

impl std::error::Error for Broken {}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Broken;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Broken>>> {
        match self.get_mut() {
            SimBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Stream(rx) => rx.poll_recv(cx).map(|b| b.map(|b| b.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SimBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            // An exact size makes hyper send Content-Length rather than chunks.
            SimBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            SimBody::Stream(_) => SizeHint::default(),
        }
    }
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<SimBody> {
    let mut response = Response::new(SimBody::Full(Some(Bytes::from(value.to_string()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A Prometheus text exposition.
pub(crate) fn metrics_response(text: String) -> Response<SimBody> {
    let mut response = Response::new(SimBody::Full(Some(Bytes::from(text))));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

pub(crate) fn sse_response(rx: mpsc::Receiver<Result<Bytes, Broken>>) -> Response<SimBody> {
    let mut response = Response::new(SimBody::Stream(rx));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// An OpenAI error body: `{"error": {"message", "type", "param", "code"}}`.
pub(crate) fn error_response(
    status: StatusCode,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response<SimBody> {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    let body = json!({
        "error": {"message": message, "type": kind, "param": param, "code": code},
    });
    json_response(status, &body)
}
