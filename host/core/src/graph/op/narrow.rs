//! Narrow operators: partition `i` of the output from partition `i` of the
//! input, no data crossing between tasks.

use super::{Operator, Step, label};
use crate::error::Result;
use crate::func::Func;
use crate::ops::narrow::{self, Narrow};
use crate::ops::{BatchContext, keyed};
use crate::plan::Shape;
use crate::rdd::Rdd;
use sluice_sdk::{Batch, Column, Kind};

/// `map`, `flat_map`, `filter` and `map_partitions`.
pub(in crate::graph) struct NarrowOp(pub(in crate::graph) Narrow, pub(in crate::graph) Func);

impl Operator for NarrowOp {
    fn describe(&self) -> String {
        format!("{:?} {}", self.0, label(&self.1))
    }

    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        let kinds: &'static [Kind] = match self.0 {
            Narrow::Map => &[Kind::Map],
            Narrow::FlatMap => &[Kind::FlatMap, Kind::Map],
            Narrow::Filter => &[Kind::Filter],
            Narrow::MapPartitions => &[Kind::MapPartitions],
        };
        vec![(&self.1, kinds)]
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        Shape::Narrow
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let input = step.input(0)?;
        narrow::apply(self.0, &self.1, input, step.ctx).map(Some)
    }

    fn chain_link(&self) -> Option<&Func> {
        matches!(self.0, Narrow::Map | Narrow::FlatMap).then_some(&self.1)
    }
}

/// `map_values(f)`: keys and partitions kept.
pub(in crate::graph) struct MapValues(pub(in crate::graph) Func);

impl Operator for MapValues {
    fn describe(&self) -> String {
        format!("map_values {}", label(&self.0))
    }

    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        vec![(&self.0, &[Kind::Map])]
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        Shape::Narrow
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let input = step.input(0)?;
        keyed::map_values(&self.0, input, step.ctx).map(Some)
    }
}

/// `flat_map_values(f)`: keys and partitions kept.
pub(in crate::graph) struct FlatMapValues(pub(in crate::graph) Func);

impl Operator for FlatMapValues {
    fn describe(&self) -> String {
        format!("flat_map_values {}", label(&self.0))
    }

    fn functions(&self) -> Vec<(&Func, &'static [Kind])> {
        vec![(&self.0, &[Kind::FlatMap, Kind::Map])]
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        Shape::Narrow
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let input = step.input(0)?;
        keyed::flat_map_values(&self.0, input, step.ctx).map(Some)
    }
}

/// `glom()`: each partition as one array.
pub(in crate::graph) struct Glom;

impl Operator for Glom {
    fn describe(&self) -> String {
        "glom".to_string()
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        Shape::Narrow
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        Ok(Some(narrow::glom(step.input(0)?)))
    }
}

/// `union(others)`: the partitions of every input, one after the other.
pub(in crate::graph) struct Union;

impl Operator for Union {
    fn describe(&self) -> String {
        "union".to_string()
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        Shape::Union
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let mut partitions = Vec::new();
        for i in 0..step.inputs_due.len() {
            partitions.extend(step.input(i)?.partitions);
        }
        Ok(Some(Rdd { partitions }))
    }
}

/// How [`Rekeyed`] re-keys each element `e`.
#[derive(Debug, Clone, Copy)]
pub(in crate::graph) enum Rekey {
    /// `(nil, e)`: one key for everything (`reduce_by_window`).
    Constant,
    /// `(e, 1)`: counting elements by value.
    ByValueOne,
    /// `1`: counting elements.
    One,
    /// The value of a `(k, v)` element.
    Values,
}

/// Internal: re-keys elements for the windowed counts.
pub(in crate::graph) struct Rekeyed(pub(in crate::graph) Rekey);

impl Operator for Rekeyed {
    fn describe(&self) -> String {
        format!("rekey {:?}", self.0)
    }

    fn shape(&self, _: Option<i64>, _: &[usize]) -> Shape {
        Shape::Narrow
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        let input = step.input(0)?;
        rekey(self.0, input, step.ctx).map(Some)
    }
}

fn rekey(how: Rekey, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    let partitions = rdd
        .partitions
        .into_iter()
        .map(|b| {
            // A column of `n` copies of one encoded value.
            let repeat = |encoded: u8| {
                let mut c = Column::with_capacity(b.len(), b.len());
                for _ in 0..b.len() {
                    let _ = c.push_encoded(&[encoded]);
                }
                c
            };
            Ok(match how {
                Rekey::Constant => Batch {
                    keys: repeat(0xc0),
                    values: b.joined_values().into_owned(),
                },
                Rekey::ByValueOne => Batch {
                    keys: b.joined_values().into_owned(),
                    values: repeat(1),
                },
                Rekey::One => Batch::from_values(repeat(1)),
                Rekey::Values => {
                    let (_, values) = keyed::keyed(b, ctx, "values")?;
                    Batch::from_values(values)
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Rdd { partitions })
}
