//! # Sluice: micro-batch stream processing with sandboxed WebAssembly operators
//!
//! The host owns sources, batching, the DStream graph, shuffles and outputs;
//! user functions (map, flat_map, filter, reduce, …) are WebAssembly
//! components built against the `sluice:plugin` WIT contract, each instance
//! sandboxed with a memory cap, a per-call deadline and no ambient authority.
//!
//! ```no_run
//! use sluice::StreamingContext;
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

pub mod allocator;
pub mod checkpoint;
pub mod error;
pub mod feed;
pub mod framelog;
mod fsutil;
pub mod func;
pub mod graph;
pub mod metrics;
mod ops;
pub mod plugin;
pub mod rdd;
pub mod receiver;
pub mod render;
pub mod server;
pub mod share;
pub mod sink;
pub mod spec;
mod stop;
pub mod time;
pub mod web;

pub use error::{Domain, Error, PluginFault, Result};
pub use func::Func;
pub use graph::{
    BatchInfo, DStream, OperatorInfo, RunSummary, StopHandle, StreamingContext, StreamingListener,
    SwapHandle,
};
pub use plugin::{Capabilities, Limits, Plugin, Runtime, RuntimeConfig};
pub use sink::CollectedBatch;
pub use time::{BatchTime, Clock, ManualClock, SystemClock};

impl Plugin {
    /// This plugin's function `name`, to pass to a [`DStream`] method.
    pub fn func(self: &std::sync::Arc<Self>, name: &str) -> Result<Func> {
        Func::plugin(self, name)
    }
}
