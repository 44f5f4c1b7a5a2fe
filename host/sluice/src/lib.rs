//! # Sluice: micro-batch stream processing with sandboxed WebAssembly operators
//!
//! The host owns sources, batching, the DStream graph, shuffles and outputs;
//! user functions (map, flat_map, filter, reduce, …) are WebAssembly
//! components built against the `sluice:plugin` WIT contract, each instance
//! sandboxed with a memory cap, a per-call deadline and no ambient authority.
//!
//! This crate is what an application embeds: the engine ([`sluice_core`],
//! re-exported here), the plugin runtime ([`sluice_runtime`], as
//! [`plugin`]) and the TOML job spec ([`spec`]).
//!
//! ```no_run
//! use sluice::prelude::*;
//! use std::time::Duration;
//!
//! # fn main() -> sluice::Result<()> {
//! let ssc = StreamingContext::new(Duration::from_secs(1));
//! let wc = ssc.load_plugin("wordcount", "plugins/target/wasm32-wasip2/release/wordcount.wasm")?;
//! let counts = ssc
//!     .socket_text_stream("127.0.0.1", 9999)
//!     .flat_map(wc.func("split")?)
//!     .map(wc.func("pair")?)
//!     .reduce_by_key(wc.func("add")?, 2);
//! counts.pprint(10);
//! ssc.run(None)?;
//! # Ok(()) }
//! ```
//!
//! Tests and replay use a [`ManualClock`] and [`StreamingContext::queue_stream`];
//! native closures ([`Func::map`], …) run the same columnar code as plugins.
//! Windows and keyed state ([`DStream::window`],
//! [`DStream::reduce_by_key_and_window`], [`DStream::update_state_by_key`],
//! [`DStream::map_with_state`]) are host data, saved by
//! [`StreamingContext::with_checkpoint`]: a full checkpoint every checkpoint
//! interval and a batch-log record per batch in between (see [`checkpoint`]).

pub mod feed;
pub mod fuzz;
pub mod spec;

pub use sluice_core::{
    BatchInfo, BatchTime, Clock, CollectedBatch, DStream, Domain, Error, Func, ManualClock,
    OperatorInfo, PluginFault, Result, RunSummary, StateSpec, StopHandle, StreamingContext,
    StreamingListener, SwapHandle, SystemClock,
};
pub use sluice_core::{
    allocator, checkpoint, error, framelog, fsutil, func, graph, guest, rdd, receiver, render,
    share, sink, stop, time,
};
pub use sluice_runtime as plugin;
pub use sluice_runtime::{Capabilities, Limits, LoadPlugins, Plugin, Runtime, RuntimeConfig};

/// What a program using Sluice usually needs, the plugin methods of
/// [`StreamingContext`] ([`LoadPlugins`]) included.
pub mod prelude {
    pub use crate::{
        BatchTime, DStream, Func, Limits, LoadPlugins, ManualClock, Plugin, Runtime,
        StreamingContext,
    };
}
