//! Hot swap: a new plugin version staged for the next batch boundary, rolled back if its first batch fails.

use super::batch::BatchRun;
use super::{Graph, StreamingContext, lock, plugin_uses};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::guest;
use crate::guest::Guest;
use crate::rdd::Rdd;
use crate::time::BatchTime;
use sluice_sdk::Kind;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A hot swap waiting for (or in) its first batch.
pub(super) struct StagedSwap {
    pub(super) root: Arc<dyn Guest>,
    pub(super) new: Arc<dyn Guest>,
    pub(super) handle: Arc<SwapHandle>,
}

/// What became of a hot swap ([`StreamingContext::swap_plugin`]).
#[derive(Debug, Default)]
pub struct SwapHandle {
    outcome: Mutex<Option<std::result::Result<u64, String>>>,
    settled: std::sync::Condvar,
}

impl SwapHandle {
    fn settle(&self, outcome: std::result::Result<u64, String>) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        self.settled.notify_all();
    }

    /// `None` while the new version has not finished its first batch; then
    /// `Ok(index of that batch)`, or `Err(why)` when it failed and was
    /// rolled back (that batch ran again on the previous version).
    pub fn outcome(&self) -> Option<std::result::Result<u64, String>> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits up to `timeout` for the outcome.
    pub fn wait(&self, timeout: Duration) -> Option<std::result::Result<u64, String>> {
        let guard = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .settled
            .wait_timeout_while(guard, timeout, |o| o.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.clone()
    }
}

impl StreamingContext {
    /// Hot swap (DESIGN §4): replaces `plugin` (as loaded for this job) by
    /// `new` — loaded and compiled by the caller, off the batch path — at
    /// the next batch boundary, so every batch runs wholly on one version.
    /// Host-owned state (windows, `update_state_by_key`) carries over. The
    /// new version must export every function the job uses from `plugin`
    /// with the same kind, or the swap is refused here. If it fails its
    /// first batch (trap, deadline, memory, refusal), it is rolled back and
    /// that batch runs again on the previous version; the handle tells.
    /// Callable before or while the job runs (from another thread).
    pub fn swap_plugin<P: Guest + 'static>(
        &self,
        plugin: &Arc<P>,
        new: Arc<P>,
    ) -> Result<Arc<SwapHandle>> {
        let plugin: Arc<dyn Guest> = plugin.clone();
        let new: Arc<dyn Guest> = new;
        let plugin = &plugin;
        let uses = {
            let recorded = self.uses.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if recorded.is_empty() {
                plugin_uses(&lock(&self.graph))
            } else {
                recorded
            }
        };
        let mine: Vec<&(Arc<dyn Guest>, String, Kind)> = uses
            .iter()
            .filter(|(p, _, _)| Arc::ptr_eq(p, plugin))
            .collect();
        if mine.is_empty() {
            return Err(Error::Plan(format!(
                "plugin `{}` is not used by this job (swap the plugin the job's functions were made from)",
                plugin.name()
            )));
        }
        for (_, function, kind) in mine {
            match new.description().function(function) {
                Some((_, f)) if f.kind == *kind => {}
                Some((_, f)) => {
                    return Err(Error::Plan(format!(
                        "cannot swap `{}` to {} {}: `{function}` is a {} function there, the job uses it as {kind}",
                        plugin.name(),
                        new.description().name,
                        new.description().version,
                        f.kind
                    )));
                }
                None => {
                    return Err(Error::Plan(format!(
                        "cannot swap `{}` to {} {}: it lacks `{function}`, which the job uses",
                        plugin.name(),
                        new.description().name,
                        new.description().version
                    )));
                }
            }
        }
        let handle = Arc::new(SwapHandle::default());
        self.swaps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(StagedSwap {
                root: plugin.clone(),
                new,
                handle: handle.clone(),
            });
        Ok(handle)
    }

    /// Puts the hot swaps staged since the last batch in force; returns
    /// them with the version each replaced, for a rollback.
    pub(super) fn begin_swaps(&self) -> Vec<(StagedSwap, Arc<dyn Guest>)> {
        let staged = std::mem::take(&mut *self.swaps.lock().unwrap_or_else(|e| e.into_inner()));
        staged
            .into_iter()
            .map(|sw| {
                let previous = guest::live(&sw.root);
                tracing::info!(
                    plugin = %sw.root.name(),
                    from = %previous.description().version,
                    to = %sw.new.description().version,
                    "hot swap: the new version takes over at this batch"
                );
                sw.root.live_version().set(Some(sw.new.clone()));
                (sw, previous)
            })
            .collect()
    }

    /// Runs a batch; when plugins were just swapped, a plugin failure of a
    /// new version rolls it back (state restored to before the batch) and
    /// the batch runs again, wholly on the previous version.
    pub(super) fn run_batch_swapping(
        &self,
        g: &mut Graph,
        executor: &dyn Executor,
        (time, index, first): (BatchTime, u64, BatchTime),
        inputs: Vec<Rdd>,
        swaps: Vec<(StagedSwap, Arc<dyn Guest>)>,
    ) -> Result<BatchRun> {
        if swaps.is_empty() {
            return self.run_batch(g, executor, time, index, first, inputs);
        }
        let kept = inputs.clone();
        let before: Vec<(usize, Vec<u8>)> = g
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(id, n)| n.op.snapshot().map(|b| (id, b)))
            .collect();
        // A seed of update_state_by_key not yet applied is applied by this
        // batch: a rollback puts it back.
        let seeds: Vec<(usize, Rdd)> = g
            .nodes
            .iter_mut()
            .enumerate()
            .filter_map(|(id, n)| Some((id, n.op.seed()?.clone()?)))
            .collect();
        let result = self.run_batch(g, executor, time, index, first, inputs);
        let failed = match &result {
            Err(Error::Plugin { plugin, .. }) => swaps
                .iter()
                .any(|(sw, _)| sw.root.name() == plugin.as_str()),
            _ => false,
        };
        if !failed {
            for (sw, _) in &swaps {
                sw.handle.settle(Ok(index));
            }
            return result;
        }
        let why = result.err().map(|e| e.to_string()).unwrap_or_default();
        for (sw, previous) in &swaps {
            let back = (!Arc::ptr_eq(previous, &sw.root)).then(|| previous.clone());
            sw.root.live_version().set(back);
            tracing::error!(
                plugin = %sw.root.name(),
                version = %sw.new.description().version,
                batch = time.millis(),
                "hot swap rolled back: the new version failed its first batch: {why}"
            );
            sw.handle.settle(Err(why.clone()));
        }
        for (id, bytes) in before {
            g.nodes[id].op.restore(&bytes)?;
        }
        for (id, seed) in seeds {
            if let Some(initial) = g.nodes[id].op.seed() {
                *initial = Some(seed);
            }
        }
        self.run_batch(g, executor, time, index, first, kept)
    }
}
