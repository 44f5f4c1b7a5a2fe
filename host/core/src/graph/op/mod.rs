//! The graph's operators: one implementation of [`Operator`] per
//! transformation, one file per family (sources, narrow, whole-batch,
//! keyed, joins, windows, keyed state). Adding an operator is adding a
//! type here, not a branch in the batch loop.
//!
//! An operator says what it is (`describe`: the checkpoint fingerprint
//! and the plan), which user functions it calls, what it does to
//! partitioning (the planner's [`Shape`]), how it computes one batch from
//! its inputs, and what state it keeps across batches (for checkpoints).
//! The data-parallel work over partitions is in [`crate::ops`].

mod aggregate;
mod join;
mod keyed;
mod narrow;
mod source;
mod state;
mod window;

pub(super) use aggregate::{Count, Reduce, Repartition, Transform, TransformAll, TransformWith};
pub(super) use join::Join;
pub(super) use keyed::{CombineByKey, CountByValue, GroupByKey, ReduceByKey};
pub(super) use narrow::{FlatMapValues, Glom, MapValues, NarrowOp, Rekey, Rekeyed, Union};
pub(super) use source::Input;
pub(super) use state::{SnapshotSlot, StateSnapshots, UpdateState, WithState};
pub(super) use window::{Window, Windowed, count_add, count_subtract};

use crate::checkpoint::{StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::func::Func;
use crate::ops::BatchContext;
use crate::ops::window::OperatorState;
use crate::plan::Shape;
use crate::rdd::Rdd;
use crate::time::BatchTime;
use sluice_sdk::Kind;
use std::sync::Arc;

/// One transformation of the graph: a stream's operator.
pub(super) trait Operator: Send {
    /// What it is, for the graph fingerprint of checkpoints and the plan:
    /// kind, functions (name and kind) and parameters.
    fn describe(&self) -> String;

    /// The user functions it calls, each with the kinds it accepts (the
    /// first one named in errors).
    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        Vec::new()
    }

    /// What it does to partitioning, for the planner. `parent_slide` is
    /// its first input's slide (ms), `sources` the partitions of each
    /// source.
    fn shape(&self, parent_slide: Option<i64>, sources: &[usize]) -> Shape;

    /// Computes its batch from its inputs' (`None`: nothing this batch: a
    /// window that only took its input's batch).
    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>>;

    /// Whether it takes its input's batches at the input's times but
    /// produces its own only at its own (slower) slide.
    fn is_window(&self) -> bool {
        false
    }

    /// The state it keeps across batches (for checkpoints and a hot
    /// swap's rollback); `None`: it keeps none.
    fn state(&self) -> Option<&dyn OperatorState> {
        None
    }

    /// [`Operator::state`], to restore it.
    fn state_mut(&mut self) -> Option<&mut dyn OperatorState> {
        None
    }

    /// Whether its state must be checkpointed (Spark refuses to start such
    /// an operator without a checkpoint directory): keyed state and
    /// incremental windows.
    fn needs_checkpoint(&self) -> bool {
        false
    }

    /// Called once its state is restored (`update_state_by_key` then drops
    /// its initial state: the checkpoint holds it already).
    fn restored(&mut self) {}

    /// Whether it combines each input partition by key before its
    /// exchange (map-side combine), for the plan.
    fn combines_map_side(&self) -> bool {
        false
    }

    /// For an input stream: which source feeds it.
    fn source(&self) -> Option<usize> {
        None
    }

    /// For a map or flat-map: its function, which may run in one plugin
    /// call with its neighbours' (see `chain`).
    fn chain_link(&self) -> Option<&Func> {
        None
    }

    /// An initial state not applied yet (`update_state_by_key` with one):
    /// a hot swap that rolls a batch back puts it back.
    fn seed(&mut self) -> Option<&mut Option<Rdd>> {
        None
    }

    /// For `map_with_state`: where it leaves its state after each batch
    /// (made on the first call), and its partitions, for a
    /// `state_snapshots` stream.
    fn snapshot_slot(&mut self) -> Option<(SnapshotSlot, usize)> {
        None
    }

    /// Its whole state, for a checkpoint or a rollback (`None`: it keeps
    /// none).
    fn snapshot(&self) -> Option<Vec<u8>> {
        let state = self.state()?;
        let mut w = StateWriter::new();
        state.snapshot(&mut w);
        Some(w.into_bytes())
    }

    /// Restores the state [`Operator::snapshot`] took.
    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = StateReader::new(bytes);
        self.state_mut().ok_or_else(keeps_none)?.restore(&mut r)?;
        if !r.is_empty() {
            return Err(trailing_bytes());
        }
        self.restored();
        Ok(())
    }

    /// Restores sharded state: a header and the shard of every partition.
    fn restore_sharded(&mut self, header: &[u8], shards: &[Vec<u8>]) -> Result<()> {
        let mut h = StateReader::new(header);
        let mut readers: Vec<StateReader<'_>> =
            shards.iter().map(|s| StateReader::new(s)).collect();
        let state = self.state_mut().ok_or_else(keeps_none)?;
        state.restore_shards(&mut h, &mut readers)?;
        if !h.is_empty() || readers.iter().any(|r| !r.is_empty()) {
            return Err(trailing_bytes());
        }
        self.restored();
        Ok(())
    }
}

fn keeps_none() -> Error {
    Error::Plan("the checkpoint has state for a stream that keeps none".to_string())
}

fn trailing_bytes() -> Error {
    Error::Internal("checkpoint state has trailing bytes".to_string())
}

/// What an operator sees of one batch: its inputs, taken by position.
pub(super) struct Step<'s, 'c> {
    /// The batch, the worker pool and the stream's name.
    pub(super) ctx: &'s BatchContext<'c>,
    /// Its own batch is due now (a window also runs when only its input's is).
    pub(super) due: bool,
    /// Its slide (ms).
    pub(super) slide: i64,
    /// Per input: its batch is due now.
    pub(super) inputs_due: Vec<bool>,
    /// Takes input `i`'s batch (shared with its other takers, if any).
    pub(super) take: &'s mut dyn FnMut(usize) -> Result<Arc<Rdd>>,
    /// Every source's batch, by source index.
    pub(super) sources: &'s mut [Option<Rdd>],
}

impl Step<'_, '_> {
    /// Input `i`'s batch, owned (copied only if another taker shares it).
    pub(super) fn input(&mut self, i: usize) -> Result<Rdd> {
        Ok(Arc::unwrap_or_clone((self.take)(i)?))
    }

    /// Input `i`'s batch, shared.
    pub(super) fn shared_input(&mut self, i: usize) -> Result<Arc<Rdd>> {
        (self.take)(i)
    }

    /// The batch time.
    pub(super) fn time(&self) -> BatchTime {
        self.ctx.time
    }
}

/// A function as operators describe it: `name (kind)`.
pub(super) fn label(f: &Func) -> String {
    format!("{} ({})", f.name(), f.kind())
}
