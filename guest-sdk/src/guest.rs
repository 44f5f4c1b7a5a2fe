//! The wasm side: generated bindings of `sluice:plugin` (the `full-plugin`
//! world) and the dispatcher behind every plugin's `describe`, `invoke` and
//! `invoke-chain` exports.

/// Bindings generated from `wit/` (the only copy of the contract).
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "full-plugin",
        pub_export_macro: true,
        default_bindings_module: "sluice_sdk::bindings",
    });
}

use crate::run::{CallError, ErrorKind};
use crate::{Call, Column, Context, Function, Kind, Level};
use bindings::sluice::plugin::host;
use bindings::sluice::plugin::types as wit;

pub(crate) fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => host::LogLevel::Trace,
        Level::Debug => host::LogLevel::Debug,
        Level::Info => host::LogLevel::Info,
        Level::Warn => host::LogLevel::Warn,
        Level::Error => host::LogLevel::Error,
    };
    host::log(level, message);
}

fn kind(k: Kind) -> wit::FunctionKind {
    match k {
        Kind::Map => wit::FunctionKind::Map,
        Kind::FlatMap => wit::FunctionKind::FlatMap,
        Kind::Filter => wit::FunctionKind::Filter,
        Kind::MapPartitions => wit::FunctionKind::MapPartitions,
        Kind::Reduce => wit::FunctionKind::Reduce,
        Kind::InverseReduce => wit::FunctionKind::InverseReduce,
        Kind::UpdateState => wit::FunctionKind::UpdateState,
        Kind::MapState => wit::FunctionKind::MapState,
        Kind::Transform => wit::FunctionKind::Transform,
        Kind::Sink => wit::FunctionKind::Sink,
        Kind::Receiver => wit::FunctionKind::Receiver,
    }
}

/// The `describe` export.
pub fn describe(name: &str, version: &str, functions: &[Function]) -> wit::PluginInfo {
    wit::PluginInfo {
        name: name.to_string(),
        version: version.to_string(),
        sdk: concat!("sluice-sdk-rust ", env!("CARGO_PKG_VERSION")).to_string(),
        functions: functions
            .iter()
            .map(|f| wit::FunctionInfo {
                name: f.name.to_string(),
                kind: kind(f.kind),
                doc: f.doc.to_string(),
            })
            .collect(),
    }
}

fn column(c: wit::Column) -> Column {
    Column {
        bytes: c.bytes,
        offsets: c.offsets,
    }
}

fn to_wit(c: Column) -> wit::Column {
    wit::Column {
        bytes: c.bytes,
        offsets: c.offsets,
    }
}

fn error(e: CallError) -> wit::PluginError {
    wit::PluginError {
        kind: match e.kind {
            ErrorKind::InvalidInput => wit::ErrorKind::InvalidInput,
            ErrorKind::UnknownFunction => wit::ErrorKind::UnknownFunction,
            ErrorKind::Unsupported => wit::ErrorKind::Unsupported,
            ErrorKind::Failed => wit::ErrorKind::Failed,
        },
        message: e.message,
        element: e.element,
    }
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The host keeps the last error line to explain the trap that follows.
            log(Level::Error, &format!("panic: {info}"));
            default(info);
        }));
    });
}

/// What every call does first: the panic hook in place, the call's context
/// set for [`crate::context`].
fn enter(ctx: &wit::CallContext) {
    install_panic_hook();
    crate::set_context(Context {
        batch_time_ms: ctx.batch_time_ms,
        partition: ctx.partition,
        partitions: ctx.partitions,
        attempt: ctx.attempt,
    });
}

/// The error for a function index the plugin does not have.
fn unknown_function(index: u32, functions: &[Function]) -> CallError {
    CallError {
        kind: ErrorKind::UnknownFunction,
        message: format!(
            "no function {index}: the plugin has {} functions",
            functions.len()
        ),
        element: None,
    }
}

/// The `invoke` export: runs function `index` on one partition-batch.
pub fn invoke(
    functions: &[Function],
    index: u32,
    ctx: wit::CallContext,
    input: wit::CallInput,
) -> Result<wit::CallOutput, wit::PluginError> {
    enter(&ctx);
    let Some(f) = functions.get(index as usize) else {
        return Err(error(unknown_function(index, functions)));
    };
    let primary = crate::Batch {
        keys: column(input.primary.keys),
        values: column(input.primary.values),
    };
    let batch = |out: Column| {
        wit::CallOutput::Batch(wit::Batch {
            keys: to_wit(Column::new()),
            values: to_wit(out),
        })
    };
    // map_values / flat_map_values: the function sees values, outputs keep keys.
    if let Call::Values(call) = f.call
        && matches!(f.kind, Kind::Map | Kind::FlatMap)
        && primary.has_keys()
    {
        return crate::run::keyed(&primary.keys, &primary.values, call)
            .map(|out| {
                wit::CallOutput::Batch(wit::Batch {
                    keys: to_wit(out.keys),
                    values: to_wit(out.values),
                })
            })
            .map_err(error);
    }
    let values = primary.joined_values();
    let result = match f.call {
        Call::Values(call) => call(&values).map(batch),
        Call::Filter(call) => call(&values).map(wit::CallOutput::Selection),
        Call::Sink(call) => call(&values).map(|()| wit::CallOutput::None),
        Call::Reduce(call) => call(&primary.values, &input.groups).map(batch),
        Call::Pair(call) => call(&values, &column(input.secondary)).map(batch),
        Call::MapState(call) => call(&primary, &input.groups, &column(input.secondary)).map(batch),
        Call::UpdateState(call) => {
            call(&primary.values, &input.groups, &column(input.secondary)).map(batch)
        }
        Call::Receiver(_) => Err(CallError {
            kind: ErrorKind::Unsupported,
            message: format!(
                "{} is a receiver: a job uses it as a source, not as an operator",
                f.name
            ),
            element: None,
        }),
    };
    result.map_err(error)
}

/// The `invoke-chain` export: runs the map and flat-map functions `indices`
/// in turn on `values`, each on the output of the one before.
pub fn invoke_chain(
    functions: &[Function],
    indices: Vec<u32>,
    ctx: wit::CallContext,
    values: wit::Column,
) -> Result<wit::ChainOutput, wit::ChainError> {
    enter(&ctx);
    let at = |position: usize, e: CallError| wit::ChainError {
        position: position as u32,
        error: error(e),
    };
    let mut current = column(values);
    let mut counts = Vec::with_capacity(indices.len());
    for (position, &index) in indices.iter().enumerate() {
        let call = match functions.get(index as usize) {
            Some(Function {
                kind: Kind::Map | Kind::FlatMap,
                call: Call::Values(call),
                ..
            }) => call,
            Some(f) => {
                return Err(at(
                    position,
                    CallError {
                        kind: ErrorKind::Unsupported,
                        message: format!(
                            "{} is a {:?} function: only map and flat-map functions chain",
                            f.name, f.kind
                        ),
                        element: None,
                    },
                ));
            }
            None => return Err(at(position, unknown_function(index, functions))),
        };
        current = call(&current).map_err(|e| at(position, e))?;
        counts.push(current.len() as u64);
    }
    Ok(wit::ChainOutput {
        values: to_wit(current),
        counts,
    })
}

thread_local! {
    /// The receiver this instance runs (the host gives each receiver
    /// source an instance of its own).
    static RECEIVER: std::cell::RefCell<Option<Box<dyn crate::Receiver>>> =
        const { std::cell::RefCell::new(None) };
}

fn failed(message: String) -> wit::PluginError {
    error(CallError {
        kind: ErrorKind::Failed,
        message,
        element: None,
    })
}

/// The `receiver.start` export: starts receiver function `index`.
pub fn receiver_start(
    functions: &[Function],
    index: u32,
    settings: Vec<(String, String)>,
) -> Result<(), wit::PluginError> {
    install_panic_hook();
    let start = match functions.get(index as usize) {
        Some(Function {
            call: Call::Receiver(start),
            ..
        }) => start,
        Some(f) => {
            return Err(error(CallError {
                kind: ErrorKind::Unsupported,
                message: format!("{} is a {} function, not a receiver", f.name, f.kind),
                element: None,
            }));
        }
        None => return Err(error(unknown_function(index, functions))),
    };
    let receiver = start(&crate::Settings::new(settings)).map_err(error)?;
    RECEIVER.with(|r| *r.borrow_mut() = Some(receiver));
    Ok(())
}

/// Runs `f` on the started receiver.
fn with_receiver<T>(
    f: impl FnOnce(&mut dyn crate::Receiver) -> Result<T, String>,
) -> Result<T, wit::PluginError> {
    RECEIVER.with(|r| match r.borrow_mut().as_mut() {
        Some(receiver) => f(receiver.as_mut()).map_err(failed),
        None => Err(failed("the receiver is not started".to_string())),
    })
}

/// The `receiver.poll` export.
pub fn receiver_poll(max_records: u32, wait_ms: u32) -> Result<Vec<String>, wit::PluginError> {
    with_receiver(|r| {
        r.poll(
            max_records as usize,
            std::time::Duration::from_millis(wait_ms.into()),
        )
    })
}

/// The `receiver.ack` export.
pub fn receiver_ack() -> Result<(), wit::PluginError> {
    with_receiver(|r| r.ack())
}

/// The `receiver.stop` export.
pub fn receiver_stop() {
    if let Some(mut r) = RECEIVER.with(|r| r.borrow_mut().take()) {
        r.stop();
    }
}
