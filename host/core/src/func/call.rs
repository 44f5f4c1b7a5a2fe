//! How a [`Func`] reaches what implements it: the plugin version in
//! force, its per-call input limits, plugin calls and their errors.

use super::pieces::CALL_CHUNK_BYTES;
use super::{CallSite, Func, Imp};
use crate::error::{Error, PluginFault, Result};
use crate::guest::{self, CallInput, CallOutput, Guest};
use sluice_sdk::{Batch, CallError, Column};
use std::sync::Arc;

impl Func {
    /// The plugin version in force and the function's index in it (a hot
    /// swap may have replaced the plugin the function was made from).
    pub(super) fn live_plugin(&self) -> Result<(Arc<dyn Guest>, u32)> {
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

    pub(super) fn input_limit(&self) -> usize {
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
    pub(super) fn chunk_limit(&self) -> usize {
        match (&self.imp, self.limit) {
            (Imp::Plugin { .. }, None) => self.input_limit().min(CALL_CHUNK_BYTES),
            _ => self.input_limit(),
        }
    }

    pub(super) fn native_err(&self, site: CallSite, e: CallError) -> Error {
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

    pub(super) fn bad_output(&self, site: CallSite, message: String) -> Error {
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
    pub(super) fn call_plugin(
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
    pub(super) fn call_values(
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
    pub(super) fn output_column(
        &self,
        site: CallSite,
        out: CallOutput,
        what: &str,
    ) -> Result<Column> {
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
}

/// A native function called through an operator of another kind: a bug in
/// the caller, which checks kinds when the graph is built.
pub(super) fn unreachable_kind<T>(f: &Func) -> Result<T> {
    Err(Error::Plan(format!(
        "`{}` is a {}, which this operator cannot call",
        f.name, f.kind
    )))
}
