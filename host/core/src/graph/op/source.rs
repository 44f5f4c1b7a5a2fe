//! Input streams: a source's batch enters the graph.

use super::{Operator, Step};
use crate::error::Result;
use crate::plan::Shape;
use crate::rdd::Rdd;

/// The stream of source `0` (an index into the graph's sources).
pub(in crate::graph) struct Input(pub(in crate::graph) usize);

impl Operator for Input {
    fn describe(&self) -> String {
        format!("source {}", self.0)
    }

    fn shape(&self, _parent_slide: Option<i64>, sources: &[usize]) -> Shape {
        Shape::Source {
            partitions: sources.get(self.0).copied().unwrap_or(1),
        }
    }

    fn compute(&mut self, step: &mut Step<'_, '_>) -> Result<Option<Rdd>> {
        Ok(Some(
            step.sources
                .get_mut(self.0)
                .and_then(Option::take)
                .unwrap_or_default(),
        ))
    }

    fn source(&self) -> Option<usize> {
        Some(self.0)
    }
}
