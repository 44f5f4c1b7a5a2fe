//! User functions as the engine calls them: a plugin function (sandboxed
//! wasm) or a native Rust closure (tests, embedding, and the performance
//! baseline). Both run the same columnar loops of `sluice_sdk::run`.

use crate::error::{Error, PluginFault, Result};
use crate::guest::{self, CallContext, CallInput, CallOutput, Guest};
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

    /// The plugin version in force and the function's index in it (a hot
    /// swap may have replaced the plugin the function was made from).
    fn live_plugin(&self) -> Result<(Arc<dyn Guest>, u32)> {
        let Imp::Plugin {
            plugin,
            index,
            function,
        } = &self.imp
        else {
            return Err(Error::Internal(format!(
                "{} is not a plugin function",
                self.name
            )));
        };
        let live = guest::live(plugin);
        if Arc::ptr_eq(&live, plugin) {
            return Ok((live, *index));
        }
        let index = live
            .description()
            .function(function)
            .map(|(i, _)| i)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "the swapped-in version of `{}` lacks `{function}`",
                    plugin.name()
                ))
            })?;
        Ok((live, index))
    }

    fn input_limit(&self) -> usize {
        if let Some(l) = self.limit {
            return l;
        }
        match &self.imp {
            Imp::Plugin { plugin, .. } => plugin.input_bytes_per_call() as usize,
            Imp::Native(_) => usize::MAX,
        }
    }

    /// Input bytes per call of a map, flat-map or filter: the input limit,
    /// and for a plugin without a limit set on the function at most
    /// [`CALL_CHUNK_BYTES`].
    fn chunk_limit(&self) -> usize {
        match (&self.imp, self.limit) {
            (Imp::Plugin { .. }, None) => self.input_limit().min(CALL_CHUNK_BYTES),
            _ => self.input_limit(),
        }
    }

    fn native_err(&self, site: CallSite, e: CallError) -> Error {
        Error::Plugin {
            plugin: "native".to_string(),
            function: self.name.clone(),
            batch: site.batch,
            partition: site.partition,
            fault: Box::new(PluginFault::Refused {
                kind: format!("{:?}", e.kind),
                message: e.message,
                element: e.element.map(u64::from),
            }),
        }
    }

    fn bad_output(&self, site: CallSite, message: String) -> Error {
        let (plugin, function) = match &self.imp {
            Imp::Plugin { plugin, .. } => (
                plugin.name().to_string(),
                self.name
                    .split_once('.')
                    .map_or(self.name.clone(), |(_, f)| f.to_string()),
            ),
            Imp::Native(_) => ("native".to_string(), self.name.clone()),
        };
        Error::Plugin {
            plugin,
            function,
            batch: site.batch,
            partition: site.partition,
            fault: Box::new(PluginFault::BadOutput { message }),
        }
    }

    /// Calls a plugin function with `primary` (keys may be empty), `groups`
    /// and `secondary`, lent to it and given back unchanged.
    fn call_plugin(
        plugin: &dyn Guest,
        index: u32,
        site: CallSite,
        primary: (&mut Column, &mut Column),
        groups: Vec<u32>,
        secondary: &mut Column,
    ) -> Result<CallOutput> {
        let (keys, values) = primary;
        let mut input = CallInput {
            primary: Batch {
                keys: std::mem::take(keys),
                values: std::mem::take(values),
            },
            groups,
            secondary: std::mem::take(secondary),
        };
        let result = plugin.invoke(index, site.context(), &mut input);
        *keys = input.primary.keys;
        *values = input.primary.values;
        *secondary = input.secondary;
        result
    }

    /// A plugin call on values alone.
    fn call_values(
        plugin: &dyn Guest,
        index: u32,
        site: CallSite,
        values: &mut Column,
        groups: Vec<u32>,
    ) -> Result<CallOutput> {
        Func::call_plugin(
            plugin,
            index,
            site,
            (&mut Column::new(), values),
            groups,
            &mut Column::new(),
        )
    }

    /// The value column of a plugin's batch output, validated.
    fn output_column(&self, site: CallSite, out: CallOutput, what: &str) -> Result<Column> {
        let CallOutput::Batch(b) = out else {
            return Err(self.bad_output(site, format!("{what} must return a batch")));
        };
        if !b.keys.offsets.is_empty() {
            return Err(self.bad_output(site, format!("{what} must return values without keys")));
        }
        let c = b.values;
        c.validate()
            .map_err(|e| self.bad_output(site, e.to_string()))?;
        Ok(c)
    }

    /// `map`, `flat-map` or `map-partitions` over one partition's values.
    /// `input` is lent to the plugin and given back unchanged.
    pub(crate) fn apply_values(&self, input: &mut Column, site: CallSite) -> Result<Column> {
        // Map and flat-map see one element at a time, so a partition can be
        // cut into calls; map-partitions and transform must see it whole.
        let splittable = matches!(self.kind, Kind::Map | Kind::FlatMap);
        let limit = self.chunk_limit();
        if splittable && input.bytes.len() > limit && input.len() > 1 {
            return piecewise(
                input,
                limit,
                |chunk| Ok((self.apply_values(chunk, site)?, ())),
                |()| {},
                |e| self.bad_output(site, e),
            );
        }
        let out = match &self.imp {
            Imp::Native(Native::Values(f)) => f(input).map_err(|e| self.native_err(site, e))?,
            Imp::Plugin { .. } => {
                let (plugin, index) = self.live_plugin()?;
                let out = Func::call_values(&*plugin, index, site, input, Vec::new())?;
                let CallOutput::Batch(b) = out else {
                    return Err(self.bad_output(site, "expected a batch".to_string()));
                };
                if !b.keys.offsets.is_empty() {
                    // Keys are folded into pairs: the engine keeps one representation.
                    let batch = sluice_sdk::Batch {
                        keys: b.keys,
                        values: b.values,
                    };
                    batch
                        .validate()
                        .map_err(|e| self.bad_output(site, e.to_string()))?;
                    batch.joined_values().into_owned()
                } else {
                    let c = b.values;
                    c.validate()
                        .map_err(|e| self.bad_output(site, e.to_string()))?;
                    c
                }
            }
            Imp::Native(_) => {
                return Err(Error::Plan(format!(
                    "`{}` is a {}, not a map function",
                    self.name, self.kind
                )));
            }
        };
        if self.kind == Kind::Map && out.len() != input.len() {
            return Err(self.bad_output(
                site,
                format!(
                    "a map returned {} values for {} inputs",
                    out.len(),
                    input.len()
                ),
            ));
        }
        Ok(out)
    }

    /// The plugin version and function indices to run `funcs` as one
    /// chained call, when that can be done: two or more map and flat-map
    /// functions, all of one plugin that exports `chain`, all live in the
    /// same version, none but the first with an input limit of its own
    /// (the values between them never reach the host to be cut).
    pub(crate) fn chain_of(funcs: &[&Func]) -> Option<(Arc<dyn Guest>, Vec<u32>)> {
        if funcs.len() < 2 {
            return None;
        }
        let mut live: Option<Arc<dyn Guest>> = None;
        let mut indices = Vec::with_capacity(funcs.len());
        for (i, f) in funcs.iter().enumerate() {
            if !matches!(f.kind, Kind::Map | Kind::FlatMap) || (i > 0 && f.limit.is_some()) {
                return None;
            }
            let (plugin, index) = f.live_plugin().ok()?;
            match &live {
                Some(p) if !Arc::ptr_eq(p, &plugin) => return None,
                Some(_) => {}
                None if !plugin.chains() => return None,
                None => live = Some(plugin),
            }
            indices.push(index);
        }
        live.map(|p| (p, indices))
    }

    /// `funcs`, map and flat-map functions that [`Func::chain_of`] made
    /// `(plugin, indices)` of, over one partition's values (without keys):
    /// one plugin call per piece of input, the values between the functions
    /// kept in the plugin. Returns the last function's output and how many
    /// elements each function produced. `input` is lent to the plugin and
    /// given back unchanged.
    pub(crate) fn apply_chain(
        funcs: &[&Func],
        (plugin, indices): (&dyn Guest, &[u32]),
        input: &mut Column,
        site: CallSite,
    ) -> Result<(Column, Vec<u64>)> {
        let (first, last) = (funcs[0], funcs[funcs.len() - 1]);
        let mut counts = vec![0u64; funcs.len()];
        let limit = first.chunk_limit();
        if input.bytes.len() > limit && input.len() > 1 {
            let out = piecewise(
                input,
                limit,
                |chunk| Func::apply_chain(funcs, (plugin, indices), chunk, site),
                |n| {
                    for (total, n) in counts.iter_mut().zip(n) {
                        *total += n;
                    }
                },
                |e| last.bad_output(site, e),
            )?;
            return Ok((out, counts));
        }
        let result = plugin.invoke_chain(indices, site.context(), input)?;
        if result.counts.len() != funcs.len() {
            return Err(last.bad_output(
                site,
                format!(
                    "a chain of {} functions returned {} counts",
                    funcs.len(),
                    result.counts.len()
                ),
            ));
        }
        // Each map kept its input's length (the host cannot count the values
        // between the functions itself, but their lengths must agree).
        let mut before = input.len() as u64;
        for (f, &n) in funcs.iter().zip(&result.counts) {
            if f.kind == Kind::Map && n != before {
                return Err(f.bad_output(
                    site,
                    format!("a map returned {n} values for {before} inputs"),
                ));
            }
            before = n;
        }
        let out = result.values;
        out.validate()
            .map_err(|e| last.bad_output(site, e.to_string()))?;
        if out.len() as u64 != before {
            return Err(last.bad_output(
                site,
                format!(
                    "the chain returned {} values but counted {before}",
                    out.len()
                ),
            ));
        }
        Ok((out, result.counts))
    }

    /// `map` or `flat-map` of the values of keyed elements, each output
    /// keeping the key of its input (`map_values`, `flat_map_values`).
    /// `keys` and `values` are lent to the plugin and given back unchanged.
    pub(crate) fn apply_keyed(
        &self,
        keys: &mut Column,
        values: &mut Column,
        site: CallSite,
    ) -> Result<Batch> {
        if !matches!(self.kind, Kind::Map | Kind::FlatMap) {
            return Err(Error::Plan(format!(
                "`{}` is a {}, not a map or flat-map function",
                self.name, self.kind
            )));
        }
        let limit = self.input_limit();
        if keys.bytes.len() + values.bytes.len() > limit && values.len() > 1 {
            let mut out = Batch::default();
            let encode = |e: sluice_sdk::EncodeError| self.bad_output(site, e.to_string());
            let mut start = 0;
            while start < values.len() {
                let mut end = start + 1;
                let mut size = keys.get(start).len() + values.get(start).len();
                while end < values.len()
                    && size + keys.get(end).len() + values.get(end).len() <= limit
                {
                    size += keys.get(end).len() + values.get(end).len();
                    end += 1;
                }
                let (mut k, mut v) = (Column::new(), Column::new());
                for i in start..end {
                    k.push_encoded(keys.get(i)).map_err(encode)?;
                    v.push_encoded(values.get(i)).map_err(encode)?;
                }
                let part = self
                    .apply_keyed(&mut k, &mut v, site)
                    .map_err(|e| at_offset(e, start))?;
                out.keys.extend_from(&part.keys).map_err(encode)?;
                out.values.extend_from(&part.values).map_err(encode)?;
                start = end;
            }
            return Ok(out);
        }
        let out = match &self.imp {
            Imp::Native(Native::Values(f)) => sluice_sdk::run::keyed(keys, values, |c| f(c))
                .map_err(|e| self.native_err(site, e))?,
            Imp::Plugin { .. } => {
                let (plugin, index) = self.live_plugin()?;
                let out = Func::call_plugin(
                    &*plugin,
                    index,
                    site,
                    (keys, values),
                    Vec::new(),
                    &mut Column::new(),
                )?;
                let CallOutput::Batch(b) = out else {
                    return Err(self.bad_output(site, "expected a batch".to_string()));
                };
                let batch = Batch {
                    keys: b.keys,
                    values: b.values,
                };
                if !batch.is_empty() && !batch.has_keys() {
                    return Err(self.bad_output(
                        site,
                        "keyed input, but the output has no keys (the plugin's SDK predates map_values/flat_map_values)".to_string(),
                    ));
                }
                batch
                    .validate()
                    .map_err(|e| self.bad_output(site, e.to_string()))?;
                if batch.keys.iter().any(<[u8]>::is_empty) {
                    return Err(self.bad_output(site, "an output without its key".to_string()));
                }
                batch
            }
            Imp::Native(_) => return unreachable_kind(self),
        };
        if self.kind == Kind::Map && out.len() != values.len() {
            return Err(self.bad_output(
                site,
                format!(
                    "a map returned {} values for {} inputs",
                    out.len(),
                    values.len()
                ),
            ));
        }
        Ok(out)
    }

    /// A function of two columns: `transform` of two streams (`primary` this
    /// stream's batch, `secondary` the other's) or `inverse-reduce`
    /// (`primary` accumulated values, `secondary` the values to take out,
    /// one output per element).
    pub(crate) fn apply_pair(
        &self,
        primary: &mut Column,
        secondary: &mut Column,
        site: CallSite,
    ) -> Result<Column> {
        let out = match &self.imp {
            Imp::Native(Native::Pair(f)) => {
                f(primary, secondary).map_err(|e| self.native_err(site, e))?
            }
            Imp::Native(Native::Values(f)) if self.kind == Kind::Transform => {
                // A one-stream transform used with two streams sees the first.
                f(primary).map_err(|e| self.native_err(site, e))?
            }
            Imp::Plugin { .. } => {
                let (plugin, index) = self.live_plugin()?;
                let out = Func::call_plugin(
                    &*plugin,
                    index,
                    site,
                    (&mut Column::new(), primary),
                    Vec::new(),
                    secondary,
                )?;
                self.output_column(site, out, &format!("a {}", self.kind))?
            }
            Imp::Native(_) => return unreachable_kind(self),
        };
        if self.kind == Kind::InverseReduce {
            if out.len() != primary.len() {
                return Err(self.bad_output(
                    site,
                    format!(
                        "an inverse-reduce returned {} values for {} inputs",
                        out.len(),
                        primary.len()
                    ),
                ));
            }
            if out.iter().any(<[u8]>::is_empty) {
                return Err(self.bad_output(
                    site,
                    "an inverse-reduce returned an absent value".to_string(),
                ));
            }
        }
        Ok(out)
    }

    /// `update-state`: per group of new `values` (groups as `n + 1`
    /// boundaries, possibly empty) and previous state (`states`, absent for
    /// none), the new state (absent: remove the key).
    pub(crate) fn apply_update_state(
        &self,
        values: &mut Column,
        groups: Vec<u32>,
        states: &mut Column,
        site: CallSite,
    ) -> Result<Column> {
        let n = groups.len().saturating_sub(1);
        if n == 0 {
            return Ok(Column::new());
        }
        let limit = self.input_limit();
        if values.bytes.len() + states.bytes.len() > limit && n > 1 {
            let encode = |e: sluice_sdk::EncodeError| self.bad_output(site, e.to_string());
            let mut out = Column::new();
            for mut piece in pack_groups(None, values, &groups, states, limit).map_err(encode)? {
                let part = self.apply_update_state(
                    &mut piece.values,
                    piece.groups,
                    &mut piece.states,
                    site,
                )?;
                out.extend_from(&part).map_err(encode)?;
            }
            return Ok(out);
        }
        let out = match &self.imp {
            Imp::Native(Native::UpdateState(f)) => {
                f(values, &groups, states).map_err(|e| self.native_err(site, e))?
            }
            Imp::Plugin { .. } => {
                let (plugin, index) = self.live_plugin()?;
                let out = Func::call_plugin(
                    &*plugin,
                    index,
                    site,
                    (&mut Column::new(), values),
                    groups,
                    states,
                )?;
                self.output_column(site, out, "an update-state")?
            }
            Imp::Native(_) => return unreachable_kind(self),
        };
        if out.len() != n {
            return Err(self.bad_output(
                site,
                format!("an update-state returned {} states for {n} keys", out.len()),
            ));
        }
        Ok(out)
    }

    /// `map-state`: per group (one key) of keyed `values` (absent: the key
    /// timed out) and previous state, one mapped element per value (absent:
    /// none) and the new state per group (absent: remove).
    pub(crate) fn apply_map_state(
        &self,
        input: &mut Batch,
        groups: Vec<u32>,
        states: &mut Column,
        site: CallSite,
    ) -> Result<(Column, Column)> {
        let n = groups.len().saturating_sub(1);
        if n == 0 {
            return Ok((Column::new(), Column::new()));
        }
        let limit = self.input_limit();
        let encode = |e: sluice_sdk::EncodeError| self.bad_output(site, e.to_string());
        let size = input.keys.bytes.len() + input.values.bytes.len() + states.bytes.len();
        if size > limit && n > 1 {
            let (mut mapped, mut new_states) = (Column::new(), Column::new());
            let pieces = pack_groups(Some(&input.keys), &input.values, &groups, states, limit)
                .map_err(encode)?;
            for mut piece in pieces {
                let mut batch = Batch {
                    keys: piece.keys,
                    values: piece.values,
                };
                let (m, st) =
                    self.apply_map_state(&mut batch, piece.groups, &mut piece.states, site)?;
                mapped.extend_from(&m).map_err(encode)?;
                new_states.extend_from(&st).map_err(encode)?;
            }
            return Ok((mapped, new_states));
        }
        let out = match &self.imp {
            Imp::Native(Native::MapState(f)) => {
                f(input, &groups, states).map_err(|e| self.native_err(site, e))?
            }
            Imp::Plugin { .. } => {
                let (plugin, index) = self.live_plugin()?;
                let out = Func::call_plugin(
                    &*plugin,
                    index,
                    site,
                    (&mut input.keys, &mut input.values),
                    groups,
                    states,
                )?;
                self.output_column(site, out, "a map-state")?
            }
            Imp::Native(_) => return unreachable_kind(self),
        };
        let records = input.len();
        if out.len() != records + n {
            return Err(self.bad_output(
                site,
                format!(
                    "a map-state returned {} elements for {records} values and {n} keys",
                    out.len()
                ),
            ));
        }
        let (mut mapped, mut new_states) = (Column::new(), Column::new());
        for (i, v) in out.iter().enumerate() {
            if i < records {
                mapped.push_encoded(v).map_err(encode)?;
            } else {
                new_states.push_encoded(v).map_err(encode)?;
            }
        }
        Ok((mapped, new_states))
    }

    /// `sink` over one partition's values (never split: a sink sees its
    /// partition whole).
    pub(crate) fn apply_sink(&self, input: &mut Column, site: CallSite) -> Result<()> {
        match &self.imp {
            Imp::Native(Native::Sink(f)) => f(input).map_err(|e| self.native_err(site, e)),
            Imp::Plugin { .. } => {
                let (plugin, index) = self.live_plugin()?;
                let out = Func::call_values(&*plugin, index, site, input, Vec::new())?;
                match out {
                    CallOutput::None => Ok(()),
                    _ => Err(self.bad_output(site, "a sink must return nothing".to_string())),
                }
            }
            Imp::Native(_) => Err(Error::Plan(format!(
                "`{}` is a {}, not a sink",
                self.name, self.kind
            ))),
        }
    }

    /// `filter` over one partition's values: the indices kept, ascending.
    pub(crate) fn apply_filter(&self, input: &mut Column, site: CallSite) -> Result<Vec<u32>> {
        let limit = self.chunk_limit();
        if input.bytes.len() > limit && input.len() > 1 {
            let mut kept = Vec::new();
            let mut chunk = Column::new();
            for range in chunks(input, limit) {
                let base = range.start as u32;
                copy_elements(input, range, &mut chunk);
                kept.extend(
                    self.apply_filter(&mut chunk, site)
                        .map_err(|e| at_offset(e, base as usize))?
                        .into_iter()
                        .map(|i| i + base),
                );
            }
            return Ok(kept);
        }
        let kept = match &self.imp {
            Imp::Native(Native::Filter(f)) => f(input).map_err(|e| self.native_err(site, e))?,
            Imp::Plugin { .. } => {
                let (plugin, index) = self.live_plugin()?;
                let out = Func::call_values(&*plugin, index, site, input, Vec::new())?;
                let CallOutput::Selection(s) = out else {
                    return Err(
                        self.bad_output(site, "a filter must return a selection".to_string())
                    );
                };
                s
            }
            Imp::Native(_) => {
                return Err(Error::Plan(format!(
                    "`{}` is a {}, not a filter",
                    self.name, self.kind
                )));
            }
        };
        let n = input.len() as u32;
        if kept.windows(2).any(|w| w[0] >= w[1]) || kept.last().is_some_and(|&l| l >= n) {
            return Err(self.bad_output(
                site,
                format!("the selection is not strictly ascending indices below {n}"),
            ));
        }
        Ok(kept)
    }

    /// `reduce`: one value per group of `values` (groups as `n + 1` boundaries,
    /// none empty).
    pub(crate) fn apply_reduce(
        &self,
        values: &mut Column,
        groups: Vec<u32>,
        site: CallSite,
    ) -> Result<Column> {
        let n_groups = groups.len().saturating_sub(1);
        if n_groups == 0 {
            return Ok(Column::new());
        }
        let limit = self.input_limit();
        // Two values must meet in one call however large they are.
        if values.bytes.len() > limit && values.len() > 2 {
            return self.reduce_in_chunks(values, &groups, limit, site);
        }
        let out = match &self.imp {
            Imp::Native(Native::Reduce(f)) => {
                f(values, &groups).map_err(|e| self.native_err(site, e))?
            }
            Imp::Plugin { .. } => {
                let (plugin, index) = self.live_plugin()?;
                let out = Func::call_values(&*plugin, index, site, values, groups)?;
                let c = self.output_column(site, out, "a reduce")?;
                if c.iter().any(<[u8]>::is_empty) {
                    return Err(
                        self.bad_output(site, "a reduce returned an absent value".to_string())
                    );
                }
                c
            }
            Imp::Native(_) => {
                return Err(Error::Plan(format!(
                    "`{}` is a {}, not a reduce function",
                    self.name, self.kind
                )));
            }
        };
        if out.len() != n_groups {
            return Err(self.bad_output(
                site,
                format!(
                    "a reduce returned {} values for {n_groups} groups",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }

    /// Reduces groups whose values exceed the per-call input limit: packs
    /// whole groups into calls of at most `limit` bytes; a group that alone is
    /// larger is folded piece by piece, each piece (of at least two values)
    /// starting with the result of the previous one.
    fn reduce_in_chunks(
        &self,
        values: &Column,
        groups: &[u32],
        limit: usize,
        site: CallSite,
    ) -> Result<Column> {
        let encode = |e: sluice_sdk::EncodeError| self.bad_output(site, e.to_string());
        let size =
            |a: u32, b: u32| (values.offsets[b as usize] - values.offsets[a as usize]) as usize;
        let mut out = Column::new();
        let mut chunk = Column::new();
        let mut chunk_groups = vec![0u32];
        let flush =
            |chunk: &mut Column, chunk_groups: &mut Vec<u32>, out: &mut Column| -> Result<()> {
                if chunk_groups.len() > 1 {
                    let groups = std::mem::replace(chunk_groups, vec![0]);
                    let part = self.apply_reduce(&mut std::mem::take(chunk), groups, site)?;
                    out.extend_from(&part).map_err(encode)?;
                }
                Ok(())
            };
        for w in groups.windows(2) {
            let (a, b) = (w[0], w[1]);
            if size(a, b) > limit && b - a > 2 {
                flush(&mut chunk, &mut chunk_groups, &mut out)?;
                // Left to right: each piece starts with the result so far, so
                // this is exact for folds `(C, V) -> C` as well as reductions.
                let mut piece = Column::new();
                for i in a..b {
                    let v = values.get(i as usize);
                    if piece.len() >= 2 && piece.bytes.len() + v.len() > limit {
                        let n = piece.len() as u32;
                        let r =
                            self.apply_reduce(&mut std::mem::take(&mut piece), vec![0, n], site)?;
                        piece.push_encoded(r.get(0)).map_err(encode)?;
                    }
                    piece.push_encoded(v).map_err(encode)?;
                }
                let n = piece.len() as u32;
                let r = self.apply_reduce(&mut piece, vec![0, n], site)?;
                out.extend_from(&r).map_err(encode)?;
                continue;
            }
            if chunk.bytes.len() + size(a, b) > limit {
                flush(&mut chunk, &mut chunk_groups, &mut out)?;
            }
            for i in a..b {
                chunk.push_encoded(values.get(i as usize)).map_err(encode)?;
            }
            chunk_groups.push(chunk.len() as u32);
        }
        flush(&mut chunk, &mut chunk_groups, &mut out)?;
        Ok(out)
    }
}

/// A run of whole groups, cut out of a grouped call input.
struct GroupPiece {
    keys: Column,
    values: Column,
    groups: Vec<u32>,
    states: Column,
}

/// Packs whole groups of `values` (and `keys`, when given) with their
/// `states` into pieces of at most `limit` bytes; a group that alone is
/// larger forms a piece of its own.
fn pack_groups(
    keys: Option<&Column>,
    values: &Column,
    groups: &[u32],
    states: &Column,
    limit: usize,
) -> std::result::Result<Vec<GroupPiece>, sluice_sdk::EncodeError> {
    let n = groups.len().saturating_sub(1);
    let element =
        |i: u32| values.get(i as usize).len() + keys.map_or(0, |k| k.get(i as usize).len());
    let size =
        |g: usize| (groups[g]..groups[g + 1]).map(element).sum::<usize>() + states.get(g).len();
    let mut pieces = Vec::new();
    let mut g0 = 0;
    while g0 < n {
        let (mut g1, mut bytes) = (g0 + 1, size(g0));
        while g1 < n && bytes + size(g1) <= limit {
            bytes += size(g1);
            g1 += 1;
        }
        let mut piece = GroupPiece {
            keys: Column::new(),
            values: Column::new(),
            groups: vec![0],
            states: Column::new(),
        };
        for g in g0..g1 {
            for i in groups[g]..groups[g + 1] {
                piece.values.push_encoded(values.get(i as usize))?;
                if let Some(k) = keys {
                    piece.keys.push_encoded(k.get(i as usize))?;
                }
            }
            piece.groups.push(piece.values.len() as u32);
            piece.states.push_encoded(states.get(g))?;
        }
        pieces.push(piece);
        g0 = g1;
    }
    Ok(pieces)
}

/// A native function called through an operator of another kind: a bug in
/// the caller, which checks kinds when the graph is built.
fn unreachable_kind<T>(f: &Func) -> Result<T> {
    Err(Error::Plan(format!(
        "`{}` is a {}, which this operator cannot call",
        f.name, f.kind
    )))
}

/// Input bytes per plugin call of a function that sees one element at a
/// time (map, flat-map, filter), unless the job sets a limit of its own:
/// a partition of a few megabytes goes to the plugin in pieces of about
/// this size. Each piece is then copied into the guest, processed, copied
/// out and validated while it is still in the processor's cache, where
/// one call over the whole partition would stream it from memory four
/// times; the guest's memory also stays small.
const CALL_CHUNK_BYTES: usize = 256 << 10;

/// The most a piecewise call reserves for its output up front (it grows
/// past this as any column does).
const RESERVE_CAP: usize = 64 << 20;

/// Consecutive element ranges of `input` of at most `limit` bytes each (a
/// larger element forms a range of its own). `input`'s offsets must be in
/// order, as a validated column's are.
fn chunks(input: &Column, limit: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let n = input.len();
    let mut lo = 0;
    std::iter::from_fn(move || {
        if lo >= n {
            return None;
        }
        let base = input.offsets[lo] as usize;
        let fit = input.offsets[lo + 1..=n].partition_point(|&end| end as usize - base <= limit);
        let hi = lo + fit.max(1);
        let range = lo..hi;
        lo = hi;
        Some(range)
    })
}

/// `call` (a map, flat-map or chain of them) over `input` cut into pieces of
/// at most `limit` bytes ([`chunks`]): the pieces' outputs joined in order,
/// each piece's other result given to `each`, and an element at fault
/// numbered within `input`. `bad` makes the error of an output too large
/// to join.
fn piecewise<T>(
    input: &Column,
    limit: usize,
    mut call: impl FnMut(&mut Column) -> Result<(Column, T)>,
    mut each: impl FnMut(T),
    bad: impl Fn(String) -> Error,
) -> Result<Column> {
    let mut out = Column::new();
    let mut chunk = Column::new();
    for range in chunks(input, limit) {
        let start = range.start;
        copy_elements(input, range, &mut chunk);
        let (part, other) = call(&mut chunk).map_err(|e| at_offset(e, start))?;
        if out.is_empty() && !part.is_empty() {
            // Room for the whole output, as the first piece suggests,
            // rather than growing (and copying) it piece by piece; capped,
            // as a flat-map's first piece may say nothing of the rest.
            let pieces = input.bytes.len() / chunk.bytes.len().max(1) + 1;
            out = Column::with_capacity(
                part.len().saturating_mul(pieces).min(RESERVE_CAP / 4),
                part.bytes.len().saturating_mul(pieces).min(RESERVE_CAP),
            );
        }
        out.extend_from(&part).map_err(|e| bad(e.to_string()))?;
        each(other);
    }
    Ok(out)
}

/// `e`, from a call on the elements from `start` of a partition, with the
/// element at fault (if any) numbered within the whole partition.
fn at_offset(mut e: Error, start: usize) -> Error {
    if let Error::Plugin { fault, .. } = &mut e
        && let PluginFault::Refused {
            element: Some(i), ..
        } = fault.as_mut()
    {
        *i += start as u64;
    }
    e
}

/// Makes `out` the elements `range` of `input` (reusing `out`'s buffers).
fn copy_elements(input: &Column, range: std::ops::Range<usize>, out: &mut Column) {
    let (start, end) = (input.offsets[range.start], input.offsets[range.end]);
    out.bytes.clear();
    out.bytes
        .extend_from_slice(&input.bytes[start as usize..end as usize]);
    out.offsets.clear();
    out.offsets.extend(
        input.offsets[range.start..=range.end]
            .iter()
            .map(|&o| o - start),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(items: &[i64]) -> Column {
        let mut c = Column::new();
        for i in items {
            c.push(i).unwrap();
        }
        c
    }

    fn site() -> CallSite {
        CallSite {
            batch: BatchTime(1000),
            partition: 0,
            partitions: 1,
        }
    }

    /// A native function with a tiny per-call limit, counting its calls.
    fn counting_sum(limit: usize, calls: Arc<std::sync::atomic::AtomicUsize>) -> Func {
        let mut f = Func::reduce("sum", |a: i64, b: i64| a + b);
        let Imp::Native(Native::Reduce(inner)) = f.imp.clone() else {
            unreachable!()
        };
        f.imp = Imp::Native(Native::Reduce(Arc::new(move |c: &Column, g: &[u32]| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(
                c.bytes.len() <= limit || c.len() <= 2,
                "a call of {} bytes and {} values over the {limit} byte limit",
                c.bytes.len(),
                c.len()
            );
            inner(c, g)
        })));
        f.with_input_limit(limit)
    }

    #[test]
    fn reductions_over_the_input_limit_are_split_and_still_exact() {
        // Groups: 1 value, 100 values (a big group), 2 values, 3 values.
        let mut values: Vec<i64> = vec![7];
        values.extend(1..=100);
        values.extend([1000, 2000, 5, 6, 300]);
        let groups = vec![0, 1, 101, 103, 106];
        for limit in [1, 2, 3, 7, 64, 1 << 20] {
            let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let f = counting_sum(limit, calls.clone());
            let out = f
                .apply_reduce(&mut col(&values), groups.clone(), site())
                .unwrap();
            assert_eq!(out, col(&[7, 5050, 3000, 311]), "limit {limit}");
            if limit == 1 << 20 {
                assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
            }
        }
    }

    #[test]
    fn folds_over_the_input_limit_are_chained_left_to_right() {
        // One group: a (sum, count) combiner, then 60 plain values.
        let mut values = Column::new();
        values.push(&(0i64, 0i64)).unwrap();
        for v in 1..=60i64 {
            values.push(&v).unwrap();
        }
        for limit in [1, 5, 20, 1 << 20] {
            let f = Func::fold("avg", |c: (i64, i64), v: i64| (c.0 + v, c.1 + 1))
                .with_input_limit(limit);
            let out = f
                .apply_reduce(&mut values.clone(), vec![0, 61], site())
                .unwrap();
            let mut want = Column::new();
            want.push(&(1830i64, 60i64)).unwrap();
            assert_eq!(out, want, "limit {limit}");
        }
    }

    #[test]
    fn chunks_cover_the_column_in_order_each_as_long_as_the_limit_allows() {
        let mut input = Column::new();
        for s in ["aa", "", "bbbbbbbbbb", "c", "", "", "dd", "eee"] {
            if s.is_empty() {
                input.push_absent().unwrap();
            } else {
                input.push(s).unwrap();
            }
        }
        let size =
            |r: &std::ops::Range<usize>| (input.offsets[r.end] - input.offsets[r.start]) as usize;
        for limit in 1..=40 {
            let ranges: Vec<_> = chunks(&input, limit).collect();
            let mut joined = Column::new();
            let mut piece = Column::new();
            let mut next = 0;
            for r in &ranges {
                assert_eq!(r.start, next, "limit {limit}: {ranges:?}");
                assert!(!r.is_empty());
                assert!(r.len() == 1 || size(r) <= limit, "limit {limit}: {r:?}");
                if r.end < input.len() {
                    assert!(size(&(r.start..r.end + 1)) > limit, "limit {limit}: {r:?}");
                }
                next = r.end;
                copy_elements(&input, r.clone(), &mut piece);
                piece.validate().unwrap();
                joined.extend_from(&piece).unwrap();
            }
            assert_eq!(next, input.len());
            assert_eq!(joined, input, "limit {limit}");
        }
        assert_eq!(chunks(&Column::new(), 10).count(), 0);
    }

    #[test]
    fn maps_and_filters_over_the_input_limit_are_split_in_order() {
        let input = col(&(0..50).collect::<Vec<_>>());
        let f = Func::map("double", |x: i64| x * 2).with_input_limit(5);
        let out = f.apply_values(&mut input.clone(), site()).unwrap();
        assert_eq!(out, col(&(0..50).map(|x| x * 2).collect::<Vec<_>>()));
        let f = Func::filter("odd", |x: i64| x % 2 == 1).with_input_limit(3);
        let kept = f.apply_filter(&mut input.clone(), site()).unwrap();
        assert_eq!(kept, (0..50).filter(|x| x % 2 == 1).collect::<Vec<u32>>());
    }

    #[test]
    fn an_element_refused_in_a_later_piece_is_numbered_within_the_partition() {
        let input = col(&(0..50).collect::<Vec<_>>());
        let f = Func::native_values("no_37", Kind::Map, |c| {
            sluice_sdk::run::try_map(c, |x: i64| if x == 37 { Err("37") } else { Ok(x) })
        })
        .with_input_limit(5);
        let e = f.apply_values(&mut input.clone(), site()).unwrap_err();
        let Error::Plugin { fault, .. } = e else {
            panic!("{e}");
        };
        assert!(
            matches!(
                *fault,
                PluginFault::Refused {
                    element: Some(37),
                    ..
                }
            ),
            "{fault}"
        );
    }
}
