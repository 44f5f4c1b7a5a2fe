//! A loaded plugin: its compiled component, `InstancePre`, description, and a
//! pool of live instances (one `Store` each) reused across batches. A trap
//! discards the instance; the call is retried once on a fresh one.

use super::bindings::{
    self, CallContext, CallInput, CallOutput, LogLevel, PluginError, PluginInfo, WitBatch,
    WitColumn,
};
use super::cache::{CacheOutcome, content_hash};
use super::capture::Capture;
use super::engine::Runtime;
use super::limits::{Capabilities, Limits, MemoryLimiter};
use sluice_core::error::{Error, PluginFault, Result};
use sluice_core::guest::{self, Description, FunctionInfo, Guest, LiveVersion};
use sluice_core::share::CallCpu;
use sluice_core::time::BatchTime;
use sluice_sdk::Kind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{InstancePre, ResourceTable};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Guest log lines of one call, capped.
#[derive(Debug, Default)]
struct GuestLogs {
    lines: Vec<(LogLevel, String)>,
    bytes: usize,
    dropped: u64,
    last_error: Option<String>,
}

/// Everything a plugin `Store` holds: WASI with nothing granted, the memory
/// limiter, captured output and the current call's logs.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    logs: GuestLogs,
    limits: Limits,
    stdout: Capture,
    stderr: Capture,
    /// The current call's clock, for its deadline and the CPU share.
    call: CallCpu,
}

impl StoreState {
    /// At each epoch tick during a call (and when a lighter tenant's batch
    /// starts, see [`sluice_core::share`]): charge the CPU used, give way if the
    /// tenant must, and stop the call once it has run for its deadline
    /// (pauses do not count).
    fn on_epoch(&mut self) -> wasmtime::Result<UpdateDeadline> {
        self.call.check();
        if self.call.running() >= self.limits.call_deadline {
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(1))
    }
}

impl wasmtime::ResourceLimiter for StoreState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Growing is where a call's page-faulting work begins (the kernel
        // zeroing what it touches, which no epoch check interrupts): a
        // point to give way to lighter tenants, as at an epoch check.
        self.call.check();
        self.limiter.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limiter.table_growing(current, desired, maximum)
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::sluice::plugin::types::Host for StoreState {}

impl bindings::sluice::plugin::host::Host for StoreState {
    fn log(&mut self, level: LogLevel, mut message: String) {
        let logs = &mut self.logs;
        if level == LogLevel::Error {
            let mut m = message.clone();
            truncate_utf8(&mut m, 4096);
            logs.last_error = Some(m);
        }
        if logs.bytes >= self.limits.log_call_bytes {
            logs.dropped += 1;
            return;
        }
        if message.len() > self.limits.log_line_bytes {
            truncate_utf8(&mut message, self.limits.log_line_bytes);
            message.push_str(" …[truncated]");
        }
        logs.bytes += message.len();
        logs.lines.push((level, message));
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Guest clocks read the batch time, not the host's clock.
struct BatchClock(Arc<AtomicI64>);

impl wasmtime_wasi::HostWallClock for BatchClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed).max(0) as u64)
    }
}

impl wasmtime_wasi::HostMonotonicClock for BatchClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(0) as u64 * 1_000_000
    }
}

struct Instance {
    store: Store<StoreState>,
    plugin: bindings::Plugin,
    /// The `chain` export, when the component has one.
    chain: Option<bindings::ChainExport>,
    clock: Arc<AtomicI64>,
}

impl Instance {
    /// Starts the clock of a call: its deadline counts from now.
    fn begin_call(&mut self) {
        self.store.data_mut().call.begin();
        self.store.set_epoch_deadline(1);
    }
}

/// Call counters of a plugin.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls made (attempts included).
    pub calls: AtomicU64,
    /// Traps (each discards an instance).
    pub traps: AtomicU64,
    /// Retries after a trap.
    pub retries: AtomicU64,
    /// Nanoseconds spent inside calls.
    pub nanos: AtomicU64,
    /// Instances created.
    pub instances: AtomicU64,
    /// Guest log lines dropped by the caps.
    pub dropped_log_lines: AtomicU64,
    /// Per function, in description order.
    pub functions: Vec<FunctionStats>,
}

/// Call counters of one plugin function.
#[derive(Debug, Default)]
pub struct FunctionStats {
    /// Calls made (attempts included).
    pub calls: AtomicU64,
    /// Nanoseconds spent inside them.
    pub nanos: AtomicU64,
    /// Traps.
    pub traps: AtomicU64,
}

/// One guest log line, as the UI lists them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuestLogLine {
    /// The plugin (by job name).
    pub plugin: String,
    /// The function that logged it.
    pub function: String,
    /// The batch it was logged in (ms).
    pub batch: i64,
    /// trace, debug, info, warn, error; or stdout / stderr.
    pub level: String,
    /// The line.
    pub line: String,
}

/// How many recent guest log lines a plugin keeps for the UI.
pub const RECENT_LOG_LINES: usize = 200;

/// A plugin loaded into the runtime, ready to be called by any worker.
pub struct Plugin {
    job: String,
    name: String,
    path: PathBuf,
    hash: String,
    description: Description,
    runtime: Arc<Runtime>,
    pre: InstancePre<StoreState>,
    indices: bindings::PluginIndices,
    /// Where the optional `chain` export is, when the component has one.
    chain: Option<bindings::ChainIndices>,
    limits: Limits,
    capabilities: Capabilities,
    pool: Mutex<Vec<Instance>>,
    cache: CacheOutcome,
    stats: PluginStats,
    recent_logs: Mutex<std::collections::VecDeque<GuestLogLine>>,
    /// The version hot-swapped in for the functions made from this plugin.
    live: LiveVersion,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("version", &self.description.version)
            .finish()
    }
}

fn kind_of(k: bindings::FunctionKind) -> Kind {
    use bindings::FunctionKind as F;
    match k {
        F::Map => Kind::Map,
        F::FlatMap => Kind::FlatMap,
        F::Filter => Kind::Filter,
        F::MapPartitions => Kind::MapPartitions,
        F::Reduce => Kind::Reduce,
        F::InverseReduce => Kind::InverseReduce,
        F::UpdateState => Kind::UpdateState,
        F::MapState => Kind::MapState,
        F::Transform => Kind::Transform,
        F::Sink => Kind::Sink,
    }
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";

fn load_error(name: &str, path: &Path, message: String) -> Error {
    Error::PluginLoad {
        plugin: name.to_string(),
        path: path.to_path_buf(),
        message,
    }
}

fn check_size(name: &str, path: &Path, bytes: u64, limits: &Limits) -> Result<()> {
    if bytes > limits.component_bytes {
        return Err(load_error(
            name,
            path,
            format!(
                "the component is {bytes} bytes, over the {} byte limit",
                limits.component_bytes
            ),
        ));
    }
    Ok(())
}
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

impl Plugin {
    /// Loads, compiles (or fetches from the cache) and describes the component
    /// at `path`, known as `name` (outside any job; see [`Plugin::load_for_job`]).
    pub fn load(
        runtime: &Arc<Runtime>,
        name: &str,
        path: &Path,
        limits: Limits,
    ) -> Result<Arc<Plugin>> {
        Plugin::load_for_job(runtime, "", name, path, limits)
    }

    /// Like [`Plugin::load`], for job `job`: its guest logs are tagged with it.
    pub fn load_for_job(
        runtime: &Arc<Runtime>,
        job: &str,
        name: &str,
        path: &Path,
        limits: Limits,
    ) -> Result<Arc<Plugin>> {
        Plugin::load_granted(runtime, job, name, path, limits, Capabilities::default())
    }

    /// Like [`Plugin::load_for_job`], with `capabilities` granted to every
    /// instance (a directory, endpoints to connect to).
    pub fn load_granted(
        runtime: &Arc<Runtime>,
        job: &str,
        name: &str,
        path: &Path,
        limits: Limits,
        capabilities: Capabilities,
    ) -> Result<Arc<Plugin>> {
        let meta = std::fs::metadata(path)
            .map_err(|e| load_error(name, path, format!("cannot read the file: {e}")))?;
        // Refuse an oversized file before reading it.
        check_size(name, path, meta.len(), &limits)?;
        let bytes = std::fs::read(path)
            .map_err(|e| load_error(name, path, format!("cannot read the file: {e}")))?;
        Plugin::from_bytes_granted(runtime, job, name, path, &bytes, limits, capabilities)
    }

    /// Like [`Plugin::load_for_job`], from bytes already in memory (`path` is for messages).
    pub fn from_bytes(
        runtime: &Arc<Runtime>,
        job: &str,
        name: &str,
        path: &Path,
        bytes: &[u8],
        limits: Limits,
    ) -> Result<Arc<Plugin>> {
        Plugin::from_bytes_granted(
            runtime,
            job,
            name,
            path,
            bytes,
            limits,
            Capabilities::default(),
        )
    }

    fn from_bytes_granted(
        runtime: &Arc<Runtime>,
        job: &str,
        name: &str,
        path: &Path,
        bytes: &[u8],
        limits: Limits,
        capabilities: Capabilities,
    ) -> Result<Arc<Plugin>> {
        let load_err = |message: String| load_error(name, path, message);
        check_size(name, path, bytes.len() as u64, &limits)?;
        if limits.memory_bytes > runtime.config.max_memory_bytes {
            return Err(load_err(format!(
                "memory limit {} MiB is over the engine's ceiling of {} MiB",
                limits.memory_bytes >> 20,
                runtime.config.max_memory_bytes >> 20
            )));
        }
        if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
            return Err(load_err(
                "not a WebAssembly file (build plugins for wasm32-wasip2)".to_string(),
            ));
        }
        if bytes[4..8] == CORE_MODULE_VERSION {
            return Err(load_err(
                "a core WebAssembly module, not a component: build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
                    .to_string(),
            ));
        }
        let hash = content_hash(bytes);
        let started = Instant::now();
        let (component, cache) = runtime
            .cache
            .load(&runtime.engine, bytes, &hash)
            .map_err(|e| load_err(format!("not a valid component: {e:#}")))?;
        tracing::debug!(
            plugin = name,
            ?cache,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled plugin"
        );
        let instance_pre = runtime.linker.instantiate_pre(&component).map_err(|e| {
            load_err(format!(
                "does not fit the host (it must implement world sluice:plugin/plugin@0.1.0 and import only it and WASI): {e:#}"
            ))
        })?;
        let indices = bindings::PluginIndices::new(&instance_pre).map_err(|e| {
            load_err(format!(
                "does not export sluice:plugin/operator@0.1.0 as the host expects: {e:#}"
            ))
        })?;
        // Optional: a plugin without it is called one function at a time.
        let chain = bindings::ChainIndices::new(&instance_pre).ok();
        let mut plugin = Plugin {
            job: job.to_string(),
            name: name.to_string(),
            path: path.to_path_buf(),
            hash,
            description: Description {
                name: String::new(),
                version: String::new(),
                sdk: String::new(),
                functions: Vec::new(),
            },
            runtime: runtime.clone(),
            pre: instance_pre,
            indices,
            chain,
            limits,
            capabilities,
            pool: Mutex::new(Vec::new()),
            cache,
            stats: PluginStats::default(),
            recent_logs: Mutex::default(),
            live: LiveVersion::default(),
        };
        let mut inst = plugin
            .instantiate()
            .map_err(|e| load_err(format!("cannot instantiate: {e}")))?;
        inst.begin_call();
        let info = inst
            .plugin
            .sluice_plugin_operator()
            .call_describe(&mut inst.store);
        inst.store.data_mut().call.end();
        let info: PluginInfo = info.map_err(|e| load_err(format!("`describe` trapped: {e:#}")))?;
        plugin.description = Description {
            name: info.name,
            version: info.version,
            sdk: info.sdk,
            functions: info
                .functions
                .into_iter()
                .map(|f| FunctionInfo {
                    name: f.name,
                    kind: kind_of(f.kind),
                    doc: f.doc,
                })
                .collect(),
        };
        plugin.stats.functions = plugin
            .description
            .functions
            .iter()
            .map(|_| FunctionStats::default())
            .collect();
        let mut seen = std::collections::HashSet::new();
        for f in &plugin.description.functions {
            if !seen.insert(f.name.as_str()) {
                return Err(load_err(format!("describes function `{}` twice", f.name)));
            }
        }
        plugin.pool_mut().push(inst);
        Ok(Arc::new(plugin))
    }

    fn pool_mut(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Plugin {
    /// The pooled instances' memory is zeroed as they go (up to
    /// `keep_resident_bytes` each): on a processor light batches keep off.
    fn drop(&mut self) {
        let pool = std::mem::take(self.pool.get_mut().unwrap_or_else(|e| e.into_inner()));
        if !pool.is_empty() {
            sluice_core::share::hold_processor(|| drop(pool));
        }
    }
}

impl Plugin {
    fn instantiate(&self) -> std::result::Result<Instance, String> {
        let stdout = Capture::new(self.limits.log_call_bytes);
        let stderr = Capture::new(self.limits.log_call_bytes);
        let clock = Arc::new(AtomicI64::new(0));
        let mut wasi = WasiCtx::builder();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(BatchClock(clock.clone()))
            .monotonic_clock(BatchClock(clock.clone()))
            .insecure_random_seed(0x5eed_5eed)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(dir) = &self.capabilities.dir {
            wasi.preopened_dir(dir, ".", wasmtime_wasi::FsPerms::ReadWrite)
                .map_err(|e| format!("granting directory {}: {e:#}", dir.display()))?;
        }
        if !self.capabilities.connect.is_empty() {
            let allowed = Arc::new(self.capabilities.connect.clone());
            wasi.allow_tcp(true).socket_addr_check(move |addr, used| {
                use wasmtime_wasi::sockets::SocketAddrUse as Use;
                let ok = match used {
                    Use::TcpConnect => allowed.contains(&addr),
                    // The implicit bind before a connect (to the wildcard
                    // address, any port); listening stays refused.
                    Use::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                    _ => false,
                };
                Box::pin(async move { ok })
            });
        }
        let wasi = wasi.build();
        let state = StoreState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_bytes: self.limits.memory_bytes as usize,
                hit: false,
            },
            logs: GuestLogs::default(),
            limits: self.limits,
            stdout,
            stderr,
            call: CallCpu::default(),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| s);
        // Every tick is a check (cheap): the deadline is kept in real
        // running time, so that an extra tick (a lighter tenant's batch
        // starting) neither shortens it nor lengthens it.
        store.epoch_deadline_callback(|mut cx| cx.data_mut().on_epoch());
        store.set_epoch_deadline(1);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("{e:#}"))?;
        let plugin = self
            .indices
            .load(&mut store, &instance)
            .map_err(|e| format!("{e:#}"))?;
        let chain = match &self.chain {
            Some(c) => Some(
                c.load(&mut store, &instance)
                    .map_err(|e| format!("the `chain` export: {e:#}"))?,
            ),
            None => None,
        };
        self.stats.instances.fetch_add(1, Ordering::Relaxed);
        Ok(Instance {
            store,
            plugin,
            chain,
            clock,
        })
    }

    /// What it may reach beyond its sandbox.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The job it was loaded for (empty outside a job).
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The name the job gives this plugin.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the component: this version's identity.
    pub fn content_hash(&self) -> &str {
        &self.hash
    }

    /// What the plugin says about itself.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// Whether the compiled code came from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// The limits its instances run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Call counters.
    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    /// The most recent guest log lines (up to [`RECENT_LOG_LINES`]), oldest first.
    pub fn recent_logs(&self) -> Vec<GuestLogLine> {
        self.recent_logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The version in force for the functions made from this plugin: itself,
    /// or the version a hot swap put in its place.
    pub fn live(self: &Arc<Self>) -> Arc<Plugin> {
        self.live
            .get()
            .and_then(|v| v.into_any().downcast::<Plugin>().ok())
            .unwrap_or_else(|| Arc::clone(self))
    }

    /// Index and description of the function called `name`.
    pub fn function(&self, name: &str) -> Option<(u32, &FunctionInfo)> {
        self.description.function(name)
    }

    /// Function `name`, to pass to a `DStream` method.
    pub fn func(self: &Arc<Self>, name: &str) -> Result<sluice_core::Func> {
        let guest: Arc<dyn Guest> = self.clone();
        sluice_core::Func::plugin(&guest, name)
    }

    fn function_name(&self, index: u32) -> String {
        self.description
            .functions
            .get(index as usize)
            .map(|f| f.name.clone())
            .unwrap_or_else(|| format!("#{index}"))
    }

    /// Whether the component exports `chain`, so that [`Guest::invoke_chain`]
    /// can run several of its functions in one call.
    pub fn chains(&self) -> bool {
        self.chain.is_some()
    }

    /// Calls function `index` on one partition-batch: on a pooled instance,
    /// retried once on a fresh instance after a trap. Typed errors are not
    /// retried. Checks the output size (but not its shape: see the caller).
    fn invoke_wit(&self, index: u32, ctx: CallContext, input: &CallInput) -> Result<CallOutput> {
        self.call(&[index], ctx, output_bytes, |inst, ctx| {
            let out = inst.plugin.sluice_plugin_operator().call_invoke(
                &mut inst.store,
                index,
                ctx,
                input,
            )?;
            Ok(out.map_err(|e| (0, e)))
        })
    }

    /// Calls the map and flat-map functions `indices` in turn on `values`
    /// (elements without keys), in one call of the component's `chain`
    /// export: the last one's values, and how many elements each produced.
    /// Retried and checked as [`Guest::invoke`]; a typed error names the
    /// function that returned it, a trap the whole chain.
    fn invoke_chain_wit(
        &self,
        indices: &[u32],
        ctx: CallContext,
        values: &WitColumn,
    ) -> Result<bindings::ChainOutput> {
        if self.chain.is_none() || indices.is_empty() {
            return Err(Error::Internal(format!(
                "plugin `{}` cannot chain {}",
                self.name,
                self.functions_name(indices)
            )));
        }
        let size = |o: &bindings::ChainOutput| column_bytes(&o.values);
        self.call(indices, ctx, size, |inst, ctx| {
            let chain = inst
                .chain
                .as_ref()
                .ok_or_else(|| wasmtime::format_err!("the instance has no `chain` export"))?;
            let out = chain.call_invoke_chain(&mut inst.store, indices, ctx, values)?;
            Ok(out.map_err(|e| (e.position, e.error)))
        })
    }

    /// The functions `indices` as errors and logs name them: `split`, or
    /// `split → pair` for a chain.
    fn functions_name(&self, indices: &[u32]) -> String {
        indices
            .iter()
            .map(|&i| self.function_name(i))
            .collect::<Vec<_>>()
            .join(" → ")
    }

    /// One call of `functions` (`run` makes it) with the pooling, retry,
    /// accounting, log and output checks every call has. `run`'s typed error
    /// carries the position in `functions` of the function at fault.
    fn call<T>(
        &self,
        functions: &[u32],
        mut ctx: CallContext,
        size: impl Fn(&T) -> u64,
        mut run: impl FnMut(
            &mut Instance,
            CallContext,
        ) -> wasmtime::Result<std::result::Result<T, (u32, PluginError)>>,
    ) -> Result<T> {
        let batch = BatchTime(ctx.batch_time_ms);
        let partition = ctx.partition;
        let name = self.functions_name(functions);
        let fail = |function: &str, fault: PluginFault| Error::Plugin {
            plugin: self.name.clone(),
            function: function.to_string(),
            batch,
            partition,
            fault: Box::new(fault),
        };
        let mut last_fault = None;
        for attempt in 0..2u32 {
            ctx.attempt = attempt;
            let popped = self.pool_mut().pop();
            let mut inst = match popped {
                Some(i) => i,
                None => self.instantiate().map_err(|m| {
                    fail(
                        &name,
                        PluginFault::Trap {
                            message: format!("cannot instantiate: {m}"),
                        },
                    )
                })?,
            };
            inst.clock.store(ctx.batch_time_ms, Ordering::Relaxed);
            inst.store.data_mut().limiter.hit = false;
            inst.begin_call();
            let started = Instant::now();
            let result = run(&mut inst, ctx);
            inst.store.data_mut().call.end();
            let nanos = started.elapsed().as_nanos() as u64;
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            self.stats.nanos.fetch_add(nanos, Ordering::Relaxed);
            // A chain's time is shared equally among its functions: the
            // host cannot see where one ends and the next begins.
            let share = nanos / functions.len().max(1) as u64;
            for &index in functions {
                if let Some(f) = self.stats.functions.get(index as usize) {
                    f.calls.fetch_add(1, Ordering::Relaxed);
                    f.nanos.fetch_add(share, Ordering::Relaxed);
                    if result.is_err() {
                        f.traps.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let last_error = self.flush_logs(&mut inst, &name, batch);
            match result {
                Ok(Ok(out)) => {
                    self.pool_mut().push(inst);
                    let bytes = size(&out);
                    if bytes > self.limits.output_bytes {
                        return Err(fail(
                            &name,
                            PluginFault::OutputTooLarge {
                                bytes,
                                limit: self.limits.output_bytes,
                            },
                        ));
                    }
                    return Ok(out);
                }
                Ok(Err((position, e))) => {
                    self.pool_mut().push(inst);
                    let kind = match e.kind {
                        bindings::WitErrorKind::InvalidInput => "invalid-input",
                        bindings::WitErrorKind::UnknownFunction => "unknown-function",
                        bindings::WitErrorKind::Unsupported => "unsupported",
                        bindings::WitErrorKind::Failed => "failed",
                    };
                    let at_fault = match functions.get(position as usize) {
                        Some(&index) => self.function_name(index),
                        None => name.clone(),
                    };
                    // Past a chain's first function, the element is one of
                    // the values the one before made, which never left the
                    // plugin: said in the message, not as an input index.
                    let (message, element) = match (position, e.element) {
                        (0, element) => (e.message, element.map(u64::from)),
                        (p, Some(i)) => {
                            let before = self.function_name(functions[p as usize - 1]);
                            let message = format!(
                                "{} (element {i} of the values `{before}` produced)",
                                e.message
                            );
                            (message, None)
                        }
                        (_, None) => (e.message, None),
                    };
                    return Err(fail(
                        &at_fault,
                        PluginFault::Refused {
                            kind: kind.to_string(),
                            message,
                            element,
                        },
                    ));
                }
                Err(trap) => {
                    self.stats.traps.fetch_add(1, Ordering::Relaxed);
                    let memory_hit = inst.store.data().limiter.hit;
                    // Discarding the instance zeroes its memory: not while
                    // a lighter tenant's batch runs, nor on its processor.
                    sluice_core::share::hold_processor(|| drop(inst));
                    let fault = if matches!(
                        trap.downcast_ref::<wasmtime::Trap>(),
                        Some(wasmtime::Trap::Interrupt)
                    ) {
                        PluginFault::Deadline {
                            deadline: self.limits.call_deadline,
                        }
                    } else if memory_hit {
                        PluginFault::Memory {
                            limit: self.limits.memory_bytes,
                        }
                    } else {
                        let detail = format!("{trap:#}");
                        let message = match last_error {
                            Some(m) => format!("{m} ({})", first_line(&detail)),
                            None => detail,
                        };
                        PluginFault::Trap { message }
                    };
                    if attempt == 0 {
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            job = %self.job,
                            plugin = %self.name,
                            function = %name,
                            batch = ctx.batch_time_ms,
                            partition = ctx.partition,
                            "instance discarded, retrying on a fresh one: {fault}"
                        );
                    }
                    last_fault = Some(fault);
                }
            }
        }
        Err(fail(
            &name,
            last_fault.unwrap_or(PluginFault::Trap {
                message: "unknown failure".to_string(),
            }),
        ))
    }

    /// Emits the call's guest log lines and captured output through `tracing`,
    /// tagged with plugin, function and batch; returns the last error line.
    fn flush_logs(&self, inst: &mut Instance, function: &str, batch: BatchTime) -> Option<String> {
        let state = inst.store.data_mut();
        let logs = std::mem::take(&mut state.logs);
        let (out, out_dropped) = state.stdout.take();
        let (err, err_dropped) = state.stderr.take();
        for (level, line) in &logs.lines {
            let (job, plugin, function, batch) = (&self.job, &self.name, &function, batch.millis());
            match level {
                LogLevel::Trace => {
                    tracing::trace!(target: "sluice::guest", job, plugin, function, batch, "{line}")
                }
                LogLevel::Debug => {
                    tracing::debug!(target: "sluice::guest", job, plugin, function, batch, "{line}")
                }
                LogLevel::Info => {
                    tracing::info!(target: "sluice::guest", job, plugin, function, batch, "{line}")
                }
                LogLevel::Warn => {
                    tracing::warn!(target: "sluice::guest", job, plugin, function, batch, "{line}")
                }
                LogLevel::Error => {
                    tracing::error!(target: "sluice::guest", job, plugin, function, batch, "{line}")
                }
            }
        }
        for (stream, bytes) in [("stdout", &out), ("stderr", &err)] {
            for line in String::from_utf8_lossy(bytes)
                .lines()
                .filter(|l| !l.is_empty())
            {
                tracing::info!(target: "sluice::guest", job = %self.job, plugin = %self.name, function = %function, batch = batch.millis(), stream, "{line}");
            }
        }
        if !logs.lines.is_empty() || !out.is_empty() || !err.is_empty() {
            let mut recent = self.recent_logs.lock().unwrap_or_else(|e| e.into_inner());
            let levels = logs.lines.iter().map(|(level, line)| {
                let level = match level {
                    LogLevel::Trace => "trace",
                    LogLevel::Debug => "debug",
                    LogLevel::Info => "info",
                    LogLevel::Warn => "warn",
                    LogLevel::Error => "error",
                };
                (level.to_string(), line.clone())
            });
            let output =
                [("stdout", &out), ("stderr", &err)]
                    .into_iter()
                    .flat_map(|(stream, bytes)| {
                        String::from_utf8_lossy(bytes)
                            .lines()
                            .filter(|l| !l.is_empty())
                            .map(|l| (stream.to_string(), l.to_string()))
                            .collect::<Vec<_>>()
                    });
            for (level, line) in levels.chain(output) {
                recent.push_back(GuestLogLine {
                    plugin: self.name.clone(),
                    function: function.to_string(),
                    batch: batch.millis(),
                    level,
                    line,
                });
                if recent.len() > RECENT_LOG_LINES {
                    recent.pop_front();
                }
            }
        }
        let dropped = logs.dropped + u64::from(out_dropped > 0) + u64::from(err_dropped > 0);
        if dropped > 0 {
            self.stats
                .dropped_log_lines
                .fetch_add(dropped, Ordering::Relaxed);
            tracing::warn!(job = %self.job, plugin = %self.name, function = %function, batch = batch.millis(), "guest log over its cap: {} lines and {} output bytes dropped", logs.dropped, out_dropped + err_dropped);
        }
        logs.last_error.or_else(|| {
            let text = String::from_utf8_lossy(&err);
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn column_bytes(c: &WitColumn) -> u64 {
    (c.bytes.len() + 4 * c.offsets.len()) as u64
}

fn output_bytes(out: &CallOutput) -> u64 {
    match out {
        CallOutput::Batch(b) => column_bytes(&b.keys) + column_bytes(&b.values),
        CallOutput::Selection(s) => 4 * s.len() as u64,
        CallOutput::None => 0,
    }
}

/// Lends a column to a call: its buffers move into the WIT record and back
/// (see [`give_back`]), never copied.
fn lend(c: &mut sluice_sdk::Column) -> WitColumn {
    WitColumn {
        bytes: std::mem::take(&mut c.bytes),
        offsets: std::mem::take(&mut c.offsets),
    }
}

/// Returns what [`lend`] took.
fn give_back(w: WitColumn, c: &mut sluice_sdk::Column) {
    c.bytes = w.bytes;
    c.offsets = w.offsets;
}

fn wit_context(ctx: guest::CallContext) -> CallContext {
    CallContext {
        batch_time_ms: ctx.batch_time_ms,
        partition: ctx.partition,
        partitions: ctx.partitions,
        attempt: ctx.attempt,
    }
}

fn column_of(w: WitColumn) -> sluice_sdk::Column {
    sluice_sdk::Column {
        bytes: w.bytes,
        offsets: w.offsets,
    }
}

impl Guest for Plugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &Description {
        &self.description
    }

    fn input_bytes_per_call(&self) -> u64 {
        self.limits.input_bytes_per_call
    }

    fn chains(&self) -> bool {
        self.chain.is_some()
    }

    fn invoke(
        &self,
        function: u32,
        ctx: guest::CallContext,
        input: &mut guest::CallInput,
    ) -> Result<guest::CallOutput> {
        let wit = CallInput {
            primary: WitBatch {
                keys: lend(&mut input.primary.keys),
                values: lend(&mut input.primary.values),
            },
            groups: std::mem::take(&mut input.groups),
            secondary: lend(&mut input.secondary),
        };
        let result = self.invoke_wit(function, wit_context(ctx), &wit);
        give_back(wit.primary.keys, &mut input.primary.keys);
        give_back(wit.primary.values, &mut input.primary.values);
        give_back(wit.secondary, &mut input.secondary);
        input.groups = wit.groups;
        Ok(match result? {
            CallOutput::Batch(b) => guest::CallOutput::Batch(sluice_sdk::Batch {
                keys: column_of(b.keys),
                values: column_of(b.values),
            }),
            CallOutput::Selection(s) => guest::CallOutput::Selection(s),
            CallOutput::None => guest::CallOutput::None,
        })
    }

    fn invoke_chain(
        &self,
        functions: &[u32],
        ctx: guest::CallContext,
        values: &mut sluice_sdk::Column,
    ) -> Result<guest::ChainOutput> {
        let wit = lend(values);
        let result = self.invoke_chain_wit(functions, wit_context(ctx), &wit);
        give_back(wit, values);
        let out = result?;
        Ok(guest::ChainOutput {
            values: column_of(out.values),
            counts: out.counts,
        })
    }

    fn live_version(&self) -> &LiveVersion {
        &self.live
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}
