//! Host bindings of the `sluice:plugin` world, generated from `wit/` (the one
//! copy of the contract), and of the optional `chain` and `receiver` exports.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
});

/// The `chained-plugin` world: `plugin` plus the optional `chain` export,
/// sharing `plugin`'s types and host interface. Only its `chain` export is
/// used, looked up in each component that has it.
pub mod chained {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "chained-plugin",
        with: {
            "sluice:plugin/types": super::sluice::plugin::types,
            "sluice:plugin/host": super::sluice::plugin::host,
        },
    });
}

/// The `receiver-plugin` world: `plugin` plus the optional `receiver`
/// export (custom receivers), looked up in each component that has it.
pub mod receiving {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "receiver-plugin",
        with: {
            "sluice:plugin/types": super::sluice::plugin::types,
            "sluice:plugin/host": super::sluice::plugin::host,
        },
    });
}

/// The `runner-plugin` world: `plugin` plus the optional `define` export
/// (functions a job defines: the Python driver's runner).
pub mod defining {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "runner-plugin",
        with: {
            "sluice:plugin/types": super::sluice::plugin::types,
            "sluice:plugin/host": super::sluice::plugin::host,
        },
    });
}

pub use self::chained::exports::sluice::plugin::chain::{
    Guest as ChainExport, GuestIndices as ChainIndices,
};
pub use self::defining::exports::sluice::plugin::define::{
    Guest as DefineExport, GuestIndices as DefineIndices,
};
pub use self::exports::sluice::plugin::operator::{
    CallContext, CallInput, CallOutput, PluginError,
};
pub use self::receiving::exports::sluice::plugin::receiver::{
    Guest as ReceiverExport, GuestIndices as ReceiverIndices,
};
pub use self::sluice::plugin::host::LogLevel;
pub use self::sluice::plugin::types::{
    Batch as WitBatch, ChainError, ChainOutput, Column as WitColumn, ErrorKind as WitErrorKind,
    FunctionKind, PluginInfo,
};
