//! Request routing, the OpenAI-compatible endpoints and the deterministic
//! answers behind them.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};

use crate::body::{Broken, SimBody, error_response, json_response, metrics_response, sse_response};
use crate::control::{Controls, RecordedRequest, Refusal, Settings};

const MAX_BODY_BYTES: usize = 16 << 20;
/// Every answer is this many words long before `max_tokens` cuts it; a word is a token.
const ANSWER_WORDS: usize = 24;
/// How much of the prompt an answer echoes.
const ECHO_CHARS: usize = 40;
/// Pads answers to [`ANSWER_WORDS`]; each choice starts at a different word so
/// that choices of one request can be told apart.
const FILLER: [&str; 12] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
];
const MAX_CHOICES: u64 = 16;
const DEFAULT_EMBEDDING_DIMS: u64 = 8;
const MAX_EMBEDDING_DIMS: u64 = 4096;

pub(crate) async fn handle(
    controls: Controls,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let mut response = route(&controls, req).await;
    if let Ok(region) = HeaderValue::from_str(controls.region()) {
        response.headers_mut().insert("x-sim-region", region);
    }
    Ok(response)
}

async fn route(controls: &Controls, req: Request<Incoming>) -> Response<SimBody> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/health") => health(controls).await,
        (&Method::GET, "/metrics") if !controls.is_down() => metrics_response(controls.metrics()),
        (&Method::GET, "/__stats") => json_response(StatusCode::OK, &controls.stats()),
        (&Method::POST, "/__control") => control(controls, req).await,
        _ if path.starts_with("/v1/") => v1(controls, req).await,
        (method, _) => error_response(
            StatusCode::NOT_FOUND,
            &format!("Unknown request URL: {method} {path}."),
            None,
            None,
        ),
    }
}

async fn health(controls: &Controls) -> Response<SimBody> {
    controls.count_health_check();
    let delay = controls.health_delay_ms();
    if delay > 0 {
        sleep(Duration::from_millis(delay)).await;
    }
    let (status, word) = if controls.is_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "down")
    } else {
        (StatusCode::OK, "ok")
    };
    json_response(
        status,
        &json!({"status": word, "region": controls.region()}),
    )
}

async fn control(controls: &Controls, req: Request<Incoming>) -> Response<SimBody> {
    let body = match read_body(req.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match controls.apply_control(&body) {
        Ok(()) => json_response(StatusCode::OK, &controls.stats()),
        Err(message) => error_response(StatusCode::BAD_REQUEST, &message, None, None),
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, Response<SimBody>> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
            None,
            None,
        )),
        Err(_) => Err(error_response(
            StatusCode::BAD_REQUEST,
            "could not read the request body",
            None,
            None,
        )),
    }
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Models,
    Generate(Kind),
    Embeddings,
}

/// What a generation endpoint answers: a chat message or legacy completion text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

impl Kind {
    fn object(self) -> &'static str {
        match self {
            Kind::Chat => "chat.completion",
            Kind::Completion => "text_completion",
        }
    }

    fn chunk_object(self) -> &'static str {
        match self {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        }
    }
}

/// The endpoint at `path`, or the status and message that refuse it.
fn endpoint(method: &Method, path: &str) -> Result<Endpoint, (StatusCode, String)> {
    let (endpoint, allowed) = match path {
        "/v1/models" => (Endpoint::Models, Method::GET),
        "/v1/chat/completions" => (Endpoint::Generate(Kind::Chat), Method::POST),
        "/v1/completions" => (Endpoint::Generate(Kind::Completion), Method::POST),
        "/v1/embeddings" => (Endpoint::Embeddings, Method::POST),
        _ => {
            let message = format!("Unknown request URL: {method} {path}.");
            return Err((StatusCode::NOT_FOUND, message));
        }
    };
    if *method == allowed {
        Ok(endpoint)
    } else {
        let message = format!("{path} only accepts {allowed}");
        Err((StatusCode::METHOD_NOT_ALLOWED, message))
    }
}

async fn v1(controls: &Controls, req: Request<Incoming>) -> Response<SimBody> {
    let (parts, body) = req.into_parts();
    let body = read_body(body).await;
    let json = body
        .as_ref()
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok());
    controls.record(RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        body: json.clone(),
    });
    if let Err(response) = body {
        return response;
    }
    if let Some(key) = controls.api_key() {
        let presented = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(key) {
            return error_response(StatusCode::UNAUTHORIZED, "Unauthorized", None, None);
        }
    }
    let endpoint = match endpoint(&parts.method, parts.uri.path()) {
        Ok(endpoint) => endpoint,
        Err((status, message)) => return error_response(status, &message, None, None),
    };
    let settings = match controls.admit() {
        Ok(settings) => settings,
        Err(refusal) => return refused(controls, refusal),
    };
    let generate = match endpoint {
        Endpoint::Models => {
            controls.count_completed();
            return models(controls);
        }
        Endpoint::Generate(kind) => Some(kind),
        Endpoint::Embeddings => None,
    };
    let Some(Value::Object(request)) = json else {
        return Invalid::new(
            None,
            "We could not parse the JSON body of your request: expected a JSON object.",
        )
        .response();
    };
    let model = match request.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        _ => return Invalid::new(Some("model"), "you must provide a model parameter").response(),
    };
    if !controls.models().is_empty() && !controls.models().contains(&model) {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist."),
            Some("model"),
            Some("model_not_found"),
        );
    }
    let answer = match generate {
        Some(kind) => match Generation::parse(controls, kind, model, &request) {
            Ok(generation) if wants_stream(&request) && !settings.never_stream => {
                let usage = settings.report_usage && include_usage(&request);
                return generation.stream(controls.clone(), settings, usage);
            }
            Ok(generation) => {
                let mut answer = generation.to_json();
                if let Value::Object(o) = &mut answer {
                    if !settings.report_usage {
                        o.remove("usage");
                    }
                    if settings.pad_answer_bytes > 0 {
                        o.insert(
                            "padding".into(),
                            "x".repeat(settings.pad_answer_bytes).into(),
                        );
                    }
                }
                answer
            }
            Err(invalid) => return invalid.response(),
        },
        None => match embeddings(&model, &request) {
            Ok(answer) => answer,
            Err(invalid) => return invalid.response(),
        },
    };
    // Generating takes a place in the batch (and the client's going away
    // while it waits drops this future, and its place in the queue).
    let _slot = match generate {
        Some(_) => Some(controls.slot().await),
        None => None,
    };
    // A zero sleep still waits for the timer wheel's next tick (~1 ms).
    if settings.base_latency_ms > 0 {
        sleep(Duration::from_millis(settings.base_latency_ms)).await;
    }
    controls.count_completed();
    json_response(StatusCode::OK, &answer)
}

fn refused(controls: &Controls, refusal: Refusal) -> Response<SimBody> {
    let region = controls.region();
    match refusal {
        Refusal::Down => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("region {region} is down (simulated)"),
            None,
            None,
        ),
        Refusal::Injected(status) => error_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            &format!("simulated failure in region {region} (HTTP {status})"),
            None,
            None,
        ),
    }
}

fn models(controls: &Controls) -> Response<SimBody> {
    let created = now();
    let data: Vec<Value> = controls
        .models()
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "edgegate-sim"}))
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A 400 answer: what was wrong with the request, and which field.
struct Invalid {
    param: Option<&'static str>,
    message: String,
}

impl Invalid {
    fn new(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Invalid {
            param,
            message: message.into(),
        }
    }

    fn response(&self) -> Response<SimBody> {
        error_response(StatusCode::BAD_REQUEST, &self.message, self.param, None)
    }
}

fn wants_stream(request: &Map<String, Value>) -> bool {
    request.get("stream").and_then(Value::as_bool) == Some(true)
}

fn include_usage(request: &Map<String, Value>) -> bool {
    request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// An optional positive integer field (`null` counts as absent).
fn positive_int(request: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, Invalid> {
    match request.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(Invalid::new(
                Some(field),
                format!("`{field}` must be a positive integer"),
            )),
        },
    }
}

/// The plausible, deterministic token count of `chars` characters of text.
fn approx_tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

/// The text of a chat message's `content`: a string or an array of parts.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// One prompt of a completion or one input of an embedding request.
struct Input {
    text: String,
    tokens: u64,
}

impl Input {
    fn text(s: &str) -> Self {
        Input {
            text: s.to_owned(),
            tokens: approx_tokens(s.chars().count()),
        }
    }

    fn tokens(ids: &[Value]) -> Self {
        let text = ids.iter().map(Value::to_string).collect::<Vec<_>>();
        Input {
            text: text.join(" "),
            tokens: ids.len() as u64,
        }
    }
}

/// `prompt`/`input` in any of the OpenAI shapes: a string, strings, a token
/// array or token arrays.
fn inputs(value: Option<&Value>, field: &'static str) -> Result<Vec<Input>, Invalid> {
    let invalid = || {
        Invalid::new(
            Some(field),
            format!("`{field}` must be a string, an array of strings or token arrays"),
        )
    };
    let is_tokens = |ids: &[Value]| !ids.is_empty() && ids.iter().all(Value::is_u64);
    match value {
        Some(Value::String(s)) => Ok(vec![Input::text(s)]),
        Some(Value::Array(items)) if is_tokens(items) => Ok(vec![Input::tokens(items)]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(Input::text(s)),
                Value::Array(ids) if is_tokens(ids) => Ok(Input::tokens(ids)),
                _ => Err(invalid()),
            })
            .collect(),
        _ => Err(invalid()),
    }
}

/// The fixed-length answer to `prompt`: it echoes the prompt's start, then filler.
fn answer_words(region: &str, prompt: &str, choice: usize) -> Vec<String> {
    let echo: String = prompt.chars().take(ECHO_CHARS).collect();
    let mut words: Vec<String> = format!("[{region}] echo: {echo}")
        .split_whitespace()
        .take(ANSWER_WORDS)
        .map(str::to_owned)
        .collect();
    let missing = ANSWER_WORDS - words.len();
    words.extend(
        FILLER
            .iter()
            .cycle()
            .skip(choice)
            .take(missing)
            .map(|w| (*w).to_owned()),
    );
    words
}

/// A chat or text completion, decided in full before anything is sent.
struct Generation {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    /// The words of each choice, already cut to `max_tokens`.
    choices: Vec<Vec<String>>,
    finish_reason: &'static str,
    prompt_tokens: u64,
}

impl Generation {
    fn parse(
        controls: &Controls,
        kind: Kind,
        model: String,
        request: &Map<String, Value>,
    ) -> Result<Self, Invalid> {
        let (prompts, prompt_tokens) = match kind {
            Kind::Chat => chat_prompt(request)?,
            Kind::Completion => {
                let inputs = inputs(request.get("prompt"), "prompt")?;
                let tokens = inputs.iter().map(|i| i.tokens).sum();
                (inputs.into_iter().map(|i| i.text).collect(), tokens)
            }
        };
        // Newer clients send `max_completion_tokens` for chat, older ones `max_tokens`.
        let max_tokens = match positive_int(request, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => positive_int(request, "max_tokens")?,
        };
        let n = positive_int(request, "n")?.unwrap_or(1);
        if n > MAX_CHOICES {
            return Err(Invalid::new(
                Some("n"),
                format!("`n` must be at most {MAX_CHOICES}"),
            ));
        }
        let limit = max_tokens.map_or(ANSWER_WORDS, |m| {
            usize::try_from(m).map_or(ANSWER_WORDS, |m| m.min(ANSWER_WORDS))
        });
        // Choices are numbered prompt by prompt, `n` per prompt, as OpenAI does.
        let mut choices = Vec::new();
        for prompt in &prompts {
            for _ in 0..n {
                let mut words = answer_words(controls.region(), prompt, choices.len());
                words.truncate(limit);
                choices.push(words);
            }
        }
        let prefix = match kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        };
        Ok(Generation {
            kind,
            id: format!("{prefix}-sim-{}-{}", controls.region(), controls.next_id()),
            created: now(),
            model,
            choices,
            finish_reason: if limit < ANSWER_WORDS {
                "length"
            } else {
                "stop"
            },
            prompt_tokens,
        })
    }

    fn usage(&self) -> Value {
        let completion_tokens: u64 = self.choices.iter().map(|c| c.len() as u64).sum();
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }

    fn to_json(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(index, words)| {
                let text = words.join(" ");
                let mut choice =
                    json!({"index": index, "logprobs": null, "finish_reason": self.finish_reason});
                match self.kind {
                    Kind::Chat => {
                        choice["message"] = json!({"role": "assistant", "content": text});
                    }
                    Kind::Completion => choice["text"] = Value::String(text),
                }
                choice
            })
            .collect();
        json!({
            "id": self.id,
            "object": self.kind.object(),
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage(),
        })
    }

    /// Answers at once with an SSE response that a spawned task feeds.
    fn stream(
        self,
        controls: Controls,
        settings: Settings,
        include_usage: bool,
    ) -> Response<SimBody> {
        // One slot: the task runs no further ahead of the client than one chunk.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut sse = Sse {
                tx,
                sent: 0,
                stall_after: settings.stall_after_chunks,
                break_after: settings.break_after_chunks,
                runaway_after: settings.runaway_event_after_chunks,
            };
            // Headers go out at once, as vLLM's do; tokens once in the batch.
            let slot = tokio::select! {
                slot = controls.slot() => Some(slot),
                () = sse.tx.closed() => None,
            };
            let sent = match slot {
                Some(_slot) => self.send_events(&mut sse, settings, include_usage).await,
                None => Err(ClientGone),
            };
            match sent {
                Ok(()) => controls.count_completed(),
                Err(ClientGone) => controls.count_cancelled(),
            }
        });
        sse_response(rx)
    }

    async fn send_events(
        &self,
        sse: &mut Sse,
        settings: Settings,
        include_usage: bool,
    ) -> Result<(), ClientGone> {
        let chunk = |choices: Value| {
            let mut chunk = json!({
                "id": self.id,
                "object": self.kind.chunk_object(),
                "created": self.created,
                "model": self.model,
                "choices": choices,
            });
            // OpenAI puts `"usage": null` on every chunk but the last when usage was asked for.
            if include_usage {
                chunk["usage"] = Value::Null;
            }
            chunk.to_string()
        };
        let choice = |index: usize, text: &str, finish_reason: Option<&str>| match self.kind {
            Kind::Chat => {
                let delta = if finish_reason.is_some() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish_reason}])
            }
            Kind::Completion => {
                json!([{"index": index, "text": text, "logprobs": null, "finish_reason": finish_reason}])
            }
        };

        // Deadlines rather than plain sleeps keep the pace steady for benchmarks.
        let mut deadline = Instant::now() + Duration::from_millis(settings.base_latency_ms);
        let interval = Duration::from_millis(settings.token_interval_ms);
        sse.wait_until(deadline).await?;
        if self.kind == Kind::Chat {
            for index in 0..self.choices.len() {
                let role = json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]);
                sse.send(chunk(role)).await?;
            }
        }
        let words = self.choices.first().map_or(0, Vec::len);
        for position in 0..words {
            deadline += interval;
            sse.wait_until(deadline).await?;
            for (index, answer) in self.choices.iter().enumerate() {
                if let Some(word) = answer.get(position) {
                    let piece = if position == 0 {
                        word.clone()
                    } else {
                        format!(" {word}")
                    };
                    sse.send(chunk(choice(index, &piece, None))).await?;
                }
            }
        }
        for index in 0..self.choices.len() {
            sse.send(chunk(choice(index, "", Some(self.finish_reason))))
                .await?;
        }
        if include_usage {
            let last = json!({
                "id": self.id,
                "object": self.kind.chunk_object(),
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage(),
            });
            sse.send(last.to_string()).await?;
        }
        sse.send("[DONE]".to_owned()).await
    }
}

/// The messages' token count, and the text to echo: the last user message.
fn chat_prompt(request: &Map<String, Value>) -> Result<(Vec<String>, u64), Invalid> {
    let messages = match request.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => {
            return Err(Invalid::new(
                Some("messages"),
                "`messages` must be a non-empty array",
            ));
        }
    };
    let mut chars = 0;
    let mut last_user = String::new();
    for message in messages {
        let Some(message) = message.as_object() else {
            return Err(Invalid::new(
                Some("messages"),
                "each message must be an object",
            ));
        };
        let text = content_text(message.get("content"));
        chars += text.chars().count();
        if message.get("role").and_then(Value::as_str) == Some("user") {
            last_user = text;
        }
    }
    let tokens = approx_tokens(chars) + 4 * messages.len() as u64;
    Ok((vec![last_user], tokens))
}

/// The stream's client disconnected (or the backend shut down).
struct ClientGone;

/// The sending end of an SSE body.
struct Sse {
    tx: mpsc::Sender<Result<Bytes, Broken>>,
    sent: usize,
    stall_after: Option<usize>,
    break_after: Option<usize>,
    runaway_after: Option<usize>,
}

/// The size of the unterminated event `runaway_event_after_chunks` sends.
const RUNAWAY_EVENT_BYTES: usize = 2 << 20;

impl Sse {
    async fn send(&mut self, data: String) -> Result<(), ClientGone> {
        if self.stall_after == Some(self.sent) {
            // Hang with the connection open: only the client leaving ends this.
            self.tx.closed().await;
            return Err(ClientGone);
        }
        if self.break_after == Some(self.sent) {
            // Cut the connection off, as a crashed backend would.
            let _ = self.tx.send(Err(Broken)).await;
            return Err(ClientGone);
        }
        if self.runaway_after == Some(self.sent) {
            // An event that never ends: 2 MiB of one `data:` line, then hang.
            let mut runaway = String::from("data: ");
            runaway.push_str(&"x".repeat(RUNAWAY_EVENT_BYTES));
            self.tx
                .send(Ok(Bytes::from(runaway)))
                .await
                .map_err(|_| ClientGone)?;
            self.tx.closed().await;
            return Err(ClientGone);
        }
        let event = Bytes::from(format!("data: {data}\n\n"));
        self.tx.send(Ok(event)).await.map_err(|_| ClientGone)?;
        self.sent += 1;
        Ok(())
    }

    /// Waits, noticing a client that leaves meanwhile.
    async fn wait_until(&self, deadline: Instant) -> Result<(), ClientGone> {
        if deadline <= Instant::now() {
            return Ok(());
        }
        tokio::select! {
            () = sleep_until(deadline) => Ok(()),
            () = self.tx.closed() => Err(ClientGone),
        }
    }
}

fn embeddings(model: &str, request: &Map<String, Value>) -> Result<Value, Invalid> {
    let inputs = inputs(request.get("input"), "input")?;
    let dims = positive_int(request, "dimensions")?.unwrap_or(DEFAULT_EMBEDDING_DIMS);
    if dims > MAX_EMBEDDING_DIMS {
        return Err(Invalid::new(
            Some("dimensions"),
            format!("`dimensions` must be at most {MAX_EMBEDDING_DIMS}"),
        ));
    }
    // The Python SDK asks for base64 by default and decodes it itself.
    let base64 = match request.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Err(Invalid::new(
                Some("encoding_format"),
                "`encoding_format` must be \"float\" or \"base64\"",
            ));
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embed(&input.text, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(BASE64.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|i| i.tokens).sum();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

/// A unit vector drawn from a hash of `text`. FNV-1a seeding splitmix64 gives
/// the same numbers on every platform and Rust version, unlike std's hasher.
fn embed(text: &str, dims: u64) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let raw: Vec<f32> = (0..dims)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // The top 24 bits fit an f32 exactly; map them to [-1, 1).
            (z >> 40) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        raw.iter().map(|x| x / norm).collect()
    } else {
        raw
    }
}
