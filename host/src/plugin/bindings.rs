//! Host bindings of the `sluice:plugin` world, generated from `wit/` (the one
//! copy of the contract).
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
});

pub use self::exports::sluice::plugin::operator::{
    CallContext, CallInput, CallOutput, PluginError,
};
pub use self::sluice::plugin::host::LogLevel;
pub use self::sluice::plugin::types::{
    Batch as WitBatch, Column as WitColumn, ErrorKind as WitErrorKind, FunctionKind, PluginInfo,
};
