//! Building the client's responses. Header values come from the core and
//! the upstream; one that the runtime refuses is logged and left out rather
//! than failing the response.

use edgegate_core::GatewayError;
use edgegate_core::gateway::LocalResponse;
use futures_util::Stream;
use worker::{Headers, Response, ResponseBuilder, console_warn};

/// Response headers; a later pair replaces an earlier one of the same name.
pub fn headers<'a>(pairs: impl IntoIterator<Item = &'a (String, String)>) -> Headers {
    let headers = Headers::new();
    for (name, value) in pairs {
        if headers.set(name, value).is_err() {
            console_warn!("edgegate: dropped an invalid response header `{name}`");
        }
    }
    headers
}

/// A whole response; a 204 or 304 without a body (the runtime refuses one).
pub fn fixed(status: u16, headers: Headers, body: Vec<u8>) -> Response {
    let builder = ResponseBuilder::new()
        .with_status(status)
        .with_headers(headers);
    if matches!(status, 204 | 304) {
        builder.empty()
    } else {
        builder.fixed(body)
    }
}

/// The OpenAI-shaped error, for the rare failure before an exchange exists.
pub fn error(error: &GatewayError, request_id: &str) -> Response {
    let local = LocalResponse::error(error, request_id);
    fixed(
        local.status,
        headers(&local.headers),
        local.body.into_bytes(),
    )
}

pub fn streamed<S>(status: u16, headers: Headers, body: S, request_id: &str) -> Response
where
    S: Stream<Item = worker::Result<Vec<u8>>> + 'static,
{
    ResponseBuilder::new()
        .with_status(status)
        .with_headers(headers)
        .from_stream(body)
        .unwrap_or_else(|e| {
            let error = GatewayError::Internal {
                message: format!("cannot start the response stream: {e}"),
            };
            self::error(&error, request_id)
        })
}
