//! Keyed operators: the input shuffled by a hash of each element's key, so
//! that one task holds all of a key's values.

use super::{Operator, Step, label};
use crate::error::Result;
use crate::func::Func;
use crate::ops::keyed;
use crate::plan::{Exchange, Shape};
use crate::rdd::Rdd;
use sluice_sdk::Kind;

/// The shape of an operator that shuffles by key into `partitions`.
pub(super) fn hash(partitions: usize) -> Shape {
    Shape::Exchange {
        exchange: Exchange::Hash { partitions },
        output: Some(partitions),
    }
}

/// `reduce_by_key(f, partitions)`: combined map-side, shuffled, combined again.
pub(in crate::graph) struct ReduceByKey {
    pub(in crate::graph) func: Func,
    pub(in crate::graph) partitions: usize,
}

impl Operator for ReduceByKey {
    fn combines_map_side(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "reduce_by_key {} into {}",
            label(&self.func),
            self.partitions
        )
    }

    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        vec![(&self.func, &[Kind::Reduce])]
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        hash(self.partitions)
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let input = step.input(0)?;
        keyed::reduce_by_key(&self.func, self.partitions, input, step.ctx).map(Some)
    }
}

/// `count_by_value(partitions)`.
pub(in crate::graph) struct CountByValue {
    pub(in crate::graph) partitions: usize,
}

impl Operator for CountByValue {
    fn combines_map_side(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("count_by_value into {}", self.partitions)
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        hash(self.partitions)
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let input = step.input(0)?;
        keyed::count_by_value(self.partitions, input, step.ctx).map(Some)
    }
}

/// `group_by_key(partitions)`.
pub(in crate::graph) struct GroupByKey {
    pub(in crate::graph) partitions: usize,
}

impl Operator for GroupByKey {
    fn describe(&self) -> String {
        format!("group_by_key into {}", self.partitions)
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        hash(self.partitions)
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let input = step.input(0)?;
        keyed::group_by_key(self.partitions, input, step.ctx).map(Some)
    }
}

/// `combine_by_key(create, merge_value, merge_combiners, partitions)`.
pub(in crate::graph) struct CombineByKey {
    pub(in crate::graph) create: Func,
    pub(in crate::graph) merge_value: Func,
    pub(in crate::graph) merge_combiners: Func,
    pub(in crate::graph) partitions: usize,
}

impl Operator for CombineByKey {
    fn combines_map_side(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "combine_by_key {} {} {} into {}",
            label(&self.create),
            label(&self.merge_value),
            label(&self.merge_combiners),
            self.partitions
        )
    }

    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        vec![
            (&self.create, &[Kind::Map]),
            (&self.merge_value, &[Kind::Reduce]),
            (&self.merge_combiners, &[Kind::Reduce]),
        ]
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        hash(self.partitions)
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let combiner = keyed::Combiner {
            create: Some(&self.create),
            merge_value: &self.merge_value,
            merge_combiners: &self.merge_combiners,
        };
        let input = step.input(0)?;
        keyed::combine_by_key(
            &combiner,
            self.partitions,
            input,
            step.ctx,
            "combine_by_key",
        )
        .map(Some)
    }
}
