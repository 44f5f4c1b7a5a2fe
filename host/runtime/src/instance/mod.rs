//! A loaded plugin: its compiled component, `InstancePre`, description, and a
//! pool of live instances (one `Store` each) reused across batches. A trap
//! discards the instance; the call is retried once on a fresh one.

mod call;
mod guest;
mod loading;
mod receiver;
mod store;

pub use receiver::{MAX_PAUSE, MAX_RECORDS_PER_POLL, POLL_WAIT};
pub use store::StoreState;

use crate::bindings;
use crate::cache::CacheOutcome;
use crate::engine::Runtime;
use crate::limits::{Capabilities, Limits};
use sluice_core::error::Result;
use sluice_core::guest::{Description, FunctionInfo, Guest, LiveVersion};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use store::Instance;
use wasmtime::component::InstancePre;

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
    /// Where the optional `receiver` export is, when the component has one.
    receiver: Option<bindings::ReceiverIndices>,
    /// Where the `define` export is and the program every new instance is
    /// given, for a component whose functions the job defines (a runner).
    define: Option<(bindings::DefineIndices, Arc<[u8]>)>,
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

impl Plugin {
    fn pool_mut(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
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

    /// SHA-256 of the component (and of the program a runner is given):
    /// this version's identity.
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

    /// Whether the component exports `receiver`, so that its receiver
    /// functions can be sources ([`Plugin::receiver_source`]).
    pub fn receives(&self) -> bool {
        self.receiver.is_some()
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
