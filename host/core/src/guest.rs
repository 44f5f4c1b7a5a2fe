//! Plugins as the engine sees them: a set of named functions of known kinds,
//! called once per partition-batch with columnar input.
//!
//! The engine does not know how a plugin runs. The WebAssembly runtime
//! (`sluice-runtime`) implements [`Guest`] for sandboxed components; the
//! engine calls through this trait, so this crate builds and tests without
//! a WebAssembly runtime. The types mirror the `sluice:plugin` WIT contract
//! (`wit/types.wit`), which is the one definition of what they mean.

use crate::error::Result;
use sluice_sdk::{Batch, Column, Kind};
use std::any::Any;
use std::sync::{Arc, RwLock};

/// One exported function, as the plugin describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Name used in jobs.
    pub name: String,
    /// Kind of function.
    pub kind: Kind,
    /// One-line description.
    pub doc: String,
}

/// What a plugin says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// SDK that built it.
    pub sdk: String,
    /// Its functions, in index order.
    pub functions: Vec<FunctionInfo>,
}

impl Description {
    /// Index and description of the function called `name`.
    pub fn function(&self, name: &str) -> Option<(u32, &FunctionInfo)> {
        self.functions
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name)
            .map(|(i, f)| (i as u32, f))
    }
}

/// Where and when a call happens (`call-context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallContext {
    /// Time of the batch being processed, in milliseconds since the Unix epoch.
    pub batch_time_ms: i64,
    /// Index of the partition within the batch.
    pub partition: u32,
    /// Number of partitions of the batch.
    pub partitions: u32,
    /// 0 on the first attempt; 1 when the host retries after a trap.
    pub attempt: u32,
}

/// The inputs of one call (`call-input`); which fields are used depends on
/// the function kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallInput {
    /// The elements (see the WIT contract for each kind).
    pub primary: Batch,
    /// Group boundaries into `primary` for reduce, update-state and map-state.
    pub groups: Vec<u32>,
    /// The second input of inverse-reduce, update-state, map-state and
    /// transform-with.
    pub secondary: Column,
}

/// What one call returns (`call-output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutput {
    /// A new batch.
    Batch(Batch),
    /// The indices of the kept input elements, strictly ascending (filter).
    Selection(Vec<u32>),
    /// Nothing (sink).
    None,
}

/// What a chained call returns (`chain-output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainOutput {
    /// The last function's output values.
    pub values: Column,
    /// How many elements each function of the chain produced.
    pub counts: Vec<u64>,
}

/// A loaded plugin the engine can call. Implementations sandbox the call,
/// retry it once after a trap, and turn every failure into an
/// [`Error::Plugin`](crate::Error::Plugin) naming the plugin, the function,
/// the batch and the partition.
pub trait Guest: Send + Sync + std::fmt::Debug {
    /// The plugin's name in the job.
    fn name(&self) -> &str;
    /// What the plugin says about itself.
    fn description(&self) -> &Description;
    /// Input bytes per call: larger partition-batches are split.
    fn input_bytes_per_call(&self) -> u64;
    /// Whether [`Guest::invoke_chain`] is available.
    fn chains(&self) -> bool {
        false
    }
    /// Calls function `function` on one partition-batch. `input` is lent:
    /// it is given back unchanged.
    fn invoke(&self, function: u32, ctx: CallContext, input: &mut CallInput) -> Result<CallOutput>;
    /// Calls the map and flat-map functions `functions` in turn on
    /// `values` (lent, given back unchanged) in one call.
    fn invoke_chain(
        &self,
        functions: &[u32],
        ctx: CallContext,
        values: &mut Column,
    ) -> Result<ChainOutput>;
    /// Where a hot swap puts the version in force for the functions made
    /// from this plugin.
    fn live_version(&self) -> &LiveVersion;
    /// Itself, for callers that know the concrete type.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// The version hot-swapped in for a plugin (`None`: the plugin itself).
#[derive(Debug, Default)]
pub struct LiveVersion(RwLock<Option<Arc<dyn Guest>>>);

impl LiveVersion {
    /// The version swapped in, if any.
    pub fn get(&self) -> Option<Arc<dyn Guest>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `version` in force (`None`: the plugin itself).
    pub fn set(&self, version: Option<Arc<dyn Guest>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = version;
    }
}

/// The version in force for the functions made from `plugin`: itself, or
/// the version a hot swap put in its place.
pub fn live(plugin: &Arc<dyn Guest>) -> Arc<dyn Guest> {
    plugin
        .live_version()
        .get()
        .unwrap_or_else(|| Arc::clone(plugin))
}

/// Index and description of `plugin`'s function `name`.
pub fn function<'a>(plugin: &'a dyn Guest, name: &str) -> Option<(u32, &'a FunctionInfo)> {
    plugin.description().function(name)
}
