//! HTTP as the cases speak it: requests built on a target, and replies that
//! check what every gateway response must hold (a request id; on errors an
//! OpenAI-shaped body). Streams are read as they arrive, with arrival times.

use crate::target::Target;
use futures_util::StreamExt;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Fails the case with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Fails the case unless `got == want`, naming what was compared.
#[macro_export]
macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($fmt:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(format!("{}: expected {:?}, got {:?}", format!($($fmt)+), want, got));
        }
    }};
}

/// Where a client is, sent as the trusted `x-edgegate-client-*` headers both
/// runners are configured to read.
pub struct Place {
    pub latitude: f64,
    pub longitude: f64,
    pub country: &'static str,
    pub continent: &'static str,
}

pub const NEW_YORK: Place = Place {
    latitude: 40.71,
    longitude: -74.0,
    country: "US",
    continent: "NA",
};
pub const PARIS: Place = Place {
    latitude: 48.86,
    longitude: 2.35,
    country: "FR",
    continent: "EU",
};
pub const SINGAPORE: Place = Place {
    latitude: 1.29,
    longitude: 103.85,
    country: "SG",
    continent: "AS",
};
pub const SAO_PAULO: Place = Place {
    latitude: -23.55,
    longitude: -46.63,
    country: "BR",
    continent: "SA",
};

pub const CHAT: &str = "/v1/chat/completions";

/// A short chat request for model `chat`.
pub fn chat_body(content: &str) -> Value {
    json!({
        "model": "chat",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
    })
}

/// The first choice's text of a chat completion.
pub fn content_of(answer: &Value) -> &str {
    answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
}

/// The region a simulated backend put at the start of its answer (`[eu-west] echo: …`).
pub fn region_of(content: &str) -> Option<&str> {
    content.strip_prefix('[')?.split(']').next()
}

/// The simulated region (or `region/replica`) that wrote `answer`.
pub fn answered_by(answer: &Value) -> String {
    region_of(content_of(answer)).unwrap_or_default().to_owned()
}

impl Target {
    pub fn post(&self, path: &str) -> Call<'_> {
        self.request(Method::POST, path)
    }

    pub fn get(&self, path: &str) -> Call<'_> {
        self.request(Method::GET, path)
    }

    pub fn request(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            target: self,
            builder: self.http.request(method, self.url(path)),
        }
    }

    /// `POST /v1/chat/completions` with `key` and `body`.
    pub async fn chat(&self, key: &str, body: &Value) -> Result<Reply, String> {
        self.post(CHAT).key(key).json(body).send().await
    }
}

pub struct Call<'t> {
    target: &'t Target,
    builder: reqwest::RequestBuilder,
}

impl Call<'_> {
    pub fn key(mut self, key: &str) -> Self {
        self.builder = self.builder.bearer_auth(key);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    pub fn json(mut self, body: &Value) -> Self {
        self.builder = self.builder.json(body);
        self
    }

    /// A raw body, sent as JSON whatever it holds.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.builder = self
            .builder
            .header("content-type", "application/json")
            .body(body.into());
        self
    }

    /// Places the client at `place`.
    pub fn at(self, place: &Place) -> Self {
        self.header("x-edgegate-client-latitude", &place.latitude.to_string())
            .header("x-edgegate-client-longitude", &place.longitude.to_string())
            .header("x-edgegate-client-country", place.country)
            .header("x-edgegate-client-continent", place.continent)
    }

    pub async fn send(self) -> Result<Reply, String> {
        let name = self.target.name();
        let response = self.unread().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{name}: reading the body failed: {e}"))?;
        let reply = Reply {
            status,
            headers,
            text,
        };
        reply.check_invariants()?;
        Ok(reply)
    }

    /// Sends and hands back the response unread (for a client that reads
    /// part of a stream and hangs up).
    pub async fn unread(self) -> Result<reqwest::Response, String> {
        let name = self.target.name();
        let response = self
            .builder
            .send()
            .await
            .map_err(|e| format!("{name}: request failed: {e}"))?;
        if let Err(e) = request_id(response.headers()) {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(300).collect();
            return Err(format!("{name}: HTTP {status}: {e}: {text}"));
        }
        Ok(response)
    }

    /// Sends, then reads the body as server-sent events as they arrive.
    pub async fn stream(self) -> Result<StreamReply, String> {
        let name = self.target.name();
        let started = Instant::now();
        let response = self.unread().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = response.bytes_stream();
        let mut events = Vec::new();
        let mut buffered = String::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("{name}: the stream broke: {e}"))?;
            let at = started.elapsed();
            buffered.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffered.find("\n\n") {
                let event: String = buffered.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                events.push(Event {
                    at,
                    data: data.join("\n"),
                });
            }
        }
        Ok(StreamReply {
            status,
            headers,
            events,
            rest: buffered,
        })
    }
}

/// The request id every response carries: `req_` and 32 hex digits.
fn request_id(headers: &HeaderMap) -> Result<String, String> {
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .ok_or("the response has no x-request-id header")?;
    let hex = id.strip_prefix("req_").unwrap_or("");
    ensure!(
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "x-request-id `{id}` is not req_ + 32 hex digits"
    );
    Ok(id.to_owned())
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

/// `{"error": {"message", "type", "param", "code"}}`, read back.
#[derive(Debug)]
pub struct ErrorBody {
    pub message: String,
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn request_id(&self) -> String {
        self.header("x-request-id").unwrap_or_default().to_owned()
    }

    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.text).map_err(|e| format!("not JSON ({e}): {}", self.short()))
    }

    /// The body as JSON, if the status is `status`.
    pub fn expect(&self, status: u16) -> Result<Value, String> {
        ensure!(
            self.status == status,
            "expected HTTP {status}, got {}: {}",
            self.status,
            self.short()
        );
        self.json()
    }

    /// The OpenAI error body, if the status, `type` and `code` are these.
    pub fn expect_error(&self, status: u16, kind: &str, code: &str) -> Result<ErrorBody, String> {
        ensure!(
            self.status == status,
            "expected HTTP {status} ({code}), got {}: {}",
            self.status,
            self.short()
        );
        let error = self.error_body()?;
        ensure_eq!(error.kind, kind, "error.type");
        ensure_eq!(error.code.as_deref(), Some(code), "error.code");
        Ok(error)
    }

    /// Error responses are OpenAI-shaped: exactly `message` (non-empty),
    /// `type`, `param` and `code`, each a string or null where OpenAI allows it.
    fn error_body(&self) -> Result<ErrorBody, String> {
        ensure!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "an error without a JSON content type: {:?}",
            self.header("content-type")
        );
        let body = self.json()?;
        let error = body
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get("error"))
            .and_then(Value::as_object)
            .ok_or_else(|| format!("not an OpenAI error body: {}", self.short()))?;
        let mut fields: Vec<&str> = error.keys().map(String::as_str).collect();
        fields.sort_unstable();
        ensure_eq!(
            fields,
            vec!["code", "message", "param", "type"],
            "error fields"
        );
        let text = |name: &str| -> Result<Option<String>, String> {
            match &error[name] {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                other => Err(format!(
                    "error.{name} is neither a string nor null: {other}"
                )),
            }
        };
        let message = text("message")?.unwrap_or_default();
        ensure!(!message.is_empty(), "error.message is empty");
        Ok(ErrorBody {
            message,
            kind: text("type")?.ok_or("error.type is null")?,
            param: text("param")?,
            code: text("code")?,
        })
    }

    /// Every response has a request id; every error status has an OpenAI body.
    fn check_invariants(&self) -> Result<(), String> {
        request_id(&self.headers)?;
        if self.status >= 400 {
            self.error_body()
                .map_err(|e| format!("HTTP {}: {e}", self.status))?;
        }
        Ok(())
    }

    /// The body, cut for messages.
    pub fn short(&self) -> String {
        self.text.chars().take(300).collect()
    }
}

/// One server-sent event: its `data`, and when it arrived (since the request was sent).
pub struct Event {
    pub at: Duration,
    pub data: String,
}

pub struct StreamReply {
    pub status: u16,
    pub headers: HeaderMap,
    pub events: Vec<Event>,
    /// Bytes after the last complete event (none in a well-formed stream).
    pub rest: String,
}

impl StreamReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every event but `[DONE]`, as JSON.
    pub fn chunks(&self) -> Result<Vec<Value>, String> {
        self.events
            .iter()
            .filter(|e| e.data != "[DONE]")
            .map(|e| {
                serde_json::from_str(&e.data).map_err(|err| format!("event {:?}: {err}", e.data))
            })
            .collect()
    }

    /// When each event carrying text of the first choice arrived.
    pub fn content_arrivals(&self) -> Vec<Duration> {
        let has_text = |data: &str| {
            serde_json::from_str::<Value>(data).is_ok_and(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            })
        };
        self.events
            .iter()
            .filter(|e| has_text(&e.data))
            .map(|e| e.at)
            .collect()
    }

    /// The streamed text of the first choice.
    pub fn content(&self) -> Result<String, String> {
        Ok(self
            .chunks()?
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect())
    }

    /// The stream's `x-request-id`.
    pub fn request_id(&self) -> Result<String, String> {
        request_id(&self.headers)
    }

    pub fn ends_with_done(&self) -> bool {
        self.events.last().is_some_and(|e| e.data == "[DONE]") && self.rest.trim().is_empty()
    }
}
