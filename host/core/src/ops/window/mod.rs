//! Windows and keyed state: the operators that remember earlier batches.
//!
//! All of it is host data (typed values as MessagePack bytes), never guest
//! memory, so retries, checkpoints and plugin swaps cannot lose it.
//!
//! * [`WindowBuffer`]: the parent batches of the last window length
//!   (`window`), released as soon as no future window needs them.
//! * [`WindowedReduce`]: `reduce_by_key_and_window`. Each parent batch is
//!   reduced by key once, when it arrives, into `partitions` hash partitions.
//!   Without an inverse function every slide re-reduces the window's
//!   per-batch results. With one, the previous window's value per key is kept
//!   ([`KeyedState`]) and each slide takes the batches that left out with the
//!   inverse function and adds the ones that entered (Spark's Scala
//!   `ReducedWindowedDStream`): the function calls are proportional to the
//!   keys of those batches, not to the window length. A key whose value
//!   returns to the identity stays unless the filter function drops it.
//! * [`StateByKey`]: `update_state_by_key`, the state per key.
//! * [`MapWithState`]: `map_with_state`, per-record mapping with a state per
//!   key and an optional timeout; only keys with news are touched.

mod map_with_state;
mod reduce;
mod state;
#[cfg(test)]
mod tests;

pub(crate) use map_with_state::MapWithState;
pub(crate) use reduce::{WindowFuncs, WindowedReduce};
pub(crate) use state::StateByKey;

use super::BatchContext;
use super::join::bucket;
use crate::checkpoint::{StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::func::CallSite;
use crate::rdd::Rdd;
use crate::time::BatchTime;
use indexmap::IndexMap;
use sluice_sdk::{Batch, Column};
use std::collections::VecDeque;
use std::sync::Arc;

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

/// An RDD of `(key, value)` elements, one partition per iterator.
fn pairs_rdd<'a, P, I>(partitions: P) -> Result<Rdd>
where
    P: Iterator<Item = I>,
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let partitions = partitions
        .map(|p| {
            let (n, bytes) = p
                .clone()
                .fold((0, 0), |(n, b), (k, v)| (n + 1, b + k.len() + v.len()));
            let mut b = Batch {
                keys: Column::with_capacity(n, bytes / 2),
                values: Column::with_capacity(n, bytes / 2),
            };
            for (k, v) in p {
                b.keys.push_encoded(k).map_err(internal)?;
                b.values.push_encoded(v).map_err(internal)?;
            }
            Ok(b)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Rdd { partitions })
}

/// Hashes `initial` `(key, state)` elements into `n` partitions and hands
/// each to `put` with its partition: an initial state's seeding.
fn seed_partitions(
    initial: Rdd,
    n: usize,
    ctx: &BatchContext<'_>,
    mut put: impl FnMut(usize, &[u8], &[u8]),
) -> Result<()> {
    let exchanged = bucket(1, initial, n, ctx, "initial state")?;
    for q in 0..n {
        for b in ctx.read(&exchanged, q)? {
            for i in 0..b.len() {
                put(q, b.keys.get(i), b.values.get(i));
            }
        }
    }
    Ok(())
}

/// The value per key of one hash partition, in order of first arrival.
pub(crate) type PartitionState = IndexMap<Box<[u8]>, Box<[u8]>>;

/// Keyed state in `n` hash partitions (the partition of a key is
/// [`super::keyed::partition_of`] of its bytes).
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyedState {
    pub(crate) partitions: Vec<PartitionState>,
}

impl KeyedState {
    pub(crate) fn new(n: usize) -> Self {
        KeyedState {
            partitions: (0..n.max(1)).map(|_| IndexMap::new()).collect(),
        }
    }

    /// Writes every partition's keys and values.
    pub(crate) fn snapshot(&self, w: &mut StateWriter) {
        w.u64(self.partitions.len() as u64);
        for p in 0..self.partitions.len() {
            self.snapshot_shard(p, w);
        }
    }

    /// Partition `p`'s keys and values: the shard of the task that owns it.
    pub(crate) fn snapshot_shard(&self, p: usize, w: &mut StateWriter) {
        let part = &self.partitions[p];
        w.u64(part.len() as u64);
        for (k, v) in part {
            w.bytes(k);
            w.bytes(v);
        }
    }

    /// Replaces the state with one shard per partition
    /// ([`KeyedState::snapshot_shard`]).
    pub(crate) fn restore_shards(&mut self, shards: &mut [StateReader<'_>]) -> Result<()> {
        check_shards(shards.len(), self.partitions.len())?;
        self.partitions = (shards.iter_mut())
            .map(|r| read_partition(r, |r| Ok((r.bytes()?.into(), r.bytes()?.into()))))
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// Replaces the state with a snapshot of the same number of partitions.
    pub(crate) fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()> {
        self.partitions = restore_partitions(r, self.partitions.len(), |r| {
            Ok((r.bytes()?.into(), r.bytes()?.into()))
        })?;
        Ok(())
    }

    /// Every `(key, value)`, one RDD partition per state partition.
    pub(crate) fn to_rdd(&self) -> Result<Rdd> {
        pairs_rdd(
            self.partitions
                .iter()
                .map(|p| p.iter().map(|(k, v)| (&k[..], &v[..]))),
        )
    }

    /// Number of keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.partitions.iter().map(IndexMap::len).sum()
    }
}

/// Reads `expected` partitions of entries written as a count then entries.
fn restore_partitions<V>(
    r: &mut StateReader<'_>,
    expected: usize,
    mut entry: impl FnMut(&mut StateReader<'_>) -> Result<(Box<[u8]>, V)>,
) -> Result<Vec<IndexMap<Box<[u8]>, V>>> {
    let n = r.u64()? as usize;
    check_shards(n, expected)?;
    (0..n).map(|_| read_partition(r, &mut entry)).collect()
}

/// State in `n` partitions (or shards) for an operator with `expected`.
pub(crate) fn check_shards(n: usize, expected: usize) -> Result<()> {
    if n == expected {
        Ok(())
    } else {
        Err(Error::Plan(format!(
            "the checkpoint has state in {n} partitions, the job has {expected}"
        )))
    }
}

/// Reads one partition of entries, written as a count then entries.
fn read_partition<V>(
    r: &mut StateReader<'_>,
    mut entry: impl FnMut(&mut StateReader<'_>) -> Result<(Box<[u8]>, V)>,
) -> Result<IndexMap<Box<[u8]>, V>> {
    let len = r.u64()?;
    let mut p = IndexMap::new();
    for _ in 0..len {
        let (k, v) = entry(r)?;
        p.insert(k, v);
    }
    Ok(p)
}

/// The parent batches a window still needs, oldest first.
#[derive(Debug, Default)]
pub(crate) struct WindowBuffer {
    batches: VecDeque<(BatchTime, Arc<Rdd>)>,
}

impl WindowBuffer {
    /// Remembers the parent's batch at `time`.
    pub(crate) fn push(&mut self, time: BatchTime, rdd: Arc<Rdd>) {
        self.batches.push_back((time, rdd));
    }

    /// The union of the parent batches in `(time - length, time]` (their
    /// partitions side by side), then forgets those no later window needs.
    pub(crate) fn window(&mut self, time: BatchTime, length: i64) -> Rdd {
        let from = time.millis() - length;
        let mut partitions = Vec::new();
        for (t, rdd) in &self.batches {
            if t.millis() > from && *t <= time {
                partitions.extend(rdd.partitions.iter().cloned());
            }
        }
        self.evict(from);
        if partitions.is_empty() {
            partitions.push(Batch::default());
        }
        Rdd { partitions }
    }

    /// Forgets the batches at or before `time`.
    fn evict(&mut self, time: i64) {
        while self
            .batches
            .front()
            .is_some_and(|(t, _)| t.millis() <= time)
        {
            self.batches.pop_front();
        }
    }

    /// Batches held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.batches.len()
    }
}

/// State an operator keeps across batches: what checkpoints and a hot
/// swap's rollback save and restore. Keyed state is kept in shards, one per
/// hash partition, each written by the task that owns the partition, plus a
/// header of what is not per partition; other state is kept whole.
pub(crate) trait OperatorState: Send + Sync {
    /// Writes the whole state.
    fn snapshot(&self, w: &mut StateWriter);

    /// Replaces the state with what [`OperatorState::snapshot`] wrote.
    fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()>;

    /// Its shards (hash partitions); 0 when it is kept whole.
    fn shards(&self) -> usize {
        0
    }

    /// What of the state is not per partition.
    fn snapshot_header(&self, _w: &mut StateWriter) {}

    /// Partition `p`'s state: the shard of the task that owns it.
    fn snapshot_shard(&self, _p: usize, _w: &mut StateWriter) {}

    /// Replaces the state with a header and one shard per partition.
    fn restore_shards(
        &mut self,
        _header: &mut StateReader<'_>,
        _shards: &mut [StateReader<'_>],
    ) -> Result<()> {
        Err(Error::Plan(
            "the checkpoint has state shards for a stream that keeps its state whole".to_string(),
        ))
    }
}

impl OperatorState for WindowBuffer {
    fn snapshot(&self, w: &mut StateWriter) {
        w.u64(self.batches.len() as u64);
        for (t, rdd) in &self.batches {
            w.i64(t.millis());
            w.rdd(rdd);
        }
    }

    fn restore(&mut self, r: &mut StateReader<'_>) -> Result<()> {
        let n = r.u64()?;
        self.batches.clear();
        for _ in 0..n {
            let t = BatchTime(r.i64()?);
            self.batches.push_back((t, Arc::new(r.rdd()?)));
        }
        Ok(())
    }

    /// Partition `p` of every batch held is shard `p`, written by the task
    /// that computed it: as many shards as the widest batch has partitions.
    fn shards(&self) -> usize {
        let widest = self.batches.iter().map(|(_, r)| r.partitions.len()).max();
        widest.unwrap_or(0).max(1)
    }

    /// The batches held: each one's time and partition count.
    fn snapshot_header(&self, w: &mut StateWriter) {
        w.u64(self.batches.len() as u64);
        for (t, rdd) in &self.batches {
            w.i64(t.millis());
            w.u64(rdd.partitions.len() as u64);
        }
    }

    fn snapshot_shard(&self, p: usize, w: &mut StateWriter) {
        for (_, rdd) in &self.batches {
            if let Some(b) = rdd.partitions.get(p) {
                w.batch(b);
            }
        }
    }

    fn restore_shards(
        &mut self,
        header: &mut StateReader<'_>,
        shards: &mut [StateReader<'_>],
    ) -> Result<()> {
        let n = header.u64()?;
        let mut batches = VecDeque::new();
        for _ in 0..n {
            let t = BatchTime(header.i64()?);
            let parts = header.u64()? as usize;
            if parts > shards.len() {
                return Err(Error::Plan(format!(
                    "the checkpoint's window batch at {t} has {parts} partitions but {} shards",
                    shards.len()
                )));
            }
            let partitions = (shards[..parts].iter_mut())
                .map(StateReader::batch)
                .collect::<Result<Vec<_>>>()?;
            batches.push_back((t, Arc::new(Rdd { partitions })));
        }
        self.batches = batches;
        Ok(())
    }
}

/// Hash-shuffles `rdd` into as many partitions as `state` has and runs `f`
/// on each state partition with its new elements, partitions in parallel.
fn shuffled_into<P, R, F>(
    state: &mut Vec<P>,
    rdd: Rdd,
    ctx: &BatchContext<'_>,
    op: &str,
    f: F,
) -> Result<Vec<R>>
where
    P: Send + Default,
    R: Send,
    F: Fn(&mut P, &[Batch], CallSite) -> Result<R> + Sync,
{
    let n = state.len();
    let exchanged = bucket(0, rdd, n, ctx, op)?;
    let mut parts = std::mem::take(state);
    let shards: Vec<_> = parts.iter_mut().collect();
    let result = ctx
        .tasks(shards, |q, part| {
            let site = CallSite {
                batch: ctx.time,
                partition: q as u32,
                partitions: n as u32,
            };
            f(part, &ctx.read(&exchanged, q)?, site)
        })
        .into_iter()
        .collect::<Result<Vec<R>>>();
    *state = parts;
    result
}
