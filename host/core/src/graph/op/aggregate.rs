//! Whole-batch operators: the input gathered into one task (an aggregate,
//! or a function that sees the batch whole), or spread anew.

use super::{Operator, Step, label};
use crate::error::Result;
use crate::func::Func;
use crate::ops::{aggregate, narrow};
use crate::plan::{Exchange, Shape};
use crate::rdd::Rdd;
use sluice_sdk::Kind;

fn gather(output: Option<usize>) -> Shape {
    Shape::Exchange {
        exchange: Exchange::Gather,
        output,
    }
}

/// `count()`: one element, the number of elements.
pub(in crate::graph) struct Count;

impl Operator for Count {
    fn describe(&self) -> String {
        "count".to_string()
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        gather(Some(1))
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        Ok(Some(aggregate::count(&step.input(0)?)))
    }
}

/// `reduce(f)`: one element, every element combined with `f`.
pub(in crate::graph) struct Reduce(pub(in crate::graph) Func);

impl Operator for Reduce {
    fn describe(&self) -> String {
        format!("reduce {}", label(&self.0))
    }

    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        vec![(&self.0, &[Kind::Reduce])]
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        gather(Some(1))
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let input = step.input(0)?;
        aggregate::reduce(&self.0, input, step.ctx).map(Some)
    }
}

/// `transform(f)`: `f` sees the whole batch and returns the new one.
pub(in crate::graph) struct Transform(pub(in crate::graph) Func);

impl Operator for Transform {
    fn describe(&self) -> String {
        format!("transform {}", label(&self.0))
    }

    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        vec![(&self.0, &[Kind::Transform])]
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        gather(None)
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let input = step.input(0)?;
        narrow::transform(&self.0, input, step.ctx).map(Some)
    }
}

/// `transform_with(other, f)`: `f` sees both streams' whole batches.
pub(in crate::graph) struct TransformWith(pub(in crate::graph) Func);

impl Operator for TransformWith {
    fn describe(&self) -> String {
        format!("transform_with {}", label(&self.0))
    }

    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        vec![(&self.0, &[Kind::Transform])]
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        gather(None)
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let left = step.input(0)?;
        let right = step.input(1)?;
        narrow::transform_with(&self.0, left, right, step.ctx).map(Some)
    }
}

/// `StreamingContext::transform(streams, f)`: `f` sees every input's whole
/// batch, one array each.
pub(in crate::graph) struct TransformAll(pub(in crate::graph) Func, pub(in crate::graph) usize);

impl Operator for TransformAll {
    fn describe(&self) -> String {
        format!("transform of {} streams {}", self.1, label(&self.0))
    }

    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        vec![(&self.0, &[Kind::Transform])]
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        gather(None)
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let inputs = (0..self.1)
            .map(|i| step.shared_input(i))
            .collect::<Result<Vec<_>>>()?;
        let rdds: Vec<&Rdd> = inputs.iter().map(|r| &**r).collect();
        narrow::transform_all(&self.0, &rdds, step.ctx).map(Some)
    }
}

/// `repartition(n)`: the elements spread round robin into `n` partitions.
pub(in crate::graph) struct Repartition(pub(in crate::graph) usize);

impl Operator for Repartition {
    fn describe(&self) -> String {
        format!("repartition into {}", self.0)
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        Shape::Exchange {
            exchange: Exchange::Rebalance { partitions: self.0 },
            output: Some(self.0),
        }
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        narrow::repartition(self.0, step.input(0)?, step.ctx).map(Some)
    }
}
