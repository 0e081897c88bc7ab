//! The simulated backend seen from outside, over real HTTP.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use edgegate_sim::{Backend, BackendConfig, Controls};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

async fn start(cfg: BackendConfig) -> Backend {
    Backend::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A response whose body is still to be read, with its connection's task:
/// aborting that task closes the connection, as a client going away would.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Incoming,
    connection: JoinHandle<()>,
}

async fn send(addr: SocketAddr, method: Method, path: &str, body: &[u8]) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "sim")
        .header("content-type", "application/json")
        .header("authorization", "Bearer upstream-key")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
        connection,
    }
}

async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let reply = send(addr, method, path, bytes.as_bytes()).await;
    let body = reply.body.collect().await.unwrap().to_bytes();
    (reply.status, serde_json::from_slice(&body).unwrap())
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> (StatusCode, Value) {
    call(addr, Method::POST, path, Some(body)).await
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, Value) {
    call(addr, Method::GET, path, None).await
}

/// SSE `data:` payloads in order, each with the time its frame arrived.
async fn read_events(mut body: Incoming) -> Vec<(Instant, String)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        let arrived = Instant::now();
        buffer.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let data = event.trim_end().strip_prefix("data: ").unwrap();
            events.push((arrived, data.to_owned()));
        }
    }
    assert_eq!(buffer, "", "the stream ends on an event boundary");
    events
}

/// Reads `n` events, or fewer if `wait` passes without the next one.
/// Streams `request` to `path`; the chunks before `[DONE]`, which must end it.
async fn stream_chunks(addr: SocketAddr, path: &str, request: &Value) -> Vec<Value> {
    let reply = send(addr, Method::POST, path, request.to_string().as_bytes()).await;
    let events = read_events(reply.body).await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect()
}

async fn read_some_events(body: &mut Incoming, n: usize, wait: Duration) -> Vec<String> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    while events.len() < n {
        let Ok(Some(frame)) = tokio::time::timeout(wait, body.frame()).await else {
            break;
        };
        buffer.push_str(std::str::from_utf8(&frame.unwrap().into_data().unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            events.push(buffer.drain(..end + 2).collect());
        }
    }
    events
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn chat(content: &str) -> Value {
    json!({
        "model": "m1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": content},
        ],
    })
}

#[tokio::test]
async fn chat_answer_is_deterministic_with_usage() {
    let mut cfg = BackendConfig::new("us-east");
    cfg.models = vec!["m1".into()];
    let backend = start(cfg).await;
    let addr = backend.addr();

    let request = chat("Hello there, general Kenobi! You are a bold one, it seems to me.");
    let reply = send(
        addr,
        Method::POST,
        "/v1/chat/completions",
        request.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-sim-region"], "us-east");
    assert_eq!(reply.headers["content-type"], "application/json");
    let body: Value =
        serde_json::from_slice(&reply.body.collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "m1");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let content = choice["message"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("[us-east] echo: Hello there, general Kenobi! You are a b lorem "),
        "{content}"
    );
    assert_eq!(content.split(' ').count(), 24);
    assert_eq!(choice["finish_reason"], "stop");
    // 9 + 64 characters -> 19 tokens, plus 4 per message.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 27, "completion_tokens": 24, "total_tokens": 51})
    );

    // The same request gets the same answer.
    let (_, again) = post(addr, "/v1/chat/completions", request).await;
    assert_eq!(again["choices"], body["choices"]);

    // max_tokens cuts the answer; n gives distinct choices.
    let mut short = chat("Hi");
    short["max_tokens"] = json!(5);
    short["n"] = json!(2);
    let (status, body) = post(addr, "/v1/chat/completions", short.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let contents: Vec<&str> = body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["finish_reason"], "length");
            c["message"]["content"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        contents,
        [
            "[us-east] echo: Hi lorem ipsum",
            "[us-east] echo: Hi ipsum dolor"
        ]
    );
    assert_eq!(body["usage"]["completion_tokens"], 10);

    let controls = backend.controls();
    assert_eq!(controls.last_request_body(), Some(short));
    let last = controls.last_request().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert!(
        last.headers
            .contains(&("authorization".into(), "Bearer upstream-key".into()))
    );
    assert_eq!(controls.requests_received(), 3);
    assert_eq!(controls.requests_completed(), 3);
    backend.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let mut cfg = BackendConfig::new("eu-west");
    cfg.models = vec!["m1".into()];
    let backend = start(cfg).await;
    let addr = backend.addr();

    let reply = send(addr, Method::POST, "/v1/chat/completions", b"{not json").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let body: Value =
        serde_json::from_slice(&reply.body.collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("JSON"));

    let mut unknown = chat("hi");
    unknown["model"] = json!("gpt-9");
    let (status, body) = post(addr, "/v1/chat/completions", unknown).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(
        body["error"]["message"],
        "The model `gpt-9` does not exist."
    );

    for (request, param) in [
        (json!({"model": "m1"}), "messages"),
        (
            json!({"model": "m1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
    ] {
        let (status, body) = post(addr, "/v1/chat/completions", request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["param"], param);
    }

    let (status, _) = get(addr, "/v1/chat/completions").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, body) = get(addr, "/v1/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"]["message"].is_string());

    let (status, body) = get(addr, "/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["id"], "m1");
    assert_eq!(body["data"][0]["object"], "model");
    backend.shutdown().await;
}

#[tokio::test]
async fn streamed_chat_is_paced_and_matches_the_full_answer() {
    const INTERVAL: u64 = 30;
    let mut cfg = BackendConfig::new("ap-south");
    cfg.token_interval_ms = INTERVAL;
    let backend = start(cfg).await;
    let addr = backend.addr();

    let mut request = chat("stream me");
    request["max_tokens"] = json!(8);
    let (_, full) = post(addr, "/v1/chat/completions", request.clone()).await;

    request["stream"] = json!(true);
    let reply = send(
        addr,
        Method::POST,
        "/v1/chat/completions",
        request.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    let events = read_events(reply.body).await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<(Instant, Value)> = events[..events.len() - 1]
        .iter()
        .map(|(t, data)| (*t, serde_json::from_str(data).unwrap()))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|(_, c)| c["object"] == "chat.completion.chunk"
                && c["id"] == chunks[0].1["id"]
                && c["model"] == "m1"
                && c.get("usage").is_none())
    );
    assert_eq!(
        chunks[0].1["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let words = &chunks[1..chunks.len() - 1];
    assert_eq!(words.len(), 8);
    let text: String = words
        .iter()
        .map(|(_, c)| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        text,
        full["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let finish = &chunks.last().unwrap().1["choices"][0];
    assert_eq!(finish["finish_reason"], "length");
    assert_eq!(finish["delta"], json!({}));

    // Tokens trickle in rather than arriving together (7 intervals expected).
    let spread = words.last().unwrap().0 - words[0].0;
    assert!(spread >= Duration::from_millis(3 * INTERVAL), "{spread:?}");
    assert_eq!(backend.controls().requests_completed(), 2);
    backend.shutdown().await;
}

#[tokio::test]
async fn usage_chunk_only_when_asked() {
    let backend = start(BackendConfig::new("us-east")).await;
    let addr = backend.addr();
    let mut request = chat("count me");
    let (_, full) = post(addr, "/v1/chat/completions", request.clone()).await;

    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let chunks = stream_chunks(addr, "/v1/chat/completions", &request).await;
    let (last, others) = chunks.split_last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], full["usage"]);
    assert!(
        others
            .iter()
            .all(|c| c["usage"].is_null() && c.get("usage").is_some())
    );

    // Legacy completions stream the same way, without a role chunk.
    let request = json!({"model": "m", "prompt": "once upon", "max_tokens": 3, "stream": true,
        "stream_options": {"include_usage": true}});
    let chunks = stream_chunks(addr, "/v1/completions", &request).await;
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "[us-east] echo: once");
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
    assert_eq!(
        chunks.last().unwrap()["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
    );
    backend.shutdown().await;
}

#[tokio::test]
async fn without_usage_reports_like_servers_that_ignore_include_usage() {
    let backend = start(BackendConfig::new("us-east")).await;
    backend.controls().set_report_usage(false);
    let addr = backend.addr();
    let mut request = json!({"model": "m", "messages": [{"role": "user", "content": "hi there"}],
        "max_tokens": 3});
    let (status, full) = post(addr, "/v1/chat/completions", request.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(full.get("usage").is_none(), "{full}");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    for chunk in stream_chunks(addr, "/v1/chat/completions", &request).await {
        assert!(
            chunk.get("usage").is_none() && !chunk["choices"].as_array().unwrap().is_empty(),
            "{chunk}"
        );
    }
    backend.controls().reset();
    let (_, again) = post(
        addr,
        "/v1/chat/completions",
        json!({"model": "m",
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert!(again["usage"].is_object(), "reset turns usage back on");
    backend.shutdown().await;
}

#[tokio::test]
async fn legacy_completions_answer_each_prompt() {
    let backend = start(BackendConfig::new("us-east")).await;
    let (status, body) = post(
        backend.addr(),
        "/v1/completions",
        json!({"model": "m", "prompt": ["alpha", "beta"], "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["object"], "text_completion");
    let texts: Vec<&str> = body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["[us-east] echo: alpha lorem", "[us-east] echo: beta ipsum"]
    );
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11})
    );
    backend.shutdown().await;
}

#[tokio::test]
async fn embeddings_as_floats_and_base64() {
    let backend = start(BackendConfig::new("us-east")).await;
    let addr = backend.addr();
    let input = json!(["the cat", "the dog", "the cat"]);
    let (status, floats) = post(
        addr,
        "/v1/embeddings",
        json!({"model": "e", "input": input}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(floats["object"], "list");
    assert_eq!(
        floats["usage"],
        json!({"prompt_tokens": 6, "total_tokens": 6})
    );
    let vectors: Vec<Vec<f64>> = floats["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            assert_eq!(d["object"], "embedding");
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(vectors[0].len(), 8);
    assert_eq!(vectors[0], vectors[2]);
    assert_ne!(vectors[0], vectors[1]);
    let norm: f64 = vectors[0].iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");

    let (_, encoded) = post(
        addr,
        "/v1/embeddings",
        json!({"model": "e", "input": input, "encoding_format": "base64"}),
    )
    .await;
    for (data, floats) in encoded["data"].as_array().unwrap().iter().zip(&vectors) {
        let bytes = BASE64.decode(data["embedding"].as_str().unwrap()).unwrap();
        let decoded: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(decoded.len(), floats.len());
        for (d, f) in decoded.iter().zip(floats) {
            assert!((f64::from(*d) - f).abs() < 1e-6);
        }
    }

    let (status, _) = post(
        addr,
        "/v1/embeddings",
        json!({"model": "e", "input": "x", "encoding_format": "hex"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, tokens) = post(
        addr,
        "/v1/embeddings",
        json!({"model": "e", "input": [1, 2, 3], "dimensions": 3}),
    )
    .await;
    assert_eq!(tokens["data"][0]["embedding"].as_array().unwrap().len(), 3);
    assert_eq!(tokens["usage"]["prompt_tokens"], 3);
    backend.shutdown().await;
}

#[tokio::test]
async fn down_and_injected_failures() {
    let backend = start(BackendConfig::new("us-east")).await;
    let addr = backend.addr();
    let controls = backend.controls();

    controls.set_down(true);
    let (status, body) = get(addr, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"status": "down", "region": "us-east"}));
    let (status, body) = post(addr, "/v1/chat/completions", chat("x")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["type"], "server_error");
    controls.set_down(false);
    let (status, body) = get(addr, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok", "region": "us-east"}));
    assert_eq!(controls.health_checks(), 2);

    controls.fail_next(2, 429);
    for _ in 0..2 {
        let (status, body) = post(addr, "/v1/chat/completions", chat("x")).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }
    let (status, _) = post(addr, "/v1/chat/completions", chat("x")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(controls.requests_received(), 4);
    assert_eq!(controls.requests_completed(), 1);

    controls.set_latency(120, 0);
    let started = Instant::now();
    post(addr, "/v1/chat/completions", chat("x")).await;
    assert!(started.elapsed() >= Duration::from_millis(120));
    backend.shutdown().await;
}

#[tokio::test]
async fn stalled_and_abandoned_streams() {
    let mut cfg = BackendConfig::new("us-east");
    cfg.token_interval_ms = 10;
    let backend = start(cfg).await;
    let addr = backend.addr();
    let controls = backend.controls();
    let mut request = chat("x");
    request["stream"] = json!(true);
    let request = request.to_string();

    // A stall sends its chunks, then nothing, without closing.
    controls.stall_after_chunks(Some(3));
    let mut reply = send(
        addr,
        Method::POST,
        "/v1/chat/completions",
        request.as_bytes(),
    )
    .await;
    let events = read_some_events(&mut reply.body, 10, Duration::from_millis(300)).await;
    assert_eq!(events.len(), 3);
    assert!(!reply.body.is_end_stream());
    assert_eq!(controls.streams_cancelled(), 0);
    reply.connection.abort();
    drop(reply.body);
    eventually("the stalled stream's cancellation", || {
        controls.streams_cancelled() == 1
    })
    .await;

    // A client leaving mid-stream is noticed too.
    controls.stall_after_chunks(None);
    let mut reply = send(
        addr,
        Method::POST,
        "/v1/chat/completions",
        request.as_bytes(),
    )
    .await;
    let events = read_some_events(&mut reply.body, 2, Duration::from_secs(1)).await;
    assert_eq!(events.len(), 2);
    reply.connection.abort();
    drop(reply.body);
    eventually("the abandoned stream's cancellation", || {
        controls.streams_cancelled() == 2
    })
    .await;
    assert_eq!(controls.requests_completed(), 0);
    backend.shutdown().await;
}

#[tokio::test]
async fn controls_over_http() {
    let backend = start(BackendConfig::new("eu-west")).await;
    let addr = backend.addr();
    let control = |body: Value| post(addr, "/__control", body);

    let (status, stats) = control(json!({"fail_next": {"count": 1, "status": 502}})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["fail_next"], json!({"count": 1, "status": 502}));
    let (status, _) = post(addr, "/v1/chat/completions", chat("x")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);

    control(json!({"down": true})).await;
    assert_eq!(
        get(addr, "/health").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, stats) = control(json!({"down": false, "stall_after_chunks": 2, "latency": {"base_ms": 5, "token_interval_ms": 7}})).await;
    assert_eq!(stats["down"], false);
    assert_eq!(stats["stall_after_chunks"], 2);
    assert_eq!(
        stats["latency"],
        json!({"base_ms": 5, "token_interval_ms": 7})
    );

    // A bad request changes nothing.
    for bad in [
        json!({"bogus": 1}),
        json!({"down": false, "fail_next": {"count": 1, "status": 200}}),
    ] {
        let (status, body) = control(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"]["message"].is_string());
    }

    let (_, stats) = get(addr, "/__stats").await;
    assert_eq!(stats["region"], "eu-west");
    assert_eq!(stats["requests_received"], 1);
    assert_eq!(stats["requests_completed"], 0);
    assert_eq!(stats["health_checks"], 1);
    assert_eq!(stats["last_request_body"], chat("x"));
    assert_eq!(stats["last_request"]["path"], "/v1/chat/completions");
    assert_eq!(
        stats["last_request"]["headers"]["authorization"],
        "Bearer upstream-key"
    );

    let (_, stats) = control(json!({"stall_after_chunks": null})).await;
    assert_eq!(stats["stall_after_chunks"], Value::Null);
    assert_eq!(stats["latency"]["base_ms"], 5);

    let (_, stats) = control(json!({"reset": true})).await;
    assert_eq!(stats["requests_received"], 0);
    assert_eq!(stats["last_request_body"], Value::Null);
    assert_eq!(
        stats["latency"],
        json!({"base_ms": 0, "token_interval_ms": 0})
    );
    backend.shutdown().await;
}

#[tokio::test]
async fn loopback_only_and_shutdown_closes_the_port() {
    let err = Backend::start(BackendConfig::new("x"), "0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);

    let backend = start(BackendConfig::new("x")).await;
    let addr = backend.addr();
    assert_eq!(
        backend.base_url(),
        format!("http://127.0.0.1:{}", addr.port())
    );
    let controls: Controls = backend.controls();
    backend.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
    assert_eq!(controls.region(), "x");
}

/// The body of `GET /metrics`.
async fn metrics(addr: SocketAddr) -> String {
    let reply = send(addr, Method::GET, "/metrics", b"").await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.body.collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn gauge(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_full_batch_queues_streams_and_reports_it_like_vllm() {
    let backend = start(BackendConfig {
        token_interval_ms: 20,
        max_running: Some(1),
        ..BackendConfig::new("q")
    })
    .await;
    let addr = backend.addr();
    let mut request = chat("queue me");
    request["stream"] = json!(true);
    request["max_tokens"] = json!(5);
    let body = request.to_string();
    let sent = Instant::now();
    // Headers come at once for both; the second's tokens wait for the first.
    let first = send(addr, Method::POST, "/v1/chat/completions", body.as_bytes()).await;
    let second = send(addr, Method::POST, "/v1/chat/completions", body.as_bytes()).await;
    eventually("one running, one waiting", || {
        backend.controls().batch() == (1, 1)
    })
    .await;
    let text = metrics(addr).await;
    assert_eq!(gauge(&text, "vllm:num_requests_running"), 1.0);
    assert_eq!(gauge(&text, "vllm:num_requests_waiting"), 1.0);
    assert_eq!(gauge(&text, "vllm:kv_cache_usage_perc"), 1.0);
    let (a, b) = tokio::join!(read_events(first.body), read_events(second.body));
    // The second's first token came after the whole first answer (5 tokens).
    let first_done = a.last().unwrap().0;
    let second_token = b
        .iter()
        .find(|(_, d)| d.contains("\"content\":\"[q]"))
        .unwrap()
        .0;
    assert!(
        second_token >= first_done,
        "the second waited for the first"
    );
    assert!(second_token.duration_since(sent) >= Duration::from_millis(100));
    let text = metrics(addr).await;
    assert_eq!(gauge(&text, "vllm:num_requests_waiting"), 0.0);
    // A waiting client that goes away leaves the queue; lifting the limit
    // lets the others through.
    let held = send(addr, Method::POST, "/v1/chat/completions", body.as_bytes()).await;
    let leaving = send(addr, Method::POST, "/v1/chat/completions", body.as_bytes()).await;
    eventually("one running, one waiting", || {
        backend.controls().batch() == (1, 1)
    })
    .await;
    leaving.connection.abort();
    drop(leaving.body);
    eventually("the waiter left", || backend.controls().batch().1 == 0).await;
    drop(held);
    backend.controls().set_max_running(None);
}

#[tokio::test]
async fn a_backend_with_an_api_key_refuses_requests_without_it_as_vllm_does() {
    // The test client presents `Bearer upstream-key`.
    let keyed = start(BackendConfig {
        api_key: Some("upstream-key".into()),
        ..BackendConfig::new("k")
    })
    .await;
    let (status, _) = post(keyed.addr(), "/v1/chat/completions", chat("with the key")).await;
    assert_eq!(status, StatusCode::OK);
    let other = start(BackendConfig {
        api_key: Some("another-key".into()),
        ..BackendConfig::new("o")
    })
    .await;
    let (status, body) = post(other.addr(), "/v1/chat/completions", chat("wrong key")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["type"], "authentication_error");
    // Health and metrics stay open, as vLLM's do.
    let (status, _) = get(other.addr(), "/health").await;
    assert_eq!(status, StatusCode::OK);
}
