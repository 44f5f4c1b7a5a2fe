//! Calls over one partition's values: maps, flat-maps and chains of them,
//! keyed maps, functions of two columns, sinks and filters.

use super::call::unreachable_kind;
use super::pieces::{at_offset, chunks, copy_elements, piecewise};
use super::{CallSite, Func, Imp, Native};
use crate::error::{Error, Result};
use crate::guest::{CallOutput, Guest};
use sluice_sdk::{Batch, Column, Kind};
use std::sync::Arc;

impl Func {
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
            return self.apply_keyed_in_pieces(keys, values, limit, site);
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

    /// [`Func::apply_keyed`] over `keys` and `values` cut into pieces of at
    /// most `limit` bytes (a larger element forms a piece of its own).
    fn apply_keyed_in_pieces(
        &self,
        keys: &Column,
        values: &Column,
        limit: usize,
        site: CallSite,
    ) -> Result<Batch> {
        let mut out = Batch::default();
        let encode = |e: sluice_sdk::EncodeError| self.bad_output(site, e.to_string());
        let mut start = 0;
        while start < values.len() {
            let mut end = start + 1;
            let mut size = keys.get(start).len() + values.get(start).len();
            while end < values.len() && size + keys.get(end).len() + values.get(end).len() <= limit
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
        Ok(out)
    }
}
