//! The core as a WebAssembly component in wasmtime: compiled once (cached on
//! disk), instantiated from an `InstancePre` into a fixed set of warm
//! instances, each call bounded by an epoch deadline and a memory limit. A
//! trap poisons only its instance: it is replaced and the caller gets an
//! internal error; the rest keep serving.

pub mod convert;

use anyhow::{Context, Result, anyhow};
use edgegate_core::GatewayError;
use edgegate_core::gateway::RequestContext;
use edgegate_core::request::HttpRequest;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Cache, CacheConfig, Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

wasmtime::component::bindgen!({ path: "wit", world: "gateway" });

pub use exports::edgegate::gateway::core as guest;

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
    /// Bumped whenever the instance is replaced, so stale exchanges are caught.
    generation: u64,
}

pub struct Sandbox {
    engine: Engine,
    pre: GatewayPre<HostState>,
    gateway_config: String,
    secrets: Vec<(String, String)>,
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
    pub fn new(
        gateway_config: String,
        secrets: Vec<(String, String)>,
        limits: SandboxLimits,
    ) -> Result<Self> {
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
            gateway_config,
            secrets,
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
            .call_init(&mut store, &self.gateway_config, &self.secrets)?
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

    /// Admits `request` into a new exchange living in one instance; its
    /// first actions come with it.
    pub fn start(
        self: &Arc<Self>,
        request: &HttpRequest,
        ctx: &RequestContext,
        now_us: u64,
    ) -> CallResult<(SandboxedExchange, Vec<guest::Action>)> {
        let request = convert::request(request);
        let ctx = convert::context(ctx);
        let (index, mut slot) = self.acquire();
        let queue_us = Self::take_queue_time().as_micros() as u64;
        let (resource, actions) = self.run(index, &mut slot, |g, s| {
            g.exchange().call_start(s, &request, &ctx, now_us, queue_us)
        })?;
        let exchange = SandboxedExchange {
            sandbox: self.clone(),
            slot: index,
            generation: slot.generation,
            resource: Some(resource),
        };
        Ok((exchange, actions))
    }
}

/// A request's exchange in its instance; dropped from the instance with it.
pub struct SandboxedExchange {
    sandbox: Arc<Sandbox>,
    slot: usize,
    generation: u64,
    resource: Option<ResourceAny>,
}

impl SandboxedExchange {
    /// Reports `events` (in order); the actions that follow.
    pub fn handle(
        &mut self,
        events: &[guest::Event],
        now_us: u64,
    ) -> CallResult<Vec<guest::Action>> {
        let sandbox = &self.sandbox;
        let mut slot = sandbox.lock(self.slot);
        let resource = match self.resource {
            Some(r) if slot.generation == self.generation => r,
            _ => {
                return Err(SandboxFault(
                    "the exchange's sandbox instance was restarted".into(),
                ));
            }
        };
        sandbox.run(self.slot, &mut slot, |g, s| {
            g.exchange().call_handle(s, resource, events, now_us)
        })
    }
}

impl Drop for SandboxedExchange {
    fn drop(&mut self) {
        let Some(resource) = self.resource.take() else {
            return;
        };
        let mut slot = self.sandbox.lock(self.slot);
        // A replaced instance took its exchanges with it.
        if slot.generation == self.generation {
            let slot = &mut *slot;
            if resource.resource_drop(&mut slot.store).is_err() {
                eprintln!("edgegate: could not drop an exchange in its sandbox instance");
            }
        }
    }
}
