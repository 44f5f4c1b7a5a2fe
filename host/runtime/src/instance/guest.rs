//! The engine's view of a plugin: [`Guest`], its columns lent to calls
//! without copying.

use super::Plugin;
use crate::bindings::{CallContext, CallInput, CallOutput, WitBatch, WitColumn};
use sluice_core::error::Result;
use sluice_core::guest::{self, Description, Guest, LiveVersion};
use std::sync::Arc;

/// Lends a column to a call: its buffers move into the WIT record and back
/// (see [`give_back`]), never copied.
fn lend(c: &mut sluice_sdk::Column) -> WitColumn {
    WitColumn {
        bytes: std::mem::take(&mut c.bytes),
        offsets: std::mem::take(&mut c.offsets),
    }
}

/// Returns what [`lend`] took.
fn give_back(w: WitColumn, c: &mut sluice_sdk::Column) {
    c.bytes = w.bytes;
    c.offsets = w.offsets;
}

fn wit_context(ctx: guest::CallContext) -> CallContext {
    CallContext {
        batch_time_ms: ctx.batch_time_ms,
        partition: ctx.partition,
        partitions: ctx.partitions,
        attempt: ctx.attempt,
    }
}

fn column_of(w: WitColumn) -> sluice_sdk::Column {
    sluice_sdk::Column {
        bytes: w.bytes,
        offsets: w.offsets,
    }
}

impl Guest for Plugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &Description {
        &self.description
    }

    fn input_bytes_per_call(&self) -> u64 {
        self.limits.input_bytes_per_call
    }

    fn chains(&self) -> bool {
        self.chain.is_some()
    }

    fn invoke(
        &self,
        function: u32,
        ctx: guest::CallContext,
        input: &mut guest::CallInput,
    ) -> Result<guest::CallOutput> {
        let wit = CallInput {
            primary: WitBatch {
                keys: lend(&mut input.primary.keys),
                values: lend(&mut input.primary.values),
            },
            groups: std::mem::take(&mut input.groups),
            secondary: lend(&mut input.secondary),
        };
        let result = self.invoke_wit(function, wit_context(ctx), &wit);
        give_back(wit.primary.keys, &mut input.primary.keys);
        give_back(wit.primary.values, &mut input.primary.values);
        give_back(wit.secondary, &mut input.secondary);
        input.groups = wit.groups;
        Ok(match result? {
            CallOutput::Batch(b) => guest::CallOutput::Batch(sluice_sdk::Batch {
                keys: column_of(b.keys),
                values: column_of(b.values),
            }),
            CallOutput::Selection(s) => guest::CallOutput::Selection(s),
            CallOutput::None => guest::CallOutput::None,
        })
    }

    fn invoke_chain(
        &self,
        functions: &[u32],
        ctx: guest::CallContext,
        values: &mut sluice_sdk::Column,
    ) -> Result<guest::ChainOutput> {
        let wit = lend(values);
        let result = self.invoke_chain_wit(functions, wit_context(ctx), &wit);
        give_back(wit, values);
        let out = result?;
        Ok(guest::ChainOutput {
            values: column_of(out.values),
            counts: out.counts,
        })
    }

    fn live_version(&self) -> &LiveVersion {
        &self.live
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}
