//! Joins: both inputs shuffled by key into the same partitions.

use super::keyed::hash;
use super::{Operator, Step};
use crate::error::Result;
use crate::ops::join::{JoinKind, join};
use crate::plan::Shape;
use crate::rdd::Rdd;

/// `join`, the outer joins and `cogroup` of two streams.
pub(in crate::graph) struct Join {
    pub(in crate::graph) kind: JoinKind,
    pub(in crate::graph) partitions: usize,
}

impl Operator for Join {
    fn describe(&self) -> String {
        format!("{} into {}", self.kind.name(), self.partitions)
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        hash(self.partitions)
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let left = step.input(0)?;
        let right = step.input(1)?;
        join(self.kind, self.partitions, left, right, step.ctx).map(Some)
    }
}
