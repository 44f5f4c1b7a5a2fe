//! Keyed state: operators whose per-key state lives across batches, in
//! the partition its key hashes to.

use super::keyed::hash;
use super::{Operator, Step, label};
use crate::error::{Error, Result};
use crate::func::Func;
use crate::ops::window::{MapWithState, OperatorState, StateByKey};
use crate::plan::Shape;
use crate::rdd::Rdd;
use sluice_sdk::Kind;
use std::sync::{Arc, Mutex};

/// `update_state_by_key`: `initial` seeds the state at the first batch.
pub(in crate::graph) struct UpdateState {
    pub(in crate::graph) func: Func,
    pub(in crate::graph) initial: Option<Rdd>,
    pub(in crate::graph) state: StateByKey,
}

impl Operator for UpdateState {
    fn describe(&self) -> String {
        format!(
            "update_state_by_key {} into {}",
            label(&self.func),
            self.state.partitions()
        )
    }

    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        vec![(&self.func, &[Kind::UpdateState])]
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        hash(self.state.partitions())
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        if let Some(seed) = self.initial.take() {
            self.state.seed(seed, step.ctx)?;
        }
        let input = step.input(0)?;
        self.state.update(&self.func, input, step.ctx).map(Some)
    }

    fn seed(&mut self) -> Option<&mut Option<Rdd>> {
        Some(&mut self.initial)
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(&self.state)
    }

    fn state_mut(&mut self) -> Option<&mut dyn OperatorState> {
        Some(&mut self.state)
    }

    fn needs_checkpoint(&self) -> bool {
        true
    }

    fn restored(&mut self) {
        // The initial state is in the checkpoint already.
        self.initial = None;
    }
}

/// Where `map_with_state` leaves its state of the batch for its
/// `state_snapshots` stream.
pub(in crate::graph) type SnapshotSlot = Arc<Mutex<Option<Rdd>>>;

/// `map_with_state`: `initial` seeds the state at the first batch;
/// `snapshots`, once a `state_snapshots` stream reads it, receives every
/// key's state after each batch.
pub(in crate::graph) struct WithState {
    pub(in crate::graph) func: Func,
    pub(in crate::graph) initial: Option<Rdd>,
    pub(in crate::graph) state: MapWithState,
    pub(in crate::graph) snapshots: Option<SnapshotSlot>,
}

impl Operator for WithState {
    fn describe(&self) -> String {
        format!(
            "map_with_state {} into {}",
            label(&self.func),
            self.state.partitions()
        )
    }

    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        vec![(&self.func, &[Kind::MapState])]
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        hash(self.state.partitions())
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        if let Some(seed) = self.initial.take() {
            self.state.seed(seed, step.ctx)?;
        }
        let input = step.input(0)?;
        let mapped = self.state.update(&self.func, input, step.ctx)?;
        if let Some(slot) = &self.snapshots {
            *lock_slot(slot) = Some(self.state.snapshots()?);
        }
        Ok(Some(mapped))
    }

    fn seed(&mut self) -> Option<&mut Option<Rdd>> {
        Some(&mut self.initial)
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(&self.state)
    }

    fn state_mut(&mut self) -> Option<&mut dyn OperatorState> {
        Some(&mut self.state)
    }

    fn needs_checkpoint(&self) -> bool {
        true
    }

    fn restored(&mut self) {
        // The initial state is in the checkpoint already.
        self.initial = None;
    }

    fn snapshot_slot(&mut self) -> Option<(SnapshotSlot, usize)> {
        let slot = self.snapshots.get_or_insert_with(SnapshotSlot::default);
        Some((slot.clone(), self.state.partitions()))
    }
}

/// `state_snapshots`: the state of its `map_with_state` parent after each
/// batch, every key with its state (Spark's `stateSnapshots`).
pub(in crate::graph) struct StateSnapshots {
    pub(in crate::graph) slot: SnapshotSlot,
    pub(in crate::graph) partitions: usize,
}

impl Operator for StateSnapshots {
    fn describe(&self) -> String {
        "state_snapshots".to_string()
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        hash(self.partitions)
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        // The parent's mapped elements are not this stream's: taking them
        // only marks them read.
        step.shared_input(0)?;
        let rdd = lock_slot(&self.slot).take().ok_or_else(|| {
            Error::Internal("map_with_state left no state for its snapshots".to_string())
        })?;
        Ok(Some(rdd))
    }
}

fn lock_slot(slot: &SnapshotSlot) -> std::sync::MutexGuard<'_, Option<Rdd>> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}
