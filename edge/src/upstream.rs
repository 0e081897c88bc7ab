//! One attempt's upstream call: `fetch` with an abort signal, its head
//! within a deadline, then its body whole (capped) or piece by piece. Only
//! I/O: what to send, every deadline and every cap come from the exchange,
//! and what happened goes back to it as an `Event`. Dropping the call aborts
//! it, so a client that went away cancels the generation.

use crate::clock::sleep_ms;
use edgegate_core::exchange::{BodyCollector, Event, Transport, UpstreamRequest};
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use std::pin::pin;
use worker::wasm_bindgen::JsValue;
use worker::{AbortController, ByteStream, Fetch, Headers, Method, Request, RequestInit};

pub struct Upstream {
    controller: Option<AbortController>,
    body: Option<ByteStream>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(controller) = self.controller.take() {
            controller.abort();
        }
    }
}

impl Upstream {
    /// Sends the request; the head must arrive within `head_ms`. The Worker's
    /// `fetch` has no separate connect phase: its deadline is the head's.
    pub async fn send(request: UpstreamRequest<'_>, head_ms: u64) -> (Option<Upstream>, Event) {
        let Ok(request) = fetch_request(request) else {
            return (None, Event::Failed(Transport::Connect));
        };
        let controller = AbortController::default();
        let fetch = Fetch::Request(request);
        let signal = controller.signal();
        let deadline = sleep_ms(head_ms);
        let mut response = match select(pin!(fetch.send_with_signal(&signal)), deadline).await {
            Either::Left((Ok(response), _)) => response,
            Either::Left((Err(_), _)) => return (None, Event::Failed(Transport::Connect)),
            Either::Right(_) => {
                controller.abort();
                return (None, Event::Failed(Transport::Timeout));
            }
        };
        let head = Event::Head {
            status: response.status_code(),
            content_type: response.headers().get("content-type").ok().flatten(),
        };
        let upstream = Upstream {
            controller: Some(controller),
            body: response.stream().ok(),
        };
        (Some(upstream), head)
    }

    /// The whole body, at most `max_bytes`, within `within_ms`.
    pub async fn read_body(&mut self, max_bytes: usize, within_ms: u64) -> Event {
        let Some(body) = self.body.as_mut() else {
            return Event::Body(Vec::new());
        };
        let read = async {
            let mut collected = BodyCollector::new(max_bytes);
            loop {
                let piece = body.next().await;
                if let Some(read) = collected.add(piece.as_ref().map(|p| p.as_deref())) {
                    return Event::of_body(read);
                }
            }
        };
        match select(pin!(read), sleep_ms(within_ms)).await {
            Either::Left((event, _)) => event,
            Either::Right(_) => Event::Failed(Transport::Timeout),
        }
    }

    /// The next piece of a streamed body, within `within_ms`.
    pub async fn read_chunk(&mut self, within_ms: u64) -> Event {
        let Some(body) = self.body.as_mut() else {
            return Event::End;
        };
        match select(body.next(), sleep_ms(within_ms)).await {
            Either::Left((Some(Ok(bytes)), _)) => Event::Chunk(bytes),
            Either::Left((Some(Err(_)), _)) => Event::Failed(Transport::Broke),
            Either::Left((None, _)) => Event::End,
            Either::Right(_) => Event::Failed(Transport::Timeout),
        }
    }
}

fn fetch_request(request: UpstreamRequest<'_>) -> worker::Result<Request> {
    let headers = Headers::new();
    for (name, value) in request.header_pairs() {
        headers.set(name, value)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(JsValue::from_str(request.body)));
    Request::new_with_init(request.url, &init)
}
