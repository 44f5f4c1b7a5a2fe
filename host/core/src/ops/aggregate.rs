//! Whole-batch aggregates: `count` and `reduce`, each giving at most one
//! element in a single partition (Spark: `count` of an empty batch is `[0]`,
//! `reduce` of an empty batch is no element).

use super::BatchContext;
use crate::error::{Error, Result};
use crate::func::{CallSite, Func};
use crate::rdd::Rdd;
use sluice_sdk::{Batch, Column};

/// `count()`: the number of elements, as one element.
pub(crate) fn count(rdd: &Rdd) -> Rdd {
    let mut c = Column::new();
    // Writing one integer cannot fail.
    let _ = c.push(&(rdd.count() as i64));
    Rdd {
        partitions: vec![Batch::from_values(c)],
    }
}

/// `reduce(f)`: all elements combined with the associative `f`: each
/// partition reduced in parallel, then the partial results together.
pub(crate) fn reduce(func: &Func, rdd: Rdd, ctx: &BatchContext<'_>) -> Result<Rdd> {
    let n = rdd.partitions.len() as u32;
    let exchanged = ctx.exchange(0, 1, rdd.partitions, |p, batch| {
        if batch.is_empty() {
            return Ok(vec![Batch::default()]);
        }
        let mut values = if batch.has_keys() {
            batch.joined_values().into_owned()
        } else {
            batch.values
        };
        let len = values.len() as u32;
        let site = CallSite {
            batch: ctx.time,
            partition: p as u32,
            partitions: n,
        };
        let partial = func.apply_reduce(&mut values, vec![0, len], site)?;
        Ok(vec![Batch::from_values(partial)])
    })?;
    let mut out = ctx.tasks(vec![()], |_, ()| {
        let mut all = Column::new();
        for p in ctx.read(&exchanged, 0)? {
            all.extend_from(&p.values)
                .map_err(|e| Error::Internal(e.to_string()))?;
        }
        if all.len() <= 1 {
            return Ok(all);
        }
        let len = all.len() as u32;
        let site = CallSite {
            batch: ctx.time,
            partition: 0,
            partitions: 1,
        };
        func.apply_reduce(&mut all, vec![0, len], site)
    });
    let out = out.pop().expect("one task")?;
    Ok(Rdd {
        partitions: vec![Batch::from_values(out)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{batch_of, with_ctx};

    #[test]
    fn count_and_reduce_follow_spark_on_empty_batches() {
        with_ctx(|ctx| {
            let empty = Rdd::empty(2);
            assert_eq!(count(&empty).partitions[0].values.get(0), &[0]);
            let sum = Func::reduce("sum", |a: i64, b: i64| a + b);
            assert!(reduce(&sum, empty, ctx).unwrap().partitions[0].is_empty());
            let rdd = Rdd {
                partitions: vec![
                    batch_of(&[1i64, 2]),
                    batch_of::<i64>(&[]),
                    batch_of(&[3i64]),
                    batch_of(&[4i64, 5]),
                ],
            };
            assert_eq!(count(&rdd).partitions[0].values.get(0), &[5]);
            assert_eq!(
                reduce(&sum, rdd, ctx).unwrap().partitions[0].values,
                batch_of(&[15i64]).values
            );
        });
    }
}
