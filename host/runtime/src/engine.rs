//! The process-wide wasmtime [`Engine`]: Cranelift, epoch interruption driven
//! by one ticker thread, the pooling allocator; plus the linker that grants
//! plugins the `host` interface and a WASI with nothing in it.

use super::cache::CompileCache;
use super::instance::StoreState;
use sluice_core::error::{Error, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the ticker advances the engine's epoch: the deadline granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// How often it does while a light tenant's batch runs (see
/// [`sluice_core::share`]): running calls check as often, so that one which has
/// turned long is seen at once. The cost is the ticker's wakeup and one
/// epoch callback per running call each millisecond, while light batches
/// run.
pub const FAST_TICK: Duration = Duration::from_millis(1);
/// Largest table any plugin may grow to (Python/JS guests have large tables).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Engine-wide settings: the ceilings that per-job limits cannot exceed.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Largest linear memory any instance may have (the pooling slot size).
    pub max_memory_bytes: u64,
    /// Most component instances alive at once across all jobs.
    pub max_instances: u32,
    /// Where compiled plugins are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// How much of a linear memory stays resident, zeroed, when its
    /// instance ends (for the next instance in its slot): the memory is
    /// cleared with `memset` up to this size instead of being unmapped.
    /// Unmapping interrupts every thread of the process (the kernel flushes
    /// their address translations), so in a server a tenant whose
    /// instances keep trapping would slow the others; the price is up to
    /// this much resident memory per pool slot that has been used. Default
    /// 64 MiB.
    pub keep_resident_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_memory_bytes: 1 << 30,
            max_instances: 128,
            cache_dir: default_cache_dir(),
            keep_resident_bytes: 64 << 20,
        }
    }
}

/// `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SLUICE_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("sluice"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("sluice"))
}

/// One wasmtime engine and what goes with it; shared by every job in the process.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreState>,
    pub(crate) cache: CompileCache,
    pub(crate) config: RuntimeConfig,
    stop_ticker: Arc<AtomicBool>,
    /// Its registration with [`sluice_core::share`] (running calls check at
    /// once when a light batch starts).
    waker: u64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish()
    }
}

impl Runtime {
    /// Creates an engine with `config`. Prefer [`Runtime::shared`]: one engine per process.
    pub fn new(config: RuntimeConfig) -> Result<Arc<Runtime>> {
        let engine_err =
            |e: wasmtime::Error| Error::Internal(format!("creating the wasm engine: {e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 8)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_core_instances_per_component(64)
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_memory_size(config.max_memory_bytes as usize)
            .max_component_instance_size(4 << 20)
            .max_core_instance_size(4 << 20);
        // A memory is reset by `memset` up to this size, not by `madvise`:
        // unmapping pages makes the kernel interrupt every thread of the
        // process to flush its address translations, so a tenant whose
        // instances keep being discarded (a memory bomb) would slow every
        // other tenant's batches.
        pool.linear_memory_keep_resident(config.keep_resident_bytes as usize);
        let mut wc = Config::new();
        wc.strategy(wasmtime::Strategy::Cranelift)
            .epoch_interruption(true)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .parallel_compilation(true);
        // `SLUICE_PERF_MAP=1`: guest code named in /tmp/perf-PID.map, so
        // `perf report` shows the plugin's functions (for profiling).
        if std::env::var_os("SLUICE_PERF_MAP").is_some_and(|v| v == "1") {
            wc.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wc).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_err)?;
        super::bindings::Plugin::add_to_linker::<StoreState, HasSelf<StoreState>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_err)?;
        let cache = CompileCache::new(config.cache_dir.clone(), &engine);
        let waker = {
            let engine = engine.clone();
            sluice_core::share::register_waker(Arc::new(move || engine.increment_epoch()))
        };
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("sluice-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        sluice_core::share::tick_sleep(
                            if sluice_core::share::light_batch_running() {
                                FAST_TICK
                            } else {
                                EPOCH_TICK
                            },
                        );
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::io("starting the epoch ticker thread", e))?;
        }
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache,
            config,
            stop_ticker,
            waker,
        }))
    }

    /// The process-wide runtime with default settings (created on first use).
    pub fn shared() -> Result<Arc<Runtime>> {
        static SHARED: OnceLock<Arc<Runtime>> = OnceLock::new();
        if let Some(r) = SHARED.get() {
            return Ok(r.clone());
        }
        let r = Runtime::new(RuntimeConfig::default())?;
        Ok(SHARED.get_or_init(|| r).clone())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        sluice_core::share::forget_waker(self.waker);
    }
}
