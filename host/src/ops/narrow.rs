//! map, flat_map and filter: one function call per partition, partitions in
//! parallel, no data movement between partitions.

use super::BatchContext;
use crate::error::Result;
use crate::func::{CallSite, Func};
use crate::rdd::Rdd;
use rayon::prelude::*;
use sluice_sdk::{Batch, Column};

/// Which narrow transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Narrow {
    Map,
    FlatMap,
    Filter,
}

/// Applies `func` to every partition of `rdd`.
pub(crate) fn apply(kind: Narrow, func: &Func, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    let n = rdd.partitions.len() as u32;
    let partitions = ctx.pool.install(|| {
        rdd.partitions
            .into_par_iter()
            .enumerate()
            .map(|(p, batch)| {
                let site = CallSite {
                    batch: ctx.time,
                    partition: p as u32,
                    partitions: n,
                };
                // Keyed elements reach functions as `[key, value]` pairs.
                let mut values = if batch.has_keys() {
                    batch.joined_values().into_owned()
                } else {
                    batch.values
                };
                if values.is_empty() {
                    return Ok(Batch::default());
                }
                match kind {
                    Narrow::Map | Narrow::FlatMap => {
                        Ok(Batch::from_values(func.apply_values(&mut values, site)?))
                    }
                    Narrow::Filter => {
                        let kept = func.apply_filter(&mut values, site)?;
                        Ok(Batch::from_values(select(&values, &kept)))
                    }
                }
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(Rdd { partitions })
}

/// The elements of `values` at the (ascending, in range) indices `kept`.
fn select(values: &Column, kept: &[u32]) -> Column {
    if kept.len() == values.len() {
        return values.clone();
    }
    let mut out = Column::with_capacity(kept.len(), values.bytes.len());
    for &i in kept {
        // Offsets of a valid column fit.
        let _ = out.push_encoded(values.get(i as usize));
    }
    out
}
