//! `reduce_by_key_and_window`: per-batch reductions kept for the window,
//! and the incremental step with an inverse function.

use super::{KeyedState, OperatorState, PartitionState, internal};
use crate::checkpoint::{StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::func::{CallSite, Func};
use crate::ops::BatchContext;
use crate::ops::keyed::{combine, reduce_by_key};
use crate::rdd::Rdd;
use crate::time::BatchTime;
use sluice_sdk::{Batch, Column};
use std::collections::VecDeque;

/// The functions of a windowed reduction.
pub(crate) struct WindowFuncs<'a> {
    pub(crate) reduce: &'a Func,
    pub(crate) inverse: Option<&'a Func>,
    pub(crate) filter: Option<&'a Func>,
}

/// `reduce_by_key_and_window`: per-batch reductions and, with an inverse
/// function, the previous window's value per key.
#[derive(Debug)]
pub(crate) struct WindowedReduce {
    partitions: usize,
    /// Each parent batch reduced by key, in `partitions` hash partitions.
    reduced: VecDeque<(BatchTime, Rdd)>,
    /// The previous window (with an inverse function only).
    state: KeyedState,
}

impl WindowedReduce {
    pub(crate) fn new(partitions: usize) -> Self {
        WindowedReduce {
            partitions: partitions.max(1),
            reduced: VecDeque::new(),
            state: KeyedState::new(partitions),
        }
    }

    /// Number of hash partitions.
    pub(crate) fn partitions(&self) -> usize {
        self.partitions
    }

    /// Takes in the parent's batch at `ctx.time`, reduced by key at once.
    pub(crate) fn push(&mut self, rdd: Rdd, reduce: &Func, ctx: &BatchContext<'_>) -> Result<()> {
        let reduced = reduce_by_key(reduce, self.partitions, rdd, ctx)?;
        self.reduced.push_back((ctx.time, reduced));
        Ok(())
    }

    /// Per-batch partitions `q` of the batches with times in `(from, to]`, as
    /// one key column and one value column.
    fn gather(&self, q: usize, from: i64, to: i64) -> Result<(Column, Column)> {
        let (mut keys, mut values) = (Column::new(), Column::new());
        for (t, rdd) in &self.reduced {
            if t.millis() > from && t.millis() <= to {
                let b = &rdd.partitions[q];
                keys.extend_from(&b.keys).map_err(internal)?;
                values.extend_from(&b.values).map_err(internal)?;
            }
        }
        Ok((keys, values))
    }

    /// The window ending at `ctx.time`, `length` long, `slide` after the
    /// previous one.
    pub(crate) fn window(
        &mut self,
        length: i64,
        slide: i64,
        funcs: &WindowFuncs<'_>,
        ctx: &BatchContext<'_>,
    ) -> Result<Rdd> {
        let t = ctx.time.millis();
        let n = self.partitions;
        let site = |q: usize| CallSite {
            batch: ctx.time,
            partition: q as u32,
            partitions: n as u32,
        };
        let out = match funcs.inverse {
            None => {
                let parts = (0..n)
                    .map(|q| self.gather(q, t - length, t))
                    .collect::<Result<Vec<_>>>()?;
                let partitions = ctx
                    .tasks(parts, |q, (keys, values)| {
                        if keys.is_empty() {
                            return Ok(Batch::default());
                        }
                        let (keys, values) = combine(keys, values, None, funcs.reduce, site(q))?;
                        let mut b = Batch { keys, values };
                        if let Some(filter) = funcs.filter {
                            b = filter_pairs(b, filter, site(q))?;
                        }
                        Ok(b)
                    })
                    .into_iter()
                    .collect::<Result<Vec<_>>>()?;
                Rdd { partitions }
            }
            Some(inverse) => {
                let olds = (0..n)
                    .map(|q| self.gather(q, t - slide - length, t - length))
                    .collect::<Result<Vec<_>>>()?;
                let news = (0..n)
                    .map(|q| self.gather(q, t - slide, t))
                    .collect::<Result<Vec<_>>>()?;
                let mut state = std::mem::take(&mut self.state.partitions);
                let shards: Vec<_> = state.iter_mut().zip(olds.into_iter().zip(news)).collect();
                ctx.tasks(shards, |q, (part, (old, new))| {
                    slide_partition(part, old, new, funcs, inverse, site(q))
                })
                .into_iter()
                .collect::<Result<Vec<()>>>()?;
                self.state.partitions = state;
                self.state.to_rdd()?
            }
        };
        // No later window reaches back to `t - length` or before.
        while self
            .reduced
            .front()
            .is_some_and(|(bt, _)| bt.millis() <= t - length)
        {
            self.reduced.pop_front();
        }
        Ok(out)
    }

    /// Per-batch reductions held.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.reduced.len()
    }
}

/// One partition of an incremental window step: `old` (the batches that
/// left) taken out with `inverse`, `new` (the batches that entered) added
/// with `reduce`, then `filter` over every key.
fn slide_partition(
    part: &mut PartitionState,
    old: (Column, Column),
    new: (Column, Column),
    funcs: &WindowFuncs<'_>,
    inverse: &Func,
    site: CallSite,
) -> Result<()> {
    // One value per key for each side.
    let (ok, ov) = if old.0.is_empty() {
        old
    } else {
        combine(old.0, old.1, None, funcs.reduce, site)?
    };
    let (nk, nv) = if new.0.is_empty() {
        new
    } else {
        combine(new.0, new.1, None, funcs.reduce, site)?
    };
    take_out(part, (ok, ov), inverse, site)?;
    add_in(part, (nk, nv), funcs.reduce, site)?;
    if let Some(filter) = funcs.filter
        && !part.is_empty()
    {
        filter_keys(part, filter, site)?;
    }
    Ok(())
}

/// Out: inverse(previous, left) for the keys the window holds of the
/// one value per key that left (`old`).
fn take_out(
    part: &mut PartitionState,
    (ok, ov): (Column, Column),
    inverse: &Func,
    site: CallSite,
) -> Result<()> {
    let mut touched = Vec::new();
    let (mut prev, mut gone) = (Column::new(), Column::new());
    for i in 0..ok.len() {
        if let Some((idx, _, v)) = part.get_full(ok.get(i)) {
            touched.push(idx);
            prev.push_encoded(v).map_err(internal)?;
            gone.push_encoded(ov.get(i)).map_err(internal)?;
        }
    }
    if !touched.is_empty() {
        let updated = inverse.apply_pair(&mut prev, &mut gone, site)?;
        for (j, &idx) in touched.iter().enumerate() {
            if let Some((_, v)) = part.get_index_mut(idx) {
                *v = updated.get(j).into();
            }
        }
    }
    Ok(())
}

/// In: reduce(previous, entered), or the entered value for a new key, of
/// the one value per key that entered (`new`).
fn add_in(
    part: &mut PartitionState,
    (nk, nv): (Column, Column),
    reduce: &Func,
    site: CallSite,
) -> Result<()> {
    let mut touched = Vec::new();
    let mut pairs = Column::new();
    let mut groups = vec![0u32];
    for i in 0..nk.len() {
        let k = nk.get(i);
        match part.get_full(k) {
            Some((idx, _, v)) => {
                touched.push(idx);
                pairs.push_encoded(v).map_err(internal)?;
                pairs.push_encoded(nv.get(i)).map_err(internal)?;
                groups.push(pairs.len() as u32);
            }
            None => {
                part.insert(k.into(), nv.get(i).into());
            }
        }
    }
    if !touched.is_empty() {
        let sums = reduce.apply_reduce(&mut pairs, groups, site)?;
        for (j, &idx) in touched.iter().enumerate() {
            if let Some((_, v)) = part.get_index_mut(idx) {
                *v = sums.get(j).into();
            }
        }
    }
    Ok(())
}

/// Keeps only the keys of `part` whose `(key, value)` `filter` holds.
fn filter_keys(part: &mut PartitionState, filter: &Func, site: CallSite) -> Result<()> {
    let mut all = Batch::default();
    for (k, v) in part.iter() {
        all.keys.push_encoded(k).map_err(internal)?;
        all.values.push_encoded(v).map_err(internal)?;
    }
    let mut pairs = all.joined_values().into_owned();
    let kept = filter.apply_filter(&mut pairs, site)?;
    let mut next = 0usize;
    let mut i = 0u32;
    part.retain(|_, _| {
        let keep = kept.get(next) == Some(&i);
        if keep {
            next += 1;
        }
        i += 1;
        keep
    });
    Ok(())
}

/// The `(key, value)` elements of `b` for which `filter` holds.
fn filter_pairs(b: Batch, filter: &Func, site: CallSite) -> Result<Batch> {
    let mut pairs = b.joined_values().into_owned();
    let kept = filter.apply_filter(&mut pairs, site)?;
    let mut out = Batch::default();
    for i in kept {
        out.keys
            .push_encoded(b.keys.get(i as usize))
            .map_err(internal)?;
        out.values
            .push_encoded(b.values.get(i as usize))
            .map_err(internal)?;
    }
    Ok(out)
}

impl OperatorState for WindowedReduce {
    fn snapshot(&self, w: &mut StateWriter) {
        w.u64(self.reduced.len() as u64);
        for (t, rdd) in &self.reduced {
            w.i64(t.millis());
            w.rdd(rdd);
        }
        self.state.snapshot(w);
    }

    fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()> {
        let n = r.u64()?;
        self.reduced.clear();
        for _ in 0..n {
            let t = BatchTime(r.i64()?);
            let rdd = r.rdd()?;
            if rdd.partitions.len() != self.partitions {
                return Err(Error::Plan(format!(
                    "the checkpoint has a window in {} partitions, the job has {}",
                    rdd.partitions.len(),
                    self.partitions
                )));
            }
            self.reduced.push_back((t, rdd));
        }
        self.state.restore(r)
    }

    fn shards(&self) -> usize {
        self.partitions
    }

    /// What is not per partition: the times of the per-batch reductions held.
    fn snapshot_header(&self, w: &mut StateWriter) {
        w.u64(self.reduced.len() as u64);
        for (t, _) in &self.reduced {
            w.i64(t.millis());
        }
    }

    /// Partition `p` of every per-batch reduction held, then of the
    /// previous window's value per key: the shard of the task that owns it.
    fn snapshot_shard(&self, p: usize, w: &mut StateWriter) {
        for (_, rdd) in &self.reduced {
            w.batch(&rdd.partitions[p]);
        }
        self.state.snapshot_shard(p, w);
    }

    /// Restores a header and one shard per partition.
    fn restore_shards(
        &mut self,
        header: &mut StateReader<'_>,
        shards: &mut [StateReader<'_>],
    ) -> Result<()> {
        super::check_shards(shards.len(), self.partitions)?;
        let n = header.u64()? as usize;
        let times = (0..n)
            .map(|_| Ok(BatchTime(header.i64()?)))
            .collect::<Result<Vec<_>>>()?;
        let mut reduced: Vec<(BatchTime, Rdd)> =
            times.into_iter().map(|t| (t, Rdd::default())).collect();
        for r in shards.iter_mut() {
            for (_, rdd) in reduced.iter_mut() {
                rdd.partitions.push(r.batch()?);
            }
        }
        self.state.restore_shards(shards)?;
        self.reduced = reduced.into();
        Ok(())
    }
}
