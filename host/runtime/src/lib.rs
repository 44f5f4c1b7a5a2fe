//! # sluice-runtime: the sandboxed plugin runtime
//!
//! One wasmtime engine per process, a compile cache, plugins as pools of
//! sandboxed instances ([`Plugin`], which implements the engine's
//! [`Guest`] trait), custom receivers ([`Plugin::receiver_source`]),
//! limits, and the [`LoadPlugins`] methods that load a job's plugins into a
//! `StreamingContext`.

pub mod bindings;
mod cache;
mod capture;
mod engine;
mod instance;
mod limits;

pub use cache::{CacheOutcome, content_hash};
pub use engine::{EPOCH_TICK, FAST_TICK, Runtime, RuntimeConfig, default_cache_dir};
pub use instance::{
    FunctionStats, GuestLogLine, MAX_PAUSE, MAX_RECORDS_PER_POLL, POLL_WAIT, Plugin, PluginStats,
    RECENT_LOG_LINES, StoreState,
};
pub use limits::{Capabilities, Limits};
pub use sluice_core::guest::{Description, FunctionInfo, Guest};

mod load;
pub use load::LoadPlugins;
