//! User functions as the engine calls them: a plugin function (sandboxed
//! wasm) or a native Rust closure (tests, embedding, and the performance
//! baseline). Both run the same columnar loops of `sluice_sdk::run`.

mod call;
mod grouped;
mod pieces;
#[cfg(test)]
mod tests;
mod values;

use crate::error::{Error, Result};
use crate::guest::{CallContext, Guest};
use crate::time::BatchTime;
use serde::{Serialize, de::DeserializeOwned};
use sluice_sdk::{Batch, CallError, Column, Kind};
use std::sync::Arc;

type ValuesFn = dyn Fn(&Column) -> std::result::Result<Column, CallError> + Send + Sync;
type FilterFn = dyn Fn(&Column) -> std::result::Result<Vec<u32>, CallError> + Send + Sync;
type ReduceFn = dyn Fn(&Column, &[u32]) -> std::result::Result<Column, CallError> + Send + Sync;
type SinkFn = dyn Fn(&Column) -> std::result::Result<(), CallError> + Send + Sync;
type PairFn = dyn Fn(&Column, &Column) -> std::result::Result<Column, CallError> + Send + Sync;
type UpdateFn =
    dyn Fn(&Column, &[u32], &Column) -> std::result::Result<Column, CallError> + Send + Sync;
type MapStateFn =
    dyn Fn(&Batch, &[u32], &Column) -> std::result::Result<Column, CallError> + Send + Sync;

#[derive(Clone)]
enum Native {
    Values(Arc<ValuesFn>),
    Filter(Arc<FilterFn>),
    Reduce(Arc<ReduceFn>),
    Sink(Arc<SinkFn>),
    Pair(Arc<PairFn>),
    UpdateState(Arc<UpdateFn>),
    MapState(Arc<MapStateFn>),
    /// A receiver compiled natively: a source, never called as an operator.
    Receiver,
}

#[derive(Clone)]
enum Imp {
    Plugin {
        plugin: Arc<dyn Guest>,
        index: u32,
        function: String,
    },
    Native(Native),
}

/// A user function: `plugin.function` or a native closure, with its kind.
#[derive(Clone)]
pub struct Func {
    name: String,
    kind: Kind,
    imp: Imp,
    /// Input bytes per call; `None`: the plugin's limit (natives: unlimited).
    limit: Option<usize>,
}

impl std::fmt::Debug for Func {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.kind)
    }
}

/// Where a call happens, for contexts and error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallSite {
    pub(crate) batch: BatchTime,
    pub(crate) partition: u32,
    pub(crate) partitions: u32,
}

impl CallSite {
    /// The context a plugin call here gets (a first attempt).
    fn context(&self) -> CallContext {
        CallContext {
            batch_time_ms: self.batch.millis(),
            partition: self.partition,
            partitions: self.partitions,
            attempt: 0,
        }
    }
}

/// A loaded guest as the engine holds it: `Arc<Plugin>` (the wasm runtime's
/// type) or an already erased `Arc<dyn Guest>`.
pub trait AsGuest {
    /// The guest behind a shared, type-erased handle.
    fn as_guest(&self) -> Arc<dyn Guest>;
}

impl<G: Guest + 'static> AsGuest for Arc<G> {
    fn as_guest(&self) -> Arc<dyn Guest> {
        self.clone()
    }
}

impl AsGuest for Arc<dyn Guest> {
    fn as_guest(&self) -> Arc<dyn Guest> {
        self.clone()
    }
}

impl Func {
    /// Function `name` of a loaded plugin.
    pub fn plugin(plugin: &impl AsGuest, name: &str) -> Result<Func> {
        let plugin = plugin.as_guest();
        let (index, info) = plugin.description().function(name).ok_or_else(|| {
            let names: Vec<&str> = plugin
                .description()
                .functions
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            Error::Plan(format!(
                "plugin `{}` has no function `{name}` (it exports: {})",
                plugin.name(),
                names.join(", ")
            ))
        })?;
        Ok(Func {
            limit: None,
            name: format!("{}.{}", plugin.name(), name),
            kind: info.kind,
            imp: Imp::Plugin {
                plugin,
                index,
                function: name.to_string(),
            },
        })
    }

    /// A function of a plugin crate compiled natively (`sluice_sdk::export!`
    /// gives `__sluice_plugin_functions()`): the same code as its wasm build.
    pub fn from_sdk(f: &sluice_sdk::Function) -> Func {
        let native = match f.call {
            sluice_sdk::Call::Values(c) => Native::Values(Arc::new(c)),
            sluice_sdk::Call::Filter(c) => Native::Filter(Arc::new(c)),
            sluice_sdk::Call::Reduce(c) => Native::Reduce(Arc::new(c)),
            sluice_sdk::Call::Sink(c) => Native::Sink(Arc::new(c)),
            sluice_sdk::Call::Pair(c) => Native::Pair(Arc::new(c)),
            sluice_sdk::Call::UpdateState(c) => Native::UpdateState(Arc::new(c)),
            sluice_sdk::Call::MapState(c) => Native::MapState(Arc::new(c)),
            sluice_sdk::Call::Receiver(_) => Native::Receiver,
        };
        Func {
            limit: None,
            name: format!("native.{}", f.name),
            kind: f.kind,
            imp: Imp::Native(native),
        }
    }

    /// A native `map` over owned, typed values.
    pub fn map<I, O, F>(name: &str, f: F) -> Func
    where
        I: DeserializeOwned,
        O: Serialize,
        F: Fn(I) -> O + Send + Sync + 'static,
    {
        Func::native_values(name, Kind::Map, move |c| sluice_sdk::run::map(c, &f))
    }

    /// A native `flat_map` over owned, typed values.
    pub fn flat_map<I, O, R, F>(name: &str, f: F) -> Func
    where
        I: DeserializeOwned,
        O: Serialize,
        R: IntoIterator<Item = O>,
        F: Fn(I) -> R + Send + Sync + 'static,
    {
        Func::native_values(name, Kind::FlatMap, move |c| {
            sluice_sdk::run::flat_map(c, &f)
        })
    }

    /// A native `filter` over owned, typed values.
    pub fn filter<I, F>(name: &str, f: F) -> Func
    where
        I: DeserializeOwned,
        F: Fn(I) -> bool + Send + Sync + 'static,
    {
        let call = move |c: &Column| sluice_sdk::run::filter(c, &f);
        Func::native(name, Kind::Filter, Native::Filter(Arc::new(call)))
    }

    /// A native associative `reduce`.
    pub fn reduce<T, F>(name: &str, f: F) -> Func
    where
        T: DeserializeOwned + Serialize,
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        let call = move |c: &Column, g: &[u32]| sluice_sdk::run::reduce(c, g, &f);
        Func::native(name, Kind::Reduce, Native::Reduce(Arc::new(call)))
    }

    fn native(name: &str, kind: Kind, native: Native) -> Func {
        Func {
            limit: None,
            name: format!("native.{name}"),
            kind,
            imp: Imp::Native(native),
        }
    }

    /// A native fold `(C, V) -> C` (a `reduce`-kind function, e.g.
    /// `combine_by_key`'s `merge_value`).
    pub fn fold<C, V, F>(name: &str, f: F) -> Func
    where
        C: DeserializeOwned + Serialize,
        V: DeserializeOwned,
        F: Fn(C, V) -> C + Send + Sync + 'static,
    {
        let call = move |c: &Column, g: &[u32]| sluice_sdk::run::fold(c, g, &f);
        Func::native(name, Kind::Reduce, Native::Reduce(Arc::new(call)))
    }

    /// A native `inverse-reduce`: `f(acc, old)` takes `old` out of `acc`.
    pub fn inverse_reduce<T, F>(name: &str, f: F) -> Func
    where
        T: DeserializeOwned + Serialize,
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        let call = move |a: &Column, r: &Column| sluice_sdk::run::inverse_reduce(a, r, &f);
        Func::native(name, Kind::InverseReduce, Native::Pair(Arc::new(call)))
    }

    /// A native `update-state`: `f(new values, previous state)`, `None` removes.
    pub fn update_state<V, S, F>(name: &str, f: F) -> Func
    where
        V: DeserializeOwned,
        S: DeserializeOwned + Serialize,
        F: Fn(Vec<V>, Option<S>) -> Option<S> + Send + Sync + 'static,
    {
        let call =
            move |v: &Column, g: &[u32], s: &Column| sluice_sdk::run::update_state(v, g, s, &f);
        Func::native(name, Kind::UpdateState, Native::UpdateState(Arc::new(call)))
    }

    /// A native `map-state` (`map_with_state`): `f(key, value, state)` per
    /// new value of a key (`None` when the key times out).
    pub fn map_state<K, V, S, O, F>(name: &str, f: F) -> Func
    where
        K: DeserializeOwned,
        V: DeserializeOwned,
        S: DeserializeOwned + Serialize,
        O: Serialize,
        F: Fn(K, Option<V>, &mut sluice_sdk::State<S>) -> Option<O> + Send + Sync + 'static,
    {
        let call = move |b: &Batch, g: &[u32], s: &Column| sluice_sdk::run::map_state(b, g, s, &f);
        Func::native(name, Kind::MapState, Native::MapState(Arc::new(call)))
    }

    /// A native `transform` of two streams (`transform_with`).
    pub fn transform_with<A, B, O, R, F>(name: &str, f: F) -> Func
    where
        A: DeserializeOwned,
        B: DeserializeOwned,
        O: Serialize,
        R: IntoIterator<Item = O>,
        F: Fn(Vec<A>, Vec<B>) -> R + Send + Sync + 'static,
    {
        let call = move |a: &Column, b: &Column| sluice_sdk::run::transform_with(a, b, &f);
        Func::native(name, Kind::Transform, Native::Pair(Arc::new(call)))
    }

    /// A native function over whole columns (`map`, `flat-map` or
    /// `map-partitions`), e.g. to borrow `&str` inputs without copying:
    /// `Func::native_values("split", Kind::FlatMap, |c| sluice_sdk::run::flat_map(c, |l: &str| l.split(' ')))`.
    pub fn native_values<F>(name: &str, kind: Kind, f: F) -> Func
    where
        F: Fn(&Column) -> std::result::Result<Column, CallError> + Send + Sync + 'static,
    {
        Func::native(name, kind, Native::Values(Arc::new(f)))
    }

    /// Splits calls so that each gets at most `bytes` of input (default: the
    /// plugin's `input_bytes_per_call`, and for a plugin's map, flat-map or
    /// filter at most 256 KiB; unlimited for native functions).
    pub fn with_input_limit(mut self, bytes: usize) -> Func {
        self.limit = Some(bytes.max(1));
        self
    }

    /// `plugin.function` or `native.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kind of function.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The plugin behind it, if it is a plugin function.
    pub fn plugin_ref(&self) -> Option<&Arc<dyn Guest>> {
        match &self.imp {
            Imp::Plugin { plugin, .. } => Some(plugin),
            Imp::Native(_) => None,
        }
    }
}
