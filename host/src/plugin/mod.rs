//! The sandboxed plugin runtime: one wasmtime engine per process, a compile
//! cache, plugins as pools of sandboxed instances.

pub mod bindings;
mod cache;
mod capture;
mod engine;
mod instance;
mod limits;

pub use cache::{CacheOutcome, content_hash};
pub use engine::{EPOCH_TICK, FAST_TICK, Runtime, RuntimeConfig, default_cache_dir};
pub use instance::{
    Description, FunctionInfo, FunctionStats, GuestLogLine, Plugin, PluginStats, RECENT_LOG_LINES,
    StoreState,
};
pub use limits::{Capabilities, Limits};
