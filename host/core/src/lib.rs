//! # sluice-core: the engine
//!
//! Columnar batches of MessagePack values, the DStream graph and its
//! Spark-like API, operators, keyed state, checkpoints, sources and
//! outputs, and the batch loop that runs them on worker threads. User
//! functions are [`Func`]s: native closures, or plugin functions behind the
//! [`guest::Guest`] trait, which the WebAssembly runtime (`sluice-runtime`)
//! implements. This crate has no WebAssembly runtime of its own, so it
//! builds and tests in seconds.
//!
//! ```
//! use sluice_core::{Func, ManualClock, StreamingContext};
//! use std::{sync::Arc, time::Duration};
//!
//! let ssc = StreamingContext::new(Duration::from_secs(1))
//!     .with_clock(Arc::new(ManualClock::new(0)));
//! let counts = ssc
//!     .queue_stream(vec![vec!["a b a".into()]], 2)
//!     .flat_map(Func::flat_map("split", |l: String| {
//!         l.split(' ').map(str::to_string).collect::<Vec<_>>()
//!     }))
//!     .map(Func::map("pair", |w: String| (w, 1i64)))
//!     .reduce_by_key(Func::reduce("add", |a: i64, b: i64| a + b), 2);
//! let out = counts.collect();
//! ssc.run(None).unwrap();
//! assert_eq!(out.lock().unwrap()[0].records.len(), 2);
//! ```

pub mod allocator;
pub mod checkpoint;
pub mod error;
pub mod exec;
pub mod framelog;
pub mod fsutil;
pub mod func;
#[doc(hidden)]
pub mod fuzz;
pub mod graph;
pub mod guest;
mod ops;
pub mod plan;
pub mod rdd;
pub mod receiver;
pub mod render;
pub mod share;
pub mod sink;
pub mod stop;
pub mod time;

pub use error::{Domain, Error, PluginFault, Result};
pub use func::{AsGuest, Func};
pub use graph::{
    BatchInfo, DStream, OperatorInfo, RunSummary, SourceLag, StageInfo, StateSpec, StopHandle,
    StreamingContext, StreamingListener, SwapHandle,
};
pub use sink::CollectedBatch;
pub use time::{BatchTime, Clock, ManualClock, SystemClock};
