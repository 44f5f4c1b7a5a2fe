//! map, flat_map and filter: one function call per partition, partitions in
//! parallel, no data movement between partitions.

use super::BatchContext;
use crate::error::Result;
use crate::func::{CallSite, Func};
use crate::guest::Guest;
use crate::rdd::Rdd;
use sluice_sdk::{Batch, Column};
use std::sync::Arc;

/// Which narrow transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Narrow {
    Map,
    FlatMap,
    Filter,
    MapPartitions,
}

/// `f` on every partition of `rdd`, in parallel: its values (keyed elements
/// as `[key, value]` pairs, as functions see them) and its call site.
fn each_partition<T: Send>(
    rdd: Rdd,
    ctx: &BatchContext<'_>,
    f: impl Fn(Column, CallSite) -> Result<T> + Sync + Send,
) -> Result<Vec<T>> {
    let n = rdd.partitions.len() as u32;
    ctx.tasks(rdd.partitions, |p, batch| {
        let site = CallSite {
            batch: ctx.time,
            partition: p as u32,
            partitions: n,
        };
        let values = if batch.has_keys() {
            batch.joined_values().into_owned()
        } else {
            batch.values
        };
        f(values, site)
    })
    .into_iter()
    .collect()
}

/// Applies `func` to every partition of `rdd`.
pub(crate) fn apply(kind: Narrow, func: &Func, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    let partitions = each_partition(rdd, ctx, |mut values, site| {
        // Spark runs mapPartitions on empty partitions too.
        if values.is_empty() && kind != Narrow::MapPartitions {
            return Ok(Batch::default());
        }
        match kind {
            Narrow::Map | Narrow::FlatMap | Narrow::MapPartitions => {
                Ok(Batch::from_values(func.apply_values(&mut values, site)?))
            }
            Narrow::Filter => {
                let kept = func.apply_filter(&mut values, site)?;
                Ok(Batch::from_values(select(&values, &kept)))
            }
        }
    })?;
    Ok(Rdd { partitions })
}

/// `funcs`, consecutive map and flat-map functions of one plugin that
/// [`Func::chain_of`] made `chain` of, applied to every partition of `rdd`
/// in one plugin call per piece of it. Returns the last function's output,
/// and how many elements each function produced over all partitions.
pub(crate) fn apply_chain(
    funcs: &[&Func],
    chain: &(Arc<dyn Guest>, Vec<u32>),
    rdd: Rdd,
    ctx: &BatchContext<'_>,
) -> Result<(Rdd, Vec<u64>)> {
    let parts = each_partition(rdd, ctx, |mut values, site| {
        if values.is_empty() {
            return Ok((Batch::default(), vec![0; funcs.len()]));
        }
        let (out, counts) = Func::apply_chain(funcs, (&*chain.0, &chain.1), &mut values, site)?;
        Ok((Batch::from_values(out), counts))
    })?;
    let mut counts = vec![0u64; funcs.len()];
    let mut partitions = Vec::with_capacity(parts.len());
    for (batch, n) in parts {
        for (total, n) in counts.iter_mut().zip(n) {
            *total += n;
        }
        partitions.push(batch);
    }
    Ok((Rdd { partitions }, counts))
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

/// `transform(f)`: `f` sees the whole batch (every partition, in order) in
/// one call and returns the new batch, in as many partitions as its input
/// had (consecutive elements each, as Spark's `parallelize` slices): as in
/// Spark, where `transform(rdd => rdd.map(…))` keeps the input's
/// partitioning, the stages after it keep their parallelism.
pub(crate) fn transform(func: &Func, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    let mut all = concat(&rdd)?;
    let site = CallSite {
        batch: ctx.time,
        partition: 0,
        partitions: 1,
    };
    let out = func.apply_values(&mut all, site)?;
    Ok(Rdd::from_column(&out, rdd.partitions.len()))
}

/// `transform_with(other, func)`: `func` sees both whole batches in one
/// call and returns the new batch (one partition).
pub(crate) fn transform_with(
    func: &Func,
    left: Rdd,
    right: Rdd,
    ctx: &BatchContext<'_>,
) -> Result<Rdd> {
    let site = CallSite {
        batch: ctx.time,
        partition: 0,
        partitions: 1,
    };
    let out = func.apply_pair(&mut concat(&left)?, &mut concat(&right)?, site)?;
    Ok(Rdd {
        partitions: vec![Batch::from_values(out)],
    })
}

/// `StreamingContext::transform(streams, func)`: `func` sees a batch of one
/// element per stream, the array of that stream's whole batch (every
/// partition, in order), and returns the new batch, in as many partitions
/// as the first stream's.
pub(crate) fn transform_all(func: &Func, rdds: &[&Rdd], ctx: &BatchContext<'_>) -> Result<Rdd> {
    let mut batches = Column::new();
    for rdd in rdds {
        batches
            .push_encoded(&as_array(&concat(rdd)?))
            .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    }
    let site = CallSite {
        batch: ctx.time,
        partition: 0,
        partitions: 1,
    };
    let out = func.apply_values(&mut batches, site)?;
    let partitions = rdds.first().map_or(1, |r| r.partitions.len());
    Ok(Rdd::from_column(&out, partitions))
}

/// The elements of `values` as one MessagePack array.
fn as_array(values: &Column) -> Vec<u8> {
    let mut value = Vec::with_capacity(values.bytes.len() + 5);
    super::join::array_header(&mut value, values.len());
    value.extend_from_slice(&values.bytes);
    value
}

/// Every element of `rdd` in one column, keyed elements as pairs.
fn concat(rdd: &Rdd) -> Result<Column> {
    let mut all = Column::new();
    for b in &rdd.partitions {
        all.extend_from(&b.joined_values())
            .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    }
    Ok(all)
}

/// `glom()`: each partition as one element, the array of its elements.
pub(crate) fn glom(rdd: Rdd) -> Rdd {
    let partitions = rdd
        .partitions
        .into_iter()
        .map(|b| {
            let mut c = Column::new();
            // A partition's bytes already fit in a column.
            let _ = c.push_encoded(&as_array(&b.joined_values()));
            Batch::from_values(c)
        })
        .collect();
    Rdd { partitions }
}

/// `repartition(n)`: the same elements spread evenly over `n` partitions.
pub(crate) fn repartition(n: usize, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    let n = n.max(1);
    let total = rdd.count();
    // Each map task knows where its elements start in the batch, so it can
    // cut them where the output partitions' even slices of the whole begin.
    let mut start = 0;
    let inputs: Vec<(Batch, usize)> = (rdd.partitions.into_iter())
        .map(|b| {
            let at = start;
            start += b.len();
            (b, at)
        })
        .collect();
    let exchanged = ctx.exchange(0, n, inputs, |_, (batch, start)| {
        let values = batch.joined_values();
        let end = start + values.len();
        Ok((0..n)
            .map(|q| {
                let (a, b) = ((q * total / n).max(start), ((q + 1) * total / n).min(end));
                if a >= b {
                    return Batch::default();
                }
                Batch::from_values(crate::rdd::slice(&values, a - start, b - start))
            })
            .collect())
    })?;
    let partitions = ctx
        .tasks((0..n).collect(), |q, _| {
            let mut col = Column::new();
            for b in ctx.read(&exchanged, q)? {
                col.extend_from(&b.values)
                    .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
            }
            Ok(Batch::from_values(col))
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(Rdd { partitions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{batch_of, rendered, with_ctx};

    #[test]
    fn glom_and_repartition() {
        let rdd = Rdd {
            partitions: vec![
                batch_of(&[1i64, 2]),
                batch_of::<i64>(&[]),
                batch_of(&[3i64]),
            ],
        };
        assert_eq!(rendered(&glom(rdd.clone())), ["[1,2]", "[3]", "[]"]);
        let r = with_ctx(|ctx| repartition(4, rdd, ctx)).unwrap();
        assert_eq!(r.partitions.len(), 4);
        assert_eq!(rendered(&r), ["1", "2", "3"]);
        // The same even slices as cutting the batch's elements whole.
        let many = Rdd {
            partitions: vec![
                batch_of(&[1i64, 2, 3, 4, 5]),
                batch_of::<i64>(&[]),
                batch_of(&[6i64, 7]),
                batch_of(&[8i64, 9, 10]),
            ],
        };
        let mut all = Column::new();
        for b in &many.partitions {
            all.extend_from(&b.values).unwrap();
        }
        for n in 1..12 {
            let r = with_ctx(|ctx| repartition(n, many.clone(), ctx)).unwrap();
            assert_eq!(r, Rdd::from_column(&all, n), "into {n}");
        }
    }

    /// Spark's `transform(rdd => rdd.map(f))` keeps the input's
    /// partitions; here the function sees the batch whole and its result is
    /// sliced back into as many partitions, in order.
    #[test]
    fn transform_keeps_the_number_of_partitions() {
        let twice = Func::native_values("twice", sluice_sdk::Kind::Transform, |c| {
            sluice_sdk::run::map(c, |x: i64| x * 2)
        });
        let rdd = Rdd {
            partitions: vec![
                batch_of(&[1i64, 2, 3]),
                batch_of::<i64>(&[]),
                batch_of(&[4i64]),
            ],
        };
        let out = with_ctx(|ctx| transform(&twice, rdd, ctx)).unwrap();
        assert_eq!(out.partitions.len(), 3);
        assert_eq!(rendered(&out), ["2", "4", "6", "8"]);
        let mut all = Column::new();
        for x in [2i64, 4, 6, 8] {
            all.push(&x).unwrap();
        }
        assert_eq!(out, Rdd::from_column(&all, 3));
    }
}
