//! The core as a WebAssembly component in wasmtime: compiled once (cached on
//! disk), instantiated from an `InstancePre` into a fixed set of warm
//! instances, each call bounded by an epoch deadline and a memory limit. A
//! trap poisons only its instance: it is replaced and the caller gets an
//! internal error; the rest keep serving.

use anyhow::{Context, Result, anyhow};
use edgegate_core::GatewayError;
use edgegate_core::gateway::{Decision, LocalResponse, RequestContext};
use edgegate_core::geo::RegionStatus;
use edgegate_core::health::{HealthBoard, Observation};
use edgegate_core::request::HttpRequest;
use edgegate_core::response::{Metered, ResponseKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Cache, CacheConfig, Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

wasmtime::component::bindgen!({ path: "wit", world: "gateway" });

use exports::edgegate::gateway::core as guest;

const GUEST_WASM: &[u8] = include_bytes!(env!("EDGEGATE_GUEST_WASM"));
const EPOCH_TICK: Duration = Duration::from_millis(10);

thread_local! {
    static QUEUED_US: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// Linear memory an instance may grow to.
    pub memory_bytes: usize,
    /// Wall time one call may run before it is interrupted.
    pub call_deadline: Duration,
    /// Warm instances (calls on different instances run in parallel).
    pub instances: usize,
    /// Where compiled code is cached between runs (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 128 << 20,
            call_deadline: Duration::from_secs(2),
            instances: std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            cache_dir: std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/edgegate/wasmtime")),
        }
    }
}

struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct Slot {
    store: Store<HostState>,
    gateway: Gateway,
    /// Bumped whenever the instance is replaced, so stale stream ids are caught.
    generation: u64,
}

/// A stream observer living in one instance.
#[derive(Debug, Clone, Copy)]
pub struct StreamHandle {
    slot: usize,
    generation: u64,
    id: u64,
}

pub struct Sandbox {
    engine: Engine,
    pre: GatewayPre<HostState>,
    config_json: String,
    secrets_json: String,
    limits: SandboxLimits,
    slots: Vec<Mutex<Slot>>,
    next: AtomicUsize,
    traps: AtomicU64,
    ticking: Arc<AtomicBool>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

/// A failed sandbox call: the instance trapped (and was replaced) or the
/// guest could not be reached.
#[derive(Debug)]
pub struct SandboxFault(pub String);

impl From<SandboxFault> for GatewayError {
    fn from(f: SandboxFault) -> Self {
        GatewayError::Internal { message: f.0 }
    }
}

type CallResult<T> = std::result::Result<T, SandboxFault>;

impl Sandbox {
    /// Compiles (or loads from cache) the component and starts `limits.instances`
    /// instances, each initialised with the config. A bad config fails here.
    pub fn new(config_json: String, secrets_json: String, limits: SandboxLimits) -> Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // `perf` can name JIT-compiled guest functions with a perf map.
        if std::env::var_os("EDGEGATE_WASM_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(dir) = &limits.cache_dir {
            std::fs::create_dir_all(dir).ok();
            let mut cache = CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(
                Cache::new(cache)
                    .map_err(anyhow::Error::from)
                    .context("wasmtime cache")?,
            ));
        }
        let engine = Engine::new(&config)?;
        let component = Component::new(&engine, GUEST_WASM)
            .map_err(anyhow::Error::from)
            .context("compile the core component")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        let pre = GatewayPre::new(linker.instantiate_pre(&component)?)?;

        let ticking = Arc::new(AtomicBool::new(true));
        let ticker_engine = engine.clone();
        let flag = ticking.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })?;

        let mut sandbox = Sandbox {
            engine,
            pre,
            config_json,
            secrets_json,
            limits: limits.clone(),
            slots: Vec::new(),
            next: AtomicUsize::new(0),
            traps: AtomicU64::new(0),
            ticking,
        };
        for _ in 0..limits.instances.max(1) {
            let slot = sandbox.instantiate(0)?;
            sandbox.slots.push(Mutex::new(slot));
        }
        Ok(sandbox)
    }

    fn instantiate(&self, generation: u64) -> Result<Slot> {
        let wasi = WasiCtxBuilder::new().inherit_stderr().build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                wasi,
                table: ResourceTable::new(),
                limits,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        let gateway = self.pre.instantiate(&mut store)?;
        gateway
            .edgegate_gateway_core()
            .call_init(&mut store, &self.config_json, &self.secrets_json)?
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Slot {
            store,
            gateway,
            generation,
        })
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.call_deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// Instances replaced after a trap since start.
    pub fn traps(&self) -> u64 {
        self.traps.load(Ordering::Relaxed)
    }

    /// A free instance if there is one, else wait for the next in turn.
    fn acquire(&self) -> (usize, MutexGuard<'_, Slot>) {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let index = (start + i) % n;
            if let Ok(guard) = self.slots[index].try_lock() {
                return (index, guard);
            }
        }
        let index = start % n;
        let waited = std::time::Instant::now();
        let guard = self.lock(index);
        QUEUED_US.with(|q| q.set(q.get() + waited.elapsed().as_micros() as u64));
        (index, guard)
    }

    /// Microseconds this thread spent waiting for an instance since the last call.
    pub fn take_queue_time() -> Duration {
        Duration::from_micros(QUEUED_US.with(|q| q.replace(0)))
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Slot> {
        // A panic while holding the lock cannot leave a half-made call behind
        // (calls are replaced on trap), so a poisoned lock is still usable.
        self.slots[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run<T>(
        &self,
        index: usize,
        slot: &mut Slot,
        f: impl FnOnce(&guest::Guest, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> CallResult<T> {
        slot.store.set_epoch_deadline(self.deadline_ticks());
        let result = f(slot.gateway.edgegate_gateway_core(), &mut slot.store);
        result.map_err(|trap| {
            self.traps.fetch_add(1, Ordering::Relaxed);
            let message = format!("the sandboxed core failed: {}", trap.root_cause());
            match self.instantiate(slot.generation + 1) {
                Ok(fresh) => *slot = fresh,
                Err(e) => eprintln!("edgegate: could not replace sandbox instance {index}: {e:#}"),
            }
            SandboxFault(message)
        })
    }

    fn call<T>(
        &self,
        f: impl FnOnce(&guest::Guest, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> CallResult<T> {
        let (index, mut slot) = self.acquire();
        self.run(index, &mut slot, f)
    }

    pub fn admit(
        &self,
        req: &HttpRequest,
        ctx: &RequestContext,
    ) -> std::result::Result<Decision, GatewayError> {
        let request = guest::HttpRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            headers: req.headers.pairs().to_vec(),
            body: req.body.clone(),
        };
        let ctx = to_json(ctx);
        match self.call(|g, s| g.call_admit(s, &request, &ctx))? {
            Ok(admitted) => {
                let mut decision: Decision = from_json(&admitted.decision_json)?;
                if let Decision::Forward(plan) = &mut decision {
                    plan.bodies = admitted.bodies;
                }
                Ok(decision)
            }
            Err(error) => Err(from_json(&error)?),
        }
    }

    pub fn parse_upstream_body(
        &self,
        kind: ResponseKind,
        body: &[u8],
    ) -> std::result::Result<Metered, GatewayError> {
        let kind = kind_name(kind);
        match self.call(|g, s| g.call_parse_upstream_body(s, kind, body))? {
            Ok(metered) => Ok(from_json(&metered)?),
            Err(error) => Err(from_json(&error)?),
        }
    }

    pub fn upstream_error(&self, status: u16, body: &[u8]) -> GatewayError {
        match self.call(|g, s| g.call_upstream_error(s, status, body)) {
            Ok(json) => from_json(&json).unwrap_or_else(GatewayError::from),
            Err(fault) => fault.into(),
        }
    }

    pub fn replay_as_sse(
        &self,
        kind: ResponseKind,
        response_json: &str,
        include_usage: bool,
    ) -> CallResult<std::result::Result<Vec<u8>, String>> {
        let kind = kind_name(kind);
        self.call(|g, s| g.call_replay_as_sse(s, kind, response_json, include_usage))
    }

    /// The OpenAI-shaped response for an error. Falls back to a plain 500 if
    /// the sandbox itself is failing, so a client always gets an answer.
    pub fn error_response(&self, err: &GatewayError, request_id: &str) -> LocalResponse {
        let error = to_json(err);
        self.call(|g, s| g.call_error_response(s, &error, request_id))
            .and_then(|json| from_json(&json))
            .unwrap_or_else(|_| {
                LocalResponse::json(
                    500,
                    r#"{"error":{"message":"Internal gateway error.","type":"server_error","param":null,"code":"internal_error"}}"#.into(),
                    request_id,
                )
            })
    }

    pub fn stream_open(
        &self,
        kind: ResponseKind,
        strip_usage_chunk: bool,
    ) -> CallResult<StreamHandle> {
        let (index, mut slot) = self.acquire();
        let kind = kind_name(kind);
        let id = self.run(index, &mut slot, |g, s| {
            g.call_stream_open(s, kind, strip_usage_chunk)
        })?;
        Ok(StreamHandle {
            slot: index,
            generation: slot.generation,
            id,
        })
    }

    fn on_stream<T>(
        &self,
        h: StreamHandle,
        f: impl FnOnce(&guest::Guest, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> CallResult<T> {
        let mut slot = self.lock(h.slot);
        if slot.generation != h.generation {
            return Err(SandboxFault(
                "the stream's sandbox instance was restarted".into(),
            ));
        }
        self.run(h.slot, &mut slot, f)
    }

    pub fn stream_feed(&self, h: StreamHandle, chunk: &[u8]) -> CallResult<Vec<u8>> {
        self.on_stream(h, |g, s| g.call_stream_feed(s, h.id, chunk))?
            .map_err(SandboxFault)
    }

    pub fn stream_finish(&self, h: StreamHandle) -> CallResult<(Vec<u8>, Metered)> {
        let (tail, metered) = self
            .on_stream(h, |g, s| g.call_stream_finish(s, h.id))?
            .map_err(SandboxFault)?;
        Ok((tail, from_json(&metered)?))
    }

    /// What a stream that ended early used; `Unknown` if its instance is
    /// gone (its streams went with it).
    pub fn stream_close(&self, h: StreamHandle) -> Metered {
        match self.on_stream(h, |g, s| g.call_stream_close(s, h.id)) {
            Ok(Some(json)) => from_json(&json).unwrap_or(Metered::Unknown),
            _ => Metered::Unknown,
        }
    }

    pub fn health_observe(
        &self,
        board: &HealthBoard,
        region: &str,
        now_ms: u64,
        obs: Observation,
    ) -> CallResult<HealthBoard> {
        let (board, obs) = (to_json(board), to_json(&obs));
        let out = self.call(|g, s| g.call_health_observe(s, &board, region, now_ms, &obs))?;
        from_json(&out)
    }

    pub fn health_statuses(
        &self,
        board: &HealthBoard,
        now_ms: u64,
    ) -> CallResult<Vec<RegionStatus>> {
        let board = to_json(board);
        let out = self.call(|g, s| g.call_health_statuses(s, &board, now_ms))?;
        from_json(&out)
    }
}

fn kind_name(kind: ResponseKind) -> &'static str {
    match kind {
        ResponseKind::Chat => "chat",
        ResponseKind::Completion => "completion",
        ResponseKind::Embedding => "embedding",
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("core types serialise")
}

fn from_json<T: DeserializeOwned>(json: &str) -> CallResult<T> {
    serde_json::from_str(json)
        .map_err(|e| SandboxFault(format!("unexpected answer from the sandbox: {e}")))
}
