//! Windows: an operator that takes its input's batches as they come and
//! produces its own at its slide, over the last `length` of them.

use super::keyed::hash;
use super::{Operator, Step, label};
use crate::error::Result;
use crate::func::Func;
use crate::ops::window::{OperatorState, WindowBuffer, WindowFuncs, WindowedReduce};
use crate::plan::Shape;
use crate::rdd::Rdd;
use sluice_sdk::Kind;

/// `count` as a reduce, for the windowed counts.
pub(in crate::graph) fn count_add() -> Func {
    Func::reduce("count", |a: i64, b: i64| a + b)
}

/// Its inverse, for windows that subtract what leaves them.
pub(in crate::graph) fn count_subtract() -> Func {
    Func::inverse_reduce("uncount", |a: i64, b: i64| a - b)
}

/// `window(length, slide)`: the input's batches of the last `length`.
pub(in crate::graph) struct Window {
    pub(in crate::graph) length: i64,
    pub(in crate::graph) buffer: WindowBuffer,
}

impl Operator for Window {
    fn describe(&self) -> String {
        format!("window {} ms", self.length)
    }

    fn shape(&self, parent_slide: Option<i64>, _: &[usize]) -> Shape {
        Shape::Window {
            batches: parent_slide.map_or(1, |s| (self.length / s.max(1)).max(1) as usize),
        }
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        if step.inputs_due[0] {
            let batch = step.shared_input(0)?;
            self.buffer.push(step.time(), batch);
        }
        if !step.due {
            return Ok(None);
        }
        Ok(Some(self.buffer.window(step.time(), self.length)))
    }

    fn is_window(&self) -> bool {
        true
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(&self.buffer)
    }

    fn state_mut(&mut self) -> Option<&mut dyn OperatorState> {
        Some(&mut self.buffer)
    }
}

/// `reduce_by_key_and_window` (and the windowed counts built on it).
pub(in crate::graph) struct Windowed {
    pub(in crate::graph) reduce: Func,
    pub(in crate::graph) inverse: Option<Func>,
    pub(in crate::graph) filter: Option<Func>,
    pub(in crate::graph) length: i64,
    pub(in crate::graph) state: WindowedReduce,
}

impl Operator for Windowed {
    fn combines_map_side(&self) -> bool {
        true
    }

    /// Incremental (with an inverse): the previous window is state.
    fn needs_checkpoint(&self) -> bool {
        self.inverse.is_some()
    }

    fn describe(&self) -> String {
        let opt = |o: &Option<Func>| o.as_ref().map_or("-".to_string(), label);
        format!(
            "reduce_by_key_and_window {} inverse {} filter {} over {} ms into {}",
            label(&self.reduce),
            opt(&self.inverse),
            opt(&self.filter),
            self.length,
            self.state.partitions()
        )
    }

    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        let mut v: Vec<(&Func, &'static [Kind])> = vec![(&self.reduce, &[Kind::Reduce])];
        if let Some(i) = &self.inverse {
            v.push((i, &[Kind::InverseReduce]));
        }
        if let Some(f) = &self.filter {
            v.push((f, &[Kind::Filter]));
        }
        v
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        hash(self.state.partitions())
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        if step.inputs_due[0] {
            let input = step.input(0)?;
            self.state.push(input, &self.reduce, step.ctx)?;
        }
        if !step.due {
            return Ok(None);
        }
        let funcs = WindowFuncs {
            reduce: &self.reduce,
            inverse: self.inverse.as_ref(),
            filter: self.filter.as_ref(),
        };
        self.state
            .window(self.length, step.slide, &funcs, step.ctx)
            .map(Some)
    }

    fn is_window(&self) -> bool {
        true
    }

    fn state(&self) -> Option<&dyn OperatorState> {
        Some(&self.state)
    }

    fn state_mut(&mut self) -> Option<&mut dyn OperatorState> {
        Some(&mut self.state)
    }
}
