//! # sluice-sdk: Sluice operators as plain Rust functions
//!
//! A Sluice plugin is a WebAssembly component whose functions the Sluice host
//! calls once per partition-batch. With this crate an operator is a plain typed
//! function plus one attribute; one macro registers them all:
//!
//! ```
//! use sluice_sdk as sluice;
//!
//! /// Splits a line into words on single spaces.
//! #[sluice::flat_map]
//! fn split(line: &str) -> impl Iterator<Item = &str> {
//!     sluice::split_on(line, ' ')
//! }
//!
//! /// Pairs a word with the count 1.
//! #[sluice::map]
//! fn pair(word: &str) -> (&str, i64) {
//!     (word, 1)
//! }
//!
//! /// Keeps words of at least four characters.
//! #[sluice::filter]
//! fn long(word: &str) -> bool {
//!     word.chars().count() >= 4
//! }
//!
//! /// Adds two counts.
//! #[sluice::reduce]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! sluice::export!(split, pair, long, add);
//! # fn main() {
//! #     let f = &__sluice_plugin_functions()[0];
//! #     assert_eq!((f.name, f.kind), ("split", sluice::Kind::FlatMap));
//! # }
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate type
//! `cdylib`) and give the `.wasm` file to a job: `wordcount.split`,
//! `wordcount.pair`, `wordcount.add`. Where a job runs `split` then `pair`,
//! the host calls both in one call per piece of input, and the words between
//! them stay in the guest.
//!
//! ## Types
//! Arguments and results are any `serde` types. Values travel as canonical
//! MessagePack: integers, floats, strings, bytes, `None`/`null`, tuples and
//! sequences (arrays), maps and structs (maps). A keyed element `(k, v)` is
//! the tuple `(k, v)`, so `fn f(kv: (&str, i64))` receives it as a pair.
//! Borrowed `&str` arguments are decoded without copying.
//!
//! Where an element-wise function's argument or result is a string,
//! integer, `bool`, `f64`, an `Option` or a tuple of these (as written in
//! its signature: for a `flat_map`, `impl Iterator<Item = T>`, `Vec<T>` or
//! `Option<T>`), the macros give it codecs of its own that inline into the
//! loop, instead of serde's per-element calls; the bytes and the errors are
//! the same.
//!
//! ## Function kinds
//! | attribute | signature | per element |
//! |---|---|---|
//! | `#[sluice::map]` | `fn(A) -> B` or `fn(A) -> Result<B, E>` | one output |
//! | `#[sluice::flat_map]` | `fn(A) -> impl IntoIterator<Item = B>` (or a `Result` of one) | zero or more outputs |
//! | `#[sluice::filter]` | `fn(A) -> bool` | kept when `true` |
//! | `#[sluice::reduce]` | `fn(A, A) -> A`, associative | combines a key's values |
//! | `#[sluice::map_partitions]` | `fn(Vec<A>) -> impl IntoIterator<Item = B>` | a whole partition at once |
//! | `#[sluice::transform]` | `fn(Vec<A>) -> impl IntoIterator<Item = B>` | a whole batch at once (e.g. a top 3) |
//! | `#[sluice::sink]` | `fn(Vec<A>)` or `fn(Vec<A>) -> Result<(), E>` | consumes a partition-batch (`foreach_rdd`) |
//! | `#[sluice::receiver]` | `fn(&Settings) -> Result<R, E>`, `R:` [`Receiver`] | a source of its own (see [`receiver`]) |
//!
//! An `Err(e)` from a function fails the call with an `invalid-input` error
//! naming the element; a panic traps, and the host retries the partition-batch
//! once on a fresh instance before failing the job with the panic message.
//!
//! ## Text
//! [`split_on`] splits a string as `str::split` does, eight bytes at a
//! time: in a wasm32 guest the standard library's search reads four.
//!
//! ## Logging and context
//! [`info!`], [`warn!`], [`error!`] (and [`log`]) send lines to the host,
//! which tags them with job, plugin, function and batch time. [`context`]
//! tells the current batch time, partition and attempt. Keep no state in
//! globals: the host may recycle an instance at any batch boundary.

pub mod columnar;
mod fastde;
mod fastser;
pub mod msgpack;
#[doc(hidden)]
pub mod plain;
pub mod receiver;
pub mod run;
mod text;

#[cfg(target_arch = "wasm32")]
mod guest;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use guest::bindings;

pub use columnar::{Batch, Column, EncodeError, ValidationError};
pub use receiver::{Receiver, Settings};
pub use run::{CallError, ErrorKind, State};
pub use sluice_sdk_macros::{
    filter, flat_map, fold, inverse_reduce, map, map_partitions, map_state, receiver, reduce, sink,
    transform, transform_with, update_state,
};
pub use text::{SplitOn, split_on};

use std::cell::Cell;

/// What a function does; mirrors the WIT `function-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One output per input.
    Map,
    /// Zero or more outputs per input.
    FlatMap,
    /// Keeps the inputs for which it holds.
    Filter,
    /// Sees a whole partition-batch.
    MapPartitions,
    /// Associative combine of a key's values.
    Reduce,
    /// Removes values from an accumulated value.
    InverseReduce,
    /// Per-key state update.
    UpdateState,
    /// Per-record mapping with per-key state (`map_with_state`).
    MapState,
    /// Sees a whole batch.
    Transform,
    /// Consumes a partition-batch.
    Sink,
    /// A custom receiver: a source, started and polled by the host (see [`Receiver`]).
    Receiver,
}

impl Kind {
    /// The kebab-case name used in WIT and job specs (`flat-map`).
    pub fn wit_name(self) -> &'static str {
        match self {
            Kind::Map => "map",
            Kind::FlatMap => "flat-map",
            Kind::Filter => "filter",
            Kind::MapPartitions => "map-partitions",
            Kind::Reduce => "reduce",
            Kind::InverseReduce => "inverse-reduce",
            Kind::UpdateState => "update-state",
            Kind::MapState => "map-state",
            Kind::Transform => "transform",
            Kind::Sink => "sink",
            Kind::Receiver => "receiver",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.wit_name())
    }
}

/// How the host calls a function: the shape of its input and output.
#[derive(Clone, Copy)]
pub enum Call {
    /// Values in, values out (map, flat-map, map-partitions).
    Values(fn(&Column) -> Result<Column, CallError>),
    /// Values in, indices of kept values out (filter).
    Filter(fn(&Column) -> Result<Vec<u32>, CallError>),
    /// Values grouped by `groups` in, one value per group out (reduce).
    Reduce(fn(&Column, &[u32]) -> Result<Column, CallError>),
    /// Values in, nothing out (sink).
    Sink(fn(&Column) -> Result<(), CallError>),
    /// Two value columns in, values out: `transform` of two streams
    /// (`transform_with`), `inverse-reduce` (accumulated, removed).
    Pair(fn(&Column, &Column) -> Result<Column, CallError>),
    /// New values grouped by key and one previous state per group (absent:
    /// none) in, one new state per group out (absent: remove) (update-state).
    UpdateState(fn(&Column, &[u32], &Column) -> Result<Column, CallError>),
    /// Keyed values grouped by key and one previous state per group in; one
    /// mapped element per value (absent: none), then one state per group
    /// (absent: remove) out (map-state).
    MapState(fn(&Batch, &[u32], &Column) -> Result<Column, CallError>),
    /// Settings in, a running receiver out (receiver: not invoked per batch).
    Receiver(fn(&Settings) -> Result<Box<dyn Receiver>, CallError>),
}

/// One exported function: what the attribute macros produce.
#[derive(Clone, Copy)]
pub struct Function {
    /// Name used in jobs (`plugin.name`).
    pub name: &'static str,
    /// First line of the function's doc comment.
    pub doc: &'static str,
    /// Kind of function.
    pub kind: Kind,
    /// The columnar adapter the host calls.
    pub call: Call,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Where and when the current call happens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Context {
    /// Batch time in milliseconds since the Unix epoch.
    pub batch_time_ms: i64,
    /// Partition index within the batch.
    pub partition: u32,
    /// Number of partitions in the batch.
    pub partitions: u32,
    /// 0 on the first attempt, 1 on the retry after a trap.
    pub attempt: u32,
}

thread_local! {
    static CONTEXT: Cell<Context> = const { Cell::new(Context { batch_time_ms: 0, partition: 0, partitions: 0, attempt: 0 }) };
}

/// The context of the call in progress (all zero outside a call).
pub fn context() -> Context {
    CONTEXT.with(|c| c.get())
}

/// Sets the context seen by [`context`] for the calls that follow on this thread.
#[doc(hidden)]
pub fn set_context(ctx: Context) {
    CONTEXT.with(|c| c.set(ctx));
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// A failure.
    Error,
}

#[cfg(not(target_arch = "wasm32"))]
static NATIVE_LOGGER: std::sync::OnceLock<fn(Level, &str)> = std::sync::OnceLock::new();

/// Where [`log`] goes when functions run natively (not in wasm): the host sets
/// this once so native operators log like plugins. Later calls are ignored.
#[cfg(not(target_arch = "wasm32"))]
pub fn set_native_logger(logger: fn(Level, &str)) {
    let _ = NATIVE_LOGGER.set(logger);
}

/// Sends one log line to the host.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    guest::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(logger) = NATIVE_LOGGER.get() {
        logger(level, message);
    }
}

/// Logs at info level: `sluice::info!("{} words", n)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log($crate::Level::Info, &::std::format!($($arg)*)) };
}

/// Logs at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log($crate::Level::Warn, &::std::format!($($arg)*)) };
}

/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log($crate::Level::Error, &::std::format!($($arg)*)) };
}

/// Registers a plugin's functions and exports them as the `sluice:plugin`
/// `full-plugin` world: `sluice::export!(split, pair, add);` with every
/// function marked by an attribute. The host may then run consecutive map
/// and flat-map stages of a job in one call (`invoke-chain`), each on the
/// output of the one before, inside the guest. Also defines `__sluice_plugin_functions()`, the list of them, which
/// native code and tests may call. Use it once per plugin crate.
#[macro_export]
macro_rules! export {
    ($($function:ident),+ $(,)?) => {
        /// The functions this plugin exports, in `describe` order.
        #[doc(hidden)]
        pub fn __sluice_plugin_functions() -> &'static [$crate::Function] {
            const FUNCTIONS: &[$crate::Function] = &[$($function::FUNCTION),+];
            FUNCTIONS
        }
        $crate::__export_guest!();
    };
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_guest {
    () => {
        #[doc(hidden)]
        pub struct __SluicePlugin;
        impl $crate::bindings::exports::sluice::plugin::operator::Guest for __SluicePlugin {
            fn describe() -> $crate::bindings::sluice::plugin::types::PluginInfo {
                $crate::__private::describe(
                    env!("CARGO_PKG_NAME"),
                    env!("CARGO_PKG_VERSION"),
                    __sluice_plugin_functions(),
                )
            }
            fn invoke(
                function: u32,
                context: $crate::bindings::sluice::plugin::types::CallContext,
                input: $crate::bindings::sluice::plugin::types::CallInput,
            ) -> ::std::result::Result<
                $crate::bindings::sluice::plugin::types::CallOutput,
                $crate::bindings::sluice::plugin::types::PluginError,
            > {
                $crate::__private::invoke(__sluice_plugin_functions(), function, context, input)
            }
        }
        impl $crate::bindings::exports::sluice::plugin::receiver::Guest for __SluicePlugin {
            fn start(
                function: u32,
                settings: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::result::Result<(), $crate::bindings::sluice::plugin::types::PluginError> {
                $crate::__private::receiver_start(__sluice_plugin_functions(), function, settings)
            }
            fn poll(
                max_records: u32,
                wait_ms: u32,
            ) -> ::std::result::Result<
                ::std::vec::Vec<::std::string::String>,
                $crate::bindings::sluice::plugin::types::PluginError,
            > {
                $crate::__private::receiver_poll(max_records, wait_ms)
            }
            fn ack() -> ::std::result::Result<(), $crate::bindings::sluice::plugin::types::PluginError> {
                $crate::__private::receiver_ack()
            }
            fn stop() {
                $crate::__private::receiver_stop()
            }
        }
        impl $crate::bindings::exports::sluice::plugin::chain::Guest for __SluicePlugin {
            fn invoke_chain(
                functions: ::std::vec::Vec<u32>,
                context: $crate::bindings::sluice::plugin::types::CallContext,
                values: $crate::bindings::sluice::plugin::types::Column,
            ) -> ::std::result::Result<
                $crate::bindings::sluice::plugin::types::ChainOutput,
                $crate::bindings::sluice::plugin::types::ChainError,
            > {
                $crate::__private::invoke_chain(__sluice_plugin_functions(), functions, context, values)
            }
        }
        $crate::bindings::export!(__SluicePlugin with_types_in $crate::bindings);
    };
}

#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_guest {
    () => {};
}

/// Support code for the macros; not a stable API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::guest::{
        describe, invoke, invoke_chain, receiver_ack, receiver_poll, receiver_start, receiver_stop,
    };
    pub use crate::plain::{Pick, PickPlain, PickSerde, PlainCodec, SerdeCodec};
    pub use crate::receiver::start as start_receiver;
    pub use crate::run::{
        filter, filter_with, flat_map, flat_map_with, fold, fold_with, inverse_reduce,
        inverse_reduce_with, map, map_partitions, map_state, map_with, reduce, reduce_with, sink,
        transform_with, try_flat_map, try_flat_map_with, try_map, try_map_partitions, try_map_with,
        try_sink, try_transform_with, update_state,
    };
}
