//! Keyed state: operators whose per-key state lives across batches, in
//! the partition its key hashes to.

use super::keyed::hash;
use super::{Operator, Step, label};
use crate::error::Result;
use crate::func::Func;
use crate::ops::window::{MapWithState, OperatorState, StateByKey};
use crate::plan::Shape;
use crate::rdd::Rdd;
use sluice_sdk::Kind;

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

    fn restored(&mut self) {
        // The initial state is in the checkpoint already.
        self.initial = None;
    }
}

/// `map_with_state`.
pub(in crate::graph) struct WithState {
    pub(in crate::graph) func: Func,
    pub(in crate::graph) state: MapWithState,
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
        let input = step.input(0)?;
        self.state.update(&self.func, input, step.ctx).map(Some)
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(&self.state)
    }

    fn state_mut(&mut self) -> Option<&mut dyn OperatorState> {
        Some(&mut self.state)
    }
}
