//! Run-time behaviour switches and counters, shared by the Rust handle
//! ([`Controls`]) and the HTTP control endpoints (`POST /__control`, `GET /__stats`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::BackendConfig;
use crate::engine::{Engine, Slot};

/// A request as the backend received it on a `/v1/` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body, when it was JSON.
    pub body: Option<Value>,
}

/// Behaviour that can change while the backend runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub down: bool,
    pub fail_count: u32,
    pub fail_status: u16,
    pub stall_after_chunks: Option<usize>,
    pub break_after_chunks: Option<usize>,
    pub runaway_event_after_chunks: Option<usize>,
    /// Answer stream requests with one JSON body, as some servers do.
    pub never_stream: bool,
    /// Bytes of padding added to every non-streamed answer.
    pub pad_answer_bytes: usize,
    /// How long `/health` takes to answer.
    pub health_delay_ms: u64,
    pub base_latency_ms: u64,
    pub token_interval_ms: u64,
    /// Off: like servers that ignore `stream_options.include_usage` (llama.cpp's
    /// Python server), no usage in streams, nor in non-streamed answers.
    pub report_usage: bool,
    /// Sequences generated at once; the others wait (`None`: no limit).
    pub max_running: Option<usize>,
}

impl Settings {
    fn initial(cfg: &BackendConfig) -> Self {
        Settings {
            down: false,
            fail_count: 0,
            fail_status: 503,
            stall_after_chunks: None,
            break_after_chunks: None,
            runaway_event_after_chunks: None,
            never_stream: false,
            pad_answer_bytes: 0,
            health_delay_ms: 0,
            base_latency_ms: cfg.base_latency_ms,
            token_interval_ms: cfg.token_interval_ms,
            report_usage: true,
            max_running: cfg.max_running,
        }
    }
}

/// Why a `/v1/` request is refused before being looked at.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    Down,
    /// An injected failure with this status.
    Injected(u16),
}

#[derive(Debug)]
struct Shared {
    config: BackendConfig,
    settings: Mutex<Settings>,
    last_request: Mutex<Option<RecordedRequest>>,
    next_id: AtomicU64,
    requests_received: AtomicU64,
    requests_completed: AtomicU64,
    streams_cancelled: AtomicU64,
    health_checks: AtomicU64,
    engine: Arc<Engine>,
}

/// A cheap, cloneable handle on a running backend's behaviour and counters.
#[derive(Debug, Clone)]
pub struct Controls {
    shared: Arc<Shared>,
}

/// Locks ignoring poison: every critical section leaves the data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Controls {
    pub(crate) fn new(config: BackendConfig) -> Self {
        let settings = Mutex::new(Settings::initial(&config));
        Controls {
            shared: Arc::new(Shared {
                config,
                settings,
                last_request: Mutex::new(None),
                next_id: AtomicU64::new(1),
                requests_received: AtomicU64::new(0),
                requests_completed: AtomicU64::new(0),
                streams_cancelled: AtomicU64::new(0),
                health_checks: AtomicU64::new(0),
                engine: Arc::default(),
            }),
        }
    }

    pub fn region(&self) -> &str {
        &self.shared.config.region
    }

    /// While down, `/health` and every `/v1/` request answer 503.
    pub fn set_down(&self, down: bool) {
        lock(&self.shared.settings).down = down;
    }

    /// The next `count` `/v1/` requests answer `status` with an OpenAI error
    /// body; replaces any earlier count.
    ///
    /// # Panics
    /// If `status` is not a 4xx or 5xx code.
    pub fn fail_next(&self, count: u32, status: u16) {
        assert!(
            (400..=599).contains(&status),
            "fail_next needs an error status, got {status}"
        );
        let mut s = lock(&self.shared.settings);
        s.fail_count = count;
        s.fail_status = status;
    }

    /// Streams started from now on send `chunks` SSE events (the role chunk
    /// counts) and then hang without closing; `None` lets them finish.
    pub fn stall_after_chunks(&self, chunks: Option<usize>) {
        lock(&self.shared.settings).stall_after_chunks = chunks;
    }

    /// Streams started from now on send `chunks` SSE events (the role chunk
    /// counts) and then break off: the connection drops mid-body. `None`
    /// lets them finish.
    pub fn break_after_chunks(&self, chunks: Option<usize>) {
        lock(&self.shared.settings).break_after_chunks = chunks;
    }

    /// Streams started from now on send `chunks` SSE events, then 2 MiB of
    /// one event that never ends, and hang; `None` lets them finish.
    pub fn runaway_event_after_chunks(&self, chunks: Option<usize>) {
        lock(&self.shared.settings).runaway_event_after_chunks = chunks;
    }

    /// Pads every non-streamed answer with `bytes` of a `padding` field.
    pub fn pad_answers(&self, bytes: usize) {
        lock(&self.shared.settings).pad_answer_bytes = bytes;
    }

    /// Makes `/health` answer after `ms`.
    pub fn set_health_delay(&self, ms: u64) {
        lock(&self.shared.settings).health_delay_ms = ms;
    }

    pub(crate) fn health_delay_ms(&self) -> u64 {
        lock(&self.shared.settings).health_delay_ms
    }

    /// Whether stream requests get one JSON answer instead of SSE (off by
    /// default); applies to requests that arrive from now on.
    pub fn set_never_stream(&self, never: bool) {
        lock(&self.shared.settings).never_stream = never;
    }

    /// Whether answers carry `usage` (on by default); applies to requests that
    /// arrive from now on.
    pub fn set_report_usage(&self, report: bool) {
        lock(&self.shared.settings).report_usage = report;
    }

    /// Applies to requests that arrive from now on.
    pub fn set_latency(&self, base_ms: u64, token_interval_ms: u64) {
        let mut s = lock(&self.shared.settings);
        s.base_latency_ms = base_ms;
        s.token_interval_ms = token_interval_ms;
    }

    /// At most `max` sequences generate at once; the others queue, and
    /// `/metrics` shows it (`None`: no limit). Applies to those waiting too.
    pub fn set_max_running(&self, max: Option<usize>) {
        lock(&self.shared.settings).max_running = max;
        self.shared.engine.wake();
    }

    /// Sequences generating and waiting now.
    pub fn batch(&self) -> (usize, usize) {
        self.shared.engine.counts()
    }

    /// A place in the running batch, once there is one.
    pub(crate) async fn slot(&self) -> Slot {
        let shared = &self.shared;
        shared
            .engine
            .slot(|| lock(&shared.settings).max_running)
            .await
    }

    /// The body of `GET /metrics`.
    pub(crate) fn metrics(&self) -> String {
        let max = lock(&self.shared.settings).max_running;
        let model = self.models().first().map_or("sim", String::as_str);
        self.shared.engine.metrics(model, max)
    }

    /// Back to the start: configured latency, up, no injected failures, counters
    /// at zero and no recorded request.
    pub fn reset(&self) {
        *lock(&self.shared.settings) = Settings::initial(&self.shared.config);
        self.shared.engine.wake();
        *lock(&self.shared.last_request) = None;
        for counter in [
            &self.shared.requests_received,
            &self.shared.requests_completed,
            &self.shared.streams_cancelled,
            &self.shared.health_checks,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// `/v1/` requests that arrived, whatever became of them.
    pub fn requests_received(&self) -> u64 {
        self.shared.requests_received.load(Ordering::Relaxed)
    }

    /// `/v1/` requests answered successfully; a stream counts once `[DONE]` is sent.
    pub fn requests_completed(&self) -> u64 {
        self.shared.requests_completed.load(Ordering::Relaxed)
    }

    /// Streams whose client went away before `[DONE]` (stalled ones included).
    /// Seen shortly after the disconnect, not at once: poll for it.
    pub fn streams_cancelled(&self) -> u64 {
        self.shared.streams_cancelled.load(Ordering::Relaxed)
    }

    /// `GET /health` requests, whether answered 200 or 503.
    pub fn health_checks(&self) -> u64 {
        self.shared.health_checks.load(Ordering::Relaxed)
    }

    /// The last `/v1/` request received.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.last_request).clone()
    }

    /// The JSON body of the last `/v1/` request received, if it was JSON.
    pub fn last_request_body(&self) -> Option<Value> {
        lock(&self.shared.last_request)
            .as_ref()
            .and_then(|r| r.body.clone())
    }

    pub(crate) fn models(&self) -> &[String] {
        &self.shared.config.models
    }

    /// The key `/v1/` requests must present, if any.
    pub(crate) fn api_key(&self) -> Option<&str> {
        self.shared.config.api_key.as_deref()
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn is_down(&self) -> bool {
        lock(&self.shared.settings).down
    }

    /// Settings for a new `/v1/` request, or why it must be refused
    /// (consuming one injected failure).
    pub(crate) fn admit(&self) -> Result<Settings, Refusal> {
        let mut s = lock(&self.shared.settings);
        if s.down {
            return Err(Refusal::Down);
        }
        if s.fail_count > 0 {
            s.fail_count -= 1;
            return Err(Refusal::Injected(s.fail_status));
        }
        Ok(*s)
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        self.shared
            .requests_received
            .fetch_add(1, Ordering::Relaxed);
        *lock(&self.shared.last_request) = Some(request);
    }

    pub(crate) fn count_completed(&self) {
        self.shared
            .requests_completed
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_cancelled(&self) {
        self.shared
            .streams_cancelled
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_health_check(&self) {
        self.shared.health_checks.fetch_add(1, Ordering::Relaxed);
    }

    /// The body of `GET /__stats`: settings, counters and the last request.
    pub(crate) fn stats(&self) -> Value {
        let s = *lock(&self.shared.settings);
        let last = self.last_request();
        let last_request = last.as_ref().map(|r| {
            // Repeated headers are joined the way HTTP allows folding them.
            let mut headers = Map::new();
            for (name, value) in &r.headers {
                let merged = match headers.get(name).and_then(Value::as_str) {
                    Some(prev) => format!("{prev}, {value}"),
                    None => value.clone(),
                };
                headers.insert(name.clone(), Value::String(merged));
            }
            json!({"method": r.method, "path": r.path, "headers": headers})
        });
        json!({
            "region": self.region(),
            "down": s.down,
            "fail_next": {"count": s.fail_count, "status": s.fail_status},
            "stall_after_chunks": s.stall_after_chunks,
            "break_after_chunks": s.break_after_chunks,
            "runaway_event_after_chunks": s.runaway_event_after_chunks,
            "never_stream": s.never_stream,
            "pad_answer_bytes": s.pad_answer_bytes,
            "health_delay_ms": s.health_delay_ms,
            "latency": {"base_ms": s.base_latency_ms, "token_interval_ms": s.token_interval_ms},
            "report_usage": s.report_usage,
            "max_running": s.max_running,
            "running": self.batch().0,
            "waiting": self.batch().1,
            "requests_received": self.requests_received(),
            "requests_completed": self.requests_completed(),
            "streams_cancelled": self.streams_cancelled(),
            "health_checks": self.health_checks(),
            "last_request": last_request,
            "last_request_body": last.and_then(|r| r.body),
        })
    }

    /// Applies a `POST /__control` body; nothing changes if any part is invalid.
    pub(crate) fn apply_control(&self, body: &[u8]) -> Result<(), String> {
        let req: ControlRequest =
            serde_json::from_slice(body).map_err(|e| format!("invalid control request: {e}"))?;
        if let Some(f) = &req.fail_next
            && !(400..=599).contains(&f.status)
        {
            return Err(format!(
                "fail_next.status must be a 4xx or 5xx code, got {}",
                f.status
            ));
        }
        if req.reset {
            self.reset();
        }
        let mut s = lock(&self.shared.settings);
        if let Some(down) = req.down {
            s.down = down;
        }
        if let Some(f) = req.fail_next {
            s.fail_count = f.count;
            s.fail_status = f.status;
        }
        if let Some(stall) = req.stall_after_chunks {
            s.stall_after_chunks = stall;
        }
        if let Some(cut) = req.break_after_chunks {
            s.break_after_chunks = cut;
        }
        if let Some(runaway) = req.runaway_event_after_chunks {
            s.runaway_event_after_chunks = runaway;
        }
        if let Some(never) = req.never_stream {
            s.never_stream = never;
        }
        if let Some(bytes) = req.pad_answer_bytes {
            s.pad_answer_bytes = bytes;
        }
        if let Some(ms) = req.health_delay_ms {
            s.health_delay_ms = ms;
        }
        if let Some(l) = req.latency {
            s.base_latency_ms = l.base_ms.unwrap_or(s.base_latency_ms);
            s.token_interval_ms = l.token_interval_ms.unwrap_or(s.token_interval_ms);
        }
        if let Some(report) = req.report_usage {
            s.report_usage = report;
        }
        if let Some(max) = req.max_running {
            s.max_running = max;
            drop(s);
            self.shared.engine.wake();
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlRequest {
    #[serde(default)]
    reset: bool,
    down: Option<bool>,
    fail_next: Option<FailNext>,
    /// Absent leaves the setting alone; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    stall_after_chunks: Option<Option<usize>>,
    #[serde(default, deserialize_with = "present")]
    break_after_chunks: Option<Option<usize>>,
    #[serde(default, deserialize_with = "present")]
    runaway_event_after_chunks: Option<Option<usize>>,
    never_stream: Option<bool>,
    pad_answer_bytes: Option<usize>,
    health_delay_ms: Option<u64>,
    latency: Option<Latency>,
    report_usage: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    max_running: Option<Option<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailNext {
    count: u32,
    #[serde(default = "default_fail_status")]
    status: u16,
}

fn default_fail_status() -> u16 {
    503
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Latency {
    base_ms: Option<u64>,
    token_interval_ms: Option<u64>,
}

/// Tells a field given as `null` (Some(None)) from an absent one (None, by default).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
