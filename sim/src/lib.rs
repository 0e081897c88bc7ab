//! A simulated regional GPU backend that speaks the OpenAI HTTP API the way a
//! vLLM server does, for edgegate's demo, integration tests and benchmarks.
//!
//! Answers are deterministic (derived from the prompt), streams are paced like
//! real token generation, and failures can be switched on at run time through
//! [`Controls`] or, for out-of-process users, `POST /__control`.
//!
//! Like a vLLM server it runs at most `max_running` sequences at once (no
//! limit by default): the others wait in a queue, so time to first token
//! grows with the queue, and `GET /metrics` reports
//! `vllm:num_requests_running`, `vllm:num_requests_waiting` and
//! `vllm:kv_cache_usage_perc` (the batch's share of `max_running`).
//!
//! Endpoints: `GET /health`, `GET /metrics`, `GET /v1/models`, `POST /v1/chat/completions`,
//! `POST /v1/completions` (both streamed or not), `POST /v1/embeddings`
//! (`encoding_format` float or base64). Every response carries `x-sim-region`.
//! An answer is 24 words (one word = one token) echoing the prompt's first 40
//! characters, cut to `max_tokens`. A non-streamed answer waits the base
//! latency; a stream sends its headers at once, its first chunk after the base
//! latency and one chunk per token interval after that. Refusals (down,
//! injected failures, bad requests) answer at once.
//!
//! [`collector::Collector`] is an OTLP/HTTP trace collector for the same
//! tests and benchmarks.
//!
//! Out-of-process control: `POST /__control` takes a JSON object with any of
//! `{"reset": true}` (applied first), `{"down": bool}`,
//! `{"fail_next": {"count": n, "status": 503}}` (status defaults to 503),
//! `{"stall_after_chunks": n | null}`, `{"break_after_chunks": n | null}`,
//! `{"runaway_event_after_chunks": n | null}` (2 MiB of an unending event),
//! `{"never_stream": bool}` (JSON answers to stream requests),
//! `{"pad_answer_bytes": n}`, `{"health_delay_ms": n}`,
//! `{"max_running": n | null}` and
//! `{"latency": {"base_ms": n, "token_interval_ms": n}}` (either may be left
//! out). Unknown keys are a 400 and change nothing. It answers like
//! `GET /__stats`: current settings, counters, `last_request` (method, path,
//! headers) and `last_request_body`. Neither endpoint is affected by `down` or
//! counted.

mod api;
mod body;
pub mod collector;
mod control;
mod engine;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use control::{Controls, RecordedRequest};

/// How a backend behaves when it starts (and after a reset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Reported by `/health`, in every answer and in the `x-sim-region` header.
    pub region: String,
    /// Delay before a non-streamed answer, or before a stream's first chunk.
    pub base_latency_ms: u64,
    /// Delay between two streamed tokens.
    pub token_interval_ms: u64,
    /// Upstream model names accepted; empty accepts any.
    pub models: Vec<String>,
    /// Sequences generated at once; the others wait in a queue (`None`: no limit).
    pub max_running: Option<usize>,
    /// The key `/v1/` requests must present as `Authorization: Bearer …`,
    /// as with `vllm serve --api-key` (`None`: no key).
    pub api_key: Option<String>,
}

impl BackendConfig {
    /// A backend for `region` that answers at once and accepts any model.
    pub fn new(region: impl Into<String>) -> Self {
        BackendConfig {
            region: region.into(),
            base_latency_ms: 0,
            token_interval_ms: 0,
            models: Vec::new(),
            max_running: None,
            api_key: None,
        }
    }
}

/// A running backend. Dropping it stops it too, like [`Backend::shutdown`].
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    controls: Controls,
    server: JoinHandle<()>,
}

impl Backend {
    /// Listens on `addr` (loopback only; port 0 picks a free port) and serves
    /// until shut down.
    pub async fn start(cfg: BackendConfig, addr: SocketAddr) -> io::Result<Backend> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to listen on {addr}: the simulator serves loopback only"),
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let controls = Controls::new(cfg);
        let server = tokio::spawn(serve(listener, controls.clone()));
        Ok(Backend {
            addr,
            controls,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn controls(&self) -> Controls {
        self.controls.clone()
    }

    /// Stops listening and cuts every open connection at once, as a crashed
    /// server would: streams in flight end without `[DONE]`.
    pub async fn shutdown(mut self) {
        self.server.abort();
        // Waiting lets the listener and the connections be dropped before returning.
        let _ = (&mut self.server).await;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, controls: Controls) {
    // Connections live in this set so that aborting the server task closes them too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of file descriptors or similar: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // Small SSE chunks must leave at once, not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                let controls = controls.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| api::handle(controls.clone(), req));
                    // An error here is a client that went away or spoke bad HTTP: nothing to do.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
