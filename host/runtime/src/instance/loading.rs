//! Loading a plugin: checking the file, compiling it (or fetching it from
//! the cache), linking it against the host and asking it to describe itself.

use super::store::Instance;
use super::{FunctionStats, Plugin, PluginStats};
use crate::bindings::{self, PluginInfo};
use crate::cache::content_hash;
use crate::engine::Runtime;
use crate::limits::{Capabilities, Limits};
use sluice_core::error::{Error, Result};
use sluice_core::guest::{Description, FunctionInfo, LiveVersion};
use sluice_sdk::Kind;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
        F::Receiver => Kind::Receiver,
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

    /// A runner (a component exporting `define`, as the Python driver's)
    /// given `program`: every instance is defined by it, and the functions
    /// it describes are the program's. Its identity is the component's and
    /// the program's hash together.
    pub fn defined(
        runtime: &Arc<Runtime>,
        job: &str,
        name: &str,
        path: &Path,
        bytes: &[u8],
        program: &[u8],
        limits: Limits,
    ) -> Result<Arc<Plugin>> {
        Plugin::load_bytes(
            runtime,
            job,
            name,
            path,
            bytes,
            Some(program),
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
        Plugin::load_bytes(runtime, job, name, path, bytes, None, limits, capabilities)
    }

    #[allow(clippy::too_many_arguments)]
    fn load_bytes(
        runtime: &Arc<Runtime>,
        job: &str,
        name: &str,
        path: &Path,
        bytes: &[u8],
        program: Option<&[u8]>,
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
        // Optional: only a plugin with receivers needs it.
        let receiver = bindings::ReceiverIndices::new(&instance_pre).ok();
        // A runner must be given its program, and only a runner takes one.
        let define = match (bindings::DefineIndices::new(&instance_pre).ok(), program) {
            (Some(define), Some(program)) => Some((define, Arc::<[u8]>::from(program))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(load_err(
                    "is a runner (it exports `define`): its functions come from a program, which a job gives it (the Python driver does)".to_string(),
                ));
            }
            (None, Some(_)) => {
                return Err(load_err(
                    "is given a program but does not export sluice:plugin/define@0.1.0 (it is not a runner)".to_string(),
                ));
            }
        };
        let hash = match program {
            Some(program) => content_hash(&[hash.as_bytes(), program].concat()),
            None => hash,
        };
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
            receiver,
            define,
            limits,
            capabilities,
            pool: Mutex::new(Vec::new()),
            cache,
            stats: PluginStats::default(),
            recent_logs: Mutex::default(),
            live: LiveVersion::default(),
        };
        let inst = plugin.describe()?;
        plugin.pool_mut().push(inst);
        Ok(Arc::new(plugin))
    }

    /// Asks a fresh instance what the plugin exports (its description and
    /// functions, each named once) and returns the instance.
    fn describe(&mut self) -> Result<Instance> {
        let (name, path) = (self.name.clone(), self.path.clone());
        let load_err = |message: String| load_error(&name, &path, message);
        let mut inst = self
            .instantiate()
            .map_err(|e| load_err(format!("cannot instantiate: {e}")))?;
        inst.begin_call();
        let info = inst
            .plugin
            .sluice_plugin_operator()
            .call_describe(&mut inst.store);
        inst.store.data_mut().call.end();
        let info: PluginInfo = info.map_err(|e| load_err(format!("`describe` trapped: {e:#}")))?;
        self.description = Description {
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
        self.stats.functions = self
            .description
            .functions
            .iter()
            .map(|_| FunctionStats::default())
            .collect();
        let mut seen = std::collections::HashSet::new();
        for f in &self.description.functions {
            if !seen.insert(f.name.as_str()) {
                return Err(load_err(format!("describes function `{}` twice", f.name)));
            }
        }
        Ok(inst)
    }
}
